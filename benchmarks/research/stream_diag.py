"""Issue #13 diagnosis: where a K-lane model loses the keywords of a stream that it hears as clips.

For every keyword of kws_stream.py's VAL stream (real speakers the models never heard; VAL, never TEST) it
compares three views of the same words through the same per-utterance bundle on the emulator:

1. **lanes**: the agent's 20 staggered lanes over the stream (the front-end running on, never reset); of
   the lane windows that hold the whole keyword, how many the model labels right (argmax of the 12 classes,
   before any decision stage);
2. **fresh cut**: the stream's audio from 0.1 s before the keyword, 1 s long, encoded by a fresh front-end
   (same noise and level, but a front-end state and word position like training clips);
3. **fresh cut, no noise**: the same cut of the stream composed again without background noise (same seed,
   so the same words at the same places and levels).

And, on the lanes' windows that hold no keyword, how often the model answers a keyword (what turns into
false accepts). Run: ``.venv/bin/python benchmarks/research/stream_diag.py PUB NAME=BUNDLE ...``;
writes ``benchmarks/results/stream_diag.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, machine, write_results
from kws_stream import REAL_SPEECH, make_stream, open_model, run_pass

from edgekws.agent import DetectionConfig, Pipeline, build_backend
from edgekws.agent.backends import EmulatorBackend
from edgekws.packaging import open_bundle
from edgekws.toolkit.data._stream import RATE


def val_stream(minutes: float, seed: int, noise: bool) -> Any:
    """kws_stream.py's VAL stream (with or without its background noise); TEST is never composed here."""
    args = argparse.Namespace(
        corpus=None, recordings=REAL_SPEECH, seed=seed, minutes=minutes, val_minutes=None, snr_db=(5.0, 30.0)
    )
    return make_stream(args, "val", background=noise)[0]


def diagnose(
    path: Path, trust: str, noisy: Any, clean: Any, lead_s: float, frontend: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``frontend``: front-end spec fields that the lanes' pass changes from the bundle's (a probe of a
    host-side front-end option such as the noise floor on a model trained without it); the fresh cuts
    keep the bundle's front-end."""
    truth = noisy.truth()
    out: dict[str, Any] = {"bundle": str(path), "keywords": len(truth)}
    if frontend:
        out["lanes_frontend_changes"] = frontend
    with tempfile.TemporaryDirectory() as tmp:
        model = open_model(path, [trust], Path(tmp))
        if frontend:
            model = replace(model, frontend=replace(model.frontend, **frontend))
        labels = model.labels
        backend, factory = build_backend(EmulatorBackend.Config(type="emulator"), model.model_dir)
        cfg = DetectionConfig(min_input_rate_hz=0.0, smoothing=1, threshold=1.0)
        p = run_pass(model, backend, factory, noisy.audio, cfg, keep=True)
        backend.close()
    dt = model.frontend.dt_ms / 1000.0
    wins = [w for w in p.windows if w.probabilities is not None]
    starts = np.array([w.start_step for w in wins]) * dt
    ends = np.array([w.end_step for w in wins]) * dt
    probs = np.stack([w.probabilities for w in wins])
    arg = probs.argmax(axis=1)
    held = np.zeros(len(wins), bool)
    lane_right, lane_any, lane_n = [], [], []
    for k in truth:
        inside = (starts <= k.start_s) & (ends >= k.end_s)
        held |= (starts < k.end_s + 0.3) & (ends > k.start_s)
        label = labels.index(k.label)
        lane_n.append(int(inside.sum()))
        lane_right.append(float((arg[inside] == label).mean()) if inside.any() else 0.0)
        lane_any.append(bool((arg[inside] == label).any()))
    keyword_classes = [i for i, name in enumerate(labels) if not name.startswith("_")]
    empty = ~held
    said = np.isin(arg[empty], keyword_classes)
    out["lanes"] = {
        "windows_per_keyword": round(float(np.mean(lane_n)), 2),
        "right_fraction_of_windows": round(float(np.mean(lane_right)), 3),
        "keywords_with_a_right_window": round(float(np.mean(lane_any)), 3),
        "windows_without_keyword": int(empty.sum()),
        "of_those_answered_a_keyword": round(float(said.mean()), 3),
        "of_those_answered_a_keyword_p>0.9": round(
            float((said & (probs[empty].max(axis=1) > 0.9)).mean()), 3
        ),
        "answers_on_empty_windows": {
            labels[i]: int(c) for i, c in zip(*np.unique(arg[empty], return_counts=True), strict=True)
        },
    }
    bundle = open_bundle(path, [trust])
    pipe = Pipeline.open(bundle, [EmulatorBackend.Config(type="emulator")])
    try:
        rights = {}
        for name, stream in (("fresh_cut", noisy), ("fresh_cut_no_noise", clean)):
            right = []
            for k in truth:
                a = max(0, round((k.start_s - lead_s) * RATE))
                right.append(pipe.classify(stream.audio[a : a + RATE])[0] == k.label)
            out[name] = round(float(np.mean(right)), 3)
            rights[name] = right
    finally:
        pipe.close()
    out["by_noise"] = by_noise(
        noisy, clean, truth, rights["fresh_cut"], rights["fresh_cut_no_noise"], lane_any
    )
    return out


def by_noise(
    noisy: Any, clean: Any, truth: list[Any], cut: list[bool], quiet: list[bool], lane: list[bool]
) -> dict[str, Any]:
    """The keywords' fresh-cut (with noise, without) and lane results grouped by the noise under each word
    (its segment's kind) and by the word's local SNR: the segment's SNR against the stream's mean speech
    power, plus the word's own level against that mean (words are said at -10..0 dB)."""
    powers = [
        float(np.mean(clean.audio[round(k.start_s * RATE) : round(k.end_s * RATE)] ** 2)) for k in truth
    ]
    mean_db = 10 * np.log10(np.mean(powers))
    rows = []
    for k, p, c, q, ln in zip(truth, powers, cut, quiet, lane, strict=True):
        mid = (k.start_s + k.end_s) / 2
        seg = next(n for n in noisy.noise if n["start_s"] <= mid < n["end_s"])
        snr = None if seg["type"] == "none" else seg["snr_db"] + 10 * np.log10(p) - mean_db
        rows.append((seg["type"], snr, c, q, ln))

    def group(keep: Any) -> dict[str, Any]:
        sel = [r for r in rows if keep(r)]
        if not sel:
            return {"keywords": 0}
        return {
            "keywords": len(sel),
            "fresh_cut": round(float(np.mean([r[2] for r in sel])), 3),
            "fresh_cut_no_noise": round(float(np.mean([r[3] for r in sel])), 3),
            "lane_right_window": round(float(np.mean([r[4] for r in sel])), 3),
        }

    kinds = {t: group(lambda r, t=t: r[0] == t) for t in sorted({r[0] for r in rows})}
    bins = {
        "none": (None, None),
        "< 5 dB": (-99, 5),
        "5-15 dB": (5, 15),
        "15-25 dB": (15, 25),
        ">= 25 dB": (25, 99),
    }
    snrs = {
        name: group(
            lambda r, lo=lo, hi=hi: r[1] is None if lo is None else r[1] is not None and lo <= r[1] < hi
        )
        for name, (lo, hi) in bins.items()
    }
    return {"noise_kind": kinds, "local_snr": snrs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trust")
    ap.add_argument("bundles", nargs="+", help="NAME=BUNDLE.ekb")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lead-s", type=float, default=0.1, help="cut start before the keyword")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_diag.json")
    ap.add_argument(
        "--lanes-frontend",
        type=json.loads,
        default=None,
        help="JSON front-end fields the lanes run with instead of the bundle's, "
        "e.g. '{\"noise_floor_rise_db_per_s\": 10}'",
    )
    args = ap.parse_args()
    noisy = val_stream(args.minutes, args.seed, True)
    clean = val_stream(args.minutes, args.seed, False)
    assert [(k.label, k.start_s) for k in noisy.truth()] == [(k.label, k.start_s) for k in clean.truth()]
    doc: dict[str, Any] = {
        "command": " ".join(["benchmarks/research/stream_diag.py", *sys.argv[1:]]),
        "stream": noisy.composition(),
        "models": {},
    }
    for item in args.bundles:
        name, _, path = item.partition("=")
        doc["models"][name] = diagnose(Path(path), args.trust, noisy, clean, args.lead_s, args.lanes_frontend)
        print(name, json.dumps(doc["models"][name]), flush=True)
    doc["machine"] = machine()
    write_results(args.out, doc, markdown(doc))
    print(f"wrote {args.out}")


def markdown(doc: dict[str, Any]) -> str:
    s = doc["stream"]
    lines = [
        "# Where a K-lane model loses a stream's keywords (issue #13)",
        "",
        f"`{doc['command']}` on {doc['machine']['cpu']}. VAL stream of kws_stream.py (never TEST): "
        f"{s['duration_s']:.0f} s, {s['keywords']} keywords by {s['keyword_speakers']} real speakers "
        "the models never heard, other words, silences, noise at 5-30 dB. Each model's lanes (20, the "
        "front-end never reset) on the emulator, before any decision stage; cuts: 1 s from 0.1 s before "
        "each keyword, encoded by a fresh front-end, with and without the stream's background noise.",
        "",
        "| model | keywords: right in a fresh noiseless cut | right in a fresh cut with the noise | "
        "lane windows holding the word that are right | keywords with a right lane window | "
        "keyword-free windows answered with a digit (p > 0.9) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in doc["models"].items():
        ln = m["lanes"]
        if m.get("lanes_frontend_changes"):  # a front-end option probed on the lanes only
            name += f" (lanes: {json.dumps(m['lanes_frontend_changes'])})"
        lines.append(
            f"| {name} | {m['fresh_cut_no_noise']:.1%} | {m['fresh_cut']:.1%} | "
            f"{ln['right_fraction_of_windows']:.1%} | {ln['keywords_with_a_right_window']:.1%} | "
            f"{ln['of_those_answered_a_keyword']:.1%} ({ln['of_those_answered_a_keyword_p>0.9']:.1%}) of "
            f"{ln['windows_without_keyword']} |"
        )
    lines += [
        "",
        "By the noise under the keyword (fresh cut with noise / without / a right lane window; keywords):",
        "",
    ]
    for name, m in doc["models"].items():
        parts = []
        for group in ("noise_kind", "local_snr"):
            for key, g in m["by_noise"][group].items():
                if g["keywords"]:
                    parts.append(
                        f"{key}: {g['fresh_cut']:.0%} / {g['fresh_cut_no_noise']:.0%} / "
                        f"{g['lane_right_window']:.0%} ({g['keywords']})"
                    )
        lines.append(f"- {name}: " + "; ".join(parts))
    lines += ["", "Answers on keyword-free windows: "]
    for name, m in doc["models"].items():
        lines.append(f"- {name}: {m['lanes']['answers_on_empty_windows']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

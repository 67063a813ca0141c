"""Synthesis speed of the corpus builder: clips per second by engine and by augmentation, on one core.

Each case renders the same planned utterances (``edgekws.toolkit.data._synth.render``: synthesizer, voice
augmentations, room, noise, channel, 16-bit clip) in one process pinned to one core; the front-end encoding
that `edgekws data synth` adds per clip is timed separately. Cases are interleaved round by round (engine
A, B, C, then again), so a burst of load on the shared machine hits them alike; the median round counts.

- by engine: the utterances of that engine alone, no augmentation but white noise;
- by augmentation: the same mixed-engine utterances with that augmentation forced on every clip (and no
  other), reported as clips/s and as milliseconds added per clip over "none".

Run: .venv/bin/python benchmarks/synth_speed.py [--clips 40] [--rounds 3]
Writes benchmarks/results/synth_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
from _common import RESULTS, load_average, machine, write_results

from edgekws.toolkit.data import _augment, _synth

CORE = 1


def _plan(engines: list[str] | None, clips: int, forced: str | None) -> list[dict[str, Any]]:
    """``clips`` keyword utterances (digits) of ``engines``, with ``forced`` the only augmentation."""
    policy: dict[str, Any] = {
        f"{n}_p": 0.0 for n in ("formant", "pitch", "tempo", "room", "band", "eq", "gain", "clip")
    }
    policy["noise_weights"] = (1.0, 0.0, 0.0)
    if forced == "babble":
        policy["noise_weights"] = (0.0, 0.0, 1.0)
    elif forced is not None:
        policy[f"{forced}_p"] = 1.0
    per_class = max(3, -(-clips // 10) + 1)
    _, _, utts = _synth.plan_corpus(
        "en-digits", per_class, seed=11, engines=engines, augment=_augment.policy(policy)
    )
    keywords = [u for u in utts if u["class"] not in ("_unknown_", "_silence_")]
    return keywords[:clips]


def _time(utts: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds to render all ``utts``, and to encode the rendered clips with the default front-end."""
    from edgekws.agent import FrontendSpec, encode

    spec = FrontendSpec()
    start = time.perf_counter()
    pcms = [_synth.render(u, 11)[0] for u in utts]
    rendered = time.perf_counter() - start
    start = time.perf_counter()
    for pcm in pcms:
        encode(pcm.astype(np.float32) / 32768.0, 16000, spec, resample=False)
    return rendered, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CORE})
    info = machine(pinned_core=CORE)
    cases: dict[str, list[dict[str, Any]]] = {}
    for engine in ("espeak-ng", "flite", "festival"):
        cases[f"engine {engine}"] = _plan([engine], args.clips, None)
    for name in ("none", "formant", "pitch", "tempo", "room", "babble", "band", "eq", "gain", "clip"):
        cases[f"augment {name}"] = _plan(None, args.clips, None if name == "none" else name)
    for utts in cases.values():  # warm-up: imports, festival start-up, numba
        _time(utts[:2])
    render: dict[str, list[float]] = {k: [] for k in cases}
    encode: list[float] = []
    for _ in range(args.rounds):
        for name, utts in cases.items():
            r, e = _time(utts)
            render[name].append(r / len(utts))
            encode.append(e / len(utts))
    per_clip = {k: statistics.median(v) for k, v in render.items()}
    base = per_clip["augment none"]
    enc = statistics.median(encode)
    rows = [
        {
            "case": k,
            "clips": len(cases[k]),
            "render_ms_per_clip": round(1000 * v, 1),
            "render_clips_per_s": round(1 / v, 1),
            "with_encoding_clips_per_s": round(1 / (v + enc), 1),
            **({"added_ms_per_clip": round(1000 * (v - base), 1)} if k.startswith("augment") else {}),
        }
        for k, v in per_clip.items()
    ]
    doc = {
        "benchmark": "synth_speed",
        "command": "python benchmarks/synth_speed.py " + f"--clips {args.clips} --rounds {args.rounds}",
        "machine": info,
        "load_average_1min_at_end": load_average(),
        "encode_ms_per_clip": round(1000 * enc, 1),
        "rows": rows,
    }
    lines = [
        "# Synthesis speed by engine and augmentation",
        "",
        f"`{doc['command']}`; one process pinned to core {CORE} of {info['cpu']} ({info['cores']} cores, "
        f"shared: load average {info['load_average_1min']} at the start, {doc['load_average_1min_at_end']} "
        "at the end). "
        f"Median of {args.rounds} interleaved rounds of {args.clips} digit clips per case. Rendering = "
        "synthesizer + augmentations + noise + 16-bit clip; the front-end encoding adds "
        f"{doc['encode_ms_per_clip']} ms per clip. `edgekws data synth --workers 2` runs two such processes.",
        "",
        "| case | ms/clip | clips/s (render) | clips/s (+ encode) | added ms/clip |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['render_ms_per_clip']} | {row['render_clips_per_s']} | "
            f"{row['with_encoding_clips_per_s']} | {row.get('added_ms_per_clip', '')} |"
        )
    path = write_results(RESULTS / "synth_speed.json", doc, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

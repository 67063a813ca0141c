"""Clips under the stream benchmark's noise: a corpus' and the train speakers' words as the lanes hear them.

Issue #13 (docs/agent.md, "Why the K-lane model misses"): the clip models hear about half of the stream's
keywords under its background noise. This script makes training clips with that noise: every 1 s clip of a
synthetic corpus' split (its WAVs) and ``--copies`` draws of every recording of the given speakers (their
loud part at a random place in the second) is mixed with a noise drawn as :func:`edgekws.toolkit.data.compose`
draws a stream's (``kws_stream.py``'s chances: white 0.2, pink 0.2, brown 0.1, babble 0.3, none 0.2; babble
of 3-6 talkers saying other words: the corpus' ``_unknown_`` clips and the speakers' non-keyword recordings)
at the stream's local levels (SNR against the word's own power drawn in 5-30 dB, minus a word gain in 0-10
dB), with 0.5 s of the same noise before the clip so that the front-end has been listening to it (the
lanes' view), then encoded by the corpus' front-end (with ``--frontend`` overrides, e.g. delay taps or the
noise floor), the 0.5 s lead dropped. Nothing here reads the stream benchmark's VAL or TEST speakers unless
named.

```
.venv/bin/python benchmarks/research/noisy_clips.py runs/r11/synth/kokoro runs/r20/noisy/train.h5 \
    --split train --speakers fsdd-george,fsdd-jackson,... --copies 3 \
    --frontend '{"delay_taps_ms": [0.0, 25.0, 50.0, 100.0]}' --workers 2
```
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.agent import FrontendSpec, encode
from edgekws.toolkit.data import SpikeDataset, write_shd
from edgekws.toolkit.data._recordings import map_label, scan
from edgekws.toolkit.data._spikes import events_of
from edgekws.toolkit.data._stream import RATE, Clip, _loud_part, _noise, _recording

NOISE = {"white": 0.2, "pink": 0.2, "brown": 0.1, "babble": 0.3, "none": 0.2}
SNR_DB = (5.0, 30.0)  # kws_stream.py's --snr-db default
WORD_GAIN_DB = (-10.0, 0.0)  # kws_stream.py's word_gain_db
LEAD_S = 0.5


def _jobs(args: argparse.Namespace, classes: list[str]) -> tuple[list[tuple[str, Any, int]], list[Clip]]:
    """(class, source, seed) per output clip: a corpus WAV (path, speech span) or a recording's path; and
    the babble words."""
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    jobs: list[tuple[str, Any, int]] = []
    talkers: list[Clip] = []
    for u in manifest["utterances"]:
        if u["split"] != args.split:
            continue
        span = (u.get("lead_silence_s", 0.0), u.get("lead_silence_s", 0.0) + u.get("speech_s", 0.0))
        jobs.append((u["class"], ("wav", str(args.corpus / u["wav"]), span), len(jobs)))
        if u["class"] == "_unknown_" and u.get("speech_s", 0) > 0:
            talkers.append(Clip("distractor", "_unknown_", u["speaker"], args.corpus / u["wav"], span))
    speakers = [s for s in args.speakers.split(",") if s]
    if speakers:
        for r in scan(args.recordings):
            if r.speaker not in speakers:
                continue
            label = map_label(r.label, classes, unknown="map")
            if label is None or label == "_silence_":
                continue
            if label == "_unknown_":
                talkers.append(Clip("distractor", r.label, r.speaker, r.path))
            for _ in range(args.copies):
                jobs.append((label, ("recording", str(r.path), None), len(jobs)))
    return jobs, talkers


_TALKERS: list[Clip] = []
_SPEC: FrontendSpec | None = None


def _init(talkers: list[Clip], spec: FrontendSpec) -> None:
    global _TALKERS, _SPEC
    _TALKERS, _SPEC = talkers, spec


def _one(job: tuple[str, Any, int], seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    _label, (kind, path, span), index = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    n = RATE
    if kind == "wav":
        audio = np.asarray(_recording(Path(path)), np.float64)[:n]
        clip = np.zeros(n)
        clip[: audio.size] = audio
        a, b = round(span[0] * RATE), round(span[1] * RATE)
    else:
        audio = np.asarray(_recording(Path(path)), np.float64)
        lo, hi = _loud_part(audio)
        word = audio[max(0, lo - 800) : min(audio.size, hi + 800)][:n]
        start = int(rng.integers(0, n - word.size + 1))
        clip = np.zeros(n)
        clip[start : start + word.size] = word
        a, b = start + (lo - max(0, lo - 800)), min(n, start + (hi - max(0, lo - 800)))
    power = float(np.mean(clip[a:b] ** 2)) if b > a else 0.0
    if power <= 0:
        power = float(np.mean(clip**2)) or 1e-6
    noise_kind = list(NOISE)[int(rng.choice(len(NOISE), p=list(NOISE.values())))]
    snr = float(rng.uniform(*SNR_DB)) + float(rng.uniform(*WORD_GAIN_DB))
    total = n + round(LEAD_S * RATE)
    mix = np.zeros(total)
    mix[total - n :] = clip
    if noise_kind != "none":

        def talk() -> np.ndarray:
            return _TALKERS[int(rng.integers(len(_TALKERS)))].render(rng)[0]

        mix += _noise(noise_kind, total, rng, talk) * np.sqrt(power / 10 ** (snr / 10))
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix *= 0.99 / peak
    assert _SPEC is not None
    raster = np.asarray(encode(mix.astype(np.float32), RATE, _SPEC, resample=False))
    keep = raster[raster.shape[0] - round(1000 / _SPEC.dt_ms) :]
    t, u = events_of(keep, _SPEC.dt_ms / 1000.0)
    return t, u, {"noise": noise_kind, "snr_db": round(snr, 2) if noise_kind != "none" else None}


Encoded = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _batch(jobs: list[tuple[str, Any, int]], seed: int) -> list[Encoded]:
    return [_one(j, seed) for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", default="train", help="the corpus split whose clips are taken")
    ap.add_argument("--speakers", default="", help="comma-separated speakers whose recordings are added")
    ap.add_argument("--recordings", type=Path, default=Path("/work/shared/data/real-speech/labels.csv"))
    ap.add_argument("--copies", type=int, default=1, help="noisy draws of every recording")
    ap.add_argument("--frontend", default="{}", help="JSON overrides of the corpus' front-end spec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    spec = replace(FrontendSpec.from_dict(manifest["frontend"]), **json.loads(args.frontend))
    classes = [c["name"] for c in manifest["classes"]]
    jobs, talkers = _jobs(args, classes)
    if not talkers:
        raise SystemExit("no babble talkers: no _unknown_ clips, no other words by the speakers")
    print(f"{len(jobs)} clips, {len(talkers)} babble words, {spec.num_channels} channels", flush=True)
    start = time.time()
    size = 200
    parts = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    results: list[Encoded] = []
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(talkers, spec)) as pool:
        for i, done in enumerate(pool.map(_batch, parts, [args.seed] * len(parts))):
            results += done
            if i % 5 == 4 or i == len(parts) - 1:
                took = time.time() - start
                eta = took / len(results) * (len(jobs) - len(results))
                print(f"{len(results)}/{len(jobs)} ({took:.0f} s, ETA {eta:.0f} s)", flush=True)
    labels = np.array([classes.index(j[0]) for j in jobs], dtype=np.int64)
    extra = {
        "noise": np.array([r[2]["noise"] for r in results]),
        "snr_db": np.array([np.nan if r[2]["snr_db"] is None else r[2]["snr_db"] for r in results]),
        "source": np.array([j[1][0] for j in jobs]),
    }
    attrs = {
        "frontend": spec.to_dict(),
        "made_by": "benchmarks/research/noisy_clips.py",
        "corpus": str(args.corpus),
        "split": args.split,
        "speakers": args.speakers,
        "copies": args.copies,
        "seed": args.seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    times, units = [r[0] for r in results], [r[1] for r in results]
    write_shd(SpikeDataset(times, units, labels, spec.num_channels, classes, extra, attrs), args.out)
    print(f"wrote {args.out} ({len(results)} clips, {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

"""Agent streaming cost and decision latency: front-end + K staggered lanes on the fixed-point emulator.

For the reference topology (default front-end: 128 channels -> recurrent LIF hidden 256 or 512 -> 20-class
readout, 1 s windows at dt = 1 ms) and K lanes, on ONE core (the process pinned with sched_setaffinity,
BLAS threads pinned to 1), with the emulator's numba kernel (and, for comparison, its numpy fallback):

- **real-time factor**: wall time of the whole per-chunk pipeline (front-end + backend + decision) over the
  audio duration, for 20 ms (and 10 ms) chunks fed as fast as possible; the kernel is compiled (or loaded
  from numba's cache) before timing, and that time is reported;
- **decision latency after the keyword ends** = (end of the first window that contains the whole keyword
  - keyword end) [audio wait, uniform in [0, hop)] + chunk buffering (the window's last sample arrives
  with its chunk: on average chunk/2) + the measured processing latency of the chunk that ends it.

Weights are random integers in the fixed-point ranges (no trained model is needed to time the arithmetic);
the hidden spike rate they produce is reported, since the emulator's cost depends on it.

Run: .venv/bin/python benchmarks/agent_streaming.py   (writes benchmarks/results/agent_streaming.json and .md)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import json
import statistics
import time
from typing import Any, Literal

import numpy as np
from _common import RESULTS, load_average, machine, write_results

from edgekws.agent import DetectionConfig
from edgekws.agent._frontend import FrontendSpec
from edgekws.agent._sources import AudioChunk
from edgekws.agent._spotter import Spotter
from edgekws.agent.backends._emulator import EmulatorBackend
from edgekws.packaging._fixedpoint import FixedPointLayer, FixedPointNetwork

SECONDS = float(os.environ.get("BENCH_SECONDS", "60"))  # ~50 keyword ends: stable latency medians
CHUNK_MS = 20
# (hidden, lanes, chunk ms, kernel)
CASES = [(h, k, CHUNK_MS, "numba") for h in (256, 512) for k in (1, 5, 10, 20)] + [
    (256, 10, 10, "numba"),
    (256, 20, 10, "numba"),
    (256, 10, CHUNK_MS, "numpy"),
    (256, 20, CHUNK_MS, "numpy"),
]


def network(channels: int, hidden: int, outputs: int = 20, seed: int = 0) -> FixedPointNetwork:
    rng = np.random.default_rng(seed)
    return FixedPointNetwork(
        (
            FixedPointLayer(
                rng.integers(-40, 90, size=(hidden, channels)),
                rng.integers(-30, 30, size=(hidden, hidden)),
                i_decay=1138,  # tau_syn 5 ms at dt 1 ms (decay_12bit)
                v_decay=202,  # tau_mem 20 ms
                v_th_mant=12000,  # gives ~20 Hz hidden rates on this input, as trained SNNs have
                weight_scale=1 / 64,
            ),
            FixedPointLayer(
                rng.integers(-60, 60, size=(outputs, hidden)), i_decay=1138, v_decay=202, weight_scale=1 / 16
            ),
        )
    )


def speechlike(seconds: float, rate: int = 16000, seed: int = 1) -> tuple[np.ndarray, list[float]]:
    """Word-like bursts (0.4-0.6 s, tone + noise) separated by quiet gaps, and the word end times."""
    rng = np.random.default_rng(seed)
    audio = 0.003 * rng.standard_normal(int(seconds * rate))
    ends, t = [], 0.3
    while t + 0.7 < seconds:
        dur = rng.uniform(0.4, 0.6)
        n = int(dur * rate)
        i = int(t * rate)
        tt = np.arange(n) / rate
        f = rng.uniform(300, 900)
        word = 0.2 * np.sin(2 * np.pi * f * tt) * np.sin(np.pi * tt / dur) + 0.05 * rng.standard_normal(n)
        audio[i : i + n] += word
        ends.append(t + dur)
        t += dur + rng.uniform(0.5, 0.9)
    return audio.astype(np.float32), ends


def bench(
    hidden: int,
    lanes: int,
    audio: np.ndarray,
    ends: list[float],
    chunk_ms: int = CHUNK_MS,
    kernel: Literal["numba", "numpy"] = "numba",
) -> dict:
    spec = FrontendSpec()
    backend = EmulatorBackend(network(spec.num_channels, hidden), kernel=kernel)
    compile_s = backend.compile_seconds()  # keep compilation (or the cache load) out of the timing
    labels = [f"class{i}" for i in range(20)]
    cfg = DetectionConfig(
        lanes=lanes, threshold=1e-9, smoothing=1, refractory_ms=0.0, min_input_rate_hz=0.0, ignore_labels=()
    )
    sp = Spotter(spec, backend, labels, window_steps=1000, config=cfg)
    window_ends: list[float] = []
    chunk_latency_by_end: dict[float, float] = {}
    sp.on_window = lambda w: window_ends.append(w.end_step / 1000.0)
    n = 16000 * chunk_ms // 1000
    per_chunk = []
    t_all = time.perf_counter()
    for i in range(0, audio.size, n):
        before = len(window_ends)
        chunk = AudioChunk(audio[i : i + n], 16000, i / 16000, time.monotonic())
        t0 = time.perf_counter()
        sp.process(chunk)
        dt = time.perf_counter() - t0
        per_chunk.append(dt)
        for e in window_ends[before:]:
            chunk_latency_by_end[e] = dt
    wall = time.perf_counter() - t_all
    # decision latency per keyword: first scored window end >= keyword end (the window then holds the word
    # if it is shorter than 1 s - hop), + half a chunk of buffering on average, + that chunk's processing.
    latencies = []
    for e in ends:
        if e < 1.0:
            continue  # no complete 1 s window exists yet at the very start of the stream
        later = [w for w in window_ends if w >= e - 1e-9]
        if later:
            w = later[0]
            latencies.append((w - e) + chunk_ms / 2000.0 + chunk_latency_by_end[w])
    duration = audio.size / 16000
    return {
        "hidden": hidden,
        "lanes": lanes,
        "chunk_ms": chunk_ms,
        "kernel": kernel,
        "compile_or_cache_load_s": compile_s,
        "hop_ms": 1000 / lanes,
        "audio_s": duration,
        "rtf": wall / duration,
        "chunk_ms_p50": 1e3 * statistics.median(per_chunk),
        "chunk_ms_p99": 1e3 * float(np.percentile(per_chunk, 99)),
        "backend_share": sp.backend_seconds / wall,
        "lanes_stepped_share": sp._lanes.lane_steps / (lanes * sp.step),  # idle lanes are skipped in silence
        "decision_latency_ms_p50": 1e3 * statistics.median(latencies) if latencies else None,
        "decision_latency_ms_p90": 1e3 * float(np.percentile(latencies, 90)) if latencies else None,
        "keywords": len(latencies),
        "hidden_rate_hz": hidden_rate(hidden, audio),
    }


def hidden_rate(hidden: int, audio: np.ndarray) -> float:
    """Mean hidden spike rate (Hz) of the benchmark network on the benchmark audio, one continuous run."""
    from edgekws.agent._frontend import Frontend

    spikes = Frontend(FrontendSpec()).process(audio)
    traces = EmulatorBackend(network(FrontendSpec().num_channels, hidden)).run_traces(spikes[None])
    return float(traces.spikes[0].mean() * 1000)


def main() -> None:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    load_start = load_average()
    audio, ends = speechlike(SECONDS)
    spec = FrontendSpec()
    from edgekws.agent._frontend import Frontend

    t0 = time.perf_counter()
    spikes = Frontend(spec).process(audio)
    fe_rtf = (time.perf_counter() - t0) / (audio.size / 16000)
    rows = []
    for hidden, lanes, chunk_ms, kernel in CASES:
        r = bench(hidden, lanes, audio, ends, chunk_ms, kernel)  # type: ignore[arg-type]
        rows.append(r)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    doc: dict[str, Any] = {
        "machine": machine(blas_threads=1, pinned_core=core),
        "audio_s": audio.size / 16000,
        "load_average_1min_at_start": load_start,
        "load_average_1min_at_end": load_average(),
        "input_rate_hz": float(spikes.mean() * 1000),
        "frontend_only_rtf": fe_rtf,
        "results": rows,
    }
    lines = [
        "# agent_streaming: front-end + K staggered lanes on the emulator, one core",
        "",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores (process pinned to core {core}, "
        "BLAS 1 thread), "
        f"{doc['machine']['platform']}. Audio: {doc['audio_s']:.1f} s of word-like bursts, "
        f"{len(ends)} 'keywords'; input rate {doc['input_rate_hz']:.1f} Hz/channel; front-end alone RTF "
        f"{fe_rtf:.4f}.",
        "",
        "| kernel | chunk ms | hidden | rate Hz | lanes | hop ms | RTF | chunk p50 ms | chunk p99 ms "
        "| backend share | lanes stepped | latency p50 ms | latency p90 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kernel']} | {r['chunk_ms']} | {r['hidden']} | {r['hidden_rate_hz']:.1f} | {r['lanes']} | "
            f"{r['hop_ms']:.0f} | "
            f"{r['rtf']:.4f} | "
            f"{r['chunk_ms_p50']:.2f} | "
            f"{r['chunk_ms_p99']:.2f} | {r['backend_share']:.2f} | "
            f"{r['lanes_stepped_share']:.2f} | {r['decision_latency_ms_p50']:.1f} | "
            f"{r['decision_latency_ms_p90']:.1f} |"
        )
    compile_s = max(r["compile_or_cache_load_s"] for r in rows if r["kernel"] == "numba")
    lines += [
        "",
        f"1-min load average at start / end: {load_start:.1f} / {doc['load_average_1min_at_end']:.1f} "
        "(shared 2-core box: "
        "wall times inflated). numba kernel compile or cache load before timing: at most "
        f"{compile_s:.2f} s per backend.",
    ]
    lines += [
        "",
        "Reproduce: `.venv/bin/python benchmarks/agent_streaming.py` (BENCH_SECONDS=60 by default).",
    ]
    write_results(RESULTS / "agent_streaming.json", doc, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

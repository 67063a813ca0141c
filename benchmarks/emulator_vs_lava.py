"""Fixed-point emulator vs Lava fixed_pt, per sample, on C → 256 recurrent → 20 at T = 1000.

Run in the Lava environment (Lava 0.10 needs Python 3.10):

    .venv-lava/bin/python benchmarks/emulator_vs_lava.py            # full run, writes results
    .venv-lava/bin/python benchmarks/emulator_vs_lava.py --quick    # smoke run, nothing written

The emulator is pinned to one CPU core with one BLAS thread; Lava runs unpinned (its own processes).
Both run the same NetX file on the same random 5%-rate spikes, and the readouts are checked to be equal.
Both emulator kernels are timed (numba, the default when installed, and the numpy fallback), and the
numba kernel's cold compile time is measured in a subprocess with an empty numba cache.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, load_average, machine, write_results

from edgekws.agent.backends import EmulatorBackend, LavaBackend
from edgekws.packaging import FixedPointLayer, FixedPointNetwork, write_netx


def make_net(channels: int, hidden: int, outputs: int = 20, seed: int = 0) -> FixedPointNetwork:
    rng = np.random.default_rng(seed)
    return FixedPointNetwork(
        (
            FixedPointLayer(
                # input weights scaled with the fan-in so both channel counts drive the layer alike
                weight=np.round(rng.integers(-48, 80, (hidden, channels)) * min(1.0, 128 / channels)).astype(
                    int
                ),
                weight_rec=rng.integers(-64, 48, (hidden, hidden)),
                i_decay=742,
                v_decay=200,
                v_th_mant=2048,
                weight_scale=2.0**-11,
            ),
            FixedPointLayer(weight=rng.integers(-128, 128, (outputs, hidden)), i_decay=742, v_decay=200),
        )
    )


def spikes(batch: int, steps: int, channels: int, rate: float = 0.05, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((batch, steps, channels)) < rate).astype(np.uint8)


def pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return str(numba.__version__)


KERNELS = ("numba", "numpy")
LAVA_QUIET_MS_PER_STEP = 1.42  # reference §2.3: Lava fixed_pt on a quiet machine, 700 -> 256 -> 20

_COMPILE_PROBE = """
import json, time
t0 = time.perf_counter()
from edgekws.agent.backends import EmulatorBackend
from edgekws.packaging import FixedPointLayer, FixedPointNetwork
import numpy as np
t1 = time.perf_counter()
net = FixedPointNetwork((FixedPointLayer(weight=np.ones((4, 3), int), weight_rec=np.ones((4, 4), int)),
                         FixedPointLayer(weight=np.ones((2, 4), int))))
em = EmulatorBackend(net, kernel="numba")
print(json.dumps({"import_s": t1 - t0, "compile_s": em.compile_seconds()}))
"""


def compile_times() -> dict[str, float]:
    """Cold compile (empty cache dir) and warm cache load of the numba kernel, each in a fresh process."""
    out: dict[str, float] = {}
    cache = tempfile.mkdtemp(prefix="edgekws-numba-cache-")
    for label in ("cold", "cached"):
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = subprocess.run(
            [sys.executable, "-c", _COMPILE_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )
        probe = json.loads(res.stdout.strip().splitlines()[-1])
        out[f"{label}_compile_s"] = round(probe["compile_s"], 3)
        out[f"{label}_import_s"] = round(probe["import_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run; results are not written")
    args = parser.parse_args()
    steps = 200 if args.quick else 1000
    batch = 8 if args.quick else 64
    try:
        from edgekws.agent import FrontendSpec

        channel_counts = sorted({FrontendSpec().num_channels, 700})
    except ImportError:
        channel_counts = [700]
    all_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    load_start = load_average()
    compile_info = compile_times()
    print(json.dumps(compile_info))
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="edgekws-bench-"))
    for channels in channel_counts:
        net = make_net(channels, 256)
        path = write_netx(net, tmp / f"net{channels}.net")
        x = spikes(batch, steps, channels)
        # Lava: 2 samples, unpinned; the first includes compilation
        if all_cores is not None:
            os.sched_setaffinity(0, all_cores)
        lava = LavaBackend(path)
        t0 = time.perf_counter()
        lava_out0 = lava.run(x[:1])
        t1 = time.perf_counter()
        lava_out1 = lava.run(x[1:2])
        t2 = time.perf_counter()
        lava.close()
        core = pin_one_core()
        lava_per_sample = t2 - t1
        for kernel in KERNELS:
            emulator = EmulatorBackend(net, kernel=kernel)
            emulator.run(x[:2])  # warm-up (and compilation)
            reps = 3
            batched = []
            for _ in range(reps):
                t3 = time.perf_counter()
                em_out = emulator.run(x)
                batched.append((time.perf_counter() - t3) / batch)
            single = []
            for b in range(min(batch, 16)):
                s0 = time.perf_counter()
                emulator.run(x[b : b + 1])
                single.append(time.perf_counter() - s0)
            assert np.array_equal(em_out[:1], lava_out0) and np.array_equal(em_out[1:2], lava_out1), (
                "readouts differ"
            )
            hidden_rate = float(emulator.run_traces(x[:2]).spikes[0].mean())
            em_batched = float(np.median(batched))
            rows.append(
                {
                    "channels": channels,
                    "hidden": 256,
                    "outputs": 20,
                    "steps": steps,
                    "input_rate": 0.05,
                    "hidden_rate": round(hidden_rate, 4),
                    "lava_first_sample_s_incl_compile": round(t1 - t0, 3),
                    "lava_per_sample_s": round(lava_per_sample, 3),
                    "lava_ms_per_step": round(1000 * lava_per_sample / steps, 3),
                    "kernel": kernel,
                    "emulator_batch": batch,
                    "emulator_batched_per_sample_ms": round(1000 * em_batched, 3),
                    "emulator_batched_per_sample_ms_min": round(1000 * min(batched), 3),
                    "emulator_batch1_median_ms": round(1000 * float(np.median(single)), 3),
                    "speedup_batched": round(lava_per_sample / em_batched, 1),
                    "speedup_batch1": round(lava_per_sample / float(np.median(single)), 1),
                    "speedup_batched_vs_quiet_lava": round(
                        LAVA_QUIET_MS_PER_STEP * steps / 1000 / em_batched, 1
                    ),
                    "readouts_equal": True,
                }
            )
            print(json.dumps(rows[-1]))
    # batch-1 latency of C -> 512 recurrent -> 20 on one core
    core = pin_one_core()
    latency = []
    for channels, kernel in [(c, k) for c in channel_counts for k in KERNELS]:
        net = make_net(channels, 512, seed=2)
        emulator = EmulatorBackend(net, kernel=kernel)
        x = spikes(20, steps, channels, seed=3)
        emulator.run(x[:1])
        times = []
        for b in range(20):
            s0 = time.perf_counter()
            emulator.run(x[b : b + 1])
            times.append(time.perf_counter() - s0)
        latency.append(
            {
                "kernel": kernel,
                "channels": channels,
                "hidden": 512,
                "steps": steps,
                "hidden_rate": round(float(emulator.run_traces(x[:1]).spikes[0].mean()), 4),
                "median_ms": round(1000 * float(np.median(times)), 3),
                "p90_ms": round(1000 * float(np.percentile(times, 90)), 3),
                "min_ms": round(1000 * min(times), 3),
            }
        )
        print(json.dumps(latency[-1]))
    result: dict[str, Any] = {
        "benchmark": "emulator_vs_lava",
        "command": ".venv-lava/bin/python benchmarks/emulator_vs_lava.py",
        "machine": machine(emulator_pinned_core=core, numba=numba_version()),
        "load_average_1min_at_start": load_start,
        "load_average_1min_at_end": load_average(),
        "numba_kernel_compile": compile_info,
        "lava_vs_emulator_256": rows,
        "emulator_batch1_latency_512": latency,
    }
    if args.quick:
        return
    m = result["machine"]
    lines = [
        "# Emulator vs Lava fixed_pt",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}. Emulator pinned to one core with one BLAS thread; Lava "
        f"unpinned. 1-min load average at start / end: {result['load_average_1min_at_start']} / "
        f"{result['load_average_1min_at_end']} (shared box). Random 5%-rate input, T = {steps}. "
        f"Command: `{result['command']}`.",
        "",
        "| C → H → O | kernel | hidden rate | Lava s/sample | Lava ms/step | emulator ms/sample (batch "
        f"{batch}) | emulator batch-1 ms | speed-up batched | speed-up batch-1 | batched vs quiet Lava "
        f"({LAVA_QUIET_MS_PER_STEP} ms/step) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r['channels']} → 256 → 20",
            r["kernel"],
            r["hidden_rate"],
            r["lava_per_sample_s"],
            r["lava_ms_per_step"],
            r["emulator_batched_per_sample_ms"],
            r["emulator_batch1_median_ms"],
            f"{r['speedup_batched']}×",
            f"{r['speedup_batch1']}×",
            f"{r['speedup_batched_vs_quiet_lava']}×",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "Batch-1 latency, C → 512 recurrent → 20, one core:",
        "",
        "| C | kernel | hidden rate | median ms | p90 ms | min ms |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for r in latency:
        lines.append(
            f"| {r['channels']} | {r['kernel']} | {r['hidden_rate']} | {r['median_ms']} | {r['p90_ms']} | "
            f"{r['min_ms']} |"
        )
    c = compile_info
    lines += [
        "",
        f"numba kernel, fresh process: cold compile {c['cold_compile_s']} s (empty cache), "
        f"{c['cached_compile_s']} s from numba's on-disk cache; `import edgekws.agent.backends` "
        f"{c['cold_import_s']} / {c['cached_import_s']} s.",
    ]
    write_results(RESULTS / "emulator_vs_lava.json", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

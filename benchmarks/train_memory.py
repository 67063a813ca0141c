"""Eventprop vs BPTT training cost (the seed paper's Fig. 3 experiment), side by side in one run.

For batch 32, T in {200, 500, 1000} steps and hidden in {256, 1024} (one recurrent layer, input channels of
the default front-end, ~5% random input spikes, 20 classes), each gradient method's full training step
(loss, gradient, Adam update: the step ``edgekws train`` runs) is compiled and measured -- Eventprop with
both kernels (``eventprop``: the dense JAX kernel; ``eventprop-sparse``: the event-driven CPU kernel):

- ``compiled_bytes``: XLA's ``memory_analysis()`` of the compiled step, temp + output bytes (what the step
  allocates beyond its arguments; arguments are reported separately). For ``eventprop-sparse`` the same for
  its compiled optimizer update plus ``kernel_bytes``, the peak of every buffer the kernel allocates
  (``tracemalloc``: checkpoints, spike records, gradient buffers), beyond its arguments (events, params);
- ``rss_delta_bytes``: peak resident memory of a fresh subprocess minus its peak before compiling
  (includes the compiler's own memory, so it is an upper bound);
- ``step_seconds``/``step_seconds_min``: median and fastest wall time of a few steps after compilation;
  ``epoch_seconds``/``epoch_seconds_min``: those times 3000/32 steps (an epoch of 3000 samples).

Usage: .venv/bin/python benchmarks/train_memory.py [--steps 5] [--quick]
Writes benchmarks/results/train_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, write_results

BATCH = 32
EPOCH_SAMPLES = 3000
SPIKE_P = 0.05


def _input_channels() -> int:
    try:
        from edgekws.agent import FrontendSpec

        return int(FrontendSpec().num_channels)
    except ImportError:
        return 128


def _measure(method: str, steps_t: int, hidden: int, repeats: int) -> dict[str, object]:
    """Run inside a fresh process: compile and time one configuration."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from edgekws.toolkit.train import TrainConfig
    from edgekws.toolkit.train._model import init_params
    from edgekws.toolkit.train._sparse import SpikeEvents
    from edgekws.toolkit.train._step import optimizer, place, train_step

    channels = _input_channels()
    kernel = "sparse" if method == "eventprop-sparse" else "dense"
    config = TrainConfig(hidden=(hidden,), method=method.split("-")[0], ease_in=False)
    spec = config.network_spec(channels, 20, 1.0, steps_t)
    params = init_params(spec, jax.random.PRNGKey(0))
    opt_state = optimizer(config.learning_rate, config.ease_in).init(params)
    rng = np.random.default_rng(0)
    dense = rng.random((BATCH, steps_t, channels)) < SPIKE_P
    labels = jnp.asarray(rng.integers(0, 20, BATCH), jnp.int32)
    spikes: Any = SpikeEvents.from_dense(dense) if kernel == "sparse" else jnp.asarray(dense, jnp.float32)
    jax.block_until_ready(params)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step = train_step(spec, config, place("cpu", kernel, config.method))
    t0 = time.perf_counter()
    if kernel == "sparse":
        compiled = step.jitted.lower(params, opt_state, params).compile()  # the optimizer update
        run = step
    else:
        compiled = step.jitted.lower(params, opt_state, spikes, labels).compile()

        def run(p: Any, o: Any, batch: Any) -> Any:
            return compiled(p, o, *batch)

    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times, kernel_bytes = [], 0
    for i in range(repeats):
        if kernel == "sparse" and i == repeats - 1:  # the kernel's own buffers, on a warm step
            tracemalloc.start()
        t0 = time.perf_counter()
        params, opt_state, loss, _, _ = jax.block_until_ready(run(params, opt_state, (spikes, labels)))
        times.append(time.perf_counter() - t0)
        if tracemalloc.is_tracing():
            kernel_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step_s = statistics.median(times)
    return {
        "method": method,
        "steps": steps_t,
        "hidden": hidden,
        "channels": channels,
        "batch": BATCH,
        "compiled_bytes": int(mem.temp_size_in_bytes + mem.output_size_in_bytes) + kernel_bytes,
        "kernel_bytes": kernel_bytes,
        "temp_bytes": int(mem.temp_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "rss_delta_bytes": int(rss_after - rss_before),
        "compile_seconds": round(compile_s, 3),
        "step_seconds": step_s,
        "step_seconds_min": min(times),
        "step_seconds_all": times,
        "epoch_seconds": step_s * EPOCH_SAMPLES / BATCH,
        "epoch_seconds_min": min(times) * EPOCH_SAMPLES / BATCH,
        "loss": float(loss),
    }


def _run_child(method: str, steps_t: int, hidden: int, repeats: int, timeout: float) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", method, str(steps_t), str(hidden), str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {
            "method": method,
            "steps": steps_t,
            "hidden": hidden,
            "error": f"timed out after {timeout:.0f} s",
        }
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"method": method, "steps": steps_t, "hidden": hidden, "error": last[:300]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _machine() -> dict[str, object]:
    import jax

    return machine(
        jax=jax.__version__, jax_backend=jax.default_backend(), devices=[str(d) for d in jax.devices()]
    )


def _code_state() -> dict[str, str]:
    """Git commit and the sha256 of the two gradient implementations measured."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    state = {}
    for name in ("toolkit/train/_eventprop.py", "toolkit/train/_sparse_kernel.py", "toolkit/train/_bptt.py"):
        state[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()[:16]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        state["git_head"] = head.stdout.strip()
    except OSError:
        pass
    return state


def _ratio(a: object, b: object) -> float | None:
    return float(a) / float(b) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def _summary(rows: list[dict[str, object]], grid_t: list[int], grid_h: list[int]) -> dict[str, object]:
    def get(method: str, t: int, h: int) -> dict[str, object]:
        return next((r for r in rows if (r["method"], r["steps"], r["hidden"]) == (method, t, h)), {})

    out: dict[str, object] = {}
    t_lo, t_hi = min(grid_t), max(grid_t)
    for h in grid_h:
        bp_hi = get("bptt", t_hi, h)
        for method in ("eventprop", "eventprop-sparse"):
            ep_hi, ep_lo = get(method, t_hi, h), get(method, t_lo, h)
            mem_ratio = _ratio(ep_hi.get("compiled_bytes"), bp_hi.get("compiled_bytes"))
            growth = _ratio(ep_hi.get("compiled_bytes"), ep_lo.get("compiled_bytes"))
            # Fastest step of each: the least disturbed by other processes on a shared machine.
            time_ratio = _ratio(ep_hi.get("epoch_seconds_min"), bp_hi.get("epoch_seconds_min"))
            out[f"{method}_hidden_{h}"] = {
                f"over_bptt_memory_T{t_hi}": mem_ratio,
                "target_memory_ratio_at_most": 1 / 3,
                "memory_target_met": None if mem_ratio is None else mem_ratio <= 1 / 3,
                f"memory_growth_T{t_lo}_to_T{t_hi}": growth,
                "target_growth_at_most": 1.5,
                "growth_target_met": None if growth is None else growth <= 1.5,
                f"over_bptt_epoch_time_T{t_hi}": time_ratio,
                "time_target_met": None if time_ratio is None else time_ratio <= 1.0,
            }
    return out


def _markdown(result: dict[str, object]) -> str:
    m = result["machine"]
    assert isinstance(m, dict)
    lines = [
        "# Training memory and time: Eventprop vs BPTT",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, JAX {m['jax']} ({m['jax_backend']}).",
        f"Command: `{result['command']}`. Batch {BATCH}, one recurrent hidden layer, "
        f"{result['channels']} input channels with {SPIKE_P:.0%} random spikes, 20 classes; "
        "the full training step (loss, gradient, Adam); `eventprop` is the dense kernel, "
        "`eventprop-sparse` the event-driven CPU kernel. Memory = XLA compiled temp + output bytes (for the "
        "sparse kernel: of its optimizer update, plus the peak of the kernel's own buffers by tracemalloc); "
        "RSS = peak-RSS growth of a fresh process over compile + run (upper bound); "
        f"time = median of {result['repeats']} steps after compile; "
        f"epoch = {EPOCH_SAMPLES} samples.",
        "",
        "| method | hidden | T | compiled MiB | RSS delta MiB | step s median | step s min | epoch s (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    assert isinstance(rows, list)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['hidden']} | {r['steps']} | | | | | {r['error']} |")
            continue
        lines.append(
            f"| {r['method']} | {r['hidden']} | {r['steps']} | {r['compiled_bytes'] / 2**20:.1f} | "
            f"{r['rss_delta_bytes'] / 2**20:.0f} | {r['step_seconds']:.3f} | {r['step_seconds_min']:.3f} | "
            f"{r['epoch_seconds_min']:.0f} |"
        )
    lines += [
        "",
        f"Load average while running (1, 5, 15 min): {result['load_average']}; on a shared machine the "
        "times are noisy, the compiled memory is exact.",
        "",
        "Targets (Eventprop vs BPTT; time ratio from the fastest step of each):",
        "",
    ]
    summary = result["summary"]
    assert isinstance(summary, dict)
    for key, val in summary.items():
        parts = ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in val.items())
        lines.append(f"- {key}: {parts}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--quick", action="store_true", help="T in {200, 500} and hidden 256 only")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, t, h, repeats = args.child
        print(json.dumps(_measure(method, int(t), int(h), int(repeats))))
        return
    grid_t = [200, 500] if args.quick else [200, 500, 1000]
    grid_h = [256] if args.quick else [256, 1024]
    rows = []
    for h in grid_h:
        for t in grid_t:
            for method in ("eventprop-sparse", "eventprop", "bptt"):
                row = _run_child(method, t, h, args.steps, args.timeout)
                rows.append(row)
                shown = {k: row.get(k) for k in ("compiled_bytes", "step_seconds", "error") if k in row}
                print(f"{method:9s} H={h:5d} T={t:5d} {shown}", flush=True)
    result = {
        "benchmark": "train_memory",
        "command": "python benchmarks/train_memory.py " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "channels": _input_channels(),
        "repeats": args.steps,
        "code": _code_state(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "summary": _summary(rows, grid_t, grid_h),
    }
    write_results(RESULTS / "train_memory.json", result, _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()

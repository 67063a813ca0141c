"""Training-step throughput at the SHD setting, side by side with Spyx's BPTT: one run, interleaved, one core.

Network and data of the seed paper's Fig. 3 comparison (reference/seed-paper.md §3): 700 input channels ->
256 recurrent current-based LIF -> 20 leaky readout, T = 1000 steps, batch 32; inputs are random 0/1 with
SHD's density (1.2 % of (step, channel) bins active) and random labels. Contestants, each a long-lived worker
process pinned with ``taskset`` to the same core and reading the same batches from one file:

- ``eventprop-sparse``: edgekws Eventprop, the event-driven CPU kernel (numba) -- what `edgekws train` runs
  on a CPU;
- ``eventprop-dense``: edgekws Eventprop, the dense JAX/XLA reference kernel;
- ``bptt``: edgekws' surrogate-gradient BPTT baseline (dense JAX);
- ``spyx``: Spyx's BPTT, run in its own environment (``.venv-spyx``, ``make spyx-venv``) with the same JAX
  version: ``spyx.nn.Sequential(nnx.Linear(700, 256), spyx.nn.RCuBaLIF(256), nnx.Linear(256, 20),
  spyx.nn.LI(20))`` driven by ``spyx.nn.run``, loss ``spyx.fn.integral_crossentropy``, Adam through
  ``spyx.optimize.make_train_step`` (Spyx's own training step; decays set to ours, no biases).

Each timed step is one full training step (forward, gradient, Adam update) on a prepared batch, until its
results are ready. After every worker compiled and ran warm-up steps, ``--rounds`` rounds follow; in each,
every worker times ``--steps`` steps in turn (the order rotates every round), so slow phases of a shared
machine hit every contestant alike. Reported: the median and fastest step per contestant and throughput ratios
against Spyx (median over median).

Usage: ``make spyx-venv`` once, then ``.venv/bin/python benchmarks/train_spyx.py [--core 0] [--rounds 7]``.
Writes benchmarks/results/train_spyx.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import SHD, SHD_DENSITY

ROOT = Path(__file__).resolve().parent.parent
SPYX_PYTHON = ROOT / ".venv-spyx" / "bin" / "python"
BATCH, STEPS, CHANNELS, HIDDEN, CLASSES = (
    SHD[k] for k in ("batch", "steps", "channels", "hidden", "classes")
)
DENSITY = SHD_DENSITY
N_BATCHES = 4  # distinct batches, cycled
CONTESTANTS = ("eventprop-sparse", "eventprop-dense", "bptt", "spyx")


# ------------------------------------------------------------------------------------------------ workers


def _load_batches(path: str) -> tuple[Any, Any]:
    import numpy as np

    with np.load(path) as z:
        bits, labels = z["bits"], z["labels"]
    x = np.unpackbits(bits, axis=-1)[..., :CHANNELS].astype(np.float32)  # (N, B, T, C)
    return x, labels


def _edgekws_worker(name: str, path: str) -> Any:
    """The prepared step of an edgekws contestant: ``run(i)`` times one step on batch ``i``."""
    import jax
    import numpy as np

    from edgekws.toolkit.train import TrainConfig, init_params
    from edgekws.toolkit.train._sparse import SpikeEvents
    from edgekws.toolkit.train._step import optimizer, place, train_step

    method, kernel = {
        "eventprop-sparse": ("eventprop", "sparse"),
        "eventprop-dense": ("eventprop", "dense"),
        "bptt": ("bptt", "dense"),
    }[name]
    config = TrainConfig(hidden=(HIDDEN,), method=method, ease_in=False, lr_decay="none")
    spec = config.network_spec(CHANNELS, CLASSES, 1.0, STEPS)
    step = train_step(spec, config, place("cpu", kernel, method, BATCH))
    state = {"params": step.put(init_params(spec, jax.random.PRNGKey(0)))}
    state["opt"] = step.put(optimizer(config.learning_rate, False).init(state["params"]))
    x, labels = _load_batches(path)
    if kernel == "sparse":
        batches = [(SpikeEvents.from_dense(x[i]), np.asarray(labels[i], np.int32)) for i in range(len(x))]
    else:
        batches = [
            (jax.device_put(x[i]), jax.device_put(np.asarray(labels[i], np.int32))) for i in range(len(x))
        ]
    spikes: list[float] = []

    def run(i: int) -> float:
        t0 = time.perf_counter()
        out = jax.block_until_ready(step(state["params"], state["opt"], batches[i % len(batches)]))
        elapsed = time.perf_counter() - t0
        state["params"], state["opt"] = out[0], out[1]
        spikes.append(float(sum(np.sum(c) for c in out[4])) / BATCH / HIDDEN)
        return elapsed

    info = {"kernel": kernel, "method": method, "jax": jax.__version__}
    return run, info, spikes


def _spyx_worker(path: str, alpha: float, beta: float) -> Any:
    """Spyx's BPTT training step on the same network (see the module docstring)."""
    import jax
    import numpy as np
    import optax
    import spyx
    from flax import nnx

    model = spyx.nn.Sequential(
        nnx.Linear(CHANNELS, HIDDEN, use_bias=False, rngs=nnx.Rngs(0)),
        spyx.nn.RCuBaLIF((HIDDEN,), alpha=alpha, beta=beta, rngs=nnx.Rngs(1)),
        nnx.Linear(HIDDEN, CLASSES, use_bias=False, rngs=nnx.Rngs(2)),
        spyx.nn.LI((CLASSES,), beta=beta, rngs=nnx.Rngs(3)),
    )
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    loss_fn = spyx.fn.integral_crossentropy()

    def loss(m: Any, x: Any, y: Any) -> Any:
        traces, _ = spyx.nn.run(m, x, batch_major=True)
        return loss_fn(traces, y)

    step = spyx.optimize.make_train_step(loss)
    x, labels = _load_batches(path)
    batches = [(jax.device_put(x[i]), jax.device_put(np.asarray(labels[i], np.int32))) for i in range(len(x))]

    def run(i: int) -> float:
        xb, yb = batches[i % len(batches)]
        t0 = time.perf_counter()
        jax.block_until_ready(step(model, opt, xb, yb))
        return time.perf_counter() - t0

    from importlib.metadata import version

    return run, {"spyx": version("spyx"), "flax": version("flax"), "jax": jax.__version__}, []


def _serve(args: argparse.Namespace) -> None:
    """Worker loop: build, warm up, then answer ``run K`` with K step times (JSON) until ``quit``."""
    import resource

    t0 = time.perf_counter()
    if args.worker == "spyx":
        run, info, spikes = _spyx_worker(args.data, args.alpha, args.beta)
    else:
        run, info, spikes = _edgekws_worker(args.worker, args.data)
    warm = [run(i) for i in range(2)]  # compiles on the first
    info.update(setup_seconds=round(time.perf_counter() - t0, 2), warmup_seconds=warm)
    print(json.dumps(info), flush=True)
    i = 2
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times = [run(i + k) for k in range(int(cmd[1]))]
        i += len(times)
        print(json.dumps(times), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    activity = {"hidden_spikes_per_neuron": statistics.median(spikes) if spikes else None}
    if spikes:
        activity["hidden_spikes_per_neuron_range"] = [min(spikes), max(spikes)]
    print(json.dumps({"peak_rss_bytes": rss, **activity}))


# ------------------------------------------------------------------------------------------------ driver


class _Worker:
    def __init__(self, name: str, python: Path, core: str, data: str, alpha: float, beta: float) -> None:
        self.name = name
        cmd = ["taskset", "-c", core, str(python), __file__, "--worker", name, "--data", data]
        cmd += ["--alpha", repr(alpha), "--beta", repr(beta)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT / "benchmarks"
        )
        self.info: dict[str, Any] = {}
        self.times: list[float] = []

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with status {self.proc.wait()}")
        return json.loads(line)

    def ready(self) -> None:
        self.info = self._read()

    def run(self, steps: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        self.times += self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.info.update(self._read())
        self.proc.wait(timeout=60)


def _markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Training step at the SHD setting: edgekws Eventprop kernels vs Spyx's BPTT",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (all contestants pinned to core {doc['core']}), "
        f"{m['platform']}; load average before/after {doc['load_before']} / {doc['load_after']} (shared "
        "machine: the contestants ran interleaved, so load hits them alike).",
        f"Command: `{doc['command']}`.",
        f"Setting: {CHANNELS} → {HIDDEN} recurrent → {CLASSES}, T = {STEPS}, batch {BATCH}, random 0/1 "
        f"inputs at {DENSITY:.1%} density, random labels; full training step (forward, gradient, Adam). "
        f"{doc['rounds']} rounds × {doc['steps']} steps per contestant after warm-up.",
        "",
        "| contestant | median step (s) | fastest (s) | steps/s | throughput vs Spyx | peak RSS (MiB) "
        "| versions |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["results"].items():
        ratio = r.get("throughput_vs_spyx")
        versions = ", ".join(f"{k} {v}" for k, v in r["info"].items() if k in ("jax", "spyx", "flax"))
        lines.append(
            f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {1 / r['median_s']:.2f} | "
            f"{'' if ratio is None else f'{ratio:.1f}×'} | {r['info']['peak_rss_bytes'] / 2**20:.0f} | "
            f"{versions} |"
        )
    info = doc["results"]["eventprop-sparse"]["info"]
    rate, (lo, hi) = info.get("hidden_spikes_per_neuron"), info.get("hidden_spikes_per_neuron_range", (0, 0))
    lines += [
        "",
        f"Hidden activity during the sparse kernel's timed steps (Adam on random labels lowers it from the "
        f"initial weights' level): median {rate:.1f}, range {lo:.1f}–{hi:.1f} spikes per neuron per sample "
        "(the paper's regulariser aims at 14; the sparse kernel's cost grows with spikes and input events)."
        if rate
        else "",
        "",
        f"Target (issue 14): ≥ 5× Spyx's step throughput on one CPU core → "
        f"{'met' if doc['target_met'] else 'not met'} "
        f"({doc['results']['eventprop-sparse'].get('throughput_vs_spyx', 0):.1f}×).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--core", default="0", help="CPU core every worker is pinned to (taskset -c).")
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved rounds.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per contestant per round.")
    parser.add_argument("--without-spyx", action="store_true", help="Time the edgekws contestants only.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--alpha", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--beta", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _serve(args)
        return

    import numpy as np
    from _common import RESULTS, load_average, machine, write_results

    from edgekws.toolkit.train import TrainConfig

    names = [c for c in CONTESTANTS if not (args.without_spyx and c == "spyx")]
    if "spyx" in names and not SPYX_PYTHON.is_file():
        sys.exit(f"{SPYX_PYTHON} not found: run `make spyx-venv` first (or pass --without-spyx)")
    spec = TrainConfig(hidden=(HIDDEN,)).network_spec(CHANNELS, CLASSES, 1.0, STEPS)
    rng = np.random.default_rng(0)
    x = rng.random((N_BATCHES, BATCH, STEPS, CHANNELS)) < DENSITY
    labels = rng.integers(0, CLASSES, (N_BATCHES, BATCH))
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "batches.npz")
        np.savez(data, bits=np.packbits(x, axis=-1), labels=labels)
        del x
        workers = []
        for name in names:  # one at a time: compiling does not disturb the others' warm-up
            python = SPYX_PYTHON if name == "spyx" else Path(sys.executable)
            w = _Worker(name, python, args.core, data, spec.alpha_syn, spec.alpha_mem)
            w.ready()
            print(f"{name}: ready {w.info}", flush=True)
            workers.append(w)
        for r in range(args.rounds):
            for k in range(len(workers)):
                w = workers[(r + k) % len(workers)]
                w.run(args.steps)
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{w.name} {w.times[-1]:.3f}s" for w in workers)
            )
        for w in workers:
            w.close()
    results: dict[str, Any] = {}
    for w in workers:
        results[w.name] = {
            "median_s": statistics.median(w.times),
            "min_s": min(w.times),
            "times_s": w.times,
            "info": w.info,
        }
    if "spyx" in results:
        for r in results.values():
            r["throughput_vs_spyx"] = results["spyx"]["median_s"] / r["median_s"]
    import jax

    doc = {
        "benchmark": "train_spyx",
        "command": "python benchmarks/train_spyx.py " + " ".join(sys.argv[1:]),
        "machine": machine(jax=jax.__version__),
        "core": args.core,
        "rounds": args.rounds,
        "steps": args.steps,
        "setting": SHD,
        "density": DENSITY,
        "load_before": load_before,
        "load_after": load_average(),
        "results": results,
        "target_met": results.get("eventprop-sparse", {}).get("throughput_vs_spyx", 0) >= 5.0,
    }
    md = _markdown(doc)
    write_results(RESULTS / "train_spyx.json", doc, md)
    print(md)


if __name__ == "__main__":
    main()

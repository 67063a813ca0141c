"""Time of the paper's SHD-size Eventprop training: 8,156 samples, 700 → 256 rec → 20, T = 1000, batch 32.

The seed paper's Fig. 3 reports 573 s for 100 epochs of this setting ("plain": no augmentation) with mlGeNN on
an NVIDIA RTX A5000 (kernels + 28–29 s build; reference/seed-paper.md §3). The data here has SHD's statistics
(8,156 samples, 700 channels, 1.2 % of (step, channel) bins active, uniformly placed) with random labels:
accuracy is not the point. Two modes:

- ``--epochs N``: N epochs of ``edgekws train``'s own loop (``train()``: batches binned in the background
  feed thread, the training step of ``--device``/``--kernel``, a checkpoint per epoch; no validation set) --
  the measurement to compare with the paper's: ``--device gpu --epochs 100`` (``make bench-gpu``);
- ``--epochs 0`` (default): time ``--batches`` training steps on prepared batches and extrapolate to 100
  epochs (on a CPU, where 100 epochs take a while), saying so in the result.

Writes benchmarks/results/train_shd_time_<device>_<kernel>[_epochs<N>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, SHD, SHD_DENSITY, machine, write_results

SAMPLES, CHANNELS, HIDDEN, CLASSES, STEPS, BATCH = (
    SHD[k] for k in ("samples", "channels", "hidden", "classes", "steps", "batch")
)
DENSITY = SHD_DENSITY
PAPER_SECONDS_100_EPOCHS = 573.0


def shd_like(n: int, seed: int = 0) -> Any:
    """``n`` samples with SHD's shape and density: each (step, channel) bin active with p = 1.2 %."""
    import numpy as np

    from edgekws.toolkit.data import SpikeDataset

    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        cells = np.unique(rng.integers(0, STEPS * CHANNELS, rng.binomial(STEPS * CHANNELS, DENSITY)))
        times.append(((cells // CHANNELS) + 0.5).astype(np.float32) * np.float32(0.001))
        units.append((cells % CHANNELS).astype(np.uint16))
    labels = rng.integers(0, CLASSES, n)
    names = [f"class{i}" for i in range(CLASSES)]
    return SpikeDataset(times, units, labels, CHANNELS, names, attrs={"dt": 0.001, "num_steps": STEPS})


def _time_batches(args: argparse.Namespace, placement: Any, config: Any) -> dict[str, Any]:
    import jax

    from edgekws.toolkit.train import init_params
    from edgekws.toolkit.train._step import optimizer, train_step

    spec = config.network_spec(CHANNELS, CLASSES, 1.0, STEPS)
    step = train_step(spec, config, placement)
    params = step.put(init_params(spec, jax.random.PRNGKey(0)))
    opt_state = step.put(optimizer(config.learning_rate, config.ease_in).init(params))
    data = shd_like(min(args.batches, 8) * BATCH)
    import numpy as np

    batches = [
        step.prepare(data, np.arange(i * BATCH, (i + 1) * BATCH), 0.001, STEPS)
        for i in range(len(data) // BATCH)
    ]
    t0 = time.perf_counter()
    params, opt_state, *_ = jax.block_until_ready(step(params, opt_state, batches[0]))
    first_s = time.perf_counter() - t0
    times, spikes = [], []
    for i in range(args.batches):
        t0 = time.perf_counter()
        params, opt_state, loss, _, counts = jax.block_until_ready(
            step(params, opt_state, batches[i % len(batches)])
        )
        times.append(time.perf_counter() - t0)
        spikes.append(float(sum(np.sum(c) for c in counts)) / BATCH / HIDDEN)
    per_batch = statistics.median(times)
    epoch_s = per_batch * (SAMPLES // BATCH)
    return {
        "mode": f"{args.batches} timed batches, extrapolated",
        "first_step_seconds": round(first_s, 2),
        "batch_seconds_median": per_batch,
        "batch_seconds_all": times,
        "epoch_seconds": epoch_s,
        "hundred_epochs_seconds": epoch_s * 100 + first_s,
        "extrapolated": True,
        "hidden_spikes_per_neuron": statistics.median(spikes),
        "loss": float(loss),
    }


def _train_epochs(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    from edgekws.toolkit.train import read_metrics, train

    t0 = time.perf_counter()
    data = shd_like(SAMPLES)
    data_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(data, Path(tmp) / "run", config, progress=True, device=args.device, kernel=args.kernel)
        total = time.perf_counter() - t0
        history = read_metrics(Path(tmp) / "run")
        placement = json.loads((Path(tmp) / "run" / "run.json").read_text())["placement"]
    epochs = [h["seconds"] for h in history]
    rate = history[-1]["hidden_rate_hz"] * STEPS / 1000.0
    return {
        "mode": f"{result.epochs_done} epochs of train(), measured",
        "placement": placement,
        "data_generation_seconds": round(data_s, 1),
        "first_epoch_seconds": epochs[0],
        "epoch_seconds": statistics.median(epochs[1:] or epochs),
        "epoch_seconds_all": epochs,
        "total_seconds": total,
        "hundred_epochs_seconds": total if result.epochs_done == 100 else None,
        "extrapolated": False,
        "hidden_spikes_per_neuron": rate,
        "final_train_loss": history[-1]["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="Epochs of train() to run (0: time --batches).")
    parser.add_argument("--batches", type=int, default=5, help="Batches to time when --epochs is 0.")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--kernel", default="auto", choices=["auto", "dense", "sparse"])
    args = parser.parse_args()

    import jax

    from edgekws.toolkit.train import TrainConfig
    from edgekws.toolkit.train._step import place

    # The paper's "plain" cost runs: no augmentation, flat learning rate.
    config = TrainConfig(hidden=(HIDDEN,), epochs=max(args.epochs, 1), augment="none", lr_decay="none")
    placement = place(args.device, args.kernel, config.method, BATCH)
    with jax.default_device(placement.devices[0]):
        run = _train_epochs(args, config) if args.epochs else _time_batches(args, placement, config)
    doc = {
        "setting": SHD,
        "density": DENSITY,
        "command": "python benchmarks/train_shd_time.py " + " ".join(sys.argv[1:]),
        "placement": run.pop("placement", placement.to_dict()),
        "devices": [f"{d.platform}: {d.device_kind}" for d in placement.devices],
        "cpu_cores_usable": len(os.sched_getaffinity(0)),  # taskset limits them
        "machine": machine(jax=jax.__version__),
        **run,
        "paper_mlgenn_a5000_100_epochs_seconds": PAPER_SECONDS_100_EPOCHS,
    }
    hundred = doc["hundred_epochs_seconds"]
    md = (
        "# SHD-size Eventprop training time\n\n"
        f"Device: **{', '.join(doc['devices'])}**, kernel **{doc['placement']['kernel']}**; machine: "
        f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores ({doc['cpu_cores_usable']} usable), "
        f"load {doc['machine']['load_average_1min']}; "
        f"JAX {jax.__version__}.\n"
        f"Command: `{doc['command']}` ({doc['mode']}). Hidden activity: "
        f"{doc['hidden_spikes_per_neuron']:.1f} spikes per neuron per sample.\n\n"
        "| epoch (s) | 100 epochs (s) | paper: mlGeNN, RTX A5000, 100 epochs (s) |\n"
        "|---|---|---|\n"
        f"| {doc['epoch_seconds']:.1f} | {'' if hundred is None else f'{hundred:.0f}'}"
        f"{' (extrapolated)' if doc['extrapolated'] else ''} | {PAPER_SECONDS_100_EPOCHS:.0f} |\n"
    )
    mode = f"_epochs{args.epochs}" if args.epochs else ""
    name = f"train_shd_time_{placement.device}_{placement.kernel}{mode}.json"
    write_results(RESULTS / name, doc, md)
    print(md)


if __name__ == "__main__":
    main()

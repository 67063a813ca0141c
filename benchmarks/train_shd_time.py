"""Time of the paper's SHD-size Eventprop training: 8,156 samples, 700 → 256 rec → 20, T = 1000, batch 32.

The seed paper's Fig. 3 reports 573 s for 100 epochs of this setting with mlGeNN on an NVIDIA RTX A5000
(kernels + 28–29 s build; reference/seed-paper.md §3). This harness runs the same training step that
`edgekws train` runs (Eventprop loss and gradient + Adam) on data with SHD's statistics (700 channels,
~1.2 % of (step, channel) bins active, random labels: accuracy is not the point) on whatever device JAX
finds, and reports the compile time and the time per epoch (254 full batches of 32 = 8,128 samples).

On a GPU run the whole thing: ``.venv/bin/python benchmarks/train_shd_time.py --epochs 100``.
On a CPU (where 100 epochs take hours) time a few batches and extrapolate, saying so in the result:
``.venv/bin/python benchmarks/train_shd_time.py --batches 5`` (the default).
Writes benchmarks/results/train_shd_time.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import RESULTS, machine, write_results

SAMPLES, CHANNELS, HIDDEN, CLASSES, STEPS, BATCH = 8156, 700, 256, 20, 1000, 32
DENSITY = 0.012
PAPER_SECONDS_100_EPOCHS = 573.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="Full epochs to run (0: time --batches only).")
    parser.add_argument("--batches", type=int, default=5, help="Batches to time when --epochs is 0.")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from edgekws.toolkit.train import TrainConfig
    from edgekws.toolkit.train._loop import _make_step, _optimizer
    from edgekws.toolkit.train._model import init_params

    config = TrainConfig(hidden=(HIDDEN,), ease_in=False)
    spec = config.network_spec(CHANNELS, CLASSES, 1.0, STEPS)
    params = init_params(spec, jax.random.PRNGKey(0))
    opt_state = _optimizer(config.learning_rate, config.ease_in).init(params)
    rng = np.random.default_rng(0)
    batches_per_epoch = SAMPLES // BATCH

    def batch() -> tuple[jax.Array, jax.Array]:
        spikes = jnp.asarray(rng.random((BATCH, STEPS, CHANNELS)) < DENSITY, jnp.float32)
        return spikes, jnp.asarray(rng.integers(0, CLASSES, BATCH), jnp.int32)

    step = _make_step(spec, config)
    spikes, labels = batch()
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, spikes, labels).compile()
    compile_s = time.perf_counter() - t0
    times: list[float] = []
    runs = args.epochs * batches_per_epoch if args.epochs else args.batches
    data = [batch() for _ in range(min(runs, 8))]  # a few distinct batches, reused: data loading is not timed
    for i in range(runs):
        x, y = data[i % len(data)]
        t0 = time.perf_counter()
        params, opt_state, loss, _, _ = jax.block_until_ready(compiled(params, opt_state, x, y))
        times.append(time.perf_counter() - t0)
    per_batch = statistics.median(times)
    epoch_s = per_batch * batches_per_epoch
    device = jax.devices()[0]
    doc = {
        "setting": {
            "samples": SAMPLES,
            "channels": CHANNELS,
            "hidden": HIDDEN,
            "steps": STEPS,
            "batch": BATCH,
        },
        "device": f"{device.platform}: {device.device_kind}",
        "machine": machine(jax=jax.__version__),
        "compile_seconds": round(compile_s, 2),
        "batches_timed": runs,
        "batch_seconds_median": per_batch,
        "epoch_seconds": epoch_s,
        "measured_epochs": args.epochs,
        "hundred_epochs_seconds": epoch_s * 100 + compile_s,
        "extrapolated": args.epochs < 100,
        "paper_mlgenn_a5000_100_epochs_seconds": PAPER_SECONDS_100_EPOCHS,
        "loss": float(loss),
    }
    how = "measured" if not doc["extrapolated"] else f"extrapolated from {runs} timed batches"
    md = (
        "# SHD-size Eventprop training time\n\n"
        f"Device: **{doc['device']}**; machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"load {doc['machine']['load_average_1min']}.\n\n"
        f"| compile (s) | median batch (s) | epoch (s) | 100 epochs (s), {how} "
        "| paper: mlGeNN, RTX A5000 (s) |\n"
        "|---|---|---|---|---|\n"
        f"| {compile_s:.1f} | {per_batch:.3f} | {epoch_s:.0f} | {doc['hundred_epochs_seconds']:.0f} | "
        f"{PAPER_SECONDS_100_EPOCHS:.0f} |\n\n"
        "Reproduce: `.venv/bin/python benchmarks/train_shd_time.py` (CPU: 5 batches, extrapolated) or "
        "`--epochs 100` on a GPU.\n"
    )
    write_results(RESULTS / "train_shd_time.json", doc, md)
    print(md)


if __name__ == "__main__":
    main()

"""Agreement of the two Eventprop kernels at the SHD setting: the event-driven CPU kernel vs the dense one.

700 → 256 recurrent → 20, T = 1000, random 0/1 inputs at SHD's 1.2 % density, the seed paper's initial weights
and regulariser. Both kernels compute the same quantities in float32 with different summation orders; in a
recurrent network of this size a rounding difference can flip a spike of a neuron that sits within an ulp of
its threshold, after which the two runs follow slightly different spike trains. As a yardstick, the sparse
kernel also runs in float64 (``dtype=np.float64``): how far each float32 kernel lies from it is how much
float32 rounding moves an Eventprop gradient here. Reported:

- the whole batch (32 samples): loss, spike counts (total and summed per-neuron |difference|), relative
  gradient difference (Frobenius) per weight array, sparse vs dense and each vs float64;
- per sample (``--samples`` more samples, batch 1), for each pair of dense, sparse and float64: whether
  they emit the same spike counts, and the relative gradient difference where they do and where they do not.

Usage: ``.venv/bin/python benchmarks/kernel_agreement.py``.
Writes benchmarks/results/kernel_agreement.{json,md}.
"""

from __future__ import annotations

import argparse

from _common import RESULTS, SHD, SHD_DENSITY, command_line, machine, write_results

BATCH, STEPS, CHANNELS, HIDDEN, CLASSES = (
    SHD[k] for k in ("batch", "steps", "channels", "hidden", "classes")
)
DENSITY = SHD_DENSITY


def _rel(a: object, b: object) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="Samples compared one by one.")
    args = parser.parse_args()

    import jax
    import numpy as np

    from edgekws.toolkit.train import LossConfig, TrainConfig, eventprop_loss_and_grad, init_params
    from edgekws.toolkit.train._sparse import sparse_loss_and_grad

    config = TrainConfig(hidden=(HIDDEN,))
    spec = config.network_spec(CHANNELS, CLASSES, 1.0, STEPS)
    params = init_params(spec, jax.random.PRNGKey(0))
    cfg = LossConfig(reg_lambda=config.reg_lambda, reg_nu=config.reg_nu)
    rng = np.random.default_rng(0)
    x = (rng.random((BATCH, STEPS, CHANNELS)) < DENSITY).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    dense = jax.jit(eventprop_loss_and_grad, static_argnums=(3, 4))

    ld, ad, gd = dense(params, x, y, spec, cfg)
    ls, as_, gs = sparse_loss_and_grad(params, x, y, spec, cfg)
    l64, a64, g64 = sparse_loss_and_grad(params, x, y, spec, cfg, dtype=np.float64)
    cd, cs = np.asarray(ad["hidden_counts"][0]), np.asarray(as_["hidden_counts"][0])
    c64 = np.asarray(a64["hidden_counts"][0])
    batch = {
        "loss_dense": float(ld),
        "loss_sparse": float(ls),
        "loss_float64": float(l64),
        "spikes_dense": float(cd.sum()),
        "spikes_sparse": float(cs.sum()),
        "spikes_float64": float(c64.sum()),
        "per_neuron_count_abs_diff": float(np.abs(cd - cs).sum()),
        "per_neuron_count_abs_diff_dense_float64": float(np.abs(cd - c64).sum()),
        "per_neuron_count_abs_diff_sparse_float64": float(np.abs(cs - c64).sum()),
        "gradient_rel_diff": {k: _rel(gd[k], gs[k]) for k in gd},
        "gradient_rel_diff_dense_float64": {k: _rel(g64[k], gd[k]) for k in gd},
        "gradient_rel_diff_sparse_float64": {k: _rel(g64[k], gs[k]) for k in gd},
    }
    rows = []
    more = (np.random.default_rng(1).random((args.samples, 1, STEPS, CHANNELS)) < DENSITY).astype(np.float32)
    for i in range(args.samples):
        xi, yi = more[i], np.array([i % CLASSES])
        runs = [
            dense(params, xi, yi, spec, cfg),
            sparse_loss_and_grad(params, xi, yi, spec, cfg),
            sparse_loss_and_grad(params, xi, yi, spec, cfg, dtype=np.float64),
        ]
        counts = [np.asarray(r[1]["hidden_counts"][0]) for r in runs]
        grads = [r[2] for r in runs]
        pairs = {"dense_sparse": (0, 1), "dense_float64": (2, 0), "sparse_float64": (2, 1)}
        rows.append(
            {
                name: {
                    "same_counts": bool(np.array_equal(counts[i], counts[j])),
                    "rel": max(_rel(grads[i][k], grads[j][k]) for k in grads[0]),
                }
                for name, (i, j) in pairs.items()
            }
        )
    per_sample: dict[str, object] = {"samples": args.samples}
    for name in rows[0]:
        same = [r[name]["rel"] for r in rows if r[name]["same_counts"]]
        moved = [r[name]["rel"] for r in rows if not r[name]["same_counts"]]
        per_sample[name] = {
            "same_spike_counts": len(same),
            "median_rel_when_same": float(np.median(same)) if same else None,
            "max_rel_when_same": max(same) if same else None,
            "rel_when_moved": sorted(moved),
        }
    doc = {
        "benchmark": "kernel_agreement",
        "command": command_line(),
        "machine": machine(jax=jax.__version__),
        "setting": SHD,
        "density": DENSITY,
        "batch": batch,
        "per_sample": per_sample,
    }
    grads = ", ".join(f"{k} {v:.2e}" for k, v in batch["gradient_rel_diff"].items())
    lines = [
        "# Eventprop kernels: sparse (numba, CPU) vs dense (JAX reference) at the SHD setting",
        "",
        f"Command: `{doc['command']}`. {CHANNELS} → {HIDDEN} rec → {CLASSES}, T = {STEPS}, random inputs at "
        f"{DENSITY:.1%} density, paper's initial weights and regulariser. float64 = the sparse kernel run in "
        "double precision (the yardstick for float32 rounding).",
        "",
        f"Batch of {BATCH}: loss {batch['loss_dense']:.6f} (dense), {batch['loss_sparse']:.6f} (sparse), "
        f"{batch['loss_float64']:.6f} (float64); hidden spikes {batch['spikes_dense']:.0f} / "
        f"{batch['spikes_sparse']:.0f} / {batch['spikes_float64']:.0f}; per-neuron spike counts differ by "
        f"{batch['per_neuron_count_abs_diff']:.0f} (dense vs sparse), "
        f"{batch['per_neuron_count_abs_diff_dense_float64']:.0f} (dense vs float64), "
        f"{batch['per_neuron_count_abs_diff_sparse_float64']:.0f} (sparse vs float64). Relative gradient "
        f"difference dense vs sparse: {grads}; from float64: dense "
        + ", ".join(f"{k} {v:.2e}" for k, v in batch["gradient_rel_diff_dense_float64"].items())
        + "; sparse "
        + ", ".join(f"{k} {v:.2e}" for k, v in batch["gradient_rel_diff_sparse_float64"].items())
        + ".",
        "",
        f"Per sample ({args.samples} more samples, batch 1; largest relative difference of a weight array):",
        "",
        "| pair | same spike counts | median rel. gradient difference (same counts) | max (same counts) "
        "| when a spike moved |",
        "|---|---|---|---|---|",
    ]
    for name in ("dense_sparse", "dense_float64", "sparse_float64"):
        r = per_sample[name]
        assert isinstance(r, dict)
        med, top = r["median_rel_when_same"], r["max_rel_when_same"]
        lines.append(
            f"| {name.replace('_', ' vs ')} | {r['same_spike_counts']}/{args.samples} | "
            f"{'' if med is None else f'{med:.1e}'} | {'' if top is None else f'{top:.1e}'} | "
            + ", ".join(f"{v:.2f}" for v in r["rel_when_moved"])
            + " |"
        )
    md = "\n".join([*lines, ""])
    write_results(RESULTS / "kernel_agreement.json", doc, md)
    print(md)


if __name__ == "__main__":
    main()

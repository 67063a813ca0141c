"""Accuracy parity of a trained run: float (JAX), fixed point (emulator), Lava ``fixed_pt`` (paper Fig. 4).

For every weight percentile of the quantizer (``toolkit/quant``: the percentile of the weight magnitudes
that sets each layer's power-of-two step), the fixed-point model is run by the bit-exact emulator on the
whole test set; the float model runs in JAX. The percentile with the best fixed-point accuracy (ties: the
better agreement with float) is then run by Lava's ``fixed_pt`` simulation on ``--lava-samples`` test
samples spread evenly over the set (test sets are sorted by class, so the first ones would be one class),
through the subprocess bridge into ``.venv-lava``, and every Lava readout is compared with
the emulator's (they must be identical, and so must the decisions).

    .venv/bin/python benchmarks/parity.py --run runs/final --data /tmp/digits/test.h5
    .venv/bin/python benchmarks/parity.py --run runs/h256 --data test.h5 --lava-samples 0   # no Lava

Writes ``benchmarks/results/parity.{json,md}`` and the bar plot ``benchmarks/results/parity.png`` (with
``--out``, the plot goes beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, command_line, machine, write_results

from edgekws.agent import decide
from edgekws.agent.backends import EmulatorBackend
from edgekws.packaging import FixedPointNetwork, NetworkSpec, write_netx
from edgekws.toolkit._progress import progress_bar
from edgekws.toolkit.data import read_shd
from edgekws.toolkit.quant import LavaBridge, quantize
from edgekws.toolkit.train import float_readout, load_run

TARGET_POINTS = 0.5  # issue 4: fixed-point accuracy within 0.5 points of float
EMULATOR_BATCH = 64


def _in_batches(run: Any, x: np.ndarray, size: int, update: Any = None) -> np.ndarray:
    """``run`` over ``x`` ``size`` samples at a time, the readouts concatenated; ``update(done, total)``."""
    parts = []
    for i in range(0, len(x), size):
        parts.append(run(x[i : i + size]))
        if update is not None:
            update(min(len(x), i + size), len(x))
    return np.concatenate(parts)


def emulator_readout(net: FixedPointNetwork, x: np.ndarray, update: Any = None) -> np.ndarray:
    """The emulator's readout ``(N, T, O)``, in batches."""
    return _in_batches(EmulatorBackend(net).run, x, EMULATOR_BATCH, update)


def lava_readout(net: FixedPointNetwork, x: np.ndarray, chunk: int, update: Any = None) -> np.ndarray:
    """Lava ``fixed_pt``'s readout ``(N, T, O)``, ``chunk`` samples per Lava subprocess."""
    with tempfile.TemporaryDirectory(prefix="edgekws-parity-") as tmp:
        bridge = LavaBridge(write_netx(net, Path(tmp) / "netx.h5"))
        return _in_batches(bridge.run, x, chunk, update)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(pred == truth))


def pick_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The percentile with the best fixed-point accuracy; ties go to the better agreement with float."""
    return max(rows, key=lambda r: (r["accuracy"], r["agreement_with_float"], -r["percentile"]))


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Bar plot like the paper's Fig. 4: float vs fixed point (each percentile) vs Lava, in per cent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, lava = doc["test_samples"], doc["lava"]
    groups: list[tuple[str, list[tuple[str, float, str]]]] = [
        (
            f"whole test set ({n} samples)",
            [("float (JAX)", doc["float"]["accuracy"], "tab:blue")]
            + [
                (f"fixed point\np{r['percentile']:g}", r["accuracy"], "tab:orange")
                for r in doc["fixed_point"]
            ],
        )
    ]
    if lava is not None:
        k = lava["samples"]
        groups.append(
            (
                f"{k} samples spread over the set",
                [
                    ("float (JAX)", lava["float_accuracy"], "tab:blue"),
                    (f"fixed point\np{lava['percentile']:g}", lava["emulator_accuracy"], "tab:orange"),
                    (f"Lava fixed_pt\np{lava['percentile']:g}", lava["accuracy"], "tab:green"),
                ],
            )
        )
    lows = [v for _, bars in groups for _, v, _ in bars]
    floor = max(0.0, 10 * np.floor(10 * min(lows) - 2))
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    x, ticks, labels = 0.0, [], []
    for title, bars in groups:
        start = x
        for label, value, color in bars:
            ax.bar(x, 100 * value, width=0.8, color=color)
            ax.text(x, 100 * value + 0.4, f"{100 * value:.1f}", ha="center", va="bottom", fontsize=8)
            ticks.append(x)
            labels.append(label)
            x += 1.0
        center = (start + x - 1.0) / 2
        ax.text(center, -0.17, title, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=9)
        x += 0.8
    ax.set_ylim(floor, 104)
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{doc['run_name']}: float vs 8-bit fixed point vs Lava ({doc['data_name']})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown(doc: dict[str, Any]) -> str:
    m, f, lava = doc["machine"], doc["float"], doc["lava"]
    lines = [
        "# Accuracy parity: float vs fixed point vs Lava (paper Fig. 4)",
        "",
        f"Run `{doc['run']}` ({doc['network']}), test set `{doc['data']}` ({doc['test_samples']} samples). "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, numpy "
        f"{m['numpy']}, 1-min load {m['load_average_1min']} (shared box). Command: `{doc['command']}`.",
        "",
        f"Float (JAX): **{100 * f['accuracy']:.2f} %** ({f['seconds']:.1f} s).",
        "",
        "| percentile | fixed-point accuracy | vs float (points) | agreement with float | hidden step "
        "| clipped weights | hidden rel. weight error | emulator s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["fixed_point"]:
        hidden = r["layers"][0]
        lines.append(
            f"| {r['percentile']:g} | {100 * r['accuracy']:.2f} % | {r['points_vs_float']:+.2f} | "
            f"{100 * r['agreement_with_float']:.2f} % | 2^{int(np.log2(hidden['step']))} | "
            f"{sum(layer['num_clipped'] for layer in r['layers'])} | {hidden['relative_error']:.3f} | "
            f"{r['seconds']:.1f} |"
        )
    best = doc["best_percentile"]
    lines += [
        "",
        f"Best percentile: **{best:g}** ({doc['best_points_vs_float']:+.2f} points vs float; target: within "
        f"{TARGET_POINTS} points below float: {'met' if doc['target_met'] else 'NOT met'}).",
        "",
    ]
    if lava is None:
        lines.append("Lava: not run (`--lava-samples 0`).")
    else:
        lines += [
            f"Lava `fixed_pt` at percentile {lava['percentile']:g} on {lava['samples']} test samples "
            "spread evenly over the set (`sample_indices` in the JSON; the set is sorted by class): "
            f"accuracy {100 * lava['accuracy']:.2f} % (emulator {100 * lava['emulator_accuracy']:.2f} %, "
            f"float {100 * lava['float_accuracy']:.2f} % on the same samples); **Lava's decision equals "
            f"the emulator's on {lava['decisions_equal']} of {lava['samples']}**, readout traces identical "
            f"on {lava['readouts_identical']} of {lava['samples']}. Lava took {lava['seconds']:.0f} s "
            f"({lava['ms_per_step']:.2f} ms per step, including {lava['subprocesses']} subprocess "
            "start(s) and compiles).",
        ]
    lines += ["", f"Plot: `{doc.get('plot', 'benchmarks/results/parity.png')}`.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="training run folder (run.json + best.npz)")
    parser.add_argument("--data", required=True, type=Path, help="test spike file (HDF5, run's front-end)")
    parser.add_argument("--lava-samples", type=int, default=50, help="test samples run in Lava (0: none)")
    parser.add_argument("--lava-chunk", type=int, default=25, help="samples per Lava subprocess")
    parser.add_argument(
        "--percentiles", type=float, nargs="+", default=[99.0, 99.9, 100.0], help="quantizer percentiles"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "parity.json", help="result JSON path")
    args = parser.parse_args()

    run = load_run(args.run)
    spec: NetworkSpec = run.spec
    params = {k: np.asarray(v, np.float64) for k, v in run.params.items()}
    data = read_shd(args.data)
    if data.num_channels != spec.num_inputs or data.num_classes != spec.num_outputs:
        parser.error(
            f"{args.data} has {data.num_channels} channels and {data.num_classes} classes, the run expects "
            f"{spec.num_inputs} and {spec.num_outputs}; encode the test set with the run's front-end"
        )
    x = data.bin(spec.dt_ms / 1000.0, spec.num_steps, np.arange(len(data)))
    truth = np.asarray(data.labels)

    t0 = time.perf_counter()
    float_labels = decide(float_readout(run.params, spec, x), spec.readout).labels
    float_doc = {"accuracy": accuracy(float_labels, truth), "seconds": time.perf_counter() - t0}
    print(f"float: {100 * float_doc['accuracy']:.2f} %", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    nets: dict[float, FixedPointNetwork] = {}
    emulator_traces: dict[float, np.ndarray] = {}
    # the test set is sorted by class: run Lava on samples spread evenly over it, not on the first ones
    keep = max(0, min(args.lava_samples, len(data)))
    subset = np.unique(np.linspace(0, len(data) - 1, keep).round().astype(int)) if keep else np.arange(0)
    keep = len(subset)
    for p in args.percentiles:
        net, report = quantize(params, spec, percentile=p)
        t0 = time.perf_counter()
        with progress_bar(f"emulator p{p:g}") as update:
            readout = emulator_readout(net, x, update)
        labels = decide(readout, spec.readout).labels
        nets[p], emulator_traces[p] = net, readout[subset]
        acc = accuracy(labels, truth)
        rows.append(
            {
                "percentile": p,
                "accuracy": acc,
                "points_vs_float": 100 * (acc - float_doc["accuracy"]),
                "agreement_with_float": accuracy(labels, float_labels),
                "seconds": time.perf_counter() - t0,
                "layers": report.to_dict()["layers"],
                "labels": labels,
            }
        )
        print(f"fixed point p{p:g}: {100 * acc:.2f} %", file=sys.stderr)
    best = pick_best(rows)

    lava_doc: dict[str, Any] | None = None
    if keep:
        p = best["percentile"]
        t0 = time.perf_counter()
        with progress_bar(f"Lava fixed_pt p{p:g}") as update:
            lava = lava_readout(nets[p], x[subset], max(1, args.lava_chunk), update)
        seconds = time.perf_counter() - t0
        lava_labels = decide(lava, spec.readout).labels
        emu = emulator_traces[p]
        lava_doc = {
            "percentile": p,
            "samples": keep,
            "sample_indices": subset.tolist(),
            "accuracy": accuracy(lava_labels, truth[subset]),
            "emulator_accuracy": accuracy(best["labels"][subset], truth[subset]),
            "float_accuracy": accuracy(float_labels[subset], truth[subset]),
            "decisions_equal": int(np.sum(lava_labels == best["labels"][subset])),
            "readouts_identical": int(sum(np.array_equal(lava[i], emu[i]) for i in range(keep))),
            "seconds": seconds,
            "subprocesses": -(-keep // max(1, args.lava_chunk)),
            "ms_per_step": 1000 * seconds / (keep * spec.num_steps),
        }
        print(f"Lava: decisions equal on {lava_doc['decisions_equal']} of {keep}", file=sys.stderr)

    command = command_line()
    doc = {
        "benchmark": "parity",
        "command": command,
        "run": str(args.run),
        "run_name": args.run.resolve().name,
        "network": (
            f"{spec.num_inputs} → {' → '.join(str(h) for h in spec.hidden)} "
            f"{'recurrent ' if any(spec.recurrent) else ''}→ {spec.num_outputs}, T = {spec.num_steps}"
        ),
        "data": str(args.data),
        "data_name": args.data.name,
        "test_samples": len(data),
        "machine": machine(),
        "float": float_doc,
        "fixed_point": [{k: v for k, v in r.items() if k != "labels"} for r in rows],
        "best_percentile": best["percentile"],
        "best_points_vs_float": best["points_vs_float"],
        "target_points": TARGET_POINTS,
        "target_met": best["points_vs_float"] >= -TARGET_POINTS,
        "lava": lava_doc,
        "plot": f"benchmarks/results/{args.out.with_suffix('.png').name}",
    }
    write_results(args.out, doc, markdown(doc))
    plot(doc, args.out.with_suffix(".png"))
    summary = {k: doc[k] for k in ("float", "best_percentile", "best_points_vs_float", "target_met")}
    summary["lava"] = (
        None if lava_doc is None else {k: v for k, v in lava_doc.items() if k != "sample_indices"}
    )
    print(json.dumps(summary, indent=2))
    if lava_doc is not None and lava_doc["decisions_equal"] != keep:
        print("Lava and the emulator disagree: the emulator is not bit-exact here", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

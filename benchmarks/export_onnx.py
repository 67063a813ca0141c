"""ONNX / NIR export: model sizes, ONNX Runtime parity with the float model, and CPU latency.

Run: ``.venv/bin/python benchmarks/export_onnx.py`` (about half a minute).

For the network C=128 → 256 recurrent → 20 (the default front-end's channel count):

1. **Sizes** of the sequence ONNX, the streaming ONNX and the NIR file (bytes).
2. **Parity** over 8 seeds x 4 samples x 1000 steps, ONNX Runtime (CPU, float32) against the trainer's JAX
   ``simulate`` (float32) and a float64 numpy reference of docs/model.md, with two weight scales: the
   trainer's init (``init_params``, ~2 % hidden spike rate, readout ~0.2) and 5x that init (~15 %). Per
   run: max |ORT - JAX|, max |ORT - float64|, and the smallest |v - θ| of the float64 run (a voltage
   within float32 rounding of θ can flip a spike in one implementation and not in another).
3. **Latency** on CPU (1 intra-op thread, minimum and median of repeats on a shared machine): whole
   sequence B=1, T=1000 with ``OnnxBackend.run``, and 10-step chunks with ``OnnxBackend.step``.

Writes ``benchmarks/results/export_onnx.json`` and ``export_onnx.md``.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
import onnxruntime as ort
from _common import RESULTS, machine, write_results

from edgekws.agent.backends import OnnxBackend
from edgekws.packaging import NetworkSpec
from edgekws.toolkit.export import export_nir, export_onnx, export_onnx_streaming
from edgekws.toolkit.train._model import init_params, simulate

SPEC = NetworkSpec(num_inputs=128, hidden=(256,), recurrent=(True,), num_outputs=20)
SEEDS = 8
REPEATS = 20
REL_TOL = 2e-6  # parity bound relative to the readout's scale, as in the tests (tests/agent/_parity.py)


def reference(params: dict[str, np.ndarray], spec: NetworkSpec, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Float64 readout of docs/model.md (one hidden layer) and min |v - θ| over the run."""
    batch, steps, _ = x.shape
    w_in, w_rec, w_out = (
        params[k].astype(np.float64) for k in ("layer0.weight", "layer0.weight_rec", "layer1.weight")
    )
    u, v, s = (np.zeros((batch, spec.hidden[0])) for _ in range(3))
    uo, vo = np.zeros((batch, spec.num_outputs)), np.zeros((batch, spec.num_outputs))
    x_prev, out, margin = np.zeros(x[:, 0].shape), np.zeros((batch, steps, spec.num_outputs)), np.inf
    for t in range(steps):
        uo = spec.alpha_syn * uo + s @ w_out.T
        vo = spec.alpha_mem * vo + uo
        u = spec.alpha_syn * u + (x_prev @ w_in.T + s @ w_rec.T)
        v = spec.alpha_mem * v + u
        margin = min(margin, float(np.abs(v - spec.threshold).min()))
        s = (v > spec.threshold).astype(np.float64)
        v = np.where(s > 0, 0.0, v)
        x_prev, out[:, t] = x[:, t], vo
    return out, margin


def parity(scale: float) -> list[dict[str, float]]:
    rows = []
    for seed in range(SEEDS):
        params = {k: np.asarray(v) * scale for k, v in init_params(SPEC, jax.random.PRNGKey(seed)).items()}
        params = {k: v.astype(np.float32) for k, v in params.items()}
        x = (np.random.default_rng(seed).random((4, 1000, SPEC.num_inputs)) < 0.06).astype(np.float32)
        session = ort.InferenceSession(export_onnx(params, SPEC), providers=["CPUExecutionProvider"])
        got = session.run(None, {"spikes": x})[0]
        sim = simulate(params, x, SPEC)
        expected, margin = reference(params, SPEC, x)
        rows.append(
            {
                "seed": seed,
                "max_abs_ort_vs_jax": float(np.abs(got - np.asarray(sim.readout)).max()),
                "max_abs_ort_vs_float64": float(np.abs(got - expected).max()),
                "max_abs_jax_vs_float64": float(np.abs(np.asarray(sim.readout) - expected).max()),
                "max_abs_readout": float(np.abs(expected).max()),
                "hidden_rate": float(np.mean(np.asarray(sim.hidden_spikes[0]))),
                "min_threshold_margin": margin,
            }
        )
    return rows


def _flip(row: dict[str, float], key: str) -> bool:
    """A run whose error exceeds the parity bound: a spike flipped somewhere (docs/exports.md, Parity)."""
    return row[key] > REL_TOL * max(1.0, row["max_abs_readout"])


def timings(model: bytes) -> dict[str, float]:
    backend = OnnxBackend(model, providers=["CPUExecutionProvider"], threads=1)
    x = (np.random.default_rng(0).random((1, 1000, SPEC.num_inputs)) < 0.06).astype(np.uint8)
    whole, chunk = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        backend.run(x)
        whole.append(time.perf_counter() - start)
    backend.reset()
    for i in range(0, 1000, 10):
        start = time.perf_counter()
        backend.step(x[:, i : i + 10])
        chunk.append(time.perf_counter() - start)
    return {
        "run_T1000_min_ms": 1e3 * min(whole),
        "run_T1000_median_ms": 1e3 * statistics.median(whole),
        "step_10_min_ms": 1e3 * min(chunk),
        "step_10_median_ms": 1e3 * statistics.median(chunk),
    }


def main() -> None:
    params = {k: np.asarray(v) for k, v in init_params(SPEC, jax.random.PRNGKey(0)).items()}
    sequence, streaming = export_onnx(params, SPEC), export_onnx_streaming(params, SPEC)
    nir_bytes, _ = export_nir(params, SPEC)
    sizes = {"onnx_sequence": len(sequence), "onnx_streaming": len(streaming), "nir": len(nir_bytes)}
    results = {
        "machine": machine(),
        "versions": {"onnxruntime": ort.__version__, "jax": jax.__version__, "numpy": np.__version__},
        "spec": SPEC.to_dict(),
        "sizes_bytes": sizes,
        "parity": {"init": parity(1.0), "init_x5": parity(5.0)},
        "latency_cpu_1thread": timings(streaming),
    }
    lines = [
        "# ONNX / NIR export (C=128 → 256 rec → 20)",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores (shared); "
        f"onnxruntime {ort.__version__}. Command: `.venv/bin/python benchmarks/export_onnx.py`.",
        "",
        "| file | bytes |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sizes.items()),
        "",
        f"Parity, {SEEDS} seeds x 4 samples x 1000 steps; a run whose error exceeds {REL_TOL:g} x its "
        "readout scale (max |readout|, at least 1) has a spike flip; "
        "margin = smallest distance of a float64 hidden voltage to θ:",
        "",
        "| weights | hidden rate | max abs readout | max ORT-JAX (runs w/o flip) | runs with ORT-JAX flip "
        "| max ORT-float64 (runs w/o flip) | runs with ORT-float64 flip | min margin |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results["parity"].items():
        cells = []
        for key in ("max_abs_ort_vs_jax", "max_abs_ort_vs_float64"):
            clean = [r[key] for r in rows if not _flip(r, key)]
            flips = sum(_flip(r, key) for r in rows)
            cells.append(f"{max(clean, default=float('nan')):.2e} | {flips}/{len(rows)}")
        lines.append(
            f"| {name} | {statistics.mean(r['hidden_rate'] for r in rows):.3f} "
            f"| {max(r['max_abs_readout'] for r in rows):.3g} | {' | '.join(cells)} "
            f"| {min(r['min_threshold_margin'] for r in rows):.1e} |"
        )
    lat = results["latency_cpu_1thread"]
    lines += [
        "",
        f"CPU latency, 1 thread: run B=1 T=1000 min {lat['run_T1000_min_ms']:.2f} ms "
        f"(median {lat['run_T1000_median_ms']:.2f}); step of 10 steps min {lat['step_10_min_ms']:.3f} ms "
        f"(median {lat['step_10_median_ms']:.3f}).",
        "",
    ]
    write_results(RESULTS / "export_onnx.json", results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

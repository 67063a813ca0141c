"""`edgekws bundle RUN …` on the reference network: the size of every model file and of the bundle, and time.

The run folder is written the way the training loop writes one (run.json from the loop's own helper,
best.npz), holding the trainer's initial parameters (random init: sizes do not depend on training; the input
weights x3 so that the hidden layer fires and the timed evaluation carries spike traffic) for
C = 128 front-end channels (the default front-end: 32 bands x 4 levels) → 256 recurrent LIF → 20 readout,
dt = 1 ms, 1000 steps. Timed twice: without evaluation, and with --eval-data on 64 random 1000-step
samples (float model in JAX, fixed-point emulator, ONNX Runtime CPU), the first build paying JAX's compile.

Run: .venv/bin/python benchmarks/bundle_build.py   (writes benchmarks/results/bundle_build.json and .md)
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_results

from edgekws.agent import FrontendSpec
from edgekws.packaging import write_keypair
from edgekws.toolkit._bundle_build import build_run_bundle
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train import TrainConfig, init_params
from edgekws.toolkit.train._run import new_run_info, save_best, write_run_info

C, H, K, T = 128, 256, 20, 1000  # inputs, hidden, classes, steps
EVAL_SAMPLES = 64
INPUT_GAIN = 3.0  # the initial input weights x3 make the hidden layer fire (~23 Hz on this input)


def dataset(n: int, seed: int) -> SpikeDataset:
    rng = np.random.default_rng(seed)
    rasters = [(rng.random((T, C)) < 0.02).astype(np.uint8) for _ in range(n)]
    attrs = {"dt": 0.001, "num_steps": T, "frontend": FrontendSpec().to_dict()}
    return SpikeDataset.from_raster(
        rasters, np.arange(n) % K, 0.001, [f"w{i}" for i in range(K)], attrs=attrs
    )


def make_run(run_dir: Path) -> None:
    import jax

    data = dataset(K, 0)
    config = TrainConfig(hidden=(H,), dt_ms=1.0, num_steps=T)
    spec = config.network_spec(C, K, 1.0, T, tuple(data.class_names))
    run_dir.mkdir(parents=True)
    info = new_run_info(spec, config, data, None, None)
    info.update(status="finished", epochs_done=0)
    write_run_info(run_dir, info)
    params = {k: np.array(v, np.float32) for k, v in init_params(spec, jax.random.PRNGKey(0)).items()}
    params["layer0.weight"] *= INPUT_GAIN
    save_best(run_dir, params)


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        root = Path(tmp)
        make_run(root / "run")
        write_keypair(root / "keys", "bench")
        key = root / "keys/bench.key"
        t0 = time.perf_counter()
        plain = build_run_bundle(
            root / "run", "kws", "1.0.0", key, root / "a.ekb", created="2026-05-09T07:35:25Z"
        )
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluated = build_run_bundle(
            root / "run", "kws", "1.0.0", key, root / "b.ekb", eval_data=dataset(EVAL_SAMPLES, 1),
            created="2026-05-09T07:35:25Z",
        )  # fmt: skip
        eval_s = time.perf_counter() - t0
        manifest_size = len(json.dumps(plain.manifest, sort_keys=True, separators=(",", ":"))) + 1
    weights = C * H + H * H + H * K
    doc = {
        "network": {"num_inputs": C, "hidden": [H], "recurrent": [True], "num_outputs": K, "num_steps": T},
        "weights": weights,
        "files": plain.files,
        "model_files_total": sum(plain.files.values()),
        "manifest_bytes": manifest_size,
        "bundle_bytes": plain.size,
        "build_s": round(build_s, 2),
        "build_with_eval_s": round(eval_s, 2),
        "eval_samples": EVAL_SAMPLES,
        "eval_metrics": evaluated.manifest["metrics"],
        "machine": machine(),
    }  # fmt: skip
    rows = "\n".join(f"| `{p}` | {s:,} |" for p, s in plain.files.items())
    markdown = (
        f"# Bundle of the reference network (`.venv/bin/python benchmarks/bundle_build.py`)\n\n"
        f"C = {C} → {H} recurrent → {K}, {weights:,} weights, random init with input weights x{INPUT_GAIN:g} "
        "(sizes do not depend on training).\n\n"
        f"| file | bytes |\n|---|---|\n{rows}\n| model files | {doc['model_files_total']:,} |\n"
        f"| manifest.json | {manifest_size:,} |\n| **bundle** | **{plain.size:,}** |\n\n"
        f"Build (load, quantize, four exports, sign, write): {build_s:.2f} s; with --eval-data on "
        f"{EVAL_SAMPLES} samples x {T} steps (float JAX incl. compile, emulator, ONNX Runtime): "
        f"{eval_s:.2f} s.\n"
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores (shared), "
        f"Python {doc['machine']['python']}.\n"
    )
    write_results(RESULTS / "bundle_build.json", doc, markdown, sort_keys=True)
    return doc


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, sort_keys=True))

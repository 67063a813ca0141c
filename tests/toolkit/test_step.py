"""Where the training step runs: device and kernel choice, each kernel's batches, data parallelism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train import TrainConfig
from edgekws.toolkit.train._sparse import SpikeEvents
from edgekws.toolkit.train._step import PlacementError, place, train_step


def test_auto_placement_is_the_sparse_kernel_on_cpu_and_the_dense_one_on_gpu() -> None:
    """auto -> a GPU with the dense kernel if JAX sees one, else the CPU with the sparse kernel; on the CPU
    Eventprop gets the sparse kernel and BPTT the dense one; named kernels are obeyed."""
    auto = place()
    has_gpu = jax.default_backend() == "gpu"
    assert (auto.device, auto.kernel) == (("gpu", "dense") if has_gpu else ("cpu", "sparse"))
    cpu = place("cpu")
    assert (cpu.device, cpu.kernel, len(cpu.devices)) == ("cpu", "sparse", 1) and "event" in cpu.reason
    assert place("cpu", method="bptt").kernel == "dense"
    dense = place("cpu", "dense")
    assert dense.kernel == "dense" and dense.to_dict()["devices"] == [str(jax.devices("cpu")[0])]


def test_impossible_placements_are_refused_with_the_fix() -> None:
    """A GPU that is not there, the sparse kernel for BPTT, and unknown names each get a clear error."""
    if jax.default_backend() != "gpu":
        with pytest.raises(PlacementError, match=r"JAX sees no GPU.*--device cpu"):
            place("gpu")
    else:
        with pytest.raises(PlacementError, match="CPU cores only"):
            place("gpu", "sparse")
    with pytest.raises(PlacementError, match="Eventprop gradients only"):
        place("cpu", "sparse", method="bptt")
    with pytest.raises(PlacementError, match=r"device must be one of.*'tpu'.*kernel must be one of.*'fast'"):
        place("tpu", "fast")


def test_each_kernel_gets_its_batch_format_and_both_steps_agree() -> None:
    """prepare() bins a data set into events (sparse) or a dense array (dense) with the same spikes, and one
    optimizer step of either kernel gives the same loss and parameters within float32 rounding."""
    rng = np.random.default_rng(0)
    rasters = [(rng.random((60, 12)) < 0.15).astype(np.uint8) for _ in range(8)]
    data = SpikeDataset.from_raster(rasters, np.arange(8) % 3, 0.001, ["a", "b", "c"])
    config = TrainConfig(hidden=(10,), batch_size=4, ease_in=False)
    spec = config.network_spec(12, 3, 1.0, 60)
    from edgekws.toolkit.train import init_params
    from edgekws.toolkit.train._step import optimizer

    params = {k: v * 25.0 for k, v in init_params(spec, jax.random.PRNGKey(0)).items()}
    opt_state = optimizer(config.learning_rate, False).init(params)
    index = np.array([5, 1, 2, 7])
    out = {}
    for kernel in ("sparse", "dense"):
        step = train_step(spec, config, place("cpu", kernel), total_steps=10)
        batch = step.prepare(data, index, 0.001, 60)
        if kernel == "sparse":
            assert isinstance(batch[0], SpikeEvents)
            events = batch[0].to_dense()
        else:
            np.testing.assert_array_equal(np.asarray(batch[0]), events)
        np.testing.assert_array_equal(np.asarray(batch[1]), data.labels[index])
        out[kernel] = step(step.put(params), step.put(opt_state), batch)
    assert sum(float(np.sum(c)) for c in out["sparse"][4]) > 10
    assert float(out["sparse"][2]) == pytest.approx(float(out["dense"][2]), rel=1e-6)
    for name in params:
        np.testing.assert_allclose(
            np.asarray(out["sparse"][0][name]), np.asarray(out["dense"][0][name]), atol=1e-6
        )


_TWO_DEVICES = r"""
import json, sys
import jax, numpy as np
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train import TrainConfig, init_params, train
from edgekws.toolkit.train._step import Placement, optimizer, place, train_step

rng = np.random.default_rng(0)
rasters = [(rng.random((40, 8)) < 0.2).astype(np.uint8) for _ in range(16)]
attrs = {"dt": 0.001, "num_steps": 40}
data = SpikeDataset.from_raster(rasters, np.arange(16) % 2, 0.001, ["a", "b"], attrs=attrs)
config = TrainConfig(hidden=(16,), batch_size=8, ease_in=False, augment="none", epochs=2, silent_boost=0.3)
spec = config.network_spec(8, 2, 1.0, 40)
both = place("cpu", "dense", "eventprop", 8)
one = Placement("cpu", "dense", both.devices[:1], "reference")
params = {k: v * 20.0 for k, v in init_params(spec, jax.random.PRNGKey(0)).items()}
opt_state = optimizer(config.learning_rate, False).init(params)
res = {"devices": len(both.devices)}
outs = []
for placement in (both, one):
    step = train_step(spec, config, placement, total_steps=4)
    batch = step.prepare(data, np.arange(8), 0.001, 40)
    res.setdefault("shards", [len(s.data) for s in batch[0].addressable_shards])
    outs.append(step(step.put(params), step.put(opt_state), batch))
res["loss"] = [float(o[2]) for o in outs]
diffs = [np.abs(np.asarray(outs[0][0][k]) - np.asarray(outs[1][0][k])).max() for k in params]
res["max_param_diff"] = float(max(diffs))
res["spikes"] = float(sum(np.sum(c) for c in outs[0][4]))
result = train(data, sys.argv[1], config, progress=False, device="cpu", kernel="dense")
res["epochs_done"] = result.epochs_done
print(json.dumps(res))
"""


def test_dense_kernel_is_data_parallel_over_two_cpu_devices(tmp_path: Path) -> None:
    """With XLA forced to two CPU devices the batch is split 4 + 4, the step equals the one-device step within
    float32 rounding, and a training run uses both devices (run.json names them)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICES, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["devices"] == 2 and res["shards"] == [4, 4]
    assert res["spikes"] > 10
    assert res["loss"][0] == pytest.approx(res["loss"][1], rel=1e-6)
    assert res["max_param_diff"] < 1e-6
    assert res["epochs_done"] == 2
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["placement"]["kernel"] == "dense" and len(info["placement"]["devices"]) == 2

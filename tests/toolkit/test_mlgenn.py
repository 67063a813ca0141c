"""Importing mlGeNN checkpoints: file names, flat (pre, post) layout, transpose, unit conversion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgekws.toolkit.train import MlgennError, import_mlgenn, load_run
from edgekws.toolkit.train._mlgenn import checkpoint_epochs, mlgenn_weight_factor

N_IN, N_HID, N_OUT = 6, 4, 3


def _write(folder: Path, epoch: int, recurrent: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mats = {
        "Conn_Input_Hidden": rng.normal(size=(N_IN, N_HID)),
        "Conn_Hidden_Output": rng.normal(size=(N_HID, N_OUT)),
    }
    if recurrent:
        mats["Conn_Hidden_Hidden"] = rng.normal(size=(N_HID, N_HID))
    folder.mkdir(exist_ok=True)
    for name, m in mats.items():  # mlGeNN's Numpy serialiser: flat float32, row-major (pre, post)
        np.save(folder / f"{epoch}-{name}-g.npy", m.astype(np.float32).ravel())
    return {k: v.astype(np.float32) for k, v in mats.items()}


def test_factor_is_the_netx_converters_0_0442() -> None:
    """At dt = 1 ms, τm = 20 ms, τs = 5 ms one mlGeNN weight unit is 0.0442 of ours."""
    from edgekws.packaging import NetworkSpec

    factor = mlgenn_weight_factor(NetworkSpec(num_inputs=1))
    assert factor == pytest.approx((1 - math.exp(-1 / 20)) * 5 * (1 - math.exp(-1 / 5)))
    assert round(factor, 4) == 0.0442


def test_import_transposes_and_scales_into_a_run(tmp_path: Path) -> None:
    """Shapes are inferred, (pre, post) becomes (post, pre), values are scaled; load_run accepts it."""
    _write(tmp_path / "ck", 3, seed=1)
    mats = _write(tmp_path / "ck", 7, seed=2)
    assert checkpoint_epochs(tmp_path / "ck") == [3, 7]
    run_dir = import_mlgenn(tmp_path / "ck", tmp_path / "run", class_names=("a", "b", "c"), num_steps=100)
    run = load_run(run_dir)
    spec = run.spec
    assert (spec.num_inputs, spec.hidden, spec.num_outputs, spec.recurrent) == (
        N_IN,
        (N_HID,),
        N_OUT,
        (True,),
    )
    assert spec.class_names == ("a", "b", "c") and spec.num_steps == 100
    f = mlgenn_weight_factor(spec)
    np.testing.assert_allclose(run.params["layer0.weight"], mats["Conn_Input_Hidden"].T * f, rtol=1e-6)
    np.testing.assert_allclose(run.params["layer0.weight_rec"], mats["Conn_Hidden_Hidden"].T * f, rtol=1e-6)
    np.testing.assert_allclose(run.params["layer1.weight"], mats["Conn_Hidden_Output"].T * f, rtol=1e-6)
    assert run.info["source"]["epoch"] == 7 and len(run.info["source"]["files"]) == 3


def test_feed_forward_checkpoint_needs_the_input_count(tmp_path: Path) -> None:
    """Without a recurrent matrix the sizes come from --num-inputs; a wrong count is reported."""
    _write(tmp_path / "ck", 1, recurrent=False)
    with pytest.raises(MlgennError, match="--num-inputs"):
        import_mlgenn(tmp_path / "ck", tmp_path / "r1")
    run = load_run(import_mlgenn(tmp_path / "ck", tmp_path / "r2", num_inputs=N_IN))
    assert run.spec.recurrent == (False,) and "layer0.weight_rec" not in run.params


def test_delays_and_missing_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    """A checkpoint with learned delays is refused; asking for a missing epoch lists the others."""
    _write(tmp_path / "ck", 2)
    with pytest.raises(MlgennError, match="epochs with weights here: \\[2\\]"):
        import_mlgenn(tmp_path / "ck", tmp_path / "r", epoch=5)
    np.save(tmp_path / "ck" / "2-Conn_Input_Hidden-d.npy", np.zeros(N_IN * N_HID, np.float32))
    with pytest.raises(MlgennError, match="delays"):
        import_mlgenn(tmp_path / "ck", tmp_path / "r", epoch=2)

"""Tests for the fixed-point network: validation, spec round trip and unit conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekws.packaging import FixedPointError, FixedPointLayer, FixedPointNetwork


def _net() -> FixedPointNetwork:
    rng = np.random.default_rng(0)
    hidden = FixedPointLayer(
        weight=rng.integers(-128, 128, (6, 4)),
        weight_rec=rng.integers(-128, 128, (6, 6)),
        i_decay=742,
        v_decay=200,
        v_th_mant=2048,
        weight_scale=2.0**-11,
        bias=np.arange(6) - 3,
    )
    readout = FixedPointLayer(
        weight=rng.integers(-128, 128, (3, 6)), i_decay=742, v_decay=200, weight_scale=2.0**-9
    )
    return FixedPointNetwork((hidden, readout))


def test_round_trip_through_json_and_arrays_is_exact() -> None:
    """to_dict (through JSON) plus arrays() rebuild an identical network."""
    net = _net()
    back = FixedPointNetwork.from_dict(json.loads(json.dumps(net.to_dict())), net.arrays())
    assert back.to_dict() == net.to_dict()
    for key, value in net.arrays().items():
        assert np.array_equal(back.arrays()[key], value)
    assert net.to_dict()["format_version"] == FixedPointNetwork.FORMAT_VERSION


def test_readout_scale_converts_voltage_lsb_to_float_units() -> None:
    """One readout voltage LSB is weight_scale / 64 float units, and the readout cannot spike."""
    net = _net()
    assert net.readout_scale == 2.0**-9 / 64
    assert net.layers[0].spiking and not net.layers[1].spiking


def test_invalid_layer_reports_every_problem_at_once() -> None:
    """Float weights, a 18-bit threshold and a bad decay are all named in one error."""
    with pytest.raises(FixedPointError) as err:
        FixedPointLayer(weight=np.zeros((2, 2)), i_decay=5000, v_th_mant=1 << 17)
    message = str(err.value)
    assert "integers" in message and "i_decay" in message and "17 bits" in message


def test_weights_outside_the_netx_range_are_rejected() -> None:
    """Mixed-sign weights above 254 cannot pass NetX exactly and are refused with a fix."""
    with pytest.raises(FixedPointError, match=r"\[-256, 254\]"):
        FixedPointLayer(weight=np.array([[255, -1]]))
    with pytest.raises(FixedPointError, match="all-zero"):
        FixedPointLayer(weight=np.zeros((2, 2), dtype=int))


def test_layer_sizes_must_chain() -> None:
    """A layer whose input count differs from the previous layer's size is refused."""
    a = FixedPointLayer(weight=np.ones((3, 2), dtype=int))
    b = FixedPointLayer(weight=np.ones((1, 4), dtype=int))
    with pytest.raises(FixedPointError, match="layer 1 takes 4 inputs"):
        FixedPointNetwork((a, b))


def test_from_dict_rejects_other_versions_and_missing_arrays() -> None:
    """A newer format version and a missing array each give a clear error."""
    net = _net()
    spec = net.to_dict()
    with pytest.raises(FixedPointError, match="format_version"):
        FixedPointNetwork.from_dict({**spec, "format_version": 99}, net.arrays())
    arrays = net.arrays()
    del arrays["layer0.weight_rec"]
    with pytest.raises(FixedPointError, match="weight_rec"):
        FixedPointNetwork.from_dict(spec, arrays)

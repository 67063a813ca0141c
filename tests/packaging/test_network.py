"""Tests for the network spec shared by trainer, quantizer, emulator and bundle."""

from __future__ import annotations

import json

import pytest

from edgekws.packaging import NetworkSpec, SpecError, decay_12bit


def test_decays_match_the_paper_values() -> None:
    """The 12-bit decays for τ_syn = 5 ms and τ_mem = 20 ms at dt = 1 ms are 742 and 200."""
    spec = NetworkSpec(num_inputs=700)
    assert (spec.i_decay, spec.v_decay) == (742, 200)
    assert spec.alpha_syn == 1 - 742 / 4096
    assert decay_12bit(2.0, 20.0) == 390


def test_round_trip_through_json_is_exact() -> None:
    """to_dict → JSON → from_dict rebuilds an equal spec."""
    spec = NetworkSpec(
        num_inputs=64,
        hidden=(32, 16),
        recurrent=(True, False),
        num_outputs=3,
        class_names=("a", "b", "c"),
        readout="max_over_time",
    )
    again = NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert hash(again) == hash(spec)


def test_parameter_shapes_name_every_weight() -> None:
    """Shapes follow the NetX convention (out, in), with recurrent weights only where asked."""
    spec = NetworkSpec(num_inputs=10, hidden=(8, 6), recurrent=(True, False), num_outputs=4)
    assert spec.parameter_shapes() == {
        "layer0.weight": (8, 10),
        "layer0.weight_rec": (8, 8),
        "layer1.weight": (6, 8),
        "layer2.weight": (4, 6),
    }


def test_invalid_spec_reports_every_problem_at_once() -> None:
    """A spec with several faults names all of them in one error."""
    with pytest.raises(SpecError) as info:
        NetworkSpec(num_inputs=0, hidden=(4,), recurrent=(True, False), threshold=-1.0)
    message = str(info.value)
    assert "num_inputs" in message and "recurrent" in message and "threshold" in message


def test_from_dict_rejects_unknown_fields_and_versions() -> None:
    """Unknown fields and other format versions are refused with the field named."""
    data = NetworkSpec(num_inputs=4).to_dict()
    with pytest.raises(SpecError, match="unknown network spec fields \\['colour'\\]"):
        NetworkSpec.from_dict({**data, "colour": "red"})
    with pytest.raises(SpecError, match="format_version"):
        NetworkSpec.from_dict({**data, "format_version": 99})

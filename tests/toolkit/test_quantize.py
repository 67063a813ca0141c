"""Tests for the float → Loihi 2 fixed-point quantizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.quant import QuantizationError, quantize


def _params(spec: NetworkSpec, seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, scale, shape) for k, shape in spec.parameter_shapes().items()}


SPEC = NetworkSpec(num_inputs=20, hidden=(16,), recurrent=(True,), num_outputs=4)


def test_step_follows_the_mlgenn_rule() -> None:
    """The step is 2^(floor(log2(p99)) - 6) of |weights| over feed-forward and recurrent weights together."""
    params = _params(SPEC)
    net, report = quantize(params, SPEC)
    both = np.concatenate([params["layer0.weight"].ravel(), params["layer0.weight_rec"].ravel()])
    m = max(np.percentile(both[both > 0], 99), np.percentile(-both[both < 0], 99))
    assert report.layers[0].step == 2.0 ** (math.floor(math.log2(m)) - 6)
    assert net.layers[0].weight_scale == report.layers[0].step
    assert net.layers[0].weight.min() >= -128 and net.layers[0].weight.max() <= 127


def test_thresholds_and_decays_come_from_the_spec() -> None:
    """Hidden vThMant = θ/q, the readout gets the largest 17-bit mantissa, decays are the spec's."""
    net, report = quantize(_params(SPEC), SPEC)
    hidden, readout = net.layers
    assert hidden.v_th_mant == round(SPEC.threshold / hidden.weight_scale)
    assert readout.v_th_mant == (1 << 17) - 1 and not readout.spiking
    assert (hidden.i_decay, hidden.v_decay) == (SPEC.i_decay, SPEC.v_decay)
    assert report.layers[0].threshold_error == 0.0


def test_representable_weights_quantize_without_error() -> None:
    """Weights that are multiples of the step within range come back exactly, with no clipping."""
    rng = np.random.default_rng(1)
    q = 2.0**-10
    params = {k: rng.integers(-100, 100, s) * q for k, s in SPEC.parameter_shapes().items()}
    for k in params:
        params[k].flat[0] = 100 * q  # pins the 99th percentile's power of two
    net, report = quantize(params, SPEC, percentile=100.0)
    for i, layer in enumerate(net.layers):
        assert layer.weight_scale == q
        assert np.array_equal(layer.weight * q, params[f"layer{i}.weight"])
    assert all(r.rms_error == 0.0 and r.num_clipped == 0 for r in report.layers)


def test_outliers_beyond_the_percentile_are_clipped_and_counted() -> None:
    """A huge outlier is clipped to the 8-bit range and counted; a 100th percentile avoids clipping it."""
    params = _params(SPEC)
    params["layer0.weight"][0, 0] = 50.0
    _, report = quantize(params, SPEC, percentile=99.0)
    assert report.layers[0].num_clipped >= 1 and report.layers[0].max_error > 40
    _, full = quantize(params, SPEC, percentile=100.0)
    assert full.layers[0].num_clipped == 0
    assert (
        full.layers[0].step >= 128 * report.layers[0].step
    )  # ... at the price of a coarse step for the rest


def test_bad_inputs_are_reported_together() -> None:
    """A missing array, a wrong shape and a bad percentile are listed in one error."""
    params = _params(SPEC)
    del params["layer0.weight_rec"]
    params["layer1.weight"] = np.zeros((2, 2))
    with pytest.raises(QuantizationError) as err:
        quantize(params, SPEC, percentile=0.0)
    message = str(err.value)
    assert "layer0.weight_rec" in message and "layer1.weight" in message and "percentile" in message


def test_threshold_that_does_not_fit_17_bits_is_an_error() -> None:
    """Tiny weights make θ/q exceed 17 bits, which is refused with a fix."""
    with pytest.raises(QuantizationError, match="17 bits"):
        quantize(_params(SPEC, scale=1e-6), SPEC)


def test_report_serialises() -> None:
    """The report is JSON-ready with one entry per layer."""
    _, report = quantize(_params(SPEC), SPEC, percentile=99.5)
    d = report.to_dict()
    assert d["percentile"] == 99.5 and [r["name"] for r in d["layers"]] == ["hidden0", "readout"]


def test_emulator_readout_scores_the_quantized_model() -> None:
    """The `edgekws eval --backend emulator` readout is the emulator's trace of the quantized model."""
    from edgekws.agent.backends import EmulatorBackend
    from edgekws.toolkit.quant import deployed_readout

    spec = NetworkSpec(num_inputs=20, hidden=(16,), recurrent=(True,), num_outputs=4, num_steps=50)
    params = _params(SPEC)
    x = (np.random.default_rng(2).random((5, 50, 20)) < 0.1).astype(np.uint8)
    readout = deployed_readout("emulator", params, spec, x, batch_size=2)
    net, _ = quantize(params, spec)
    assert readout.shape == (5, 50, 4)
    assert np.array_equal(readout, EmulatorBackend(net).run(x))

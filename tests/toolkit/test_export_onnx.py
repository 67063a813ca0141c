"""The ONNX exports run the network of docs/model.md in ONNX Runtime, whole or chunk by chunk."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _parity import assert_readout_close

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.export import ExportError, export_onnx, export_onnx_streaming, state_layout

CPU = ["CPUExecutionProvider"]


def reference(
    params: dict[str, np.ndarray], spec: NetworkSpec, spikes: np.ndarray, *, reset_u: bool = False
) -> np.ndarray:
    """Float64 readout ``(B, T, O)`` of the update in docs/model.md, written out step by step.

    ``reset_u`` also clears u on a spike: a wrong semantics, to show a test can tell them apart.
    """
    return reference_with_margin(params, spec, spikes, reset_u=reset_u)[0]


def reference_with_margin(
    params: dict[str, np.ndarray], spec: NetworkSpec, spikes: np.ndarray, *, reset_u: bool = False
) -> tuple[np.ndarray, float]:
    """The float64 readout and the closest any hidden voltage came to the threshold, ``min |v - θ|``.

    Float32 implementations agree with each other only while no voltage lands within float32 rounding
    (about 1e-7) of the threshold: there a spike may flip, and the traces part. Parity tests check this
    margin so that they test the export, not the luck of the draw.
    """
    x = np.asarray(spikes, dtype=np.float64)
    batch, steps, _ = x.shape
    sizes = spec.layer_sizes
    u = [np.zeros((batch, n)) for n in sizes]
    v = [np.zeros((batch, n)) for n in sizes]
    s = [np.zeros((batch, n)) for n in spec.hidden]  # spikes of the previous step
    x_prev = np.zeros_like(x[:, 0])
    out = np.zeros((batch, steps, spec.num_outputs))
    margin = np.inf
    for t in range(steps):
        inp, new_s = x_prev, []
        for i in range(len(sizes)):
            current = inp @ params[f"layer{i}.weight"].T
            if i < len(spec.hidden) and spec.recurrent[i]:
                current = current + s[i] @ params[f"layer{i}.weight_rec"].T
            u[i] = spec.alpha_syn * u[i] + current
            v[i] = spec.alpha_mem * v[i] + u[i]
            if i < len(spec.hidden):
                margin = min(margin, float(np.abs(v[i] - spec.threshold).min()))
                fired = v[i] > spec.threshold
                v[i] = np.where(fired, 0.0, v[i])
                if reset_u:
                    u[i] = np.where(fired, 0.0, u[i])
                new_s.append(fired.astype(np.float64))
                inp = s[i]
        s, x_prev = new_s, x[:, t]
        out[:, t] = v[-1]
    return out, margin


def random_params(spec: NetworkSpec, seed: int, gain: float = 0.6, rec_gain: float = 0.2) -> dict:
    """Gaussian weights scaled by fan-in, giving hidden spike rates of a few percent on sparse input."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, (rec_gain if name.endswith("_rec") else gain) / np.sqrt(shape[1]), shape)
        for name, shape in spec.parameter_shapes().items()
    }


def random_spikes(batch: int, steps: int, channels: int, seed: int, rate: float = 0.03) -> np.ndarray:
    return (np.random.default_rng(seed).random((batch, steps, channels)) < rate).astype(np.float32)


def ort_run(model: bytes, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model, providers=CPU).run(None, feeds)


RECURRENT = NetworkSpec(num_inputs=128, hidden=(256,), recurrent=(True,), num_outputs=20)
TWO_LAYER = NetworkSpec(num_inputs=40, hidden=(64, 48), recurrent=(False, True), num_outputs=12)


def test_models_pass_the_full_checker_and_carry_metadata():
    """Both variants pass onnx.checker with full_check at opset 17 and embed version, variant and spec."""
    params = random_params(TWO_LAYER, 0)
    for variant, data in (
        ("sequence", export_onnx(params, TWO_LAYER)),
        ("streaming", export_onnx_streaming(params, TWO_LAYER)),
    ):
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == 17
        assert any(node.op_type == "Scan" for node in model.graph.node)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["edgekws.onnx_variant"] == variant
        assert props["edgekws.version"]
        assert NetworkSpec.from_dict(json.loads(props["edgekws.network_spec"])) == TWO_LAYER
        assert [tuple(d.values()) for d in json.loads(props["edgekws.state"])] == state_layout(TWO_LAYER)


@pytest.mark.parametrize("spec", [RECURRENT, TWO_LAYER], ids=["recurrent", "two_layer"])
def test_readout_matches_the_float64_reference_over_1000_steps(spec):
    """ORT's float32 readout stays within 2e-6 of the readout's scale of the float64 update over T=1000 with
    real spiking."""
    params = random_params(spec, 1)
    x = random_spikes(2, 1000, spec.num_inputs, seed=2)
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    expected, margin = reference_with_margin(params, spec, x)
    assert readout.shape == (2, 1000, spec.num_outputs) and readout.dtype == np.float32
    assert np.abs(expected).max() > 5.0  # realistic magnitudes, not a silent network
    assert margin > 3e-7  # no voltage within ~2 float32 ulps of the threshold, where a spike could flip
    assert_readout_close(readout, expected)


@pytest.mark.parametrize("spec", [RECURRENT, TWO_LAYER], ids=["recurrent", "two_layer"])
def test_readout_matches_the_jax_float_model_over_1000_steps(spec):
    """ORT's readout stays within 2e-6 of the readout's scale of the trainer's JAX simulate() over T=1000."""
    from edgekws.toolkit.train._model import simulate

    params = {k: v.astype(np.float32) for k, v in random_params(spec, 6).items()}
    x = random_spikes(2, 1000, spec.num_inputs, seed=7)
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    simulated = np.asarray(simulate(params, x, spec).readout)
    expected, margin = reference_with_margin(params, spec, x)
    assert np.abs(expected).max() > 5.0 and margin > 3e-7
    assert_readout_close(readout, simulated)


def test_parity_tolerance_follows_the_readout_scale():
    """On readouts in the hundreds (a trained network reaches 291), float32 rounding grows with the values:
    the bound is relative to the readout's scale (#17), and ORT holds it against the float64 update."""
    spec = RECURRENT
    params = random_params(spec, 1)
    params[f"layer{len(spec.hidden)}.weight"] = params[f"layer{len(spec.hidden)}.weight"] * 40.0
    x = random_spikes(2, 1000, spec.num_inputs, seed=2)
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    expected, margin = reference_with_margin(params, spec, x)
    assert np.abs(expected).max() > 100.0 and margin > 3e-7
    assert_readout_close(readout, expected)


def test_one_model_serves_any_batch_and_length():
    """The sequence model takes dynamic batch and step counts, down to a single step."""
    params = random_params(TWO_LAYER, 3)
    model = export_onnx(params, TWO_LAYER)
    for batch, steps in ((1, 1), (3, 17), (5, 64)):
        x = random_spikes(batch, steps, TWO_LAYER.num_inputs, seed=steps, rate=0.2)
        (readout,) = ort_run(model, {"spikes": x})
        assert readout.shape == (batch, steps, TWO_LAYER.num_outputs)
        np.testing.assert_allclose(readout, reference(params, TWO_LAYER, x), atol=1e-5)


@pytest.mark.parametrize("spec", [RECURRENT, TWO_LAYER], ids=["recurrent", "two_layer"])
def test_streaming_chunks_reproduce_the_whole_sequence(spec):
    """Running uneven chunks through the streaming model, state passed along, equals the sequence model."""
    params = random_params(spec, 4)
    x = random_spikes(2, 300, spec.num_inputs, seed=5)
    (whole,) = ort_run(export_onnx(params, spec), {"spikes": x})
    session = ort.InferenceSession(export_onnx_streaming(params, spec), providers=CPU)
    names = [name for name, _ in state_layout(spec)]
    state = {name: np.zeros((2, n), np.float32) for name, n in state_layout(spec)}
    pieces, start = [], 0
    for size in (1, 7, 92, 200):
        out = session.run(None, {"spikes": x[:, start : start + size], **state})
        pieces.append(out[0])
        state = dict(zip(names, out[1:], strict=True))
        start += size
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-6)


def test_each_layer_adds_one_step_of_delay():
    """With one hidden layer a data spike at step k first moves the readout at step k+2."""
    spec = NetworkSpec(num_inputs=1, hidden=(1,), recurrent=(False,), num_outputs=1)
    params = {"layer0.weight": np.array([[5.0]]), "layer1.weight": np.array([[1.0]])}
    x = np.zeros((1, 10, 1), np.float32)
    x[0, 3, 0] = 1.0
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    assert np.all(readout[0, :5, 0] == 0.0)
    assert readout[0, 5, 0] == pytest.approx(1.0)


@pytest.mark.parametrize(("weight", "first_spike_step"), [(1.0, 2), (1.0 + 2.0**-20, 1)])
def test_threshold_is_strict(weight, first_spike_step):
    """A voltage exactly at the threshold does not spike; one just above it does."""
    spec = NetworkSpec(num_inputs=1, hidden=(1,), recurrent=(False,), num_outputs=1)
    params = {"layer0.weight": np.array([[weight]]), "layer1.weight": np.array([[1.0]])}
    x = np.zeros((1, 6, 1), np.float32)
    x[0, 0, 0] = 1.0  # reaches u at step 1: v[1] = weight
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    # a hidden spike at step k reaches the readout at step k+1
    assert np.flatnonzero(readout[0, :, 0])[0] == first_spike_step + 1


def test_reset_clears_v_and_keeps_u():
    """After a spike v restarts from 0 while u keeps integrating, exactly as the reference."""
    spec = NetworkSpec(num_inputs=1, hidden=(1,), recurrent=(True,), num_outputs=1)
    params = {
        "layer0.weight": np.array([[0.7]]),
        "layer0.weight_rec": np.array([[-0.3]]),
        "layer1.weight": np.array([[1.0]]),
    }
    x = np.ones((1, 40, 1), np.float32)
    (readout,) = ort_run(export_onnx(params, spec), {"spikes": x})
    np.testing.assert_allclose(readout, reference(params, spec, x), atol=1e-5)
    assert np.abs(readout - reference(params, spec, x, reset_u=True)).max() > 0.1


def test_bad_parameters_are_all_reported_at_once():
    """A missing array, a misshapen one and an unknown one appear together in one ExportError."""
    params = random_params(TWO_LAYER, 0)
    del params["layer2.weight"]
    params["layer0.weight"] = params["layer0.weight"].T
    params["layer0.weight_rec"] = np.zeros((64, 64))
    with pytest.raises(ExportError) as info:
        export_onnx(params, TWO_LAYER)
    message = str(info.value)
    assert "layer2.weight" in message and "layer0.weight must have shape (64, 40)" in message
    assert "layer0.weight_rec" in message

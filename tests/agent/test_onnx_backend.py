"""The ONNX Runtime backend runs exported models whole or chunk by chunk on the best available provider."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _parity import assert_readout_close

from edgekws.agent import decide
from edgekws.agent.backends import Backend, BackendUnavailable, InvalidOnnxModel, OnnxBackend
from edgekws.agent.backends._onnx import choose_providers
from edgekws.packaging import NetworkSpec
from edgekws.toolkit.export import export_onnx, export_onnx_streaming

SPEC = NetworkSpec(num_inputs=16, hidden=(24,), recurrent=(True,), num_outputs=4)


def params_for(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, (0.3 if name.endswith("_rec") else 1.0) / np.sqrt(shape[1]), shape)
        for name, shape in spec.parameter_shapes().items()
    }


def spikes(batch: int, steps: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((batch, steps, SPEC.num_inputs)) < 0.1).astype(np.uint8)


def reference(params: dict[str, np.ndarray], spec: NetworkSpec, x: np.ndarray) -> np.ndarray:
    """Float64 readout of docs/model.md for one recurrent hidden layer (delayed input, strict threshold)."""
    batch, steps, _ = x.shape
    u, v, s = (np.zeros((batch, spec.hidden[0])) for _ in range(3))
    uo, vo = np.zeros((batch, spec.num_outputs)), np.zeros((batch, spec.num_outputs))
    x_prev, out = np.zeros(x[:, 0].shape), []
    for t in range(steps):
        uo = spec.alpha_syn * uo + s @ params["layer1.weight"].T
        vo = spec.alpha_mem * vo + uo
        u = spec.alpha_syn * u + x_prev @ params["layer0.weight"].T + s @ params["layer0.weight_rec"].T
        v = spec.alpha_mem * v + u
        s = (v > spec.threshold).astype(np.float64)
        v = np.where(s > 0, 0.0, v)
        x_prev = x[:, t]
        out.append(vo)
    return np.stack(out, axis=1)


@pytest.fixture(scope="module")
def params() -> dict[str, np.ndarray]:
    return params_for(SPEC)


@pytest.fixture(scope="module")
def streaming(params) -> OnnxBackend:
    return OnnxBackend(export_onnx_streaming(params, SPEC))


def test_providers_are_preferred_tensorrt_then_cuda_then_cpu():
    """Of the available providers, TensorRT comes before CUDA before CPU, and others are left out."""
    available = [
        "AzureExecutionProvider",
        "CPUExecutionProvider",
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
    ]
    assert choose_providers(available) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="none of"):
        choose_providers(["AzureExecutionProvider"])


def test_backend_reports_the_provider_it_runs_on(streaming):
    """The reported provider is the one the session actually put first, and the best this build offers."""
    assert streaming.provider == streaming.providers[0]
    assert streaming.provider in choose_providers(ort.get_available_providers())
    assert streaming.spec == SPEC and streaming.streaming
    assert isinstance(streaming, Backend) and OnnxBackend.available()
    assert (streaming.num_inputs, streaming.num_outputs) == (16, 4)


def test_run_matches_the_float_update(streaming, params):
    """run() on a streaming model gives the float64 update's readout within 2e-6 of its scale, as float64
    (B, T, O)."""
    x = spikes(3, 200)
    readout = streaming.run(x)
    expected = reference(params, SPEC, x)
    assert readout.shape == (3, 200, 4) and readout.dtype == np.float64
    assert np.abs(expected).max() > 1.0
    assert_readout_close(readout, expected)
    assert decide(readout).labels.shape == (3,)
    np.testing.assert_array_equal(streaming.decide(x).labels, decide(readout).labels)


def test_sequence_and_streaming_models_agree(params, streaming):
    """The whole-sequence variant and the streaming variant give the same run() readout."""
    x = spikes(2, 120, seed=3)
    sequence = OnnxBackend(export_onnx(params, SPEC))
    assert not sequence.streaming
    np.testing.assert_allclose(sequence.run(x), streaming.run(x), atol=1e-6)


def test_step_carries_state_across_chunks(params):
    """Feeding a stream in uneven chunks through step() equals run() on the whole stream; reset() restarts."""
    backend = OnnxBackend(export_onnx_streaming(params, SPEC))
    x = spikes(2, 150, seed=4)
    whole = backend.run(x)
    chunks = [backend.step(x[:, a:b]) for a, b in ((0, 1), (1, 40), (40, 41), (41, 150))]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, atol=1e-6)
    backend.reset()
    np.testing.assert_allclose(backend.step(x[:, :40]), whole[:, :40], atol=1e-6)


def test_step_refuses_a_different_batch_without_reset(streaming):
    """A chunk whose batch size differs from the running streams' is refused until reset(batch_size)."""
    streaming.reset(2)
    streaming.step(spikes(2, 5))
    with pytest.raises(ValueError, match=r"call reset\(batch_size\)"):
        streaming.step(spikes(3, 5))
    streaming.reset(3)
    assert streaming.step(spikes(3, 5)).shape == (3, 5, 4)


def test_sequence_model_cannot_step(params):
    """step() on the whole-sequence variant says to export the streaming variant."""
    backend = OnnxBackend(export_onnx(params, SPEC))
    with pytest.raises(BackendUnavailable, match="export_onnx_streaming"):
        backend.step(spikes(1, 3))


def test_input_shapes_and_types(streaming):
    """One (steps, channels) sample runs as a batch of one; wrong channels or float spikes are refused."""
    x = spikes(1, 30)
    np.testing.assert_array_equal(streaming.run(x[0]), streaming.run(x))
    with pytest.raises(ValueError, match=r"\(batch, steps, 16\)"):
        streaming.run(np.zeros((1, 10, 15), np.uint8))
    with pytest.raises(ValueError, match="integers or booleans"):
        streaming.run(np.zeros((1, 10, 16), np.float32))


def test_unloadable_or_foreign_models_are_rejected(params):
    """Bytes that are not ONNX, or an ONNX model without edgekws metadata, raise InvalidOnnxModel."""
    with pytest.raises(InvalidOnnxModel, match="cannot load"):
        OnnxBackend(b"not an onnx model")
    model = onnx.load_from_string(export_onnx(params, SPEC))
    del model.metadata_props[:]
    with pytest.raises(InvalidOnnxModel, match="edgekws metadata"):
        OnnxBackend(model.SerializeToString())


def test_unavailable_provider_is_refused(params):
    """Asking for a provider this ONNX Runtime lacks names the ones it offers."""
    with pytest.raises(BackendUnavailable, match="not available"):
        OnnxBackend(export_onnx(params, SPEC), providers=["NoSuchExecutionProvider"])


def test_missing_onnxruntime_raises_backend_unavailable(monkeypatch, params):
    """Without onnxruntime importable, constructing the backend says how to install it."""
    model = export_onnx(params, SPEC)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package looks like to import
    with pytest.raises(BackendUnavailable, match=r"pip install 'edgekws\[onnx\]'"):
        OnnxBackend(model)

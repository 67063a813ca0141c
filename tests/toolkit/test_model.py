"""The float LIF model: parameter init and the forward simulation against a plain numpy loop."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.train import init_params, simulate
from edgekws.toolkit.train._model import genn_weight_scale


def _numpy_reference(
    params: dict[str, np.ndarray], x: np.ndarray, spec: NetworkSpec
) -> tuple[np.ndarray, list]:
    """The NetworkSpec update written as a float64 loop, one step and one layer at a time."""
    a_s, a_m = spec.alpha_syn, spec.alpha_mem
    batch, steps, _ = x.shape
    sizes = spec.layer_sizes
    n_hidden = len(spec.hidden)
    u = [np.zeros((batch, n)) for n in sizes]
    v = [np.zeros((batch, n)) for n in sizes]
    s = [np.zeros((batch, n)) for n in spec.hidden]
    readout = np.zeros((batch, steps, spec.num_outputs))
    spikes = [np.zeros((batch, steps, n)) for n in spec.hidden]
    for t in range(steps):
        prev_s = [si.copy() for si in s]
        for layer in range(n_hidden + 1):
            inp = (x[:, t - 1] if t > 0 else np.zeros_like(x[:, 0])) if layer == 0 else prev_s[layer - 1]
            current = inp @ params[f"layer{layer}.weight"].T
            if layer < n_hidden and spec.recurrent[layer]:
                current = current + prev_s[layer] @ params[f"layer{layer}.weight_rec"].T
            u[layer] = a_s * u[layer] + current
            v[layer] = a_m * v[layer] + u[layer]
            if layer < n_hidden:
                s[layer] = (v[layer] > spec.threshold).astype(np.float64)
                v[layer] = np.where(s[layer] > 0, 0.0, v[layer])
                spikes[layer][:, t] = s[layer]
            else:
                readout[:, t] = v[layer]
    return readout, spikes


@pytest.mark.parametrize(
    ("hidden", "recurrent"), [((7,), (True,)), ((6, 5), (True, False)), ((4, 4), (False, True))]
)
def test_simulate_matches_the_numpy_update(hidden: tuple[int, ...], recurrent: tuple[bool, ...]) -> None:
    """simulate() reproduces the float64 numpy loop: same spikes, readout within float32 rounding."""
    spec = NetworkSpec(num_inputs=5, hidden=hidden, recurrent=recurrent, num_outputs=3, num_steps=80)
    params = init_params(spec, jax.random.PRNGKey(3))
    gain = {"layer0.weight": 12.0, "layer1.weight": 60.0}
    params = {k: v * gain.get(k, 8.0) for k, v in params.items()}
    x = (np.random.default_rng(1).random((2, 80, 5)) < 0.25).astype(np.float32)
    out = jax.jit(simulate, static_argnums=2)(params, x, spec)
    ref_v, ref_s = _numpy_reference({k: np.asarray(v, np.float64) for k, v in params.items()}, x, spec)
    for got, want in zip(out.hidden_spikes, ref_s, strict=True):
        assert want.sum() > 10
        np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_allclose(np.asarray(out.readout), ref_v, rtol=1e-4, atol=1e-5)
    for counts, want in zip(out.hidden_counts, ref_s, strict=True):
        np.testing.assert_array_equal(np.asarray(counts), want.sum(axis=1))


def test_one_step_delay_per_layer() -> None:
    """An input spike in column t reaches hidden u at step t+1, the readout one step after a hidden spike."""
    spec = NetworkSpec(num_inputs=1, hidden=(1,), recurrent=(False,), num_outputs=1, num_steps=10)
    params = {"layer0.weight": np.full((1, 1), 2.0, np.float32), "layer1.weight": np.ones((1, 1), np.float32)}
    x = np.zeros((1, 10, 1), np.float32)
    x[0, 3, 0] = 1.0
    out = simulate(params, x, spec)
    assert np.nonzero(np.asarray(out.hidden_spikes[0][0, :, 0]))[0][0] == 4
    readout = np.asarray(out.readout[0, :, 0])
    assert np.all(readout[:5] == 0) and readout[5] == pytest.approx(1.0)


def test_init_params_names_shapes_and_scale() -> None:
    """init_params gives float32 arrays named as the spec, with the paper's means in our units."""
    spec = NetworkSpec(num_inputs=128, hidden=(256,), recurrent=(True,), num_outputs=20)
    params = init_params(spec, jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in params.items()} == spec.parameter_shapes()
    assert all(v.dtype == np.float32 for v in params.values())
    scale = genn_weight_scale(spec)
    assert scale == pytest.approx(0.0442, abs=1e-4)
    assert float(params["layer0.weight"].mean()) == pytest.approx(0.03 * scale, rel=0.02)
    assert float(params["layer0.weight_rec"].std()) == pytest.approx(0.02 * scale, rel=0.02)
    assert float(params["layer1.weight"].std()) == pytest.approx(0.03 * scale, rel=0.05)


def test_random_init_spikes_at_a_sensible_rate() -> None:
    """On 128 channels at 5 % density a random net fires a few spikes per neuron per second, few silent."""
    spec = NetworkSpec(num_inputs=128, hidden=(64,), recurrent=(True,), num_outputs=4, num_steps=1000)
    params = init_params(spec, jax.random.PRNGKey(0))
    x = (np.random.default_rng(0).random((2, 1000, 128)) < 0.05).astype(np.float32)
    counts = np.asarray(jax.jit(simulate, static_argnums=2)(params, x, spec).hidden_counts[0])
    assert 2.0 < counts.mean() < 40.0
    assert (counts == 0).mean() < 0.2


def test_simulate_rejects_wrong_shapes() -> None:
    """Wrong parameter shapes and a wrong channel count are named in one ValueError."""
    spec = NetworkSpec(num_inputs=5, hidden=(4,), recurrent=(True,), num_outputs=2)
    params = init_params(spec, jax.random.PRNGKey(0))
    params["layer1.weight"] = params["layer1.weight"].T
    with pytest.raises(ValueError, match=r"layer1\.weight.*spikes must be"):
        simulate(params, np.zeros((1, 10, 3), np.float32), spec)

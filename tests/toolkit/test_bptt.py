"""The BPTT baseline: the float model's forward, surrogate gradients, the Eventprop return signature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.train import bptt_loss_and_grad, init_params, simulate
from edgekws.toolkit.train._bptt import bptt_forward, superspike
from edgekws.toolkit.train._step import BpttLossConfig


def _net(recurrent: bool = True, hidden: tuple[int, ...] = (16,)) -> tuple[NetworkSpec, dict[str, jax.Array]]:
    spec = NetworkSpec(
        num_inputs=8, hidden=hidden, recurrent=(recurrent,) * len(hidden), num_outputs=3, num_steps=50
    )
    params = {k: v * 8.0 for k, v in init_params(spec, jax.random.PRNGKey(0)).items()}  # make it spike
    return spec, params


def _spikes(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((4, 50, 8)) < 0.2).astype(np.float32)


def test_forward_readout_equals_simulate() -> None:
    """BPTT's forward gives exactly simulate's readout and spike counts (one and two hidden layers)."""
    for spec, params in (_net(), _net(recurrent=False, hidden=(16, 12))):
        out = simulate(params, _spikes(), spec)
        readout, counts = bptt_forward(params, _spikes(), spec)
        assert float(jnp.sum(out.hidden_counts[0])) > 0
        np.testing.assert_array_equal(np.asarray(readout), np.asarray(out.readout))
        for a, b in zip(counts, out.hidden_counts, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_superspike_is_a_strict_step_with_a_fast_sigmoid_derivative() -> None:
    """The spike is x > 0 (0 at x = 0) and its derivative is 1/(1 + k|x|)^2."""
    x = jnp.array([-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(np.asarray(superspike(x, 10.0)), [0.0, 0.0, 1.0])
    grad = jax.vmap(jax.grad(lambda v: superspike(v, 10.0)))(x)
    np.testing.assert_allclose(
        np.asarray(grad), 1.0 / (1.0 + 10.0 * np.abs([-1.0, 0.0, 0.5])) ** 2, rtol=1e-6
    )


def test_loss_and_grad_matches_the_eventprop_signature_and_descends() -> None:
    """(loss, aux with accuracy and hidden_counts, grads per parameter); a small step down lowers the loss."""
    spec, params = _net()
    labels = jnp.array([0, 1, 2, 0])
    cfg = BpttLossConfig("exp_weighted_mean", reg_lambda=0.0, reg_nu=14.0)
    loss, aux, grads = bptt_loss_and_grad(params, _spikes(), labels, spec, cfg)
    assert set(grads) == set(params) and all(grads[k].shape == params[k].shape for k in params)
    assert 0.0 <= float(aux["accuracy"]) <= 1.0 and aux["hidden_counts"][0].shape == (4, 16)
    assert all(float(jnp.abs(g).sum()) > 0 for g in grads.values())
    stepped = {k: params[k] - 1e-3 * grads[k] for k in params}
    loss2, _, _ = bptt_loss_and_grad(stepped, _spikes(), labels, spec, cfg)
    assert float(loss2) < float(loss)


def test_regulariser_adds_to_the_loss_for_busy_neurons() -> None:
    """The regulariser adds λ/2·Σ (mean count − ν)² to the loss, as the Eventprop core does."""
    spec, params = _net()
    labels = jnp.array([0, 1, 2, 0])
    base, aux, _ = bptt_loss_and_grad(
        params, _spikes(), labels, spec, BpttLossConfig("max_over_time", 0.0, 0.0)
    )
    reg, _, _ = bptt_loss_and_grad(
        params, _spikes(), labels, spec, BpttLossConfig("max_over_time", 1e-3, 0.0)
    )
    mean_counts = np.asarray(aux["hidden_counts"][0]).mean(axis=0)
    np.testing.assert_allclose(float(reg) - float(base), 0.5e-3 * np.sum(mean_counts**2), rtol=1e-4)


def test_bptt_and_eventprop_agree_on_the_loss_and_the_readout_gradient() -> None:
    """Both methods compute the same loss; the readout weights' gradient (no spike inside) agrees too."""
    from edgekws.toolkit.train import LossConfig, eventprop_loss_and_grad

    spec, params = _net()
    labels = jnp.array([0, 1, 2, 0])
    cfg = LossConfig(readout="exp_weighted_mean", reg_lambda=1e-4, reg_nu=2.0)
    loss_e, aux_e, grads_e = eventprop_loss_and_grad(params, _spikes(), labels, spec, cfg)
    loss_b, aux_b, grads_b = bptt_loss_and_grad(params, _spikes(), labels, spec, cfg)
    np.testing.assert_allclose(float(loss_b), float(loss_e), rtol=1e-5)
    np.testing.assert_allclose(float(aux_b["accuracy"]), float(aux_e["accuracy"]))
    np.testing.assert_allclose(
        np.asarray(grads_b["layer1.weight"]), np.asarray(grads_e["layer1.weight"]), rtol=1e-4, atol=1e-7
    )

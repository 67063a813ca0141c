"""Backprop-through-time baseline: the same forward as the Eventprop core, a surrogate gradient backward.

The forward is the exact discrete update of docs/model.md (``lax.scan`` over steps, one step of synaptic
delay per layer, strict ``>`` threshold, reset of ``v`` only). The backward is ``jax.value_and_grad``
through the scan, with the threshold's derivative replaced by the SuperSpike fast sigmoid
``1 / (1 + k|v - θ|)²`` (Zenke & Ganguli 2018; Spyx's ``superspike``). The reset is treated as a
constant in the backward pass (``stop_gradient``), as in SpyTorch and Spyx. BPTT keeps every step's state
for the backward pass, so its memory grows with the number of steps: the baseline the Eventprop memory
benchmark compares against (``benchmarks/train_memory.py``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from edgekws.packaging import NetworkSpec, readout_problem
from edgekws.toolkit.train._model import PRECISION


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def superspike(x: jax.Array, slope: float) -> jax.Array:
    """Heaviside step ``x > 0`` with the fast-sigmoid surrogate derivative ``1/(1 + slope|x|)²``."""
    return (x > 0).astype(x.dtype)


@superspike.defjvp
def _superspike_jvp(slope: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> Any:
    (x,) = primals
    (dx,) = tangents
    return superspike(x, slope), dx / (1.0 + slope * jnp.abs(x)) ** 2


def _surrogate_slope(cfg: Any) -> float:
    return float(getattr(cfg, "surrogate_slope", 25.0))


def _dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w.T`` at the float model's full precision."""
    return jnp.matmul(x, w.T, precision=PRECISION)


def bptt_forward(
    params: dict[str, jax.Array], spikes: jax.Array, spec: NetworkSpec, slope: float = 25.0
) -> tuple[jax.Array, list[jax.Array]]:
    """Readout trace ``(B, T, O)`` and hidden spike counts ``[(B, H)]``; spikes have surrogate gradients."""
    x = jnp.swapaxes(jnp.asarray(spikes, jnp.float32), 0, 1)  # (T, B, C)
    batch = x.shape[1]
    a_s, a_m, theta = spec.alpha_syn, spec.alpha_mem, spec.threshold
    n_hidden = len(spec.hidden)
    sizes = spec.layer_sizes
    zeros = [jnp.zeros((batch, n), jnp.float32) for n in sizes]
    carry0 = (
        jnp.zeros((batch, spec.num_inputs), jnp.float32),  # data of the previous step
        tuple(zeros),  # u per layer
        tuple(zeros),  # v per layer
        tuple(zeros[:n_hidden]),  # spikes of the previous step, per hidden layer
        tuple(zeros[:n_hidden]),  # spike counts per hidden layer
    )

    def step(carry: Any, x_t: jax.Array) -> tuple[Any, jax.Array]:
        x_prev, us, vs, ss, counts = carry
        new_u, new_v, new_s, new_c = [], [], [], []
        inp = x_prev
        for layer in range(n_hidden + 1):
            u = a_s * us[layer] + _dot(inp, params[f"layer{layer}.weight"])
            if layer < n_hidden and spec.recurrent[layer]:
                u = u + _dot(ss[layer], params[f"layer{layer}.weight_rec"])
            v = a_m * vs[layer] + u
            if layer < n_hidden:
                s = superspike(v - theta, slope)
                v = v * (1.0 - jax.lax.stop_gradient(s))
                new_s.append(s)
                new_c.append(counts[layer] + s)
                inp = ss[layer]  # the next layer sees this layer's spikes one step late
            new_u.append(u)
            new_v.append(v)
        carry = (x_t, tuple(new_u), tuple(new_v), tuple(new_s), tuple(new_c))
        return carry, new_v[-1]

    final, readout = jax.lax.scan(step, carry0, x)
    return jnp.swapaxes(readout, 0, 1), list(final[4])


def readout_scores(readout: jax.Array, rule: str) -> jax.Array:
    """Class scores ``(B, O)`` of a trace ``(B, T, O)``: the JAX twin of ``edgekws.agent.readout_scores``."""
    steps = readout.shape[1]
    if rule == "exp_weighted_mean":
        t = jnp.arange(steps, dtype=jnp.float32)
        return jnp.einsum("btk,t->bk", readout, jnp.exp(-t / steps) / steps)
    if rule == "max_over_time":
        return readout.max(axis=1)
    raise ValueError(readout_problem(rule))


def classification_loss(readout: jax.Array, labels: jax.Array, rule: str) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of the softmax of the scores, and the accuracy of the arg-max."""
    scores = readout_scores(readout, rule)
    logp = jax.nn.log_softmax(scores, axis=-1)
    labels = jnp.asarray(labels, jnp.int32)
    ce = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
    acc = jnp.mean((jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32))
    return ce, acc


def spike_regulariser(counts: list[jax.Array], reg_lambda: float, reg_nu: float) -> jax.Array:
    """``λ/2 Σ_layers Σ_neurons (mean_batch(count) - ν)²``: the Eventprop core's regulariser (mlGeNN's)."""
    total = jnp.zeros((), jnp.float32)
    for c in counts:
        total = total + jnp.sum((jnp.mean(c, axis=0) - reg_nu) ** 2)
    return 0.5 * reg_lambda * total


def bptt_loss_and_grad(
    params: dict[str, jax.Array], spikes: jax.Array, labels: jax.Array, spec: NetworkSpec, cfg: Any
) -> tuple[jax.Array, dict[str, Any], dict[str, jax.Array]]:
    """Loss, auxiliaries (``accuracy``, ``hidden_counts``) and surrogate gradients, like Eventprop's.

    ``cfg`` is a ``LossConfig`` (``readout``, ``reg_lambda``, ``reg_nu``; an optional
    ``surrogate_slope`` defaults to 25, Spyx's default).
    """
    slope = _surrogate_slope(cfg)
    rule = cfg.rule(spec) if hasattr(cfg, "rule") else (cfg.readout or spec.readout)

    def loss_fn(p: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
        readout, counts = bptt_forward(p, spikes, spec, slope)
        ce, acc = classification_loss(readout, labels, rule)
        reg = spike_regulariser(counts, cfg.reg_lambda, cfg.reg_nu)
        return ce + reg, {"accuracy": acc, "hidden_counts": counts, "ce": ce, "reg": reg}

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, aux, grads

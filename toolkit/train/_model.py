"""The float network in JAX: parameter initialisation and the forward simulation.

This is the real-valued version of the Loihi 2 CUBA LIF update that ``NetworkSpec`` defines (docs/eventprop.md
§1). For every layer ``l`` at step ``t`` (state starts at zero, ``x_l[-1] = 0``)::

    u_l[t] = a_s u_l[t-1] + W_l x_l[t-1] + R_l s_l[t-1]    x_0 = data, x_l = s_{l-1}: one-step delays
    v_l[t] = a_m v_l[t-1] + u_l[t]
    s_l[t] = v_l[t] > threshold;  v_l[t] <- 0 where s_l[t]    (hidden layers only; the readout never spikes)

with ``a_s = spec.alpha_syn`` and ``a_m = spec.alpha_mem`` (the exact 12-bit decays of the fixed-point model).
Data column ``t`` first reaches hidden layer 0 at step ``t+1`` and the readout of a one-hidden-layer net at
``t+2``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from edgekws.packaging import NetworkSpec

# Matmuls run at full float32 precision: TF32/bf16 passes on GPUs would make the simulation differ from the
# numpy reference and from the fixed-point emulator by far more than quantization.
PRECISION = lax.Precision.HIGHEST

# Init of the seed paper (mlGeNN units): (mean, sd) of input->hidden, hidden->hidden, hidden->hidden2 and
# hidden->readout weights.
_INIT_IN = (0.03, 0.01)
_INIT_REC = (0.0, 0.02)
_INIT_OUT = (0.0, 0.03)


class SimOutput(NamedTuple):
    """What ``simulate`` returns."""

    readout: jax.Array  # (B, T, O) float32 readout voltage V[t] (post-update, never reset)
    hidden_spikes: list[jax.Array]  # one (B, T, H_l) float32 0/1 array per hidden layer
    hidden_counts: list[jax.Array]  # one (B, H_l) float32 spike count per hidden layer


def genn_weight_scale(spec: NetworkSpec) -> float:
    """Factor from mlGeNN weights (``scale_i`` LIF + exponential synapse) to our per-spike ``u`` increments.

    ``(1 - exp(-dt/tau_mem)) * (tau_syn/dt) * (1 - exp(-dt/tau_syn))``:
    0.0442 for dt=1, tau_mem=20, tau_syn=5.
    """
    dt, tm, ts = spec.dt_ms, spec.tau_mem_ms, spec.tau_syn_ms
    return (1.0 - math.exp(-dt / tm)) * (ts / dt) * (1.0 - math.exp(-dt / ts))


def init_params(spec: NetworkSpec, key: jax.Array) -> dict[str, jax.Array]:
    """Random float32 parameters named as ``spec.parameter_shapes()``, in our units (per-spike ``u`` steps).

    The seed paper's normal inits in mlGeNN units -- input->hidden (and hidden->hidden2) N(0.03, 0.01),
    recurrent N(0, 0.02), ->readout N(0, 0.03) -- times ``genn_weight_scale(spec)``. No fan-in scaling: what
    sets the firing rate is the summed input rate (channels x density), which is about the same for SHD
    (700 channels at ~1 %) and a 128-channel front-end at 5-8 %; docs/eventprop.md §6 has the measured rates.
    """
    shapes = spec.parameter_shapes()
    scale = genn_weight_scale(spec)
    keys = jax.random.split(key, len(shapes))
    params: dict[str, jax.Array] = {}
    n_hidden = len(spec.hidden)
    for k, (name, shape) in zip(keys, shapes.items(), strict=True):
        layer = int(name.split(".")[0][len("layer") :])
        if name.endswith("weight_rec"):
            mean, sd = _INIT_REC
        elif layer == n_hidden:
            mean, sd = _INIT_OUT
        else:
            mean, sd = _INIT_IN
        w = mean + sd * jax.random.normal(k, shape, dtype=jnp.float32)
        params[name] = (w * scale).astype(jnp.float32)
    return params


def input_problems(
    params: dict[str, jax.Array], spikes: jax.Array, spec: NetworkSpec, allow_extra: bool = False
) -> list[str]:
    """Every way ``params`` and ``spikes`` do not fit ``spec`` (empty when they do)."""
    problems = []
    for name, shape in spec.parameter_shapes().items():
        if name not in params:
            problems.append(f"missing parameter {name!r} {shape}")
        elif tuple(params[name].shape) != shape:
            problems.append(f"parameter {name!r} must have shape {shape}, got {tuple(params[name].shape)}")
    extra = sorted(set(params) - set(spec.parameter_shapes()))
    if extra and not allow_extra:
        problems.append(f"unknown parameters {extra}")
    if spikes.ndim != 3 or spikes.shape[2] != spec.num_inputs:
        problems.append(f"spikes must be (batch, steps, {spec.num_inputs}), got shape {tuple(spikes.shape)}")
    return problems


def _check(params: dict[str, jax.Array], spikes: jax.Array, spec: NetworkSpec) -> None:
    problems = input_problems(params, spikes, spec)
    if problems:
        raise ValueError("simulate: " + "; ".join(problems) + "; build params with init_params(spec, key)")


def _dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w.T`` for ``x`` (B, in) and ``w`` (out, in), at full precision."""
    return lax.dot_general(x, w, (((1,), (1,)), ((), ())), precision=PRECISION)


class State(NamedTuple):
    """State after step ``t``: ``u`` and ``v`` of every layer (readout last), spikes of the hidden layers."""

    u: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    s: tuple[jax.Array, ...]  # float32 0/1 spikes s_l[t] of the hidden layers


def zero_state(spec: NetworkSpec, batch: int) -> State:
    sizes = spec.layer_sizes
    z = tuple(jnp.zeros((batch, n), jnp.float32) for n in sizes)
    return State(u=z, v=z, s=z[: len(spec.hidden)])


class StepOut(NamedTuple):
    state: State
    u_pre: tuple[jax.Array, ...]  # u_l[t] of the hidden layers
    v_prev: tuple[jax.Array, ...]  # v_l[t-1] (post-reset) of the hidden layers
    v_pre: tuple[jax.Array, ...]  # v_l[t] before reset, every layer (the readout's is its V[t])


def step(params: dict[str, jax.Array], spec: NetworkSpec, state: State, x_prev: jax.Array) -> StepOut:
    """One step ``t`` of every layer from the state at ``t-1`` and the data column ``x_prev = data[t-1]``."""
    a_s, a_m, theta = spec.alpha_syn, spec.alpha_mem, spec.threshold
    n_hidden = len(spec.hidden)
    us, vs, ss, v_pres = [], [], [], []
    inp = x_prev
    for layer in range(n_hidden + 1):
        current = _dot(inp, params[f"layer{layer}.weight"])
        if layer < n_hidden and spec.recurrent[layer]:
            current = current + _dot(state.s[layer], params[f"layer{layer}.weight_rec"])
        u = a_s * state.u[layer] + current
        v_pre = a_m * state.v[layer] + u
        if layer < n_hidden:
            s = (v_pre > theta).astype(jnp.float32)
            v = jnp.where(s > 0, 0.0, v_pre)
            ss.append(s)
            inp = state.s[layer]  # the next layer sees this layer's spikes of the previous step
        else:
            v = v_pre
        us.append(u)
        vs.append(v)
        v_pres.append(v_pre)
    new = State(u=tuple(us), v=tuple(vs), s=tuple(ss))
    return StepOut(
        state=new, u_pre=tuple(us[:n_hidden]), v_prev=tuple(state.v[:n_hidden]), v_pre=tuple(v_pres)
    )


def input_column(spikes: jax.Array, t: jax.Array) -> jax.Array:
    """Data column ``t`` (B, C), or zeros for ``t < 0`` or ``t >= T``, read without copying ``spikes``."""
    steps = spikes.shape[1]
    col = lax.dynamic_index_in_dim(spikes, jnp.clip(t, 0, steps - 1), axis=1, keepdims=False)
    return jnp.where((t >= 0) & (t < steps), col, 0.0).astype(jnp.float32)


def simulate(params: dict[str, jax.Array], spikes: jax.Array, spec: NetworkSpec) -> SimOutput:
    """Run the network on ``spikes`` (B, T, C) 0/1 and return the readout trace and the hidden spikes.

    jit-friendly: ``jax.jit(simulate, static_argnums=2)``. T is taken from ``spikes``
    (not from ``spec.num_steps``).
    """
    spikes = jnp.asarray(spikes, jnp.float32)
    _check(params, spikes, spec)
    batch, steps = spikes.shape[0], spikes.shape[1]

    def body(state: State, t: jax.Array) -> tuple[State, tuple[jax.Array, tuple[jax.Array, ...]]]:
        out = step(params, spec, state, input_column(spikes, t - 1))
        return out.state, (out.v_pre[-1], out.state.s)

    _, (readout, hidden) = lax.scan(body, zero_state(spec, batch), jnp.arange(steps))
    readout = jnp.swapaxes(readout, 0, 1)
    hidden_spikes = [jnp.swapaxes(s, 0, 1) for s in hidden]
    return SimOutput(
        readout=readout,
        hidden_spikes=hidden_spikes,
        hidden_counts=[s.sum(axis=1) for s in hidden_spikes],
    )

"""Exact Eventprop gradients for the recurrent LIF network (discrete adjoint; see docs/eventprop.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
from jax import lax

from edgekws.packaging import NetworkSpec, Readout, readout_problem
from edgekws.toolkit.train._model import (
    PRECISION,
    State,
    StepOut,
    input_column,
    input_problems,
    step,
    zero_state,
)

ReadoutRule: TypeAlias = Readout  # the one vocabulary, edgekws.packaging.READOUTS


@dataclass(frozen=True)
class LossConfig:
    """Loss settings: readout rule, and mlGeNN's spike-count regularisation ``reg_lambda``, ``reg_nu``.

    ``readout=None`` means the spec's readout rule. The regulariser pulls each hidden neuron's batch-mean
    spike count per trial towards ``reg_nu`` (docs/eventprop.md §4).
    """

    readout: ReadoutRule | None = None
    reg_lambda: float = 0.0
    reg_nu: float = 14.0
    checkpoint_every: int = 100  # steps per recomputed segment: memory/compute knob, no effect on results

    def __post_init__(self) -> None:
        problems = []
        if self.readout is not None and readout_problem(self.readout):
            problems.append(str(readout_problem(self.readout)))
        if self.reg_lambda < 0:
            problems.append(f"reg_lambda must be >= 0, got {self.reg_lambda}")
        if self.reg_nu < 0:
            problems.append(f"reg_nu must be >= 0, got {self.reg_nu}")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if problems:
            raise ValueError("invalid LossConfig: " + "; ".join(problems))

    def rule(self, spec: NetworkSpec) -> ReadoutRule:
        """The readout rule in force for ``spec``."""
        return self.readout if self.readout is not None else spec.readout


class _Record(NamedTuple):
    """What the backward pass needs from one forward step, per hidden layer (zeros where no spike)."""

    s: tuple[jax.Array, ...]  # bool (B, H) spikes s_l[t]
    a: tuple[jax.Array, ...]  # float32 u_l[t] / vdot_l[t] at spikes
    b: tuple[jax.Array, ...]  # float32 1 / vdot_l[t] at spikes


def _segments(steps: int, every: int) -> tuple[int, int]:
    """(number of segments, steps per segment) covering ``steps`` with less than one segment of padding."""
    n_seg = max(1, math.ceil(steps / every))
    return n_seg, math.ceil(steps / n_seg)


def _record(out: StepOut) -> _Record:
    """Spikes and the two Eventprop factors at spikes; vdot = v_pre[t] - v[t-1] > 0 at every spike."""
    ss, aa, bb = [], [], []
    for s, u, v_prev, v_pre in zip(out.state.s, out.u_pre, out.v_prev, out.v_pre, strict=False):
        spiked = s > 0
        vdot = jnp.where(spiked, v_pre - v_prev, 1.0)
        ss.append(spiked)
        aa.append(jnp.where(spiked, u / vdot, 0.0))
        bb.append(jnp.where(spiked, 1.0 / vdot, 0.0))
    return _Record(s=tuple(ss), a=tuple(aa), b=tuple(bb))


def _check_inputs(
    params: dict[str, jax.Array], spikes: jax.Array, labels: jax.Array, spec: NetworkSpec
) -> None:
    problems = input_problems(params, spikes, spec, allow_extra=True)
    if spikes.ndim == 3 and spikes.shape[2] == spec.num_inputs and labels.shape != (spikes.shape[0],):
        problems.append(f"labels must be ({spikes.shape[0]},) class indices, got shape {tuple(labels.shape)}")
    if problems:
        raise ValueError(
            "eventprop_loss_and_grad: " + "; ".join(problems) + "; build params with init_params(spec, key)"
        )


def eventprop_loss_and_grad(
    params: dict[str, jax.Array],
    spikes: jax.Array,
    labels: jax.Array,
    spec: NetworkSpec,
    cfg: LossConfig,
) -> tuple[jax.Array, dict[str, Any], dict[str, jax.Array]]:
    """Loss, aux and the Eventprop gradient of every weight, for a batch of input spike trains.

    ``spikes`` (B, T, C) 0/1 (float32, or uint8 as the training loop passes it), ``labels`` (B,) class
    indices. ``loss`` = batch-mean cross-entropy of the softmax of the readout scores + the spike-count
    penalty. ``aux``: ``accuracy`` (batch mean), ``scores`` (B, O), ``ce`` (the cross-entropy part), ``reg``
    (the penalty), ``hidden_counts`` (list of (B, H_l)).
    ``grads`` has the keys of ``params``. jit with ``spec`` and ``cfg`` static:
    ``jax.jit(eventprop_loss_and_grad, static_argnums=(3, 4))``.

    Two passes (docs/eventprop.md §3): a forward pass keeping only the network state every
    ``cfg.checkpoint_every`` steps, then a backward pass over the segments in reverse that re-runs each
    segment's forward steps (keeping spikes and two factors per spike) and integrates the adjoint through it.
    """
    spikes = jnp.asarray(spikes)  # any dtype: each column is converted to float32 as it is read
    labels = jnp.asarray(labels)
    _check_inputs(params, spikes, labels, spec)
    rule = cfg.rule(spec)
    batch, steps = spikes.shape[0], spikes.shape[1]
    n_hidden = len(spec.hidden)
    a_s, a_m = spec.alpha_syn, spec.alpha_mem
    n_seg, seg = _segments(steps, cfg.checkpoint_every)

    def weight(t: jax.Array) -> jax.Array:
        return readout_weight(t, steps)

    # ---- pass 1: forward, keeping the state at the start of every segment --------------------------------
    class Fwd(NamedTuple):
        state: State
        score: jax.Array  # (B, O) running readout score
        t_max: jax.Array  # (B, O) int32 step of the running max (max_over_time)
        counts: tuple[jax.Array, ...]  # (B, H_l) spike counts over t < T

    def fwd_step(c: Fwd, t: jax.Array) -> tuple[Fwd, None]:
        out = step(params, spec, c.state, input_column(spikes, t - 1))
        v = out.v_pre[-1]
        valid = t < steps
        if rule == "exp_weighted_mean":
            score, t_max = c.score + weight(t) * v, c.t_max
        else:
            better = valid & ((v > c.score) | (t == 0))
            score, t_max = jnp.where(better, v, c.score), jnp.where(better, t, c.t_max)
        counts = tuple(n + jnp.where(valid, s, 0.0) for n, s in zip(c.counts, out.state.s, strict=True))
        return Fwd(out.state, score, t_max, counts), None

    def fwd_segment(c: Fwd, k: jax.Array) -> tuple[Fwd, State]:
        c2, _ = lax.scan(fwd_step, c, k * seg + jnp.arange(seg))
        return c2, c.state

    zeros_o = jnp.zeros((batch, spec.num_outputs), jnp.float32)
    init = Fwd(
        state=zero_state(spec, batch),
        score=zeros_o,
        t_max=jnp.zeros((batch, spec.num_outputs), jnp.int32),
        counts=tuple(jnp.zeros((batch, h), jnp.float32) for h in spec.hidden),
    )
    final, checkpoints = lax.scan(fwd_segment, init, jnp.arange(n_seg))
    scores, counts = final.score, final.counts

    # ---- loss, and its gradient w.r.t. the readout trace ---------------------------------------------------
    head = loss_head(scores, counts, labels, cfg)
    g_score, reg_kick = head.g_score, head.reg_kick

    def dl_dv(t: jax.Array) -> jax.Array:
        """dL/dV[t] of the readout, (B, O)."""
        if rule == "exp_weighted_mean":
            return g_score * weight(t)
        return jnp.where(final.t_max == t, g_score, 0.0)

    # ---- pass 2: backward over segments, re-running each segment forward -----------------------------------
    w = [params[f"layer{i}.weight"] for i in range(n_hidden + 1)]
    r = {i: params[f"layer{i}.weight_rec"] for i in range(n_hidden) if spec.recurrent[i]}

    class Bwd(NamedTuple):
        lam_u: tuple[jax.Array, ...]  # lambda_u[t+1] per layer (readout last)
        lam_vp: tuple[jax.Array, ...]  # lambda_{v_pre}[t+1] per layer
        lam_u_next: tuple[jax.Array, ...]  # lambda_u[t+2] per layer

    def bwd_step(c: Bwd, xs: tuple[jax.Array, _Record]) -> tuple[Bwd, tuple[jax.Array, ...]]:
        t, rec = xs
        valid = t < steps
        lam_v = [a_m * lvp for lvp in c.lam_vp]  # lambda_v[t]: adjoint of the post-reset v[t]
        # d(lambda_u)/dt at the arrival step t+1, per target layer: what moving an arriving spike costs.
        dot_lu = [ln - lu for ln, lu in zip(c.lam_u_next, c.lam_u, strict=True)]
        lam_vp = [jnp.zeros(())] * (n_hidden + 1)
        lam_vp[n_hidden] = lam_v[n_hidden] + dl_dv(t)
        for i in range(n_hidden):
            jump = _mm(dot_lu[i + 1], w[i + 1])
            if i in r:
                jump = jump + _mm(dot_lu[i], r[i])
            at_spike = rec.a[i] * lam_v[i] - rec.b[i] * jump + jnp.where(valid, reg_kick[i], 0.0)
            lam_vp[i] = jnp.where(rec.s[i], at_spike, lam_v[i])
        lam_u = [lvp + a_s * lu for lvp, lu in zip(lam_vp, c.lam_u, strict=True)]
        # lambda_u[t+1] meets the presynaptic spikes of step t in the weight gradients; they are summed over
        # the whole segment at once in bwd_segment (one large matrix product instead of one per step).
        return Bwd(tuple(lam_u), tuple(lam_vp), c.lam_u), c.lam_u

    def bwd_segment(
        carry: tuple[Bwd, dict[str, jax.Array]], xs: tuple[jax.Array, State]
    ) -> tuple[tuple[Bwd, dict[str, jax.Array]], None]:
        c, grads = carry
        k, start = xs
        ts = k * seg + jnp.arange(seg)

        def rerun(state: State, t: jax.Array) -> tuple[State, _Record]:
            out = step(params, spec, state, input_column(spikes, t - 1))
            return out.state, _record(out)

        _, records = lax.scan(rerun, start, ts)
        c2, lam_us = lax.scan(bwd_step, c, (ts, records), reverse=True)
        grads = dict(grads)
        x = jax.vmap(lambda t: input_column(spikes, t))(ts)  # (seg, B, C): data column t of each step
        for i in range(n_hidden + 1):
            pre = x if i == 0 else records.s[i - 1].astype(jnp.float32)
            grads[f"layer{i}.weight"] = grads[f"layer{i}.weight"] + _outer_seq(lam_us[i], pre)
            if i in r:
                grads[f"layer{i}.weight_rec"] = grads[f"layer{i}.weight_rec"] + _outer_seq(
                    lam_us[i], records.s[i].astype(jnp.float32)
                )
        return (c2, grads), None

    zeros = tuple(jnp.zeros((batch, n), jnp.float32) for n in spec.layer_sizes)
    init_b = (Bwd(zeros, zeros, zeros), {k: jnp.zeros_like(v) for k, v in params.items()})
    (_, grads), _ = lax.scan(bwd_segment, init_b, (jnp.arange(n_seg), checkpoints), reverse=True)

    return head.loss, head.aux(scores, counts), grads


class Head(NamedTuple):
    """The loss of a batch from its readout scores and spike counts, and what the backward pass needs."""

    loss: jax.Array  # ce + reg
    ce: jax.Array  # batch-mean cross-entropy of the softmax of the scores
    reg: jax.Array  # the spike-count penalty
    accuracy: jax.Array  # batch mean of argmax(scores) == label
    g_score: jax.Array  # (B, O) dL/dscore
    reg_kick: list[jax.Array]  # (H_l,) per hidden layer: added to lambda_vp at each spike (§4)

    def aux(self, scores: jax.Array, counts: Any) -> dict[str, Any]:
        """The ``aux`` dict of ``eventprop_loss_and_grad``."""
        return {
            "accuracy": self.accuracy,
            "scores": scores,
            "ce": self.ce,
            "reg": self.reg,
            "hidden_counts": list(counts),
        }


def loss_head(scores: jax.Array, counts: Any, labels: jax.Array, cfg: LossConfig) -> Head:
    """Cross-entropy, regulariser and their gradients from the scores (B, O) and the counts [(B, H_l)].

    Shared by every kernel: the dense path calls it inside its jitted computation, the sparse kernel on the
    scores and counts of its forward pass.
    """

    def ce_fn(sc: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(sc, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=1))

    ce, g_score = jax.value_and_grad(ce_fn)(scores)
    batch = scores.shape[0]
    mean_counts = [n.mean(axis=0) for n in counts]
    reg = 0.5 * cfg.reg_lambda * sum(jnp.sum((m - cfg.reg_nu) ** 2) for m in mean_counts)
    # mlGeNN's per-spike adjoint kick: d(reg)/d(count_bn) = reg_lambda (mean_n - nu) / B, added to lambda_v.
    reg_kick = [cfg.reg_lambda * (m - cfg.reg_nu) / batch for m in mean_counts]
    pred = jnp.argmax(scores, axis=1)
    accuracy = jnp.mean((pred == labels).astype(jnp.float32))
    return Head(ce + reg, ce, jnp.asarray(reg, jnp.float32), accuracy, g_score, reg_kick)


def readout_weight(t: jax.Array, steps: int) -> jax.Array:
    """Readout weight exp(-t/T)/T of step t (0 beyond T), as agent._decision.readout_weights."""
    tf = t.astype(jnp.float32)
    return jnp.where(t < steps, jnp.exp(-tf / steps) / steps, 0.0)


def _mm(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for ``x`` (B, out) and ``w`` (out, in), at full precision."""
    return lax.dot_general(x, w, (((1,), (0,)), ((), ())), precision=PRECISION)


def _outer_seq(lam: jax.Array, pre: jax.Array) -> jax.Array:
    """Outer products summed over steps and batch: ``lam`` (S, B, out), ``pre`` (S, B, in) → (out, in)."""
    return lax.dot_general(lam, pre, (((0, 1), (0, 1)), ((), ())), precision=PRECISION)

"""Exact Eventprop gradients for the recurrent LIF network (discrete adjoint; see docs/eventprop.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
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
from edgekws.toolkit.train._targets import FrameTargets, target_problems

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


def label_problems(labels: Any, shape: tuple[int, ...], spec: NetworkSpec) -> list[str]:
    """What is wrong with ``labels`` (class indices, or :class:`FrameTargets`) for spikes of ``shape``."""
    if len(shape) != 3 or shape[2] != spec.num_inputs:
        return []  # the spikes' own problem is reported
    if isinstance(labels, FrameTargets):
        return target_problems(labels, shape[0], shape[1], spec.num_outputs)
    if tuple(np.shape(labels)) != (shape[0],):
        return [f"labels must be ({shape[0]},) class indices, got shape {tuple(np.shape(labels))}"]
    return []


def _check_inputs(params: dict[str, jax.Array], spikes: jax.Array, labels: Any, spec: NetworkSpec) -> None:
    problems = input_problems(params, spikes, spec, allow_extra=True)
    problems += label_problems(labels, tuple(spikes.shape), spec)
    if problems:
        raise ValueError(
            "eventprop_loss_and_grad: " + "; ".join(problems) + "; build params with init_params(spec, key)"
        )


def eventprop_loss_and_grad(
    params: dict[str, jax.Array],
    spikes: jax.Array,
    labels: jax.Array | FrameTargets,
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

    With :class:`~edgekws.toolkit.train._targets.FrameTargets` as ``labels`` (stream training) the loss is
    time-resolved (docs/eventprop.md §9): per-step cross-entropies of the softmax of ``V[t]`` and max-pooled
    windows, summed and divided by B; ``aux`` then has ``frame_accuracy`` and ``window_accuracy`` (their
    mean is ``accuracy``) and ``scores`` is None.

    Two passes (docs/eventprop.md §3): a forward pass keeping only the network state every
    ``cfg.checkpoint_every`` steps, then a backward pass over the segments in reverse that re-runs each
    segment's forward steps (keeping spikes and two factors per spike) and integrates the adjoint through it.
    """
    spikes = jnp.asarray(spikes)  # any dtype: each column is converted to float32 as it is read
    stream = isinstance(labels, FrameTargets)
    if not stream:
        labels = jnp.asarray(labels)
    _check_inputs(params, spikes, labels, spec)
    rule = cfg.rule(spec)
    batch, steps = spikes.shape[0], spikes.shape[1]
    n_hidden = len(spec.hidden)
    a_s, a_m = spec.alpha_syn, spec.alpha_mem
    n_seg, seg = _segments(steps, cfg.checkpoint_every)
    rows = jnp.arange(batch)
    if stream:
        tg = FrameTargets(*(jnp.asarray(a) for a in labels))

    def weight(t: jax.Array) -> jax.Array:
        return readout_weight(t, steps)

    def at_step(t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Step t's frame class, weight, pooled window (clipped to 0) and whether it is in one."""
        tc = jnp.clip(t, 0, steps - 1)
        valid = t < steps
        c = jnp.where(valid, tg.cls[:, tc], -1)
        w = jnp.where(valid, tg.win[:, tc], -1)
        return c, tg.wt[:, tc], jnp.maximum(w, 0), w >= 0

    # ---- pass 1: forward, keeping the state at the start of every segment --------------------------------
    class Fwd(NamedTuple):
        state: State
        score: jax.Array  # (B, O) running readout score; stream: (B, 2) frame CE sum and frames right
        t_max: jax.Array  # (B, O) int32 step of the running max (max_over_time); stream: unused
        counts: tuple[jax.Array, ...]  # (B, H_l) spike counts over t < T
        pooled: tuple[jax.Array, ...]  # stream: (B, W) best log-probability, its step, right there

    def fwd_step(c: Fwd, t: jax.Array) -> tuple[Fwd, None]:
        out = step(params, spec, c.state, input_column(spikes, t - 1))
        v = out.v_pre[-1]
        valid = t < steps
        pooled = c.pooled
        if stream:
            cls, wt, w, in_win = at_step(t)
            logp = jax.nn.log_softmax(v, axis=-1)
            right = jnp.argmax(v, axis=-1)
            frame = cls >= 0
            lp = jnp.take_along_axis(logp, jnp.maximum(cls, 0)[:, None], axis=1)[:, 0]
            score = c.score + jnp.stack(
                [jnp.where(frame, -lp * wt, 0.0), (frame & (right == cls)).astype(jnp.float32)], axis=1
            )
            t_max = c.t_max
            best, t_best, ok = pooled
            wcls = tg.win_cls[rows, w]
            lpw = jnp.take_along_axis(logp, jnp.maximum(wcls, 0)[:, None], axis=1)[:, 0]
            better = in_win & (lpw > best[rows, w])
            best = best.at[rows, w].set(jnp.where(better, lpw, best[rows, w]))
            t_best = t_best.at[rows, w].set(jnp.where(better, t, t_best[rows, w]))
            ok = ok.at[rows, w].set(jnp.where(better, right == wcls, ok[rows, w]))
            pooled = (best, t_best, ok)
        elif rule == "exp_weighted_mean":
            score, t_max = c.score + weight(t) * v, c.t_max
        else:
            better = valid & ((v > c.score) | (t == 0))
            score, t_max = jnp.where(better, v, c.score), jnp.where(better, t, c.t_max)
        counts = tuple(n + jnp.where(valid, s, 0.0) for n, s in zip(c.counts, out.state.s, strict=True))
        return Fwd(out.state, score, t_max, counts, pooled), None

    def fwd_segment(c: Fwd, k: jax.Array) -> tuple[Fwd, State]:
        c2, _ = lax.scan(fwd_step, c, k * seg + jnp.arange(seg))
        return c2, c.state

    zeros_o = jnp.zeros((batch, 2 if stream else spec.num_outputs), jnp.float32)
    pooled0: tuple[jax.Array, ...] = ()
    if stream:
        n_win = tg.win_cls.shape[1]
        pooled0 = (
            jnp.full((batch, n_win), -jnp.inf, jnp.float32),
            jnp.full((batch, n_win), -1, jnp.int32),
            jnp.zeros((batch, n_win), bool),
        )
    init = Fwd(
        state=zero_state(spec, batch),
        score=zeros_o,
        t_max=jnp.zeros((batch, spec.num_outputs), jnp.int32),
        counts=tuple(jnp.zeros((batch, h), jnp.float32) for h in spec.hidden),
        pooled=pooled0,
    )
    final, checkpoints = lax.scan(fwd_segment, init, jnp.arange(n_seg))
    scores, counts = final.score, final.counts

    # ---- loss, and its gradient w.r.t. the readout trace ---------------------------------------------------
    if stream:
        best, t_best, ok = final.pooled
        head = stream_head(scores, best, ok, tg, counts, cfg)
    else:
        head = loss_head(scores, counts, labels, cfg)
    g_score, reg_kick = head.g_score, head.reg_kick

    def dl_dv(t: jax.Array, v: jax.Array) -> jax.Array:
        """dL/dV[t] of the readout, (B, O), from the readout voltage V[t] (used by the stream loss)."""
        if stream:
            cls, wt, w, in_win = at_step(t)
            p = jax.nn.softmax(v, axis=-1)
            eye = jnp.eye(spec.num_outputs, dtype=jnp.float32)
            g = jnp.where((cls >= 0)[:, None], wt[:, None] * (p - eye[jnp.maximum(cls, 0)]), 0.0)
            wcls = tg.win_cls[rows, w]
            at_best = in_win & (t_best[rows, w] == t)
            g_win = tg.win_wt[rows, w][:, None] * (p - eye[jnp.maximum(wcls, 0)])
            return (g + jnp.where(at_best[:, None], g_win, 0.0)) / batch
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

    def bwd_step(c: Bwd, xs: tuple[jax.Array, _Record, jax.Array]) -> tuple[Bwd, tuple[jax.Array, ...]]:
        t, rec, v_out = xs
        valid = t < steps
        lam_v = [a_m * lvp for lvp in c.lam_vp]  # lambda_v[t]: adjoint of the post-reset v[t]
        # d(lambda_u)/dt at the arrival step t+1, per target layer: what moving an arriving spike costs.
        dot_lu = [ln - lu for ln, lu in zip(c.lam_u_next, c.lam_u, strict=True)]
        lam_vp = [jnp.zeros(())] * (n_hidden + 1)
        lam_vp[n_hidden] = lam_v[n_hidden] + dl_dv(t, v_out)
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

        def rerun(state: State, t: jax.Array) -> tuple[State, tuple[_Record, jax.Array]]:
            out = step(params, spec, state, input_column(spikes, t - 1))
            return out.state, (_record(out), out.v_pre[-1])

        _, (records, v_outs) = lax.scan(rerun, start, ts)
        c2, lam_us = lax.scan(bwd_step, c, (ts, records, v_outs), reverse=True)
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

    return head.loss, head.aux(None if stream else scores, counts), grads


class Head(NamedTuple):
    """The loss of a batch from its readout scores and spike counts, and what the backward pass needs."""

    loss: jax.Array  # ce + reg
    ce: jax.Array  # batch-mean cross-entropy of the softmax of the scores
    reg: jax.Array  # the spike-count penalty
    accuracy: jax.Array  # batch mean of argmax(scores) == label
    g_score: jax.Array  # (B, O) dL/dscore (zeros for the stream loss, whose dL/dV is per step)
    reg_kick: list[jax.Array]  # (H_l,) per hidden layer: added to lambda_vp at each spike (§4)
    extra: dict[str, jax.Array] = {}  # noqa: RUF012 - NamedTuple default, never mutated

    def aux(self, scores: jax.Array | None, counts: Any) -> dict[str, Any]:
        """The ``aux`` dict of ``eventprop_loss_and_grad``."""
        return {
            "accuracy": self.accuracy,
            "scores": scores,
            "ce": self.ce,
            "reg": self.reg,
            "hidden_counts": list(counts),
            **self.extra,
        }


def _regulariser(counts: Any, batch: int, cfg: LossConfig) -> tuple[jax.Array, list[jax.Array]]:
    """The spike-count penalty and its per-spike kicks (§4) from the counts [(B, H_l)]."""
    mean_counts = [n.mean(axis=0) for n in counts]
    reg = 0.5 * cfg.reg_lambda * sum(jnp.sum((m - cfg.reg_nu) ** 2) for m in mean_counts)
    # mlGeNN's per-spike adjoint kick: d(reg)/d(count_bn) = reg_lambda (mean_n - nu) / B, added to lambda_v.
    reg_kick = [cfg.reg_lambda * (m - cfg.reg_nu) / batch for m in mean_counts]
    return jnp.asarray(reg, jnp.float32), reg_kick


def loss_head(scores: jax.Array, counts: Any, labels: jax.Array, cfg: LossConfig) -> Head:
    """Cross-entropy, regulariser and their gradients from the scores (B, O) and the counts [(B, H_l)].

    Shared by every kernel: the dense path calls it inside its jitted computation, the sparse kernel on the
    scores and counts of its forward pass.
    """

    def ce_fn(sc: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(sc, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=1))

    ce, g_score = jax.value_and_grad(ce_fn)(scores)
    reg, reg_kick = _regulariser(counts, scores.shape[0], cfg)
    pred = jnp.argmax(scores, axis=1)
    accuracy = jnp.mean((pred == labels).astype(jnp.float32))
    return Head(ce + reg, ce, reg, accuracy, g_score, reg_kick)


def stream_head(
    frames: jax.Array, best: jax.Array, right: jax.Array, targets: FrameTargets, counts: Any, cfg: LossConfig
) -> Head:
    """The time-resolved loss of a batch of stretches (§9) from what the forward pass accumulated:
    ``frames`` (B, 2) the weighted frame cross-entropy and the frames predicted right per sample, ``best``
    (B, W) each pooled window's best log-probability of its class and ``right`` (B, W) whether the readout's
    arg-max there was that class. Shared by both kernels."""
    batch = frames.shape[0]
    cls, win_cls = jnp.asarray(targets.cls), jnp.asarray(targets.win_cls)
    valid = (win_cls >= 0) & jnp.isfinite(best)
    win_ce = jnp.sum(jnp.where(valid, -best * jnp.asarray(targets.win_wt), 0.0))
    ce = (jnp.sum(frames[:, 0]) + win_ce) / batch
    reg, reg_kick = _regulariser(counts, batch, cfg)
    n_frames = jnp.sum(cls >= 0)
    n_windows = jnp.sum(valid)
    frame_acc = jnp.sum(frames[:, 1]) / jnp.maximum(n_frames, 1)
    window_acc = jnp.sum(valid & right) / jnp.maximum(n_windows, 1)
    accuracy = jnp.where(n_windows > 0, 0.5 * (frame_acc + window_acc), frame_acc)
    zeros = jnp.zeros((batch, 1), jnp.float32)
    extra = {"frame_accuracy": frame_acc, "window_accuracy": window_acc}
    return Head(ce + reg, ce, reg, accuracy.astype(jnp.float32), zeros, reg_kick, extra)


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

"""The event-driven Eventprop kernel for CPU cores: input batches as event lists, numba forward and backward.

``sparse_loss_and_grad`` has the signature and return value of the dense reference
``eventprop_loss_and_grad`` (``_eventprop.py``) and computes the same quantities (docs/eventprop.md §3) with
work in proportion to input events and spikes (``_sparse_kernel.py``). It is not traced by JAX: it takes
numpy (or JAX) arrays, runs the compiled kernel on the CPU cores and returns JAX arrays, so a training step is
this call followed by a jitted optimizer update (``_kernels.py``).

Its input is a :class:`SpikeEvents` batch (the training loop bins a data set straight into events in a
background thread) or a dense ``(B, T, C)`` 0/1 array, converted on the fly.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.train._eventprop import (
    LossConfig,
    _segments,
    label_problems,
    loss_head,
    readout_weight,
    stream_head,
)
from edgekws.toolkit.train._model import input_problems
from edgekws.toolkit.train._targets import FrameTargets

# Sample chunks of the backward pass, each with its own gradient buffer: a fixed number, so the summation
# order (and hence every bit of the result) does not depend on the number of threads.
MAX_CHUNKS = 8


class SpikeEvents(NamedTuple):
    """A batch of binary input spike trains as event lists (the sparse form of a ``(B, T, C)`` 0/1 array).

    Events of sample ``b`` in data column ``t`` are the channels ``ch[ptr[b, t]:ptr[b, t + 1]]`` (ascending,
    each at most once); ``ptr[b, T] == ptr[b + 1, 0]``.
    """

    ptr: np.ndarray  # (B, T + 1) int64
    ch: np.ndarray  # (nnz,) int32
    num_channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.ptr.shape[0], self.ptr.shape[1] - 1, self.num_channels)

    @property
    def ndim(self) -> int:
        return 3

    @classmethod
    def from_dense(cls, spikes: Any) -> SpikeEvents:
        """Events of a dense ``(B, T, C)`` array whose entries are all 0 or 1."""
        x = np.asarray(spikes)
        if x.ndim != 3:
            raise ValueError(f"spikes must be (batch, steps, channels), got shape {x.shape}")
        nonzero = x != 0
        if not np.all(x[nonzero] == 1):
            raise ValueError(
                "the sparse kernel takes binary spikes (0/1); bin with binary=True or use the dense kernel"
            )
        b, t, c = np.nonzero(nonzero)
        return cls._from_sorted(b * x.shape[1] + t, c, x.shape[0], x.shape[1], x.shape[2])

    @classmethod
    def from_steps(
        cls, samples: list[tuple[np.ndarray, np.ndarray]], steps: int, num_channels: int
    ) -> SpikeEvents:
        """Events of per-sample ``(step, channel)`` pairs (any order, repeats allowed: binary binning;
        pairs outside the grid are dropped). Compiled (``_sparse_kernel.bin_events``): the training loop bins
        every batch this way."""
        sizes = [len(t) for t, _ in samples]
        offsets = np.zeros(len(samples) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        t = (
            np.concatenate([np.asarray(t, np.int64) for t, _ in samples])
            if samples
            else np.zeros(0, np.int64)
        )
        c = (
            np.concatenate([np.asarray(c, np.int64) for _, c in samples])
            if samples
            else np.zeros(0, np.int64)
        )
        ptr = np.zeros((len(samples), steps + 1), np.int64)
        ch = np.empty(len(t), np.int32)
        _kernel().bin_events(offsets, t, c, steps, num_channels, ptr, ch)
        return cls(ptr, ch[: int(ptr[-1, -1])] if samples else ch, num_channels)

    @classmethod
    def _from_sorted(
        cls, cell: np.ndarray, c: np.ndarray, batch: int, steps: int, channels: int
    ) -> SpikeEvents:
        ptr = np.zeros(batch * steps + 1, np.int64)
        np.cumsum(np.bincount(cell, minlength=batch * steps), out=ptr[1:])
        full = np.empty((batch, steps + 1), np.int64)
        full[:, :steps] = ptr[:-1].reshape(batch, steps)
        full[:, steps] = ptr[steps::steps] if batch else 0
        return cls(full, c.astype(np.int32), channels)

    def to_dense(self) -> np.ndarray:
        """The ``(B, T, C)`` float32 0/1 array of these events."""
        batch, steps, channels = self.shape
        x = np.zeros((batch, steps, channels), np.float32)
        counts = (self.ptr[:, 1:] - self.ptr[:, :-1]).ravel()
        cell = np.repeat(np.arange(batch * steps), counts)
        x.reshape(batch * steps, channels)[cell, self.ch] = 1.0
        return x

    def density(self) -> float:
        batch, steps, channels = self.shape
        return float(len(self.ch)) / max(1, batch * steps * channels)


class _Layout(NamedTuple):
    """Where each layer's neurons and transposed weights live in the kernel's flat arrays."""

    noff: np.ndarray  # (L + 2,) uint64 neuron offsets, hidden layers first
    woff: np.ndarray  # (L + 1,) uint64 offset of W_l^T in the flat weights
    roff: np.ndarray  # (L + 1,) uint64 offset of R_l^T (0 without one)
    rec: np.ndarray  # (L + 1,) bool
    total: int  # length of the flat weights
    neurons: int
    hidden_neurons: int
    params: tuple[tuple[str, int, int, int], ...]  # (name, offset, fan-in, neurons) in flat order


@functools.lru_cache(maxsize=16)
def _layout(spec: NetworkSpec) -> _Layout:
    sizes = spec.layer_sizes
    n_hl = len(spec.hidden)
    noff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.uint64)
    woff, roff, rec, params, pos = [], [], [], [], 0
    for layer, n in enumerate(sizes):
        fan_in = spec.num_inputs if layer == 0 else sizes[layer - 1]
        woff.append(pos)
        params.append((f"layer{layer}.weight", pos, fan_in, n))
        pos += fan_in * n
        rec.append(layer < n_hl and spec.recurrent[layer])
        roff.append(pos if rec[-1] else 0)
        if rec[-1]:
            params.append((f"layer{layer}.weight_rec", pos, n, n))
            pos += n * n
    return _Layout(
        noff=noff,
        woff=np.asarray(woff, np.uint64),
        roff=np.asarray(roff, np.uint64),
        rec=np.asarray(rec, np.bool_),
        total=pos,
        neurons=int(noff[-1]),
        hidden_neurons=int(noff[n_hl]),
        params=tuple(params),
    )


@functools.lru_cache(maxsize=16)
def _readout_weights(steps: int) -> np.ndarray:
    """exp(-t/T)/T for every step, computed by the dense kernel's own expression."""
    return np.asarray(readout_weight(jnp.arange(steps), steps), np.float32)


def _kernel() -> Any:
    from edgekws.toolkit.train import _sparse_kernel

    return _sparse_kernel


def numba_available() -> bool:
    """Whether the compiled kernel can be loaded (numba installed, a writable compilation cache)."""
    try:
        _kernel()
    except (ImportError, RuntimeError, OSError):
        return False
    return True


# Below this many neuron-steps (batch x steps x neurons) a call runs on one thread: starting and joining the
# worker threads costs more than it saves, and far more when the other cores are busy.
PARALLEL_WORK = 2_000_000


def _use_cores(work: int) -> None:
    """numba threads on the cores this process may use (``taskset`` included), or one for small work."""
    import numba

    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    threads = available if work >= PARALLEL_WORK else 1
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _head(scores: jax.Array, counts: jax.Array, labels: jax.Array, cfg: LossConfig, sizes: tuple) -> Any:
    parts, start = [], 0
    for n in sizes:
        parts.append(counts[:, start : start + n])
        start += n
    return loss_head(scores, parts, labels, cfg)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _stream_head(
    frames: jax.Array,
    best: jax.Array,
    right: jax.Array,
    targets: FrameTargets,
    counts: jax.Array,
    cfg: LossConfig,
    sizes: tuple,
) -> Any:
    parts, start = [], 0
    for n in sizes:
        parts.append(counts[:, start : start + n])
        start += n
    return stream_head(frames, best, right, targets, parts, cfg)


def sparse_loss_and_grad(
    params: dict[str, Any],
    spikes: SpikeEvents | Any,
    labels: Any,
    spec: NetworkSpec,
    cfg: LossConfig,
    dtype: Any = np.float32,
) -> tuple[jax.Array, dict[str, Any], dict[str, jax.Array]]:
    """``eventprop_loss_and_grad`` computed by the event-driven CPU kernel; same arguments and results.

    ``spikes`` is a :class:`SpikeEvents` batch or a dense ``(B, T, C)`` 0/1 array. Not jittable (it runs
    compiled numba code on the host); the results are JAX arrays. ``dtype=np.float64`` runs the network and
    its adjoint in double precision (the loss head stays float32): a reference for how much float32 rounding
    moves the gradient (``benchmarks/kernel_agreement.py``); training uses float32.
    """
    events = spikes if isinstance(spikes, SpikeEvents) else SpikeEvents.from_dense(spikes)
    stream = isinstance(labels, FrameTargets)
    if not stream:
        labels = np.asarray(labels)
    problems = input_problems(params, events, spec, allow_extra=True)
    problems += label_problems(labels, events.shape, spec)
    if problems:
        raise ValueError(
            "sparse_loss_and_grad: " + "; ".join(problems) + "; build params with init_params(spec, key)"
        )
    kernel = _kernel()
    batch, steps, _ = events.shape
    n_seg, seg = _segments(steps, cfg.checkpoint_every)
    lay = _layout(spec)
    _use_cores(batch * steps * lay.neurons)
    n_hl, n_all, n_hid = len(spec.hidden), lay.neurons, lay.hidden_neurons
    f = np.dtype(dtype).type
    w = np.empty(lay.total, f)
    for name, off, fan_in, n in lay.params:
        w[off : off + fan_in * n].reshape(fan_in, n)[...] = np.asarray(params[name], np.float32).T
    mode = 2 if stream else int(cfg.rule(spec) == "max_over_time")
    wts = _readout_weights(steps).astype(f)
    consts = (f(spec.alpha_syn), f(spec.alpha_mem), f(spec.threshold), seg, mode, wts)
    net = (events.ptr, events.ch, w, lay.woff, lay.roff, lay.rec, lay.noff)
    if stream:
        t = labels
        tg = (
            np.ascontiguousarray(t.cls, np.int32),
            np.ascontiguousarray(t.win, np.int32),
            np.ascontiguousarray(t.wt, f),
            np.ascontiguousarray(t.win_cls, np.int32),
            np.ascontiguousarray(t.win_wt, f),
        )
    else:
        no_i, no_f = np.zeros((batch, 0), np.int32), np.zeros((batch, 0), f)
        tg = (no_i, no_i, no_f, no_i, no_f)
    n_win = tg[3].shape[1]
    pooled = (
        np.zeros((batch, 2), np.float64),
        np.empty((batch, n_win), f),
        np.empty((batch, n_win), np.int32),
        np.empty((batch, n_win), np.bool_),
    )

    ck_u = np.empty((batch, n_seg, n_all), f)
    ck_v = np.empty((batch, n_seg, n_all), f)
    ck_s = np.empty((batch, n_seg, n_hid), np.uint64)
    ck_n = np.empty((batch, n_seg, n_hl), np.uint64)
    scores = np.empty((batch, spec.num_outputs), f)
    t_max = np.empty((batch, spec.num_outputs), np.int32)
    counts = np.empty((batch, n_hid), np.float32)
    fs = np.empty((batch, 7, n_all), f)
    us = np.empty((batch, 4, n_all), np.uint64)
    ck = (ck_u, ck_v, ck_s, ck_n)
    kernel.forward(net, consts, tg, ck, scores, t_max, counts, pooled, fs, us)

    if stream:
        head = _stream_head(
            pooled[0].astype(np.float32), pooled[1], pooled[3], labels, counts, cfg, tuple(spec.hidden)
        )
        g_score = np.full((batch, 1), 1.0 / batch, f)
        t_max = pooled[2]
    else:
        head = _head(scores.astype(np.float32), counts, labels.astype(np.int32), cfg, tuple(spec.hidden))
        g_score = np.asarray(head.g_score, f)
    kick = np.concatenate([np.asarray(k, f) for k in head.reg_kick])

    n_chunks = max(1, min(batch, MAX_CHUNKS))
    grads = np.empty((n_chunks, lay.total), f)
    rec_s = np.empty((n_chunks, seg * n_hid), np.uint64)
    rec_a = np.empty((n_chunks, seg * n_hid), f)
    rec_b = np.empty((n_chunks, seg * n_hid), f)
    rec_p = np.empty((n_chunks, seg * n_hl + 1), np.int64)
    rec_v = np.empty((n_chunks, seg * spec.num_outputs if stream else 0), f)
    fs = np.empty((n_chunks, 12, n_all), f)
    us = np.empty((n_chunks, 4, n_all), np.uint64)
    kernel.backward(
        net, consts, tg, ck, t_max, g_score, kick, grads, rec_s, rec_a, rec_b, rec_p, rec_v, fs, us
    )
    total = grads.sum(axis=0) if n_chunks > 1 else grads[0]
    out = {}
    for name, off, fan_in, n in lay.params:
        out[name] = jnp.asarray(total[off : off + fan_in * n].reshape(fan_in, n).T)
    hidden_counts = [jnp.asarray(counts[:, lay.noff[i] : lay.noff[i + 1]]) for i in range(n_hl)]
    return head.loss, head.aux(None if stream else jnp.asarray(scores), hidden_counts), out

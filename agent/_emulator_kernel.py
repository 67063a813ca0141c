"""The emulator's compiled time loop (numba): one fused pass per neuron per step, event-driven synapses.

Imported lazily by :mod:`edgekws.agent.backends._emulator` and only if numba is installed; the numpy path
there computes the same numbers (tests compare both, bit for bit). The arithmetic is the update of
docs/fixed-point.md on integer-valued float64 ``u, v`` (exact: every value stays below 2^53):

- the synaptic input of a step is accumulated in ``acc`` (float32 when every partial sum provably stays
  below 2^24, so exact; else float64) from the weight rows of the inputs that were non-zero at ``t - 1``
  and of the neurons that spiked at ``t - 1`` — the input and spike lists are sparse, so a step costs
  ``O((active inputs + spikes) * neurons)`` instead of a dense product;
- then one branch-free (vectorisable) pass per neuron: decay (truncation toward zero), add, the single
  24-bit wrap of ``u``, the saturation of ``v``, the threshold and the reset.

Compiled on first use per argument types and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_U_MAX = float(1 << 23)
_V_MAX = float((1 << 23) - 1)
_WRAP = float(1 << 24)


@njit(cache=True, nogil=True, inline="always")
def _add_input(acc: np.ndarray, w0: np.ndarray, row: np.ndarray, active: np.ndarray, graded: bool) -> int:
    """``acc[:n0] += row · w0`` over the non-zero entries of the input column ``row``; returns their count."""
    n_active = 0
    for c in range(row.shape[0]):  # branch-free compaction of the active inputs
        active[n_active] = c
        n_active += row[c] != 0
    n0 = w0.shape[1]
    for q in range(n_active):
        c = active[q]
        if graded:
            val = row[c]
            for i in range(n0):
                acc[i] += val * w0[c, i]
        else:
            for i in range(n0):
                acc[i] += w0[c, i]
    return n_active


@njit(cache=True, nogil=True)
def advance(
    uv: np.ndarray,  # (batch, 2, n) float64, in place
    spikes: np.ndarray,  # (batch, n) bool, in place
    x: np.ndarray,  # (1 or batch, steps, inputs) uint8 (binary) or float64 (graded)
    last_input: np.ndarray,  # (batch, inputs) float: the input column before x[:, 0]
    graded: bool,
    w0: np.ndarray,  # (inputs, n0) input weights * 64, float32 or float64
    m: np.ndarray,  # (n, n) spike weights * 64 (row = presynaptic neuron), same dtype as w0
    fan_out: np.ndarray,  # (n,) bool: whether a neuron's spikes reach any synapse
    alpha_u: np.ndarray,  # (n,) (4096 - iDecay) / 4096
    alpha_v: np.ndarray,  # (n,) (4096 - vDecay) / 4096
    vth: np.ndarray,  # (n,) vThMant << 6
    bias: np.ndarray,  # (n,) bias << 6
    readout_start: int,
    out: np.ndarray,  # (batch, steps, n - readout_start) float64
    tr_uv: np.ndarray,  # (batch, steps, 2, n) float64, or a zero-size array when not recording
    tr_s: np.ndarray,  # (batch, steps, n) bool, likewise
    events: np.ndarray,  # (n + 2,) float64, added to: spikes per neuron, input events, neuron-steps / n
) -> None:
    batch = uv.shape[0]
    n = uv.shape[2]
    steps = x.shape[1]
    n_in = x.shape[2]
    shared = x.shape[0] == 1
    record = tr_uv.shape[0] > 0
    acc = np.empty_like(m[0])
    idx = np.empty(n, dtype=np.int64)
    active = np.empty(x.shape[2], dtype=np.int64)
    for b in range(batch):
        xb = 0 if shared else b
        u = uv[b, 0]
        v = uv[b, 1]
        s = spikes[b]
        count = 0
        for i in range(n):
            idx[count] = i
            count += s[i] & fan_out[i]
        for t in range(steps):
            acc[:] = 0
            # input column t - 1 (the Dense delay): the previous chunk's last column at t = 0
            if t == 0:
                events[n] += _add_input(acc, w0, last_input[b], active, graded)
            else:
                events[n] += _add_input(acc, w0, x[xb, t - 1], active, graded)
            for k in range(count):
                j = idx[k]
                for i in range(n):
                    acc[i] += m[j, i]
            # branch-free, so that it vectorises: decay, add, wrap u, saturate v, threshold, reset v
            for i in range(n):
                ui = math.trunc(u[i] * alpha_u[i]) + acc[i]
                ui = ui - _WRAP * (ui > _U_MAX) + _WRAP * (ui <= -_U_MAX)
                vi = math.trunc(v[i] * alpha_v[i]) + ui + bias[i]
                vi = min(max(vi, -_V_MAX), _V_MAX)
                fired = vi > vth[i]
                u[i] = ui
                v[i] = 0.0 if fired else vi
                s[i] = fired
            count = 0
            for i in range(n):  # the spikes that reach a synapse next step
                idx[count] = i
                count += s[i] & fan_out[i]
                events[i] += s[i]
            for k in range(n - readout_start):
                out[b, t, k] = v[readout_start + k]
            if record:
                for i in range(n):
                    tr_uv[b, t, 0, i] = u[i]
                    tr_uv[b, t, 1, i] = v[i]
                    tr_s[b, t, i] = s[i]
        events[n + 1] += steps
        if steps > 0:
            for c in range(n_in):
                val = x[xb, steps - 1, c]
                last_input[b, c] = val if graded else (1 if val != 0 else 0)

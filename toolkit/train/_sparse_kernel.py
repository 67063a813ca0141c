"""Event-driven Eventprop on CPU cores (numba): the forward pass and the adjoint with work per spike.

Imported lazily by :mod:`edgekws.toolkit.train._sparse`, which allocates every buffer (so the working memory
is visible to ``tracemalloc`` and bounded by the segment length, not by ``T``), computes the loss head in JAX
and checks the inputs. The arithmetic is the dense reference's (``_eventprop.py``, docs/eventprop.md §3),
step for step and in float32, with the dense products replaced by sums over events:

- forward, per sample and step: the input current of a layer is the sum of the weight rows (``W^T``, row =
  presynaptic unit, contiguous) of the inputs active at ``t - 1`` plus, separately summed, the recurrent
  rows of the neurons that spiked at ``t - 1`` -- ``O((active inputs + spikes) * neurons)`` instead of a
  dense product -- then a vectorised pass per neuron (decay, add) and a scan for threshold crossings;
- backward, per sample and step in reverse: the adjoint decays are dense vector passes over the neurons,
  but the Eventprop jump (two dot products with the target layers' weight columns) is only evaluated at
  neurons that spiked, and the weight gradients only get rows at presynaptic events
  (``grad[pre] += lambda_u[t+1]``);
- segment checkpoints: the forward pass keeps each sample's state every ``seg`` steps; the backward pass
  re-runs one segment from its checkpoint, recording the spikes and the two factors per spike, then
  integrates the adjoint back through it -- memory is ``T / seg`` states plus one segment of spike records,
  flat in ``T``.

Samples are independent until the loss; the forward pass runs them in parallel (``prange``) and the
backward pass runs a fixed number of sample chunks in parallel, each with its own gradient buffer, summed
afterwards in chunk order -- so the result does not depend on the number of threads. Compiled on first use
and cached on disk.

Layout shared with the wrapper: layers ``l = 0..L`` (hidden layers, then the readout ``L``) with neurons
``noff[l]:noff[l + 1]`` of one state vector (hidden neurons first, so a hidden neuron's state index is also
its index among hidden neurons). ``w`` holds every weight matrix transposed, row = presynaptic unit: row
``j`` of ``W_l^T`` starts at ``woff[l] + j * n_l``, of the recurrent ``R_l^T`` at ``roff[l] + j * n_l``
(layers with ``rec[l]``); gradients have the same layout. Input events of sample ``b`` in data column ``t``
are ``ch[ptr[b, t]:ptr[b, t + 1]]``. Every index of an inner loop is unsigned (``uint64``): for a signed
computed index numba emits a negative-index check that stops LLVM from vectorising the loop, and a view
made per row costs two atomic reference-count updates.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Every function: cache=True (compiled once, then loaded from disk), nogil=True, error_model="numpy" (no
# zero-division checks: every divisor is a strictly positive voltage slope).
U = np.uint64

# The arguments shared by forward and backward, as tuples:
#   net    = (ptr (B, T + 1) int64 event offsets into ch, ch (nnz,) int32 input channel of each event,
#             w flat transposed weights, woff (L + 1,) uint64, roff (L + 1,) uint64, rec (L + 1,) bool: layer
#             has recurrent weights, noff (L + 2,) uint64 neuron offsets)
#   consts = (a_s, a_m, theta, seg: steps per segment, mode: 0 exp_weighted_mean, 1 max_over_time, 2 the
#             time-resolved stream loss, wts (T,) readout weight of each step for exp_weighted_mean)
#   tg     = the stream loss's targets (mode 2; empty arrays otherwise): (cls (B, T) int32, win (B, T) int32,
#             wt (B, T), win_cls (B, W) int32, win_wt (B, W)), as _targets.FrameTargets
#   ck     = (ck_u (B, n_seg, N), ck_v (B, n_seg, N): u, v at the start of every segment; ck_s (B, n_seg, N_h)
#             uint64 and ck_n (B, n_seg, L) uint64: the spike lists of the step before it and their lengths)


@njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _add(acc: np.ndarray, ao: U, w: np.ndarray, wo: U, n: U) -> None:
    """``acc[ao:ao + n] += w[wo:wo + n]``."""
    for i in range(n):
        acc[ao + i] += w[wo + i]


@njit(fastmath={"reassoc"}, cache=True, nogil=True, error_model="numpy")
def _dot(x: np.ndarray, xo: U, w: np.ndarray, wo: U, n: U) -> np.float32:
    """``x[xo:xo + n] . w[wo:wo + n]`` (vectorised: the summation order is the compiler's)."""
    acc = np.float32(0.0)
    for i in range(n):
        acc += x[xo + i] * w[wo + i]
    return acc


@njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _log_sum_exp(v: np.ndarray, o: U, n: U) -> tuple:
    """``log(sum(exp(v[o:o + n])))`` and the index of the largest entry (the first of equals)."""
    arg = 0
    m = v[o]
    for i in range(U(1), n):
        if v[o + i] > m:
            m = v[o + i]
            arg = int(i)
    acc = 0.0
    for i in range(n):
        acc += np.exp(v[o + i] - m)
    return m + np.log(acc), arg


@njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _advance(
    t: int,
    b: int,
    layers: int,
    net: tuple,
    a_s: np.float32,
    a_m: np.float32,
    theta: np.float32,
    u: np.ndarray,
    v: np.ndarray,
    s_prev: np.ndarray,
    n_prev: np.ndarray,
    s_cur: np.ndarray,
    n_cur: np.ndarray,
    f_a: np.ndarray,
    f_b: np.ndarray,
    cw: np.ndarray,
    cr: np.ndarray,
    v_old: np.ndarray,
) -> None:
    """Step ``t`` of the first ``layers`` layers of sample ``b``: ``u``, ``v`` in place; the spikes of each
    hidden layer ``l`` into ``s_cur[noff[l]:]`` (``n_cur[l]`` of them), with ``u/vdot`` and ``1/vdot`` of each
    into ``f_a``, ``f_b`` at the same places."""
    ptr, ch, w, woff, roff, rec, noff = net
    n_hl = noff.shape[0] - 2
    zero = np.float32(0.0)
    one = np.float32(1.0)
    z = U(0)
    for layer in range(layers):
        o = noff[layer]
        n = noff[layer + 1] - o
        for i in range(n):
            cw[i] = zero
        if layer == 0:
            if t >= 1:
                for q in range(ptr[b, t - 1], ptr[b, t]):
                    _add(cw, z, w, woff[0] + U(ch[q]) * n, n)
        else:
            po = noff[layer - 1]
            for k in range(n_prev[layer - 1]):
                _add(cw, z, w, woff[layer] + s_prev[po + k] * n, n)
        if rec[layer]:
            for i in range(n):
                cr[i] = zero
            for k in range(n_prev[layer]):
                _add(cr, z, w, roff[layer] + s_prev[o + k] * n, n)
            for i in range(n):
                cw[i] = cw[i] + cr[i]
        for i in range(n):
            ui = a_s * u[o + i] + cw[i]
            u[o + i] = ui
            v_old[i] = v[o + i]
            v[o + i] = a_m * v[o + i] + ui
        if layer < n_hl:
            count = U(0)
            for i in range(n):
                vp = v[o + i]
                if vp > theta:
                    vdot = vp - v_old[i]
                    s_cur[o + count] = i
                    f_a[o + count] = u[o + i] / vdot
                    f_b[o + count] = one / vdot
                    count += U(1)
                    v[o + i] = zero
            n_cur[layer] = count


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def forward(
    net: tuple,
    consts: tuple,
    tg: tuple,
    ck: tuple,  # out
    scores: np.ndarray,  # (B, O) float32 out
    t_max: np.ndarray,  # (B, O) int32 out: step of the maximum (max_over_time)
    counts: np.ndarray,  # (B, N_h) float32 out: spikes per hidden neuron
    pooled: tuple,  # out (mode 2): frames (B, 2) float64 frame CE and frames right; best (B, W) log p of
    #                 each window's class at its best step; t_best (B, W) int32 that step; right (B, W) bool
    fs: np.ndarray,  # (B, 7, N) float32 scratch: state and temporaries per sample
    us: np.ndarray,  # (B, 4, N) uint64 scratch: spike lists and their lengths per sample
) -> None:
    ptr, noff = net[0], net[6]
    a_s, a_m, theta, seg, mode, wts = consts
    cls, win, fwt, win_cls = tg[0], tg[1], tg[2], tg[3]
    frames, best, t_best, right = pooled
    ck_u, ck_v, ck_s, ck_n = ck
    batch = ptr.shape[0]
    steps = ptr.shape[1] - 1
    n_layers = noff.shape[0] - 1
    n_hl = n_layers - 1
    ro = noff[n_hl]
    n_out = noff[n_layers] - ro
    for b in prange(batch):
        u, v, f_a, f_b, cw, cr, v_old = fs[b, 0], fs[b, 1], fs[b, 2], fs[b, 3], fs[b, 4], fs[b, 5], fs[b, 6]
        s_prev, s_cur, n_prev, n_cur = us[b, 0], us[b, 1], us[b, 2], us[b, 3]
        u[:] = 0.0
        v[:] = 0.0
        n_prev[:] = 0
        scores[b, :] = 0.0
        t_max[b, :] = 0
        counts[b, :] = 0.0
        if mode == 2:
            frames[b, :] = 0.0
            best[b, :] = -np.inf
            t_best[b, :] = -1
            right[b, :] = False
        for t in range(steps):
            if t % seg == 0:
                k = t // seg
                ck_u[b, k, :] = u
                ck_v[b, k, :] = v
                for layer in range(n_hl):
                    ck_n[b, k, layer] = n_prev[layer]
                    o = noff[layer]
                    for q in range(n_prev[layer]):
                        ck_s[b, k, o + q] = s_prev[o + q]
            _advance(
                t, b, n_layers, net, a_s, a_m, theta,
                u, v, s_prev, n_prev, s_cur, n_cur, f_a, f_b, cw, cr, v_old,
            )  # fmt: skip
            for layer in range(n_hl):
                o = noff[layer]
                for q in range(n_cur[layer]):
                    counts[b, o + s_cur[o + q]] += 1.0
            if mode == 2:
                c = cls[b, t]
                w = win[b, t]
                if c >= 0 or w >= 0:
                    lse, arg = _log_sum_exp(v, ro, n_out)
                    if c >= 0:
                        frames[b, 0] += fwt[b, t] * (lse - v[ro + U(c)])
                        if arg == c:
                            frames[b, 1] += 1.0
                    if w >= 0:
                        wc = win_cls[b, w]
                        lp = v[ro + U(wc)] - lse
                        if lp > best[b, w]:
                            best[b, w] = lp
                            t_best[b, w] = t
                            right[b, w] = arg == wc
            elif mode == 1:
                for i in range(n_out):
                    vi = v[ro + i]
                    if t == 0 or vi > scores[b, i]:
                        scores[b, i] = vi
                        t_max[b, i] = t
            else:
                wt = wts[t]
                for i in range(n_out):
                    scores[b, i] = scores[b, i] + wt * v[ro + i]
            s_prev, s_cur = s_cur, s_prev
            n_prev, n_cur = n_cur, n_prev


@njit(inline="always", cache=True, nogil=True, error_model="numpy")
def n_layers_of(noff: np.ndarray) -> int:
    return noff.shape[0] - 1


@njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _stream_kick(
    lvn: np.ndarray,
    ro: U,
    n_out: U,
    rv: np.ndarray,
    vo: U,
    tg: tuple,
    t_best: np.ndarray,
    scale: float,
    b: int,
    t: int,
) -> None:
    """Add dL/dV[t] of the stream loss to the readout's ``lambda_vp[t]`` (``lvn[ro:ro + n_out]``): for a frame
    term ``wt (p - e_cls)``, for the best step of a pooled window ``win_wt (p - e_class)``, times ``scale``
    (1 / B); ``p`` is the softmax of the readout voltage ``rv[vo:vo + n_out]`` of step ``t``."""
    cls, win, wt, win_cls, win_wt = tg
    c = cls[b, t]
    w = win[b, t]
    at_best = w >= 0 and t_best[b, w] == t
    if c < 0 and not at_best:
        return
    lse, _ = _log_sum_exp(rv, vo, n_out)
    if c >= 0:
        f = scale * wt[b, t]
        for i in range(n_out):
            p = np.exp(rv[vo + i] - lse)
            lvn[ro + i] += f * (p - 1.0) if i == c else f * p
    if at_best:
        k = win_cls[b, w]
        f = scale * win_wt[b, w]
        for i in range(n_out):
            p = np.exp(rv[vo + i] - lse)
            lvn[ro + i] += f * (p - 1.0) if i == k else f * p


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def backward(
    net: tuple,
    consts: tuple,
    tg: tuple,
    ck: tuple,  # from forward
    t_max: np.ndarray,  # (B, O) int32 from forward (max_over_time); mode 2: t_best (B, W) from forward
    g_score: np.ndarray,  # (B, O) float32 dL/dscore; mode 2: (B, 1) the factor 1 / B
    kick: np.ndarray,  # (N_h,) float32 regulariser kick per hidden neuron
    grads: np.ndarray,  # (n_chunks, len(w)) float32 out: gradient per sample chunk, layout of w
    rec_s: np.ndarray,  # (n_chunks, seg * N_h) uint64 scratch: spike records of a segment
    rec_a: np.ndarray,  # (n_chunks, seg * N_h) float32 scratch
    rec_b: np.ndarray,  # (n_chunks, seg * N_h) float32 scratch
    rec_p: np.ndarray,  # (n_chunks, seg * L + 1) int64 scratch: record offsets per (step, layer)
    rec_v: np.ndarray,  # (n_chunks, seg * O) float32 scratch (mode 2): the readout voltage of each step
    fs: np.ndarray,  # (n_chunks, 12, N) float32 scratch: state and adjoints per chunk
    us: np.ndarray,  # (n_chunks, 4, N) uint64 scratch
) -> None:
    ptr, ch, w, woff, roff, rec, noff = net
    a_s, a_m, theta, seg, mode, wts = consts
    rerun = n_layers_of(noff) if mode == 2 else n_layers_of(noff) - 1
    ck_u, ck_v, ck_s, ck_n = ck
    batch = ptr.shape[0]
    steps = ptr.shape[1] - 1
    n_chunks = grads.shape[0]
    n_layers = noff.shape[0] - 1
    n_hl = n_layers - 1
    n_all = noff[n_layers]
    ro = noff[n_hl]
    n_out = n_all - ro
    n_seg = ck_u.shape[1]
    n0 = noff[1]
    for c in prange(n_chunks):
        g = grads[c]
        g[:] = 0.0
        rs, ra, rb, rp, rv = rec_s[c], rec_a[c], rec_b[c], rec_p[c], rec_v[c]
        u, v, f_a, f_b, cw, cr, v_old = fs[c, 0], fs[c, 1], fs[c, 2], fs[c, 3], fs[c, 4], fs[c, 5], fs[c, 6]
        lu = fs[c, 7]  # lambda_u[t + 1]
        lun = fs[c, 8]  # lambda_u[t + 2]
        lvp = fs[c, 9]  # lambda_vp[t + 1]
        lvn = fs[c, 10]  # lambda_vp[t] being computed
        dlu = fs[c, 11]  # lambda_u[t + 2] - lambda_u[t + 1]
        s_prev, s_cur, n_prev, n_cur = us[c, 0], us[c, 1], us[c, 2], us[c, 3]
        for b in range(c * batch // n_chunks, (c + 1) * batch // n_chunks):
            lu[:] = 0.0
            lun[:] = 0.0
            lvp[:] = 0.0
            for k in range(n_seg - 1, -1, -1):
                t0 = k * seg
                t1 = min(steps, t0 + seg)
                # ---- re-run the segment's hidden layers from its checkpoint, recording spikes and factors
                u[:] = ck_u[b, k, :]
                v[:] = ck_v[b, k, :]
                for layer in range(n_hl):
                    n_prev[layer] = ck_n[b, k, layer]
                    o = noff[layer]
                    for q in range(n_prev[layer]):
                        s_prev[o + q] = ck_s[b, k, o + q]
                pos = 0
                for t in range(t0, t1):
                    _advance(
                        t, b, rerun, net, a_s, a_m, theta,
                        u, v, s_prev, n_prev, s_cur, n_cur, f_a, f_b, cw, cr, v_old,
                    )  # fmt: skip
                    if mode == 2:
                        for i in range(n_out):
                            rv[U(t - t0) * n_out + i] = v[ro + i]
                    for layer in range(n_hl):
                        rp[(t - t0) * n_hl + layer] = pos
                        o = noff[layer]
                        for q in range(n_cur[layer]):
                            rs[pos] = s_cur[o + q]
                            ra[pos] = f_a[o + q]
                            rb[pos] = f_b[o + q]
                            pos += 1
                    s_prev, s_cur = s_cur, s_prev
                    n_prev, n_cur = n_cur, n_prev
                rp[(t1 - t0) * n_hl] = pos
                # ---- adjoint back through the segment
                for t in range(t1 - 1, t0 - 1, -1):
                    tau = t - t0
                    for i in range(n_all):
                        lvn[i] = a_m * lvp[i]  # lambda_v[t]
                        dlu[i] = lun[i] - lu[i]
                    if mode == 2:
                        _stream_kick(lvn, ro, n_out, rv, U(tau) * n_out, tg, t_max, g_score[b, 0], b, t)
                    elif mode == 1:
                        for i in range(n_out):
                            if t_max[b, i] == t:
                                lvn[ro + i] = lvn[ro + i] + g_score[b, i]
                    else:
                        wt = wts[t]
                        for i in range(n_out):
                            lvn[ro + i] = lvn[ro + i] + g_score[b, i] * wt
                    # at each spike of step t: the Eventprop jump (weight columns of the spiking neuron =
                    # rows of W^T and R^T) and the gradient rows of its outgoing weights, lambda_u[t + 1]
                    for layer in range(n_hl):
                        o = noff[layer]
                        nxt = noff[layer + 1]
                        n = nxt - o
                        n_next = noff[layer + 2] - nxt
                        for q in range(rp[tau * n_hl + layer], rp[tau * n_hl + layer + 1]):
                            j = rs[q]
                            row = woff[layer + 1] + j * n_next
                            jump = _dot(dlu, nxt, w, row, n_next)
                            _add(g, row, lu, nxt, n_next)
                            if rec[layer]:
                                row = roff[layer] + j * n
                                jump = jump + _dot(dlu, o, w, row, n)
                                _add(g, row, lu, o, n)
                            lvn[o + j] = ra[q] * lvn[o + j] - rb[q] * jump + kick[o + j]
                    # and at the input events of step t
                    for q in range(ptr[b, t], ptr[b, t + 1]):
                        _add(g, woff[0] + U(ch[q]) * n0, lu, U(0), n0)
                    for i in range(n_all):
                        lun[i] = lu[i]
                        lu[i] = lvn[i] + a_s * lu[i]
                        lvp[i] = lvn[i]


@njit(cache=True, nogil=True, error_model="numpy")
def bin_events(
    offsets: np.ndarray,  # (B + 1,) int64: sample b's events are t[offsets[b]:offsets[b + 1]], c[...]
    t: np.ndarray,  # (n,) int64 step of each event, any order
    c: np.ndarray,  # (n,) int64 channel of each event
    steps: int,
    channels: int,
    ptr: np.ndarray,  # (B, T + 1) int64 out
    ch: np.ndarray,  # (n,) int32 out: the first ptr[-1, -1] entries are the events
) -> None:
    """Binary binning into event lists: per sample a counting sort by step, then each step's channels sorted
    ascending with repeats dropped; events outside the grid are dropped. ``O(n + B T)``."""
    count = np.empty(steps + 1, np.int64)
    fill = np.empty(steps, np.int64)
    pos = 0
    for b in range(offsets.shape[0] - 1):
        count[:] = 0
        for k in range(offsets[b], offsets[b + 1]):
            if 0 <= t[k] < steps and 0 <= c[k] < channels:
                count[t[k] + 1] += 1
        for s in range(steps):
            count[s + 1] += count[s]
        fill[:] = count[:steps]
        for k in range(offsets[b], offsets[b + 1]):
            if 0 <= t[k] < steps and 0 <= c[k] < channels:
                ch[pos + fill[t[k]]] = c[k]
                fill[t[k]] += 1
        out = pos
        for s in range(steps):
            ptr[b, s] = out
            lo, hi = pos + count[s], pos + count[s + 1]
            for i in range(lo + 1, hi):  # insertion sort: a step holds a few events
                x = ch[i]
                j = i - 1
                while j >= lo and ch[j] > x:
                    ch[j + 1] = ch[j]
                    j -= 1
                ch[j + 1] = x
            last = -1
            for i in range(lo, hi):
                if ch[i] != last:
                    last = ch[i]
                    ch[out] = last
                    out += 1
        ptr[b, steps] = out
        pos = out

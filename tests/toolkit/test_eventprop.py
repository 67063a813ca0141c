"""Eventprop gradients against the continuous-time network they are exact for, and training on a tiny task.

The reference (``ContinuousNet``) is an event-driven float64 simulation of the network the discrete model
discretises (docs/eventprop.md §5): per layer ``du/dt = -u/tau_s``, ``dv/dt = -v/tau_m + u``,
``u_i += W_ij`` when a spike of ``j`` arrives ``d`` ms after it was emitted, a spike when ``v`` crosses the
threshold (root finding on the closed-form solution), ``v <- 0`` at the spike. With weights
``W = W_discrete / dt``, ``tau = -dt / ln(alpha)`` for the spec's 12-bit ``alpha`` and ``d = dt/2``, the
discrete model at ``dt`` is a one-step-per-``dt`` discretisation of it, so the Eventprop gradient must
converge to the finite differences of the reference's loss as ``dt -> 0``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import brentq

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.train import LossConfig, eventprop_loss_and_grad, init_params, simulate
from edgekws.toolkit.train._sparse import sparse_loss_and_grad
from edgekws.toolkit.train._targets import FrameTargets, StreamLoss, frame_targets

# Every gradient kernel runs every test below: the dense JAX reference and the event-driven CPU kernel.
KERNELS = {"dense": eventprop_loss_and_grad, "sparse": sparse_loss_and_grad}
_JITTED = {"dense": jax.jit(eventprop_loss_and_grad, static_argnums=(3, 4)), "sparse": sparse_loss_and_grad}


@pytest.fixture(params=sorted(KERNELS))
def kernel(request: pytest.FixtureRequest) -> str:
    """The name of the gradient kernel under test."""
    return str(request.param)


class ContinuousNet:
    """Event-driven float64 simulation of the continuous-time network; ``loss``: exp-weighted-mean CE."""

    def __init__(
        self, spec: NetworkSpec, weights: dict[str, np.ndarray], duration: float, delay: float
    ) -> None:
        dt = spec.dt_ms
        self.spec = spec
        self.tau_s = -dt / math.log(spec.alpha_syn)
        self.tau_m = -dt / math.log(spec.alpha_mem)
        self.delay = delay
        self.duration = duration
        self.w = {k: np.asarray(v, np.float64) / dt for k, v in weights.items()}
        self.k = self.tau_m * self.tau_s / (self.tau_m - self.tau_s)

    def _v(self, v0: Any, u0: Any, s: float) -> Any:
        em, es = np.exp(-s / self.tau_m), np.exp(-s / self.tau_s)
        return v0 * em + u0 * self.k * (em - es)

    def _first_crossing(self, v0: float, u0: float, span: float) -> float | None:
        """First s in (0, span] where v(s) crosses the threshold upwards, or None."""
        theta = self.spec.threshold
        edges = [0.0, span]
        if u0 != 0.0:
            ratio = (v0 + u0 * self.k) * self.tau_s / (self.tau_m * u0 * self.k)
            if ratio > 0:
                s_star = -math.log(ratio) / (1 / self.tau_s - 1 / self.tau_m)
                if 0 < s_star < span:
                    edges = [0.0, s_star, span]
        for lo, hi in itertools.pairwise(edges):
            f_lo = float(self._v(v0, u0, lo)) - theta
            f_hi = float(self._v(v0, u0, hi)) - theta
            if f_lo <= 0 < f_hi:
                return float(
                    brentq(lambda s: float(self._v(v0, u0, s)) - theta, lo, hi, xtol=1e-14, rtol=1e-15)
                )
        return None

    def run(
        self, inputs: list[tuple[float, int]], samples: tuple[float, ...] = ()
    ) -> tuple[np.ndarray, list[list[tuple[float, int]]]]:
        """Readout scores (O,) and each hidden layer's spikes ``(time, neuron)`` for events (ms, channel).

        With ``samples`` (ms, ascending), the readout voltage at those times ``(len(samples), O)`` instead of
        the scores."""
        sampled: list[np.ndarray] = []
        pending = list(samples)
        spec = self.spec
        n_hidden = len(spec.hidden)
        sizes = spec.layer_sizes
        u = [np.zeros(n) for n in sizes]
        v = [np.zeros(n) for n in sizes]
        spikes: list[list[tuple[float, int]]] = [[] for _ in spec.hidden]
        score = np.zeros(spec.num_outputs)
        c1 = 1 / self.duration + 1 / self.tau_m
        c2 = 1 / self.duration + 1 / self.tau_s
        # arrivals: (time, target layer, source layer (-1 = data), source index)
        queue = [(t + self.delay, 0, -1, ch) for t, ch in inputs]
        heapq.heapify(queue)
        now = 0.0
        while True:
            t_next = min(queue[0][0] if queue else math.inf, self.duration, *pending[:1])
            # earliest threshold crossing of any hidden neuron before t_next
            best: tuple[float, int, int] | None = None
            for layer in range(n_hidden):
                for n in range(sizes[layer]):
                    s = self._first_crossing(v[layer][n], u[layer][n], t_next - now)
                    if s is not None and (best is None or s < best[0]):
                        best = (s, layer, n)
            t_stop = now + best[0] if best is not None else t_next
            span = t_stop - now
            # readout integral over [now, t_stop], then advance every layer
            a_coef, b_coef = v[-1] + u[-1] * self.k, -u[-1] * self.k
            score += math.exp(-now / self.duration) * (
                a_coef * (1 - math.exp(-span * c1)) / c1 + b_coef * (1 - math.exp(-span * c2)) / c2
            )
            for layer in range(len(sizes)):
                v[layer] = self._v(v[layer], u[layer], span)
                u[layer] = u[layer] * math.exp(-span / self.tau_s)
            now = t_stop
            if best is not None:
                _, layer, n = best
                v[layer][n] = 0.0
                spikes[layer].append((now, n))
                heapq.heappush(queue, (now + self.delay, layer + 1, layer, n))
                if spec.recurrent[layer]:
                    heapq.heappush(queue, (now + self.delay, layer, layer, n))
                continue
            if pending and now >= pending[0]:
                sampled.append(v[-1].copy())
                pending.pop(0)
            if now >= self.duration:
                break
            while queue and queue[0][0] <= now:
                _, target, src_layer, src = heapq.heappop(queue)
                if src_layer == target:
                    u[target] += self.w[f"layer{target}.weight_rec"][:, src]
                else:
                    u[target] += self.w[f"layer{target}.weight"][:, src]
        if samples:
            return np.array(sampled), spikes
        return score / self.duration, spikes

    def loss(self, batch: list[list[tuple[float, int]]], labels: Any) -> tuple[float, np.ndarray]:
        """Batch-mean cross-entropy and the spike count of every hidden neuron of every sample.

        ``labels``: a class per sample (the cross-entropy of the scores), or per sample a list of
        ``(time ms, class, weight)``: the time-resolved loss, the weighted cross-entropies of the readout
        voltage at those times, summed and divided by the batch size (the frame terms of stream training).
        """
        total, counts = 0.0, []
        for inputs, label in zip(batch, labels, strict=True):
            if isinstance(label, list):
                values, spikes = self.run(inputs, tuple(t for t, _, _ in label))
                for (_, c, weight), v in zip(label, values, strict=True):
                    z = v - v.max()
                    total += -weight * (z[c] - math.log(np.exp(z).sum()))
            else:
                scores, spikes = self.run(inputs)
                z = scores - scores.max()
                total += -(z[label] - math.log(np.exp(z).sum()))
            counts += [
                np.bincount([n for _, n in s], minlength=h)
                for s, h in zip(spikes, self.spec.hidden, strict=True)
            ]
        return total / len(batch), np.concatenate(counts)


DURATION = 50.0  # ms simulated in the gradient tests


def _tiny_problem(
    seed: int, hidden: tuple[int, ...], recurrent: tuple[bool, ...], batch: int, w_in: float, w_hid: float
) -> tuple[NetworkSpec, dict[str, np.ndarray], list[list[tuple[float, int]]], np.ndarray]:
    """A 4-input net with continuous-time weights and a few input spikes per channel on the 1 ms grid."""
    rng = np.random.default_rng(seed)
    base = NetworkSpec(num_inputs=4, hidden=hidden, recurrent=recurrent, num_outputs=2, num_steps=50)
    weights = {}
    for name, shape in base.parameter_shapes().items():
        if name == "layer0.weight":
            weights[name] = rng.normal(w_in, 0.04, shape)
        elif name.endswith("weight_rec"):
            weights[name] = rng.normal(0.0, 0.1, shape)
        elif name == f"layer{len(hidden)}.weight":
            weights[name] = rng.normal(0.0, 0.3, shape)
        else:
            weights[name] = rng.normal(w_hid, 0.06, shape)
    events = []
    for _ in range(batch):
        sample = []
        for ch in range(4):
            times = np.sort(rng.choice(np.arange(0, 25), size=rng.integers(1, 4), replace=False))
            sample += [(float(t), ch) for t in times]
        events.append(sorted(sample))
    return base, weights, events, np.arange(batch) % 2


def _at_dt(base: NetworkSpec, dt: float) -> NetworkSpec:
    return NetworkSpec(
        num_inputs=base.num_inputs,
        hidden=base.hidden,
        recurrent=base.recurrent,
        num_outputs=base.num_outputs,
        dt_ms=dt,
        num_steps=round(DURATION / dt),
    )


def _raster(events: list[list[tuple[float, int]]], spec: NetworkSpec) -> np.ndarray:
    x = np.zeros((len(events), spec.num_steps, spec.num_inputs), np.float32)
    for b, sample in enumerate(events):
        for t, ch in sample:
            x[b, round(t / spec.dt_ms), ch] = 1.0
    return x


def _frames(sampled: list[list[tuple[float, int, float]]], spec: NetworkSpec) -> FrameTargets:
    """Frame targets at the steps of the sample times: the discrete form of the sampled continuous loss."""
    batch, steps = len(sampled), spec.num_steps
    cls = np.full((batch, steps), -1, np.int32)
    wt = np.zeros((batch, steps), np.float32)
    for b, sample in enumerate(sampled):
        for t, c, weight in sample:
            cls[b, round(t / spec.dt_ms)], wt[b, round(t / spec.dt_ms)] = c, weight
    none = np.full((batch, 1), -1, np.int32)
    no_win = np.full((batch, steps), -1, np.int32)
    return FrameTargets(cls, no_win, wt, none, np.zeros((batch, 1), np.float32))


_FD_CACHE: dict[tuple[Any, ...], tuple[dict[str, np.ndarray], np.ndarray]] = {}


def _continuous_gradient(
    spec: NetworkSpec, params: dict[str, jax.Array], events: list, labels: np.ndarray, dt: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Central differences of the continuous loss per weight array, and the continuous spike counts.

    Asserts that no spike appears or disappears under any perturbation. Cached: every kernel is compared
    with the same differences of the same loss.
    """
    weights = tuple(sorted((k, np.asarray(v).tobytes()) for k, v in params.items()))
    key = (spec, weights, str(events), str(labels), dt)  # the labels too: clip and stream losses differ
    if key in _FD_CACHE:
        return _FD_CACHE[key]
    # the reference uses the discrete model's own (float32) weights and delay dt/2 (docs/eventprop.md §5)
    net = ContinuousNet(spec, {k: np.asarray(v) for k, v in params.items()}, DURATION, delay=0.5 * dt)
    _, counts0 = net.loss(events, labels)
    fds = {}
    for name, w in net.w.items():
        fd = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            h = 1e-6 * max(1.0, abs(w[idx]))
            old = w[idx]
            w[idx] = old + h
            loss_p, counts_p = net.loss(events, labels)
            w[idx] = old - h
            loss_m, counts_m = net.loss(events, labels)
            w[idx] = old
            assert np.array_equal(counts_p, counts0) and np.array_equal(counts_m, counts0), (name, idx)
            fd[idx] = (loss_p - loss_m) / (2 * h)
        fds[name] = fd
    _FD_CACHE[key] = (fds, counts0)
    return fds, counts0


def _compare_at(
    base: NetworkSpec,
    weights_ct: dict[str, np.ndarray],
    events: list,
    labels: np.ndarray,
    dt: float,
    kernel: str = "dense",
) -> tuple[dict[str, float], bool]:
    """Relative error per weight array of Eventprop vs central differences of the continuous loss at ``dt``.

    Also returns whether the discrete and continuous networks emit the same number of spikes per neuron.
    """
    spec = _at_dt(base, dt)
    params = {k: jnp.asarray((w * dt).astype(np.float32)) for k, w in weights_ct.items()}
    targets = _frames(labels, spec) if isinstance(labels, list) else jnp.asarray(labels)
    _, aux, grads = _JITTED[kernel](params, _raster(events, spec), targets, spec, LossConfig())
    fds, counts0 = _continuous_gradient(spec, params, events, labels, dt)
    discrete_counts = np.concatenate(
        [np.asarray(aux["hidden_counts"][i][b]) for b in range(len(events)) for i in range(len(spec.hidden))]
    )
    errors = {}
    for name, fd in fds.items():
        eventprop = np.asarray(grads[name], np.float64) * dt  # dL/dW_continuous = dt * dL/dW_discrete
        errors[name] = float(np.linalg.norm(eventprop - fd) / np.linalg.norm(fd))
    return errors, bool(np.array_equal(discrete_counts, counts0))


def test_gradients_converge_to_continuous_time_differences_for_every_layer(kernel: str) -> None:
    """Eventprop's error against the continuous network's finite differences shrinks with dt, for every layer.

    Net 4 -> 3 recurrent -> 3 -> 2, two samples, 50 ms, 7 hidden spikes. Bound: relative error (Frobenius, per
    weight array) <= 2.5 dt/ms for hidden-layer weights and <= 0.3 dt/ms for the readout at dt <= 0.5 ms,
    where discrete and continuous spike counts agree; at dt = 1 ms they do not, and only the total error is
    required to be larger than at every smaller dt.
    """
    base, weights, events, labels = _tiny_problem(2, (3, 3), (True, False), 2, w_in=0.08, w_hid=0.12)
    totals, per_layer = {}, {}
    for dt in (1.0, 0.5, 0.25, 0.1):
        errors, same_counts = _compare_at(base, weights, events, labels, dt, kernel)
        per_layer[dt] = errors
        totals[dt] = max(errors.values())
        if dt <= 0.5:
            assert same_counts, f"discrete and continuous spike counts differ at dt={dt}"
            for name, err in errors.items():
                bound = (0.3 if name == "layer2.weight" else 2.5) * dt
                assert err <= bound, (dt, name, err, bound)
    for name in per_layer[0.1]:
        assert per_layer[0.1][name] < per_layer[0.25][name] < per_layer[0.5][name], (name, per_layer)
    assert totals[1.0] > max(totals[0.5], totals[0.25], totals[0.1]), totals


def test_single_layer_gradient_error_is_first_order_in_dt(kernel: str) -> None:
    """For one feed-forward layer the error at dt = 0.02 ms is about a fifth of the error at dt = 0.1 ms."""
    base, weights, events, labels = _tiny_problem(3, (2,), (False,), 1, w_in=0.1, w_hid=0.15)
    coarse, same_coarse = _compare_at(base, weights, events, labels, 0.1, kernel)
    fine, same_fine = _compare_at(base, weights, events, labels, 0.02, kernel)
    assert same_coarse and same_fine
    for name in fine:
        assert fine[name] <= 2.5 * 0.02, (name, fine)
        assert fine[name] < 0.5 * coarse[name], (name, coarse, fine)


def test_stream_loss_gradients_converge_to_continuous_time_differences(kernel: str) -> None:
    """The time-resolved loss of stream training (cross-entropies of the readout voltage at given times):
    Eventprop's error against the continuous network's finite differences shrinks with dt for every layer.

    Net 4 -> 3 recurrent -> 3 -> 2, two samples, 50 ms, four weighted targets per sample. The voltage at an
    instant is more sensitive to where a spike lands in its step than the integrated score, so the errors are
    larger than the score loss's at equal dt (0.59-0.75 at 0.5 ms, 0.15-0.25 at 0.1 ms), but first order: they
    fall for every array from 0.5 to 0.25 to 0.1 ms, are below 0.3 at 0.1 ms, and largest at 1 ms.
    """
    base, weights, events, _ = _tiny_problem(2, (3, 3), (True, False), 2, w_in=0.08, w_hid=0.12)
    times = (12.0, 21.0, 33.0, 45.0)
    picks = [((0, 1.0), (1, 0.5), (0, 0.7), (1, 1.2)), ((1, 0.8), (1, 0.3), (0, 1.0), (0, 0.6))]
    sampled = [[(t, c, w) for t, (c, w) in zip(times, p, strict=True)] for p in picks]
    per_dt = {}
    for dt in (1.0, 0.5, 0.25, 0.1):
        errors, same_counts = _compare_at(base, weights, events, sampled, dt, kernel)
        per_dt[dt] = errors
        assert same_counts or dt == 1.0, dt
    for name in per_dt[0.1]:
        assert per_dt[0.1][name] < per_dt[0.25][name] < per_dt[0.5][name] < per_dt[1.0][name], (name, per_dt)
        assert per_dt[0.1][name] <= 0.3, (name, per_dt)


def _random_problem(
    readout: str = "exp_weighted_mean", steps: int = 60
) -> tuple[NetworkSpec, dict[str, jax.Array], np.ndarray, np.ndarray]:
    spec = NetworkSpec(
        num_inputs=6, hidden=(5, 4), recurrent=(True, True), num_outputs=3, num_steps=steps, readout=readout
    )
    params = init_params(spec, jax.random.PRNGKey(1))
    gain = {
        "layer0.weight": 10.0,
        "layer0.weight_rec": 10.0,
        "layer1.weight": 80.0,
        "layer1.weight_rec": 10.0,
    }
    params = {k: v * gain.get(k, 4.0) for k, v in params.items()}
    x = (np.random.default_rng(0).random((3, steps, 6)) < 0.2).astype(np.float32)
    return spec, params, x, np.array([0, 2, 1])


def _discrete_ce(
    params: dict[str, jax.Array], x: np.ndarray, labels: np.ndarray, spec: NetworkSpec
) -> jax.Array:
    """Cross-entropy of the discrete model by plain autodiff (exact for the readout weights only)."""
    v = simulate(params, x, spec).readout
    if spec.readout == "exp_weighted_mean":
        t = jnp.arange(v.shape[1])
        scores = jnp.einsum("btk,t->bk", v, jnp.exp(-t / v.shape[1]) / v.shape[1])
    else:
        scores = v.max(axis=1)
    logp = jax.nn.log_softmax(scores)
    return -jnp.mean(logp[jnp.arange(len(labels)), labels])


@pytest.mark.parametrize("readout", ["exp_weighted_mean", "max_over_time"])
def test_readout_gradient_equals_autodiff_of_the_discrete_loss(readout: str, kernel: str) -> None:
    """The readout has no spikes, so its Eventprop gradient is exactly jax.grad of the discrete loss."""
    spec, params, x, labels = _random_problem(readout)
    loss, aux, grads = KERNELS[kernel](params, x, labels, spec, LossConfig())
    ref_loss, ref = jax.value_and_grad(_discrete_ce)(params, x, labels, spec)
    assert all(float(c.sum()) > 10 for c in aux["hidden_counts"])
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(grads["layer2.weight"], ref["layer2.weight"], rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(grads["layer0.weight"]).max()) > 0  # hidden layers get spike-timing gradients


def _stream_targets(mode: str, steps: int = 60) -> FrameTargets:
    """Targets of the three samples of ``_random_problem``: keywords of classes 0 and 1, background 2."""
    spans = [[(0, 0.005, 0.012), (1, 0.03, 0.035)], [(1, 0.02, 0.025)], []]
    loss = StreamLoss(mode, window_ms=10.0, guard_ms=4.0)
    return frame_targets(spans, steps, 0.001, 2, loss, max_windows=3)


def _discrete_stream_ce(
    params: dict[str, jax.Array], x: np.ndarray, targets: FrameTargets, spec: NetworkSpec
) -> jax.Array:
    """The stream loss of the discrete model by plain autodiff of the simulated readout trace (the pooled
    windows' best steps are found on the trace and held fixed, as the max's derivative does)."""
    logp = jax.nn.log_softmax(simulate(params, x, spec).readout, axis=-1)
    cls = np.asarray(targets.cls)
    picked = jnp.take_along_axis(logp, np.maximum(cls, 0)[..., None], axis=2)[..., 0]
    total = -jnp.sum(jnp.where(cls >= 0, picked * targets.wt, 0.0))
    for b, k in zip(*np.nonzero(np.asarray(targets.win_cls) >= 0), strict=True):
        steps = np.flatnonzero(np.asarray(targets.win)[b] == k)
        values = logp[b, steps, int(targets.win_cls[b, k])]
        total -= targets.win_wt[b, k] * values[jnp.argmax(jax.lax.stop_gradient(values))]
    return total / len(cls)


@pytest.mark.parametrize("mode", ["max", "frame"])
def test_stream_readout_gradient_equals_autodiff_of_the_discrete_loss(mode: str, kernel: str) -> None:
    """With time-resolved targets (frame terms, max-pooled windows) the loss is that of the simulated readout
    trace and the readout gradient is exactly its jax.grad; the hidden layers get spike-timing gradients."""
    spec, params, x, _ = _random_problem()
    targets = _stream_targets(mode)
    loss, aux, grads = KERNELS[kernel](params, x, targets, spec, LossConfig())
    ref_loss, ref = jax.value_and_grad(_discrete_stream_ce)(params, x, targets, spec)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(grads["layer2.weight"], ref["layer2.weight"], rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(grads["layer0.weight"]).max()) > 0
    assert aux["scores"] is None
    logits = np.asarray(simulate(params, x, spec).readout)
    cls = np.asarray(targets.cls)
    frames = cls >= 0
    assert float(aux["frame_accuracy"]) == pytest.approx(np.mean(logits.argmax(-1)[frames] == cls[frames]))


def test_stream_loss_does_not_depend_on_checkpoint_spacing(kernel: str) -> None:
    """The stream loss carries the state across segments: segments of 7 steps or one of all give the same."""
    spec, params, x, _ = _random_problem(steps=61)
    targets = _stream_targets("max", steps=61)
    loss_a, _, ga = KERNELS[kernel](params, x, targets, spec, LossConfig(checkpoint_every=7))
    loss_b, _, gb = KERNELS[kernel](params, x, targets, spec, LossConfig(checkpoint_every=1000))
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)
    for name in ga:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-5, atol=1e-8)


def test_readout_scores_match_the_agent_decision_rule(kernel: str) -> None:
    """The scores the loss uses are agent._decision.readout_scores of the simulated readout trace."""
    from edgekws.agent._decision import readout_scores

    for readout in ("exp_weighted_mean", "max_over_time"):
        spec, params, x, labels = _random_problem(readout)
        _, aux, _ = KERNELS[kernel](params, x, labels, spec, LossConfig())
        trace = np.asarray(simulate(params, x, spec).readout)
        np.testing.assert_allclose(aux["scores"], readout_scores(trace, readout), rtol=1e-5, atol=1e-7)
        expected = np.mean(np.argmax(readout_scores(trace, readout), axis=1) == labels)
        assert float(aux["accuracy"]) == pytest.approx(expected)


def test_checkpoint_spacing_does_not_change_results(kernel: str) -> None:
    """Recomputing the forward pass in segments of 7 or of all steps gives the same loss and gradients."""
    spec, params, x, labels = _random_problem(steps=61)
    loss_a, _, ga = KERNELS[kernel](params, x, labels, spec, LossConfig(checkpoint_every=7))
    loss_b, _, gb = KERNELS[kernel](params, x, labels, spec, LossConfig(checkpoint_every=1000))
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)
    for name in ga:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-5, atol=1e-8)


def test_regulariser_matches_mlgenn_penalty_and_pushes_counts_to_target(kernel: str) -> None:
    """The penalty is (lambda/2) sum (mean count - nu)^2; its per-spike kicks lower too-high spike counts."""
    spec, params, x, labels = _random_problem()
    cfg = LossConfig(reg_lambda=1e-3, reg_nu=1.0)
    loss, aux, grads = KERNELS[kernel](params, x, labels, spec, cfg)
    means = [np.asarray(c).mean(axis=0) for c in aux["hidden_counts"]]
    penalty = 0.5 * 1e-3 * sum(float(((m - 1.0) ** 2).sum()) for m in means)
    assert float(aux["reg"]) == pytest.approx(penalty, rel=1e-5)
    assert float(loss) == pytest.approx(float(aux["ce"]) + penalty, rel=1e-6)
    _, _, plain = KERNELS[kernel](params, x, labels, spec, LossConfig())
    np.testing.assert_allclose(
        grads["layer2.weight"], plain["layer2.weight"], rtol=1e-6
    )  # readout unaffected
    # descending the regulariser alone (it dominates at this strength) lowers the spike count
    strong = LossConfig(reg_lambda=10.0, reg_nu=0.0)
    before = sum(float(c.sum()) for c in aux["hidden_counts"])
    p = params
    for _ in range(5):
        _, _, g = KERNELS[kernel](p, x, labels, spec, strong)
        p = {k: p[k] - 1e-4 * g[k] for k in p}
    _, after_aux, _ = KERNELS[kernel](p, x, labels, spec, strong)
    assert sum(float(c.sum()) for c in after_aux["hidden_counts"]) < 0.7 * before


def test_training_lowers_the_loss_on_a_tiny_task(kernel: str) -> None:
    """300 Adam steps on Eventprop gradients take a two-class rate task from chance to a much lower loss."""
    spec = NetworkSpec(num_inputs=8, hidden=(16,), recurrent=(True,), num_outputs=2, num_steps=80)
    rng = np.random.default_rng(0)
    labels = np.arange(16) % 2
    rates = np.where((np.arange(8)[None, :] < 4) == (labels[:, None] == 0), 0.25, 0.03)
    x = (rng.random((16, 80, 8)) < rates[:, None, :]).astype(np.float32)
    params = init_params(spec, jax.random.PRNGKey(0))
    params = {k: v * 8.0 for k, v in params.items()}
    opt = optax.adam(2e-3)
    state = opt.init(params)

    @jax.jit
    def apply(p, s, g):
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s

    def update(p, s):
        loss, aux, g = _JITTED[kernel](p, x, labels, spec, LossConfig())
        p, s = apply(p, s, g)
        return p, s, loss, aux["accuracy"]

    losses = []
    for _ in range(300):
        params, state, loss, acc = update(params, state)
        losses.append(float(loss))
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10]), (losses[:3], losses[-3:])
    assert float(acc) == 1.0


def test_bad_inputs_are_reported_together(kernel: str) -> None:
    """Wrong parameter shapes and a wrong label shape are named in one ValueError."""
    spec, params, x, _ = _random_problem()
    bad = dict(params)
    bad["layer0.weight"] = bad["layer0.weight"][:, :2]
    with pytest.raises(ValueError, match=r"layer0\.weight.*shape") as err:
        KERNELS[kernel](bad, x, np.zeros(7, np.int64), spec, LossConfig())
    assert "labels" not in str(err.value) or "layer0" in str(err.value)
    with pytest.raises(ValueError, match="reg_lambda must be >= 0"):
        LossConfig(reg_lambda=-1.0)


def test_hidden_gradient_descends_the_discrete_loss_of_a_busy_network(kernel: str) -> None:
    """On a network with thousands of spikes, a step against the hidden weights' Eventprop gradient lowers the
    discrete loss, and the gradient points the same way as BPTT's surrogate gradient."""
    from edgekws.toolkit.train._bptt import bptt_loss_and_grad

    spec = NetworkSpec(num_inputs=128, hidden=(64,), recurrent=(True,), num_outputs=4, num_steps=300)
    rng = np.random.default_rng(3)
    x = jnp.asarray((rng.random((16, 300, 128)) < 0.06).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 4, 16))
    params = init_params(spec, jax.random.PRNGKey(1))
    params = {
        **params,
        "layer0.weight": params["layer0.weight"] * 2.0,
        "layer1.weight": params["layer1.weight"] * 10.0,
    }
    cfg = LossConfig()
    loss, aux, grads = KERNELS[kernel](params, x, y, spec, cfg)
    assert float(jnp.sum(aux["hidden_counts"][0])) > 1000
    _, _, surrogate = bptt_loss_and_grad(params, x, y, spec, cfg)
    for key in ("layer0.weight", "layer0.weight_rec"):
        g, b = np.asarray(grads[key]), np.asarray(surrogate[key])
        assert float((g * b).sum() / np.linalg.norm(g) / np.linalg.norm(b)) > 0.5, key
        stepped = {**params, key: params[key] - 0.003 * jnp.asarray(g / np.linalg.norm(g))}
        assert float(KERNELS[kernel](stepped, x, y, spec, cfg)[0]) < float(loss), key

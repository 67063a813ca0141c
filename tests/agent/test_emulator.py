"""Tests for the bit-exact fixed-point emulator (reference arithmetic, streaming, float semantics)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgekws.agent.backends import EmulatorBackend
from edgekws.packaging import FixedPointLayer, FixedPointNetwork, NetworkSpec


def _literal(
    net: FixedPointNetwork, x: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Lava's PyLifModelBitAcc + PyDenseModelBitAcc written out step by step in int64 (reference §2.2)."""
    batch, steps, _ = x.shape
    n = [layer.size for layer in net.layers]
    u = [np.zeros((batch, k), np.int64) for k in n]
    v = [np.zeros((batch, k), np.int64) for k in n]
    s = [np.zeros((batch, k), bool) for k in n]
    a_buff = [np.zeros((batch, k), np.int64) for k in n]
    tu, tv, ts = ([np.zeros((batch, steps, k), np.int64) for k in n] for _ in range(3))

    def rtz(a: np.ndarray) -> np.ndarray:
        return np.sign(a) * (np.abs(a) >> 12)

    for t in range(steps):
        for i, layer in enumerate(net.layers):
            u1 = rtz(u[i] * (4096 - layer.i_decay)) + (a_buff[i] << 6)
            u[i] = np.where(u1 > 2**23, u1 - 2**24, np.where(u1 <= -(2**23), u1 + 2**24, u1))
            bias = 0 if layer.bias is None else layer.bias << 6
            v1 = np.clip(rtz(v[i] * (4096 - layer.v_decay)) + u[i] + bias, -(2**23 - 1), 2**23 - 1)
            s[i] = v1 > (layer.v_th_mant << 6)
            v1[s[i]] = 0
            v[i] = v1
            tu[i][:, t], tv[i][:, t], ts[i][:, t] = u[i], v[i], s[i]
        pre = (x[:, t] != 0).astype(np.int64)
        for i, layer in enumerate(net.layers):
            a_buff[i] = pre @ layer.weight.T
            if layer.weight_rec is not None:
                a_buff[i] += s[i].astype(np.int64) @ layer.weight_rec.T
            pre = s[i].astype(np.int64)
    return tu, tv, ts


def _net(seed: int, stress: bool = False) -> FixedPointNetwork:
    rng = np.random.default_rng(seed)
    lim = 256 if stress else 128
    hidden = FixedPointLayer(
        weight=rng.integers(-lim, lim - 1, (16, 12)),
        weight_rec=rng.integers(-lim, lim - 1, (16, 16)),
        i_decay=0 if stress else 1024,
        v_decay=0 if stress else 256,
        v_th_mant=100_000 if stress else 80,
        bias=None if stress else rng.integers(-20, 20, 16),
        weight_scale=2.0**-8,
    )
    readout = FixedPointLayer(
        weight=rng.integers(-128, 128, (3, 16)),
        i_decay=0 if stress else 512,
        v_decay=0,
        weight_scale=2.0**-9,
    )
    return FixedPointNetwork((hidden, readout))


KERNELS = ("numba", "numpy")


@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_the_literal_lava_arithmetic(kernel: str) -> None:
    """u, v and spikes of every layer equal a literal step-by-step int64 transcription of Lava's models."""
    net = _net(0)
    x = (np.random.default_rng(1).random((3, 300, 12)) < 0.3).astype(np.uint8)
    traces = EmulatorBackend(net, kernel=kernel).run_traces(x)
    ref_u, ref_v, ref_s = _literal(net, x)
    for i in range(2):
        assert np.array_equal(traces.u[i], ref_u[i])
        assert np.array_equal(traces.v[i], ref_v[i])
        assert np.array_equal(traces.spikes[i], ref_s[i])
    assert 0.05 < traces.spikes[0].mean() < 0.95


@pytest.mark.parametrize("kernel", KERNELS)
def test_wrap_around_and_saturation_match_the_literal_arithmetic(kernel: str) -> None:
    """With no decay and large weights u wraps at 24 bits and v saturates, exactly as in Lava."""
    net = _net(2, stress=True)
    x = (np.random.default_rng(3).random((2, 600, 12)) < 0.5).astype(np.uint8)
    traces = EmulatorBackend(net, kernel=kernel).run_traces(x)
    ref_u, ref_v, ref_s = _literal(net, x)
    for i in range(2):
        assert np.array_equal(traces.u[i], ref_u[i]) and np.array_equal(traces.v[i], ref_v[i])
        assert np.array_equal(traces.spikes[i], ref_s[i])
    assert np.abs(traces.v[1]).max() == 2**23 - 1  # saturated
    jumps = np.abs(np.diff(traces.u[0], axis=1)).max()
    assert jumps > 2**23  # a step that wrapped (the increment alone is below 2^23)


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunked_stepping_equals_a_whole_run(kernel: str) -> None:
    """Feeding samples in uneven chunks returns exactly the whole-sample readout."""
    net = _net(4)
    x = (np.random.default_rng(5).random((2, 400, 12)) < 0.3).astype(np.uint8)
    emulator = EmulatorBackend(net, kernel=kernel)
    whole = emulator.run(x)
    emulator.reset(2)
    bounds = [0, 1, 2, 130, 131, 257, 400]
    parts = [emulator.step(x[:, a:b]) for a, b in itertools.pairwise(bounds)]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_readout_is_in_float_units_and_batch_independent() -> None:
    """run() returns v_int * q / 64 and a sample's trace does not depend on its batch mates."""
    net = _net(6)
    x = (np.random.default_rng(7).random((3, 200, 12)) < 0.3).astype(np.uint8)
    emulator = EmulatorBackend(net)
    out = emulator.run(x)
    traces = emulator.run_traces(x)
    assert np.array_equal(out, traces.v[1] * (2.0**-9 / 64))
    assert np.array_equal(emulator.run(x[1:2]), out[1:2])


def _float_model(spec: NetworkSpec, weights: list[np.ndarray], rec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The NetworkSpec float64 semantics; returns the hidden spikes (batch, steps, hidden)."""
    batch, steps, _ = x.shape
    h = rec.shape[0]
    u, v = np.zeros((batch, h)), np.zeros((batch, h))
    s = np.zeros((batch, h))
    out = np.zeros((batch, steps, h), bool)
    prev = np.zeros((batch, x.shape[2]))
    for t in range(steps):
        u = spec.alpha_syn * u + prev @ weights[0].T + s @ rec.T
        v = spec.alpha_mem * v + u
        spiking = v > spec.threshold
        v[spiking] = 0.0
        s = spiking.astype(float)
        out[:, t] = spiking
        prev = x[:, t].astype(float)
    return out


def test_agrees_with_the_float_model_except_near_threshold() -> None:
    """With exactly representable weights, at least 97% of hidden spike decisions equal the float model's."""
    spec = NetworkSpec(num_inputs=40, hidden=(32,), recurrent=(True,), num_outputs=4)
    rng = np.random.default_rng(8)
    q = 2.0**-8
    w_int = rng.integers(-60, 90, (32, 40))
    r_int = rng.integers(-40, 40, (32, 32))
    net = FixedPointNetwork(
        (
            FixedPointLayer(w_int, r_int, spec.i_decay, spec.v_decay, round(spec.threshold / q), q),
            FixedPointLayer(rng.integers(-9, 9, (4, 32)), None, spec.i_decay, spec.v_decay, weight_scale=q),
        )
    )
    x = (rng.random((4, 300, 40)) < 0.05).astype(np.uint8)
    fixed = EmulatorBackend(net).run_traces(x).spikes[0]
    ref = _float_model(spec, [w_int * q], r_int * q, x)
    assert ref.mean() > 0.01
    assert (fixed == ref).mean() > 0.97


def _random_net(rng: np.random.Generator, depth: int) -> FixedPointNetwork:
    """A random net of ``depth`` hidden layers (some recurrent, some with bias) and a readout."""
    sizes = [int(rng.integers(5, 40)) for _ in range(depth)]
    layers = []
    fan_in = int(rng.integers(3, 30))
    big = bool(rng.integers(2))  # no decay and the full weight range: u wraps and v saturates
    for k in sizes:
        lim = 256 if big else int(rng.integers(20, 128))
        layers.append(
            FixedPointLayer(
                weight=rng.integers(-lim, lim - 1, (k, fan_in)),
                weight_rec=rng.integers(-lim, lim - 1, (k, k)) if rng.integers(2) else None,
                i_decay=0 if big else int(rng.integers(0, 4096)),
                v_decay=0 if big else int(rng.integers(0, 4096)),
                v_th_mant=int(rng.integers(50, 3000)),
                bias=rng.integers(-50, 50, k) if rng.integers(2) else None,
                weight_scale=2.0**-8,
            )
        )
        fan_in = k
    layers.append(
        FixedPointLayer(
            weight=rng.integers(-128, 128, (int(rng.integers(2, 6)), fan_in)),
            i_decay=0 if big else int(rng.integers(0, 4096)),
            v_decay=0,
            weight_scale=2.0**-9,
        )
    )
    return FixedPointNetwork(tuple(layers))


def test_numba_and_numpy_kernels_are_bit_identical_on_random_nets() -> None:
    """On random nets of 1-3 hidden layers, wrap and saturation included, both kernels give equal traces."""
    rng = np.random.default_rng(11)
    wrapped = saturated = 0
    for trial in range(12):
        net = _random_net(rng, depth=1 + trial % 3)
        x = (rng.random((3, 300, net.num_inputs)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        fast = EmulatorBackend(net, kernel="numba")
        slow = EmulatorBackend(net, kernel="numpy")
        assert fast.kernel == "numba" and slow.kernel == "numpy"
        a, b = fast.run_traces(x), slow.run_traces(x)
        for i in range(len(net.layers)):
            assert np.array_equal(a.u[i], b.u[i]), f"trial {trial} layer {i} u"
            assert np.array_equal(a.v[i], b.v[i]), f"trial {trial} layer {i} v"
            assert np.array_equal(a.spikes[i], b.spikes[i]), f"trial {trial} layer {i} spikes"
        wrapped += int(any(np.abs(np.diff(u, axis=1)).max() > 2**23 for u in a.u))
        saturated += int(any(np.abs(v).max() == 2**23 - 1 for v in a.v))
    assert wrapped >= 2 and saturated >= 2  # the random nets did reach both edge cases


def test_kernels_agree_on_graded_bool_and_broadcast_input() -> None:
    """Graded payloads, bool input and one input broadcast to every stream give equal results on both."""
    net = _net(6)
    rng = np.random.default_rng(12)
    graded = rng.integers(0, 300, (2, 250, 12)) * (rng.random((2, 250, 12)) < 0.3)
    results = [EmulatorBackend(net, graded_input=True, kernel=k).run(graded) for k in KERNELS]
    assert np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], EmulatorBackend(net).run(graded))  # the payload mattered
    x = rng.random((250, 12)) < 0.3
    shared = np.broadcast_to(x, (4, *x.shape))
    outs = []
    for kernel in KERNELS:
        emulator = EmulatorBackend(net, kernel=kernel)
        state = emulator.new_state(4)
        first, _ = emulator.advance(state, shared[:, :100])
        second, _ = emulator.advance(state, shared[:, 100:])
        outs.append(np.concatenate([first, second], axis=1))
    assert np.array_equal(outs[0], outs[1])
    assert np.array_equal(outs[0][3], EmulatorBackend(net).run(x.astype(np.uint8))[0] / net.readout_scale)


def test_unknown_kernel_is_refused() -> None:
    """A kernel name other than auto, numba or numpy is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="'auto', 'numba' or 'numpy'"):
        EmulatorBackend(_net(0), kernel="cuda")


@pytest.mark.parametrize("kernel", KERNELS)
def test_event_counts_match_the_traces_and_chunking(kernel: str) -> None:
    """event_counts adds up the delivered input events, hidden spikes, synaptic events and neuron updates."""
    net = _net(6)
    x = (np.random.default_rng(7).random((3, 300, 12)) < 0.2).astype(np.uint8)
    traced = EmulatorBackend(net, kernel=kernel)
    traces = traced.run_traces(x)
    hidden = int(traces.spikes[0].sum())
    readout_spikes = int(traces.spikes[1].sum())
    delivered = int(np.count_nonzero(x[:, :-1]))  # column t - 1 at step t; the zero initial column adds none
    counts = traced.event_counts()
    assert counts["input_events"] == delivered and counts["hidden_spikes"] == hidden
    assert counts["synops"] == delivered * 16 + hidden * (16 + 3) + readout_spikes * 0
    assert counts["neuron_updates"] == 3 * 300 * (16 + 3)
    chunked = EmulatorBackend(net, kernel=kernel)
    chunked.reset(3)
    for a, b in itertools.pairwise([0, 7, 150, 151, 300]):
        chunked.step(x[:, a:b])
    assert chunked.event_counts() == counts


def test_event_counts_are_the_same_for_both_kernels_with_broadcast_input() -> None:
    """The spotter's lanes share one input (a broadcast view); both kernels count it once per lane."""
    net = _net(8)
    column = (np.random.default_rng(9).random((1, 200, 12)) < 0.3).astype(np.uint8)
    lanes = np.broadcast_to(column, (4, 200, 12))
    got = []
    for kernel in KERNELS:
        emulator = EmulatorBackend(net, kernel=kernel)
        emulator.advance(emulator.new_state(4), lanes)
        got.append(emulator.event_counts())
    assert got[0] == got[1] and got[0]["input_events"] == 4 * np.count_nonzero(column[:, :-1])

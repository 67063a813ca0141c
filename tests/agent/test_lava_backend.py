"""Tests for the Lava backends: bit-exactness against the emulator, per-sample reset, streaming."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from _devices import realistic_network

from edgekws.agent.backends import BackendUnavailable, EmulatorBackend, LavaBackend, Loihi2Backend
from edgekws.packaging import FixedPointLayer, FixedPointNetwork, write_netx


def _stress_net() -> FixedPointNetwork:
    """No decay and large odd and even weights in [-256, 254]: u wraps, v saturates."""
    rng = np.random.default_rng(10)
    hidden = FixedPointLayer(
        weight=rng.integers(-256, 255, (12, 8)),
        weight_rec=rng.integers(-256, 255, (12, 12)),
        i_decay=0,
        v_decay=0,
        v_th_mant=100_000,
    )
    readout = FixedPointLayer(weight=rng.integers(-128, 128, (3, 12)), i_decay=0, v_decay=0)
    return FixedPointNetwork((hidden, readout))


def _assert_bit_exact(net: FixedPointNetwork, path: Path, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    lava = LavaBackend(write_netx(net, path), probe=True)
    try:
        probes = lava.run_probes(x)
    finally:
        lava.close()
    traces = EmulatorBackend(net).run_traces(x)
    for b, sample in enumerate(probes):
        for i in range(len(net.layers)):
            assert np.array_equal(sample[f"{i}.u"], traces.u[i][b]), f"sample {b} layer {i} u"
            assert np.array_equal(sample[f"{i}.v"], traces.v[i][b]), f"sample {b} layer {i} v"
            assert np.array_equal(sample[f"{i}.s"], traces.spikes[i][b]), f"sample {b} layer {i} spikes"
        assert np.array_equal(sample["out.v"], traces.v[-1][b])
    return probes


@pytest.mark.lava
def test_wrap_and_saturation_are_bit_exact_for_1000_steps(tmp_path: Path) -> None:
    """Lava fixed_pt and the emulator agree on every u, v and spike while u wraps and v saturates."""
    net = _stress_net()
    x = (np.random.default_rng(12).random((1, 1000, 8)) < 0.5).astype(np.uint8)
    probes = _assert_bit_exact(net, tmp_path / "stress.net", x)
    u = probes[0]["0.u"]
    assert np.abs(np.diff(u, axis=0)).max() > 2**23  # wrapped
    # saturated (at +2^23-1 a neuron spikes and resets within the step, so the floor is what stays visible)
    assert min(probes[0]["0.v"].min(), probes[0]["1.v"].min()) == -(2**23 - 1)
    assert probes[0]["0.s"].any()


@pytest.mark.lava
def test_realistic_network_is_bit_exact_across_independent_samples(tmp_path: Path) -> None:
    """Two 500-step samples through C → recurrent H → O agree exactly, each starting from zero state."""
    net = realistic_network()
    x = (np.random.default_rng(13).random((2, 500, 20)) < 0.1).astype(np.uint8)
    probes = _assert_bit_exact(net, tmp_path / "real.net", x)
    rate = np.mean([p["0.s"].mean() for p in probes])
    assert 0.005 < rate < 0.5


@pytest.mark.lava
def test_streaming_and_decisions_match_the_emulator(tmp_path: Path) -> None:
    """step() over uneven chunks and decide() give the emulator's float readout and labels."""
    net = realistic_network()
    path = write_netx(net, tmp_path / "real.net")
    x = (np.random.default_rng(14).random((1, 100, 20)) < 0.1).astype(np.uint8)
    lava = LavaBackend(path)
    try:
        streamed = np.concatenate([lava.step(x[:, a:b]) for a, b in [(0, 40), (40, 41), (41, 100)]], axis=1)
        decision = lava.decide(x)
    finally:
        lava.close()
    emulator = EmulatorBackend(net)
    assert np.array_equal(streamed, emulator.run(x))
    assert np.array_equal(decision.scores, emulator.decide(x).scores)


@pytest.mark.lava
def test_loihi2_without_lava_loihi_names_the_extension(tmp_path: Path) -> None:
    """Without lava-loihi the loihi2 backend is unavailable and says it needs the INRC extension."""
    assert LavaBackend.available() and not Loihi2Backend.available()
    with pytest.raises(BackendUnavailable, match=r"lava-loihi.*INRC"):
        Loihi2Backend(write_netx(realistic_network(), tmp_path / "real.net"))


def test_lava_backend_availability_follows_the_interpreter(tmp_path: Path) -> None:
    """Lava is available on Python 3.10; on 3.11 the backend points at .venv-lava and at `edgekws eval`."""
    if sys.version_info[:2] == (3, 10):
        assert LavaBackend.available()
        return
    assert not LavaBackend.available()
    with pytest.raises(BackendUnavailable, match=r"Python 3\.10.*\.venv-lava.*lava-sim"):
        LavaBackend(write_netx(realistic_network(), tmp_path / "real.net"))

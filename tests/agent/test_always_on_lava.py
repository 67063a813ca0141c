"""A never-reset network for a minute of audio: Lava fixed_pt and both emulator kernels, spike for spike.

The always-on mode runs one network per audio stream forever, so its state must stay what the chip's would
be after any length of audio: u wraps and v saturates at 24 bits exactly as Lava's ``fixed_pt`` models (and
Loihi 2) do, and nothing grows without bound. One 60 s stream of front-end spikes (word-like bursts, quiet
and noise, encoded by the agent's front-end) runs through a network whose readout never leaks (v_decay 0,
so it saturates) and whose readout current leaks slowly (so it wraps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _devices import SPEC, realistic_network

from edgekws.agent import Frontend
from edgekws.agent.backends import EmulatorBackend, LavaBackend
from edgekws.packaging import FixedPointLayer, FixedPointNetwork, write_netx

SECONDS = 60
RATE = 16000


def never_reset_network() -> FixedPointNetwork:
    """The realistic test network's recurrent layer (32 neurons, a bias) on the test front-end's channels,
    with a readout that integrates for ever: large weights, a slow current decay and no voltage decay."""
    h = realistic_network().layers[0]
    c = SPEC.num_channels
    hidden = FixedPointLayer(
        h.weight[:, :c] * 2, h.weight_rec, h.i_decay, h.v_decay, h.v_th_mant, h.weight_scale, h.bias
    )
    rng = np.random.default_rng(21)
    weight = rng.integers(-200, 250, (4, 32))
    readout = FixedPointLayer(weight=weight, i_decay=3, v_decay=0, weight_scale=2.0**-9)
    return FixedPointNetwork((hidden, readout))


def minute_of_audio() -> np.ndarray:
    """60 s at 16 kHz: 0.3-0.8 s bursts of harmonic tones (words), gaps, and stretches of noise."""
    rng = np.random.default_rng(5)
    audio = 0.002 * rng.standard_normal(SECONDS * RATE)
    t = 0.5
    while t < SECONDS - 1:
        n = int(rng.uniform(0.3, 0.8) * RATE)
        f0 = rng.uniform(90, 250)
        k = np.arange(n) / RATE
        word = sum(np.sin(2 * np.pi * f0 * h * k) / h for h in range(1, 8)) * np.hanning(n)
        a = int(t * RATE)
        audio[a : a + n] += rng.uniform(0.05, 0.4) * word
        t += n / RATE + rng.uniform(0.2, 2.0)
    for start in (12, 35):  # noise stretches
        audio[start * RATE : (start + 8) * RATE] += 0.05 * rng.standard_normal(8 * RATE)
    return audio.astype(np.float32)


@pytest.mark.lava
def test_a_minute_never_reset_lava_equals_both_emulator_kernels_and_state_stays_bounded(
    tmp_path: Path,
) -> None:
    """60 000 steps from zero state, never reset: the hidden spikes of every step and the readout voltage
    of Lava fixed_pt equal the numba and numpy emulators'; the readout saturates and its current wraps on
    the way, and every u and v stays within the 24-bit range."""
    spikes = Frontend(SPEC).process(minute_of_audio())[None]
    assert spikes.shape == (1, SECONDS * 1000, SPEC.num_channels)
    net = never_reset_network()
    numba = EmulatorBackend(net, kernel="numba").run_traces(spikes)
    numpy = EmulatorBackend(net, kernel="numpy").run_traces(spikes)
    for a, b in zip((*numba.u, *numba.v, *numba.spikes), (*numpy.u, *numpy.v, *numpy.spikes), strict=True):
        assert np.array_equal(a, b)
    lava = LavaBackend(write_netx(net, tmp_path / "never-reset.net"), probe="spikes")
    try:
        probes = lava.run_probes(spikes)[0]
    finally:
        lava.close()
    assert np.array_equal(probes["0.s"], numba.spikes[0][0]), "hidden spikes differ"
    assert np.array_equal(probes["out.v"], numba.v[-1][0]), "readout voltage differs"
    assert 0.005 < numba.spikes[0].mean() < 0.5  # the hidden layer is busy all minute
    limit = 1 << 23
    for u, v in zip(numba.u, numba.v, strict=True):
        assert np.abs(u).max() <= limit and np.abs(v).max() <= limit - 1
    readout_v, readout_u = numba.v[-1][0], numba.u[-1][0]
    assert np.abs(readout_v).max() == limit - 1  # saturated
    assert np.abs(np.diff(readout_u, axis=0)).max() > limit  # wrapped

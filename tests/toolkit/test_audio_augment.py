"""Audio augmentations of synthetic speech, each one's effect measured on real synthesizer output."""

from __future__ import annotations

import numpy as np
import pytest

from edgekws.toolkit.data import _augment, _engines, _synth
from edgekws.toolkit.data._augment import AugmentError, AugmentPolicy

RATE = 16000


def _voice(engine: str, vid: str) -> _engines.Voice:
    return next(v for v in _engines.voices(engine, "en") if v.id == vid)


@pytest.fixture(scope="module")
def espeak_word() -> np.ndarray:
    return _synth.spoken_word(
        _voice("espeak-ng", "en-us+m1"), "seven", {"rate": 150, "pitch": 50, "amplitude": 100}
    )


@pytest.fixture(scope="module")
def flite_word() -> np.ndarray:
    return _synth.spoken_word(_voice("flite", "flite-slt"), "seven", {"stretch": 1.0, "peak": 0.5})


def _loud_frames(y: np.ndarray, frame: int = 1024, hop: int = 256) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    frames = librosa.util.frame(y, frame_length=frame, hop_length=hop)
    rms = np.sqrt((frames**2).mean(axis=0))
    return frames, rms > 0.3 * rms.max()


def _f0(y: np.ndarray) -> float:
    """Median f0 of the loud frames (librosa's YIN: independent of the WORLD vocoder that changed it)."""
    import librosa

    f0 = librosa.yin(y, fmin=60, fmax=500, sr=RATE, frame_length=1024, hop_length=256, center=False)
    _, loud = _loud_frames(y)
    return float(np.median(f0[: len(loud)][loud]))


def _formants(y: np.ndarray) -> np.ndarray:
    """Median F1, F2 of the loud frames from LPC roots (order 14, 25 ms frames)."""
    import librosa

    frames, loud = _loud_frames(y, 400, 160)
    found = []
    for fr in frames[:, loud].T:
        roots = np.roots(librosa.lpc(fr * np.hamming(len(fr)), order=14))
        freqs = np.sort(np.angle(roots[np.imag(roots) > 0]) * RATE / (2 * np.pi))
        freqs = freqs[freqs > 200]
        if len(freqs) >= 2:
            found.append(freqs[:2])
    return np.median(np.array(found), axis=0)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spectrum[(f >= lo) & (f < hi)].sum())


def test_formant_warp_moves_the_formants_not_the_pitch(espeak_word: np.ndarray) -> None:
    """A vocal-tract warp of 1.15 raises F1 and F2 by 8-30 %, 0.87 lowers them; f0 stays within 3 %."""
    f1f2, f0 = _formants(espeak_word), _f0(espeak_word)
    up = _augment.voice(espeak_word, RATE, formant=1.15)
    down = _augment.voice(espeak_word, RATE, formant=0.87)
    assert np.all((_formants(up) / f1f2 > 1.08) & (_formants(up) / f1f2 < 1.3))
    assert np.all((_formants(down) / f1f2 > 0.75) & (_formants(down) / f1f2 < 0.93))
    assert abs(_f0(up) / f0 - 1) < 0.03 and abs(_f0(down) / f0 - 1) < 0.03


@pytest.mark.parametrize("which", ["espeak", "flite"])
def test_pitch_shift_moves_f0_and_tempo_the_duration(
    which: str, espeak_word: np.ndarray, flite_word: np.ndarray
) -> None:
    """+4 semitones multiplies the measured f0 by 2**(4/12) (within 3 %) at the same length; a tempo of
    1.25 makes the word 25 % longer (within 2 %) at the same f0."""
    word = espeak_word if which == "espeak" else flite_word
    f0 = _f0(word)
    higher = _augment.voice(word, RATE, semitones=4.0)
    assert _f0(higher) / f0 == pytest.approx(2 ** (4 / 12), rel=0.03)
    assert abs(len(higher) - len(word)) < 0.02 * len(word)
    slower = _augment.voice(word, RATE, tempo=1.25)
    assert len(slower) / len(word) == pytest.approx(1.25, rel=0.02)
    assert _f0(slower) / f0 == pytest.approx(1.0, rel=0.03)


def _room(rt60: float) -> dict[str, object]:
    return {"size_m": [6.0, 4.5, 3.0], "rt60_s": rt60, "mic_m": [2.0, 2.0, 1.2], "source_m": [4.0, 2.5, 1.6]}


def test_reverb_lengthens_the_decay(espeak_word: np.ndarray) -> None:
    """In a room the energy in the 200 ms after the word rises from nothing to > -35 dB of the word's, more
    with a longer RT60; the direct sound stays where the dry word was."""
    clip = np.zeros(RATE)
    clip[1600 : 1600 + len(espeak_word)] = espeak_word
    end = 1600 + len(espeak_word)

    def tail_db(x: np.ndarray) -> float:
        return 10 * np.log10(np.sum(x[end : end + 3200] ** 2) / np.sum(x[1600:end] ** 2) + 1e-12)

    short, long = _augment.room(clip, RATE, _room(0.25)), _augment.room(clip, RATE, _room(0.8))
    assert tail_db(clip) < -100
    assert -35 < tail_db(short) < tail_db(long)
    assert tail_db(long) > tail_db(short) + 5
    onset = int(np.argmax(np.abs(long) > 0.05 * np.abs(long).max()))
    assert abs(onset - int(np.argmax(np.abs(clip) > 0.05 * np.abs(clip).max()))) < 160  # 10 ms
    assert np.mean(long**2) == pytest.approx(np.mean(clip**2), rel=1e-6)


def test_band_limit_removes_energy_above_the_cutoff(flite_word: np.ndarray) -> None:
    """An 8 kHz band limit (telephone) leaves < -40 dB of the energy above 4 kHz; high-pass cuts the lows."""
    noisy = flite_word + 0.01 * np.random.default_rng(0).standard_normal(len(flite_word))
    total = _band_energy(noisy, 0, 8000)
    assert _band_energy(noisy, 4100, 8000) / total > 1e-2
    limited = _augment.channel(noisy, RATE, {"band": {"rate": 8000, "highpass_hz": 300.0}})
    assert len(limited) == len(noisy)
    assert _band_energy(limited, 4100, 8000) / _band_energy(limited, 0, 8000) < 1e-4
    assert _band_energy(limited, 0, 120) < 0.05 * _band_energy(noisy, 0, 120)
    assert _band_energy(limited, 500, 3500) > 0.7 * _band_energy(noisy, 500, 3500)


def test_eq_gain_and_clipping_levels(espeak_word: np.ndarray) -> None:
    """A +10 dB peak at 1 kHz raises that band by 6-11 dB; gain -6 dB halves the amplitude; clipping at 10 %
    puts about 10 % of the word's samples at the clipping level."""
    eq = _augment.channel(espeak_word, RATE, {"eq": [{"hz": 1000.0, "gain_db": 10.0, "q": 1.0}]})
    rise = 10 * np.log10(_band_energy(eq, 900, 1100) / _band_energy(espeak_word, 900, 1100))
    assert 6 < rise < 11
    assert 10 * np.log10(_band_energy(eq, 4000, 8000) / _band_energy(espeak_word, 4000, 8000)) < 1.5
    quieter = _augment.channel(espeak_word, RATE, {"gain": {"db": -6.0}})
    assert np.max(np.abs(quieter)) / np.max(np.abs(espeak_word)) == pytest.approx(10 ** (-6 / 20), rel=1e-3)
    clipped = _augment.channel(espeak_word, RATE, {"clip": {"percentile": 10.0}})
    level = np.max(np.abs(clipped))
    loud = np.abs(espeak_word) > 1e-4
    at_level = np.mean(np.abs(clipped[loud]) >= level * (1 - 1e-6))
    assert 0.08 < at_level < 0.12 and level < 0.7 * np.max(np.abs(espeak_word))


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_is_added_at_its_snr(kind: str) -> None:
    """Rendered with white, pink or babble noise, a clip's noise sits at the utterance's SNR (within 0.3 dB)
    against the word's power."""
    _, _, utts = _synth.plan_corpus("en-digits", 6, seed=3, classes=["seven"], augment="none")
    utt = dict(utts[0])
    utt["augment"] = {}
    utt["noise"], utt["snr_db"] = kind, 12.0
    if kind == "babble":
        utt["babble"] = [
            {"text": "apple", "speaker": "flite-awb", "engine": "flite", "voice": "awb", "variant": "",
             "stretch": 1.0, "peak": 0.5, "offset_s": 0.1},
            {"text": "river", "speaker": "en-gb+f3", "engine": "espeak-ng", "voice": "en-gb", "variant": "f3",
             "rate": 160, "pitch": 50, "amplitude": 100, "offset_s": -0.2},
        ]  # fmt: skip
    noisy, timing = _synth.render(utt, seed=3)
    clean, _ = _synth.render({**utt, "snr_db": 300.0}, seed=3)
    noise = noisy / 32768.0 - clean / 32768.0
    a = round(timing["lead_silence_s"] * RATE)
    b = a + round(timing["speech_s"] * RATE)
    speech_power = np.mean((clean[a:b] / 32768.0) ** 2)
    assert 10 * np.log10(speech_power / np.mean(noise**2)) == pytest.approx(12.0, abs=0.3)


def test_policy_draws_are_recorded_and_validated() -> None:
    """The none policy draws only white noise; the default draws every augmentation with its parameters;
    a bad setting is refused with its name."""
    rng = np.random.default_rng(0)
    none = [_augment.draw(_augment.PRESETS["none"], rng) for _ in range(20)]
    assert all(set(d) == {"noise"} and d["noise"]["kind"] == "white" for d in none)
    draws = [_augment.draw(_augment.PRESETS["default"], rng) for _ in range(300)]
    seen = {name for d in draws for name in d}
    assert seen == set(_augment.AUGMENTATIONS)
    assert {d["noise"]["kind"] for d in draws} == {"white", "pink", "babble"}
    for d in draws:
        if "room" in d:
            size, mic, src = (np.array(d["room"][k]) for k in ("size_m", "mic_m", "source_m"))
            assert np.all((mic > 0) & (mic < size) & (src > 0) & (src < size))
        if "band" in d:
            assert d["band"]["rate"] in (8000, 11025, 12000)
    custom = _augment.policy({"room_p": 1.0, "formant_p": 0.0})
    assert custom.room_p == 1.0 and custom.pitch_p == _augment.PRESETS["default"].pitch_p
    with pytest.raises(AugmentError, match="pitch_p must be a probability"):
        AugmentPolicy(pitch_p=1.5)
    with pytest.raises(AugmentError, match="unknown augmentation setting"):
        _augment.policy({"reverb": 1})

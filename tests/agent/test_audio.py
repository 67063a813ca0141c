"""Tests for audio loading, validation, conversion and resampling."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekws.agent import AudioError, FrontendSpec, clipped_fraction, encode, load_audio
from edgekws.agent._audio import as_float_mono, prepare


def test_int16_is_scaled_by_one_over_32768() -> None:
    """int16 full scale maps to -1 and 32767/32768; int32 and uint8 are scaled by their own full scale."""
    x = as_float_mono(np.array([-32768, 0, 16384, 32767], dtype=np.int16))
    assert x.dtype == np.float64
    assert x.tolist() == [-1.0, 0.0, 0.5, 32767 / 32768]
    assert as_float_mono(np.array([-(2**31), 2**30], dtype=np.int32)).tolist() == [-1.0, 0.5]
    assert as_float_mono(np.array([0, 128, 192], dtype=np.uint8)).tolist() == [-1.0, 0.0, 0.5]


def test_int16_and_float_input_encode_identically() -> None:
    """An int16 signal and the same signal as float /32768 give the same spikes."""
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(3200) * 3000).astype(np.int16)
    assert np.array_equal(encode(pcm, 16000), encode(pcm.astype(np.float32) / 32768, 16000))


def test_float_outside_range_is_clipped_and_counted() -> None:
    """Float samples beyond [-1, 1] are clipped to it and counted in the clipped fraction."""
    x = np.array([0.0, 1.5, -2.0, 0.5])
    assert as_float_mono(x).tolist() == [0.0, 1.0, -1.0, 0.5]
    assert clipped_fraction(x) == 0.5
    assert clipped_fraction(np.array([-32768, 5, 32767, 7], dtype=np.int16)) == 0.5
    assert clipped_fraction(np.zeros(0)) == 0.0


def test_stereo_is_averaged_to_mono() -> None:
    """(frames, channels) input is down-mixed by averaging the channels."""
    stereo = np.array([[0.5, -0.5], [1.0, 0.0], [0.2, 0.4]])
    assert np.allclose(as_float_mono(stereo), [0.0, 0.5, 0.3])
    rng = np.random.default_rng(2)
    left = rng.standard_normal(1600) * 0.1
    assert np.array_equal(encode(np.stack([left, left], axis=1), 16000), encode(left, 16000))


def test_channels_first_array_is_rejected_with_the_fix() -> None:
    """A (channels, frames) array is refused with a hint to transpose it."""
    with pytest.raises(AudioError, match=r"audio\.T"):
        as_float_mono(np.zeros((2, 16000)))


def test_nan_and_inf_name_the_count_and_first_index() -> None:
    """NaN or infinite samples raise AudioError naming how many and where the first one is."""
    x = np.zeros(100)
    x[17] = np.nan
    x[40] = np.inf
    with pytest.raises(AudioError, match=r"2 NaN or infinite sample\(s\), the first at index 17"):
        encode(x, 16000)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(8, dtype=np.complex64),
        np.array(["a", "b"]),
        np.array([0.1, None], dtype=object),
        np.zeros(4, dtype=bool),
    ],
)
def test_wrong_dtypes_are_rejected(bad: np.ndarray) -> None:
    """Complex, string, object and boolean arrays raise AudioError naming the dtype."""
    with pytest.raises(AudioError, match="dtype"):
        encode(bad, 16000)


def test_empty_input_gives_zero_steps() -> None:
    """An empty signal encodes to a (0, C) raster without error."""
    raster = encode(np.zeros(0, dtype=np.int16), 16000)
    assert raster.shape == (0, FrontendSpec().num_channels)
    assert raster.dtype == np.uint8


def test_other_rate_without_resample_is_refused() -> None:
    """44.1 kHz audio with resample=False raises the message that names both rates and the fix."""
    with pytest.raises(AudioError, match=r"sample rate must be 16000 Hz, got 44100 Hz; pass resample=True"):
        encode(np.zeros(441), 44100, resample=False)


def test_other_rate_is_resampled_to_the_spec_rate() -> None:
    """44.1 kHz input is resampled so the step count follows the duration, and a tone keeps its band."""
    t = np.arange(44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    raster = encode(tone, 44100)
    assert raster.shape[0] == 1000
    resampled = prepare(tone, 44100, 16000, resample_ok=True)
    assert resampled.shape == (16000,)
    spec = FrontendSpec()
    band = int(np.argmin(np.abs(spec.center_frequencies() - 1000)))
    per_band = raster.reshape(1000, spec.num_bands, -1).sum(axis=(0, 2))
    assert abs(int(np.argmax(per_band)) - band) <= 1


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, float("nan")])
def test_bad_sample_rates_are_refused(rate: float) -> None:
    """Zero, negative, fractional and NaN sample rates raise AudioError."""
    with pytest.raises(AudioError, match="sample rate"):
        encode(np.zeros(16), rate)


def test_load_audio_reads_int16_stereo_wav_as_float32_mono(tmp_path: Path) -> None:
    """A 16-bit stereo WAV loads as float32 mono averaged across channels, with its rate."""
    frames = np.array([[16384, 0], [-32768, -32768], [100, 300]], dtype=np.int16)
    path = tmp_path / "s.wav"
    sf.write(path, frames, 8000, subtype="PCM_16")
    audio, sr = load_audio(path)
    assert sr == 8000
    assert audio.dtype == np.float32
    assert np.allclose(audio, [0.25, -1.0, 200 / 32768])


def test_truncated_wav_names_the_file(tmp_path: Path) -> None:
    """A WAV cut short after its header raises AudioError naming the file and the missing bytes."""
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated WAV"):
        load_audio(path)


@pytest.mark.parametrize("payload", [b"", b"RIFF\x00\x00", b"not audio at all" * 10])
def test_corrupt_files_name_the_file(tmp_path: Path, payload: bytes) -> None:
    """Empty, header-only and garbage files raise AudioError naming the file."""
    path = tmp_path / "broken.wav"
    path.write_bytes(payload)
    with pytest.raises(AudioError, match=r"broken\.wav"):
        load_audio(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """A path that does not exist raises AudioError naming it."""
    with pytest.raises(AudioError, match=r"nope\.wav"):
        load_audio(tmp_path / "nope.wav")


def test_espeak_speech_at_22050_hz_is_resampled_and_spikes(tmp_path: Path) -> None:
    """Real espeak-ng speech (22050 Hz) loads, is resampled and gives a raster with speech-driven spikes."""
    path = tmp_path / "seven.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "seven"], check=True, capture_output=True)
    audio, sr = load_audio(path)
    assert sr == 22050
    raster = encode(audio, sr)
    assert raster.shape[0] == -(-audio.size * 320 // 441) // 16  # resample_poly gives ceil(n * up / down)
    assert raster.sum() > 1000

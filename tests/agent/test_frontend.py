"""Tests for the front-end spec and the streaming audio-to-spike encoder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekws.agent import AudioError, Frontend, FrontendSpec, FrontendSpecError, encode


def _speechlike(seconds: float = 0.5, seed: int = 0, level: float = 0.1) -> np.ndarray:
    """A deterministic harmonic signal with a moving formant and an amplitude envelope."""
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(h * phase) / h for h in range(1, 20))
    x = x + 0.05 * rng.standard_normal(n)
    env = np.sin(np.pi * t / seconds) ** 2
    return np.asarray(level * x * env / np.max(np.abs(x)))


def test_default_spec_is_the_project_default() -> None:
    """The default spec is 16 kHz, 1 ms steps, 32 bands x 4 levels = 128 channels, 16 samples per step."""
    spec = FrontendSpec()
    assert (spec.sample_rate, spec.dt_ms, spec.num_bands, spec.num_channels) == (16000, 1.0, 32, 128)
    assert spec.samples_per_step == 16
    centres = spec.center_frequencies()
    assert centres[0] == pytest.approx(100.0)
    assert centres[-1] == pytest.approx(7000.0)
    assert np.all(np.diff(centres) > 0)


def test_spec_round_trips_through_json() -> None:
    """to_dict -> JSON -> from_dict rebuilds an equal spec, with type, version and channel count recorded."""
    spec = FrontendSpec(num_bands=16, thresholds_db=(-30.0, -15.0), max_rate_hz=100.0)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["type"] == "edgekws.frontend"
    assert d["format_version"] == 1
    assert d["num_channels"] == 32
    assert FrontendSpec.from_dict(d) == spec


def test_from_dict_rejects_unknown_keys_and_wrong_tags_all_at_once() -> None:
    """Unknown keys, a wrong type tag and a future version are all named in one error."""
    d = FrontendSpec().to_dict()
    d.update({"type": "other", "format_version": 99, "bands": 3})
    with pytest.raises(FrontendSpecError) as info:
        FrontendSpec.from_dict(d)
    message = str(info.value)
    assert "unknown key(s) ['bands']" in message
    assert "type must be 'edgekws.frontend'" in message
    assert "format_version must be 1, got 99" in message


def test_from_dict_rejects_an_inconsistent_channel_count() -> None:
    """A num_channels that does not match bands x thresholds is refused."""
    d = FrontendSpec().to_dict()
    d["num_channels"] = 700
    with pytest.raises(FrontendSpecError, match="num_channels says 700"):
        FrontendSpec.from_dict(d)


def test_invalid_fields_are_collected() -> None:
    """Every invalid field is reported in one error."""
    with pytest.raises(FrontendSpecError) as info:
        FrontendSpec(dt_ms=0.3, num_bands=0, f_max_hz=9000.0, max_rate_hz=5000.0)
    message = str(info.value)
    for field in ("dt_ms", "num_bands", "f_max_hz", "max_rate_hz"):
        assert field in message


def test_output_shape_dtype_and_steps() -> None:
    """A signal of n samples gives floor(n / 16) steps of 128 binary uint8 channels."""
    x = _speechlike(0.3)[:4807]
    raster = encode(x, 16000)
    assert raster.shape == (4807 // 16, 128)
    assert raster.dtype == np.uint8
    assert set(np.unique(raster).tolist()) <= {0, 1}


def test_encode_is_frontend_process_of_the_whole_signal() -> None:
    """encode() equals a fresh Frontend fed the whole signal, and is deterministic."""
    x = _speechlike(0.4, seed=3)
    assert np.array_equal(encode(x, 16000), Frontend().process(x))
    assert np.array_equal(encode(x, 16000), encode(x, 16000))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 2400),
    level=st.sampled_from([1e-4, 0.01, 0.3, 2.0]),
    cuts=st.lists(st.integers(0, 2400), max_size=12),
)
def test_chunked_streaming_is_bit_identical_to_whole(
    seed: int, n: int, level: float, cuts: list[int]
) -> None:
    """Feeding a random signal in random chunks yields exactly the spikes of feeding it whole."""
    rng = np.random.default_rng(seed)
    x = level * rng.standard_normal(n)
    x[: n // 2] += level * np.sin(np.arange(n // 2) * rng.uniform(0.01, 2.5))
    whole = Frontend().process(x)
    fe = Frontend()
    parts = [fe.process(piece) for piece in np.split(x, sorted(c for c in cuts if c <= n))]
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    assert np.array_equal(streamed, whole)
    assert fe.steps_done == n // 16


def test_chunked_int16_speech_is_bit_identical_over_a_long_stream() -> None:
    """Two seconds of int16 speech-like audio in 10 ms and odd-sized chunks match the whole-signal spikes."""
    x = np.concatenate([_speechlike(0.5, seed=s, level=0.5) for s in range(4)])
    pcm = np.round(x * 32767).astype(np.int16)
    whole = encode(pcm, 16000)
    for size in (160, 37, 1):
        fe = Frontend()
        streamed = np.concatenate([fe.process(pcm[i : i + size]) for i in range(0, pcm.size, size)])
        assert np.array_equal(streamed, whole), size


def test_reset_starts_a_new_signal() -> None:
    """After reset() the front-end gives the same spikes as a fresh one."""
    x = _speechlike(0.2, seed=5)
    fe = Frontend()
    first = fe.process(x)
    fe.process(x[:100])
    fe.reset()
    assert np.array_equal(fe.process(x), first)
    assert fe.steps_done == x.size // 16


def test_bad_chunk_leaves_the_state_untouched() -> None:
    """A chunk with NaN raises AudioError and the stream continues as if it had not been fed."""
    x = _speechlike(0.2, seed=6)
    fe = Frontend()
    a = fe.process(x[:1000])
    with pytest.raises(AudioError):
        fe.process(np.array([0.1, np.nan]))
    b = fe.process(x[1000:])
    assert np.array_equal(np.concatenate([a, b]), Frontend().process(x))


def test_digital_silence_and_very_quiet_input_give_almost_no_spikes() -> None:
    """Zeros give no spikes, int16 LSB noise none, and -60 dBFS noise far fewer than speech."""
    spec = FrontendSpec()
    rng = np.random.default_rng(7)
    assert encode(np.zeros(16000), 16000).sum() == 0
    lsb = rng.integers(-1, 2, 16000).astype(np.int16)
    assert encode(lsb, 16000).sum() == 0
    quiet = encode(1e-3 * rng.standard_normal(16000), 16000).sum()
    speech = encode(_speechlike(1.0, level=0.3), 16000).sum()
    assert quiet < 0.02 * speech
    assert speech > 0.02 * spec.num_channels * 1000  # speech drives a few percent of channel-steps


def test_spike_counts_are_loudness_robust() -> None:
    """The same signal 6 dB softer keeps 90 %+ of its spikes (AGC); 40 dB softer it mostly falls silent."""
    x = _speechlike(1.0, level=0.5)
    loud = int(encode(x, 16000).sum())
    assert int(encode(x * 0.5, 16000).sum()) > 0.9 * loud
    assert int(encode(x * 0.01, 16000).sum()) < 0.1 * loud


def test_a_tone_drives_the_band_that_contains_it() -> None:
    """Pure tones excite the band whose centre is nearest, low to high frequencies."""
    spec = FrontendSpec()
    t = np.arange(8000) / 16000
    for f in (200.0, 1000.0, 4000.0):
        raster = encode(0.3 * np.sin(2 * np.pi * f * t), 16000)
        per_band = raster.reshape(-1, spec.num_bands, len(spec.thresholds_db)).sum(axis=(0, 2))
        expected = int(np.argmin(np.abs(spec.center_frequencies() - f)))
        assert abs(int(np.argmax(per_band)) - expected) <= 1, f


def test_louder_bands_recruit_more_threshold_units() -> None:
    """Within a band, the lowest-threshold unit fires most and the highest least."""
    spec = FrontendSpec()
    raster = encode(_speechlike(1.0, level=0.3), 16000)
    per_level = raster.reshape(-1, spec.num_bands, len(spec.thresholds_db)).sum(axis=(0, 1))
    assert np.all(np.diff(per_level.astype(np.int64)) < 0)


def test_rate_never_exceeds_the_maximum() -> None:
    """No unit fires more often than max_rate_hz, even for a full-scale input."""
    spec = FrontendSpec()
    t = np.arange(16000) / 16000
    raster = encode(np.sign(np.sin(2 * np.pi * 440 * t)), 16000)
    assert raster.sum(axis=0).max() <= spec.max_rate_hz + 1


def test_other_specs_change_the_channel_count_and_step() -> None:
    """A spec with 16 bands x 2 levels at 2 ms steps gives 32 channels and n // 32 steps."""
    spec = FrontendSpec(num_bands=16, thresholds_db=(-30.0, -15.0), dt_ms=2.0)
    raster = encode(_speechlike(0.3), 16000, spec)
    assert raster.shape == (4800 // 32, 32)


def test_filter_kernel_matches_public_sosfilt() -> None:
    """The in-place filter path gives bit-identical output and state to scipy.signal.sosfilt."""
    from edgekws.agent._frontend import _design, _sosfilt_inplace, _sosfilt_public

    sos = _design(FrontendSpec()).band_sos[3]
    rng = np.random.default_rng(8)
    a = rng.standard_normal((1, 500))
    b = a.copy()
    zi_a = rng.standard_normal((1, sos.shape[0], 2))
    zi_b = zi_a.copy()
    _sosfilt_inplace(sos, a, zi_a)
    _sosfilt_public(sos, b, zi_b)
    assert np.array_equal(a, b)
    assert np.array_equal(zi_a, zi_b)


def test_saturated_units_do_not_fire_in_lockstep() -> None:
    """Units driven identically start at spread phases, so no step carries a spike on every active channel."""
    raster = encode(np.sign(np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000)), 16000)
    active = raster.sum(axis=0) > 0
    assert active.sum() >= 8
    assert raster[:, active].sum(axis=1).max() < 0.6 * active.sum()


def test_frontend_counts_clipped_samples_without_warnings() -> None:
    """The streaming front-end reports the fraction of full-scale samples it was fed, as an attribute."""
    fe = Frontend()
    fe.process(np.array([0, 32767, -32768, 5], dtype=np.int16))
    fe.process(np.array([0.5, 1.2, 0.0, 0.0]))
    assert fe.clipped_samples == 3
    assert fe.clipped_fraction == 3 / 8


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    import soundfile as sf

    x = _speechlike(seconds, level=0.3)
    if rate != 16000:
        from scipy.signal import resample_poly

        x = resample_poly(x, rate, 16000)
    sf.write(path, (x * 32767).astype(np.int16), rate, subtype="PCM_16")
    return path


def test_cli_encode_prints_json_and_writes_npz(tmp_path: Path) -> None:
    """`edgekws-agent encode --json --out` reports steps, spikes and rate per file and saves the rasters."""
    from click.testing import CliRunner

    from edgekws.agent._cli import main

    a = _wav(tmp_path / "a.wav", 0.5)
    b = _wav(tmp_path / "b.wav", 0.25, rate=22050)
    out = tmp_path / "spikes.npz"
    result = CliRunner().invoke(main, ["encode", str(a), str(b), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["spec"]["num_channels"] == 128
    first, second = doc["files"]
    assert first["steps"] == 500 and not first["resampled"]
    assert second["resampled"] and second["sample_rate"] == 22050
    with np.load(out) as npz:
        assert npz["spikes_0"].shape == (500, 128)
        assert int(npz["spikes_0"].sum()) == first["spikes"]
        assert first["mean_rate_hz"] == pytest.approx(first["spikes"] / (128 * 0.5), abs=1e-3)
        assert FrontendSpec.from_dict(json.loads(str(npz["spec_json"]))) == FrontendSpec()
    # a folder (ending in /, created) gets AUDIO-NAME.npz for one file; a name without .npz is kept as given
    result = CliRunner().invoke(main, ["encode", str(a), "--out", f"{tmp_path}/spikes/"])
    assert result.exit_code == 0 and f"wrote {tmp_path}/spikes/a.npz" in result.output, result.output
    result = CliRunner().invoke(main, ["encode", str(a), str(b), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 0 and (tmp_path / "raw").is_file() and not (tmp_path / "raw.npz").exists()


def test_cli_encode_refuses_other_rates_without_resample_and_names_bad_files(tmp_path: Path) -> None:
    """--no-resample fails a 22.05 kHz file with the fix in the message; a corrupt file is named; exit 1."""
    from click.testing import CliRunner

    from edgekws.agent._cli import main

    b = _wav(tmp_path / "b.wav", 0.1, rate=22050)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 20)
    result = CliRunner().invoke(main, ["encode", str(b), str(bad), "--no-resample"])
    assert result.exit_code == 1
    assert "sample rate must be 16000 Hz, got 22050 Hz" in result.output
    assert "bad.wav" in result.output
    assert "2 of 2 file(s) failed" in result.output


def test_from_dict_names_wrongly_typed_fields() -> None:
    """Strings, booleans and non-lists where numbers belong are reported per field, not as a TypeError."""
    d = FrontendSpec().to_dict()
    d.update({"num_bands": "32", "dt_ms": True, "thresholds_db": -10})
    with pytest.raises(FrontendSpecError) as info:
        FrontendSpec.from_dict(d)
    message = str(info.value)
    assert "num_bands must be an integer, got str '32'" in message
    assert "dt_ms must be a number" in message
    assert "thresholds_db must be a list of numbers" in message


def test_few_wide_bands_make_a_working_filterbank() -> None:
    """Specs with as few as one to four bands build their filters and encode speech-like noise."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    for bands in (1, 2, 4):
        spec = FrontendSpec(num_bands=bands)
        raster = encode(audio, 16000, spec)
        assert raster.shape == (1000, spec.num_channels) and raster.sum() > 0


TAPS = (0.0, 25.0, 50.0, 100.0)


def test_delay_taps_are_the_plain_spikes_delayed_band_major() -> None:
    """With taps, channel u * K + k carries unit u's spikes tap_steps[k] later (silent before), and the
    plain spec's dict has no taps key (earlier bundles and spike sets keep their front-end unchanged)."""
    x = _speechlike(0.6, seed=5, level=0.3)
    plain = encode(x, 16000)
    spec = FrontendSpec(delay_taps_ms=TAPS)
    tapped = encode(x, 16000, spec)
    assert spec.num_units == 128 and spec.num_channels == 512 and spec.tap_steps == (0, 25, 50, 100)
    assert tapped.shape == (plain.shape[0], 512)
    lanes = tapped.reshape(len(tapped), 128, 4)
    for k, d in enumerate(spec.tap_steps):
        assert np.array_equal(lanes[d:, :, k], plain[: len(plain) - d])
        assert not lanes[:d, :, k].any()
    assert plain.sum() > 100  # the check above compared real spikes
    assert "delay_taps_ms" not in FrontendSpec().to_dict()
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["delay_taps_ms"] == list(TAPS) and d["num_channels"] == 512
    assert FrontendSpec.from_dict(d) == spec


def test_delay_taps_stream_bit_identically_in_any_chunks_and_reset() -> None:
    """Chunks shorter than the longest tap, single samples and a reset give the whole signal's spikes."""
    x = np.concatenate([_speechlike(0.4, seed=s, level=0.4) for s in range(3)])
    spec = FrontendSpec(delay_taps_ms=TAPS)
    whole = encode(x, 16000, spec)
    for size in (16 * 7 + 3, 1, 16 * 250):
        fe = Frontend(spec)
        streamed = np.concatenate([fe.process(x[i : i + size]) for i in range(0, x.size, size)])
        assert np.array_equal(streamed, whole), size
    fe.reset()
    assert np.array_equal(fe.process(x), whole)


def test_invalid_delay_taps_are_named() -> None:
    """Empty, negative, unordered, fractional-step and over-long taps each get a message saying what fits."""
    for taps, words in (
        ((), "ascending delays in 0..1000 ms"),
        ((0.0, -5.0), "ascending delays"),
        ((50.0, 25.0), "ascending delays"),
        ((0.0, 0.5), "whole steps of dt_ms (1 ms), got [0.5]"),
        ((0.0, 2000.0), "0..1000 ms"),
        ((0.0, 1e-10), "a step (1 ms) apart at least"),
    ):
        with pytest.raises(FrontendSpecError, match=re.escape(words)):
            FrontendSpec(delay_taps_ms=taps)
    assert FrontendSpec(delay_taps_ms=(0.0, 25.0 + 1e-12)).delay_taps_ms == (0.0, 25.0)  # snapped to steps
    assert "delay_taps_ms" not in FrontendSpec(delay_taps_ms=(1e-12,)).to_dict()  # the plain front-end
    d = FrontendSpec(delay_taps_ms=TAPS).to_dict()
    d["num_channels"] = 128
    with pytest.raises(FrontendSpecError, match=r"len\(delay_taps_ms\) gives 512"):
        FrontendSpec.from_dict(d)


NOISE_FLOOR = FrontendSpec(noise_floor_rise_db_per_s=10.0)


def test_noise_floor_silences_steady_noise_and_keeps_the_speech_above_it() -> None:
    """With the per-band noise floor, steady white noise stops driving the units after the floor's warm-up,
    while speech-like sound 25 dB above that noise keeps most of the spikes it has in the same noise
    without the floor's gate; without the option the front-end is as it was (no noise keys in its dict)."""
    rng = np.random.default_rng(11)
    noise = 0.01 * rng.standard_normal(3 * 16000)
    plain, floored = encode(noise, 16000)[1000:], encode(noise, 16000, NOISE_FLOOR)[1000:]
    assert plain.sum() > 5000  # 2 s of the noise drive the plain front-end (about 10,000 spikes a second)
    assert floored.sum() < 0.1 * plain.sum()
    speech = np.concatenate([np.zeros(16000), _speechlike(1.0, seed=3, level=0.5), np.zeros(8000)])
    noisy = speech + 0.01 * rng.standard_normal(speech.size)
    word = slice(1100, 1900)  # the word's middle, steps
    clean_word = encode(speech, 16000)[word].sum()
    in_noise = encode(noisy, 16000, NOISE_FLOOR)[word]
    assert in_noise.sum() > 0.6 * clean_word
    assert "noise_floor_rise_db_per_s" not in FrontendSpec().to_dict()
    assert not FrontendSpec().noise_floor and NOISE_FLOOR.noise_floor
    d = json.loads(json.dumps(NOISE_FLOOR.to_dict()))
    assert d["noise_floor_rise_db_per_s"] == 10.0 and d["noise_floor_margin_db"] == 6.0
    assert FrontendSpec.from_dict(d) == NOISE_FLOOR


def test_noise_floor_streams_bit_identically_in_any_chunks_and_reset() -> None:
    """The floor is state carried across chunks like the AGC's peak: 1-sample, odd and long chunks and a
    reset all give the whole signal's spikes, with delay taps too."""
    rng = np.random.default_rng(12)
    x = np.concatenate([_speechlike(0.4, seed=s, level=0.4) for s in range(3)])
    x = x + 0.01 * rng.standard_normal(x.size)
    for spec in (NOISE_FLOOR, FrontendSpec(noise_floor_rise_db_per_s=3.0, delay_taps_ms=TAPS)):
        whole = encode(x, 16000, spec)
        for size in (1, 16 * 7 + 3, 16 * 250):
            fe = Frontend(spec)
            streamed = np.concatenate([fe.process(x[i : i + size]) for i in range(0, x.size, size)])
            assert np.array_equal(streamed, whole), (spec, size)
        fe.reset()
        assert np.array_equal(fe.process(x), whole)


def test_invalid_noise_floor_fields_are_named() -> None:
    """A negative rise, a non-finite margin and a zero smoothing are each named, all at once."""
    with pytest.raises(FrontendSpecError) as info:
        FrontendSpec(
            noise_floor_rise_db_per_s=-1.0, noise_floor_margin_db=math.nan, noise_floor_smoothing_ms=0.0
        )
    message = str(info.value)
    assert "noise_floor_rise_db_per_s must be >= 0 (0: no noise floor), got -1.0" in message
    assert "noise_floor_margin_db must be finite, got nan" in message
    assert "noise_floor_smoothing_ms must be positive, got 0.0" in message

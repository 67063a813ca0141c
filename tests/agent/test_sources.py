"""Tests for the audio sources and the streaming resampler."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from edgekws.agent._config import StdinSourceConfig, WavSourceConfig
from edgekws.agent._sources import (
    MicrophoneSource,
    SourceError,
    StdinSource,
    StreamResampler,
    WavSource,
    make_source,
)


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(48000, 16000), (44100, 16000), (8000, 16000), (16000, 16000)]
)
def test_stream_resampler_equals_whole_signal_resampling(rate_in: int, rate_out: int) -> None:
    """Resampling in random chunks then flushing gives resample_poly of the whole signal."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=7001)
    rs = StreamResampler(rate_in, rate_out)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 900))
        parts.append(rs.process(x[i : i + n]))
        i += n
    parts.append(rs.flush())
    y = np.concatenate(parts)
    ref = resample_poly(x, rs.up, rs.down) if rate_in != rate_out else x
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-12)


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_folder_is_one_continuous_stream(tmp_path: Path) -> None:
    """A folder plays in name order, resampled to the target rate, with contiguous timestamps."""
    sf.write(tmp_path / "b.wav", _tone(0.25, 16000, 300), 16000)
    sf.write(tmp_path / "a.wav", _tone(0.1, 8000, 500), 8000, subtype="PCM_16")
    (tmp_path / "notes.txt").write_text("not audio")
    src = WavSource(tmp_path, 16000, chunk_ms=20, realtime=False)
    src.open()
    chunks = list(src.chunks(threading.Event()))
    assert Path(chunks[0].origin).name == "a.wav" and Path(chunks[-1].origin).name == "b.wav"
    total = sum(c.samples.size for c in chunks)
    assert total == 1600 + 4000
    starts = np.array([c.start_s for c in chunks])
    ends = np.array([c.end_s for c in chunks])
    np.testing.assert_allclose(starts[1:], ends[:-1])
    assert all(c.samples.dtype == np.float32 and c.sample_rate == 16000 for c in chunks)


def test_wav_realtime_paces_and_stops(tmp_path: Path) -> None:
    """Real-time replay takes about the audio's duration, and setting stop ends it early."""
    sf.write(tmp_path / "x.wav", _tone(0.3, 16000), 16000)
    src = WavSource(tmp_path / "x.wav", 16000, chunk_ms=50, realtime=True)
    src.open()
    t0 = time.monotonic()
    n = sum(1 for _ in src.chunks(threading.Event()))
    assert n == 6 and time.monotonic() - t0 >= 0.28
    stop = threading.Event()
    looping = WavSource(tmp_path / "x.wav", 16000, chunk_ms=50, realtime=True, loop=True)
    looping.open()
    got = 0
    for _ in looping.chunks(stop):
        got += 1
        if got == 9:  # past the end of the file: looping continues
            stop.set()
    assert got == 9


def test_wav_source_errors_are_clear(tmp_path: Path) -> None:
    """A missing path or a folder without audio is a SourceError naming the path."""
    with pytest.raises(SourceError, match="no such file"):
        WavSource(tmp_path / "missing", 16000).open()
    with pytest.raises(SourceError, match="no audio files"):
        WavSource(tmp_path, 16000).open()


@pytest.mark.parametrize("fmt", ["s16le", "f32le"])
def test_stdin_pcm_is_read_and_resampled(fmt: str) -> None:
    """Raw PCM on a pipe arrives resampled to the target rate, equal to whole-signal resampling."""
    x = _tone(0.2, 8000, 700)
    raw = (np.round(x * 32767).astype("<i2") if fmt == "s16le" else x.astype("<f4")).tobytes()
    r, w = os.pipe()
    os.write(w, raw)
    os.close(w)
    with os.fdopen(r, "rb") as stream:
        src = make_source(StdinSourceConfig(type="stdin", sample_rate=8000, format=fmt, chunk_ms=30), 16000)
        assert isinstance(src, StdinSource)
        src.stream = stream
        chunks = list(src.chunks(threading.Event()))
    y = np.concatenate([c.samples for c in chunks])
    decoded = np.round(x * 32767) / 32768 if fmt == "s16le" else x.astype(np.float64)
    np.testing.assert_allclose(y, resample_poly(decoded, 2, 1), atol=1e-6)
    assert chunks[0].start_s == 0.0 and chunks[-1].end_s == pytest.approx(0.2)


def test_make_source_builds_a_wav_source(tmp_path: Path) -> None:
    """The wav config section makes a WavSource with its options."""
    src = make_source(WavSourceConfig(type="wav", path=tmp_path, realtime=False, chunk_ms=10), 16000)
    assert isinstance(src, WavSource) and src.chunk_samples == 160 and not src.realtime


def test_microphone_without_portaudio_says_what_to_install() -> None:
    """Opening the microphone either works or fails with a SourceError naming what to install."""
    src = MicrophoneSource(16000)
    if importlib.util.find_spec("sounddevice") is None:
        with pytest.raises(SourceError, match="pip install sounddevice"):
            src.open()
    else:  # sounddevice present: no device on a CI box is still a clear SourceError
        try:
            src.open()
        except SourceError as exc:
            assert "sounddevice" in str(exc) or "microphone" in str(exc)
        finally:
            src.close()

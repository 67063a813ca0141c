"""Audio in: loading, validation, mono down-mix, integer scaling, clipping and resampling.

Every path into the front-end goes through :func:`as_float_mono`, so a WAV file, an int16 microphone
buffer and a float array from a data set are turned into the same float64 mono signal in [-1, 1]:

- integer samples are scaled by ``1 / 2**(bits-1)`` (int16 by 1/32768, int32 by 1/2**31); unsigned
  8-bit samples (WAV's 8-bit format) are centred first (``(x - 128) / 128``);
- float samples outside [-1, 1] are clipped to it (and counted, see :func:`clipped_fraction`);
- 2-D arrays are ``(frames, channels)`` as soundfile returns them, and are down-mixed to mono by
  averaging the channels;
- NaN or infinite samples, complex, boolean, object or string arrays raise :class:`AudioError`;
- an empty signal is valid and yields zero samples.
"""

from __future__ import annotations

import math
import os
import struct
from fractions import Fraction
from typing import Any

import numpy as np

MAX_CHANNELS = 8  # more than this in a 2-D array almost always means a (channels, frames) array


class AudioError(ValueError):
    """Audio that the front-end cannot take; the message says what was wrong and how to fix it."""


def as_float_mono(audio: Any) -> np.ndarray:
    """``audio`` as a float64 mono signal in [-1, 1] (a new array or ``audio`` itself when already so).

    Raises :class:`AudioError` for complex/boolean/object data, more than two dimensions, more than
    ``MAX_CHANNELS`` channels (a transposed array) and NaN or infinite samples.
    """
    x = np.asarray(audio)
    problems = _shape_and_dtype_problems(x)
    if problems:
        raise AudioError("; ".join(problems))
    # Down-mix to mono: the plain average of the channels (in float64, so int16 sums cannot wrap).
    x = _scale(x) if x.ndim == 1 else _scale(x[:, 0]) if x.shape[1] == 1 else _scale(x).mean(axis=1)
    if x.size and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        raise AudioError(
            f"audio holds {bad.size} NaN or infinite sample(s), the first at index {int(bad[0])}; "
            "repair or drop the recording (the front-end cannot encode undefined samples)"
        )
    if x.size and (x.max() > 1.0 or x.min() < -1.0):
        x = np.clip(x, -1.0, 1.0)
    return x


def clipped_count(audio: Any) -> int:
    """How many samples of ``audio`` sit at or beyond full scale (counted per sample, before down-mix).

    Integer samples count when they equal the type's minimum or maximum; float samples when
    ``|x| >= 1``. A mono signal at full scale for 1 % of its samples returns 1 % of its length.
    """
    x = np.asarray(audio)
    problems = _shape_and_dtype_problems(x)
    if problems:
        raise AudioError("; ".join(problems))
    if x.ndim == 2:
        # A frame counts as clipped when any of its channels is.
        return int(_clipped_mask(x).any(axis=1).sum())
    return int(_clipped_mask(x).sum())


def clipped_fraction(audio: Any) -> float:
    """The fraction of frames of ``audio`` at or beyond full scale (0.0 for an empty signal)."""
    x = np.asarray(audio)
    n = x.shape[0] if x.ndim >= 1 else 0
    return clipped_count(x) / n if n else 0.0


#: Below this level (dBFS, RMS above 100 Hz) a recording holds no speech: empty, digital silence, a DC
#: offset, channels that cancel out. A quiet room is around -60 to -50 dBFS, speech -35 to -10 dBFS.
NO_SPEECH_DBFS = -65.0


def speech_band_level_db(audio: Any, sample_rate: int) -> float:
    """RMS level in dBFS of ``audio`` (float mono) above 100 Hz, where speech is (-inf for silence)."""
    from scipy.signal import butter, sosfilt

    x = np.asarray(audio, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    x = sosfilt(butter(2, 100.0, btype="highpass", fs=sample_rate, output="sos"), x - x.mean())
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def no_speech_reason(audio: Any, sample_rate: int) -> str | None:
    """Why ``audio`` cannot hold speech (empty, silent or DC-only), or None when it might."""
    x = np.asarray(audio)
    if x.size == 0:
        return "empty recording"
    if sample_rate < 1000:
        return f"sampled at {sample_rate} Hz, too slowly to hold speech"
    level = speech_band_level_db(x, sample_rate)
    if level < NO_SPEECH_DBFS:
        shown = "-inf" if level == -math.inf else f"{level:.0f}"
        return f"silent: {shown} dBFS above 100 Hz (below {NO_SPEECH_DBFS:g} dBFS)"
    return None


def resample(audio: np.ndarray, sample_rate: float, target_rate: int) -> np.ndarray:
    """Resample a float mono signal from ``sample_rate`` to ``target_rate`` with a polyphase filter.

    Uses ``scipy.signal.resample_poly`` with the exact rational ratio (22050 -> 16000 is 320/441).
    """
    from scipy.signal import resample_poly

    sr = _check_rate(sample_rate)
    if sr == target_rate or audio.size == 0:
        return audio
    ratio = Fraction(target_rate, sr)
    return np.asarray(resample_poly(audio, ratio.numerator, ratio.denominator), dtype=np.float64)


def prepare(audio: Any, sample_rate: float, target_rate: int, *, resample_ok: bool) -> Any:
    """Validate ``sample_rate`` and bring ``audio`` to ``target_rate``.

    Returns ``audio`` untouched when the rates already match (so int16 input reaches the front-end as
    int16), else the resampled float mono signal. Raises :class:`AudioError` for a mismatched rate when
    ``resample_ok`` is false.
    """
    sr = _check_rate(sample_rate)
    if sr == target_rate:
        return audio
    if not resample_ok:
        raise AudioError(
            f"sample rate must be {target_rate} Hz, got {sr} Hz; pass resample=True / --resample or re-record"
        )
    return resample(as_float_mono(audio), sr, target_rate)


def load_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono in [-1, 1] and its sample rate.

    Any format libsndfile reads (WAV, FLAC, OGG, ...). Multi-channel files are down-mixed by averaging.
    Raises :class:`AudioError` naming the file when it is missing, unreadable, truncated or corrupt.
    """
    import soundfile as sf

    name = os.fspath(path)
    _check_wav_sizes(name)
    try:
        data, sr = sf.read(name, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{name}: cannot read audio ({exc}); check the path or re-export the file") from exc
    try:
        mono = as_float_mono(data)
    except AudioError as exc:
        raise AudioError(f"{name}: {exc}") from exc
    return mono.astype(np.float32), int(sr)


def _shape_and_dtype_problems(x: np.ndarray) -> list[str]:
    problems = []
    kind = x.dtype.kind
    if kind not in "iuf":
        problems.append(
            f"audio must hold integer or real float samples, got dtype {x.dtype}; "
            "pass PCM samples (int16, int32, uint8, float32 or float64)"
        )
    if x.ndim > 2 or x.ndim == 0:
        problems.append(f"audio must be 1-D (frames,) or 2-D (frames, channels), got shape {x.shape}")
    elif x.ndim == 2 and x.shape[1] > MAX_CHANNELS:
        problems.append(
            f"audio must be (frames, channels) with at most {MAX_CHANNELS} channels, got shape {x.shape}; "
            "transpose a (channels, frames) array with audio.T"
        )
    return problems


def _scale(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        return x.astype(np.float64, copy=False)
    if x.dtype == np.uint8:
        return (x.astype(np.float64) - 128.0) / 128.0
    if x.dtype.kind == "u":
        half = float(2 ** (8 * x.dtype.itemsize - 1))
        return (x.astype(np.float64) - half) / half
    return x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))


def _clipped_mask(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return np.abs(x) >= 1.0
    info = np.iinfo(x.dtype)
    return (x == info.min) | (x == info.max)


def _check_rate(sample_rate: float) -> int:
    try:
        sr = float(sample_rate)
    except (TypeError, ValueError) as exc:
        raise AudioError(f"sample rate must be a positive number of Hz, got {sample_rate!r}") from exc
    if not math.isfinite(sr) or sr <= 0 or sr != int(sr):
        raise AudioError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sr)


def _check_wav_sizes(name: str) -> None:
    """Catch WAV files cut short: libsndfile silently returns the frames that are there."""
    try:
        with open(name, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return  # not a RIFF WAV (or too short to be one): libsndfile decides
            size = os.fstat(f.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    have = size - pos - 8
                    # 0 and 0xFFFFFFFF mark an unknown length (WAVs written to a pipe).
                    if chunk_len not in (0, 0xFFFFFFFF) and chunk_len > have:
                        raise AudioError(
                            f"{name}: truncated WAV: the header declares {chunk_len} bytes of audio but the "
                            f"file holds {have}; re-export or re-record the file"
                        )
                    return
                pos += 8 + chunk_len + (chunk_len & 1)
    except OSError as exc:
        raise AudioError(f"{name}: cannot read audio ({exc}); check the path") from exc

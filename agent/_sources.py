"""Audio sources: float32 mono chunks at the front-end's rate, each with its stream timestamp.

Three sources behind one interface (:class:`AudioSource`: ``open()``, ``chunks(stop)``, ``close()``):

- :class:`WavSource` replays a file or every audio file of a folder (name order), in real time or as
  fast as possible; files are resampled whole (``resample_poly``) before being cut into chunks;
- :class:`StdinSource` reads raw mono PCM (``s16le`` or ``f32le``) from a file descriptor;
- :class:`MicrophoneSource` captures through PortAudio (``sounddevice``, imported only when used).

Live sources at another rate go through :class:`StreamResampler`, a stateful polyphase resampler whose
output, chunk after chunk, equals ``scipy.signal.resample_poly`` of the whole signal (same filter), so
chunks join seamlessly. Timestamps are stream time: sample ``n`` of the output is at ``n / rate``
seconds; ``available_at`` is the ``time.monotonic()`` at which the chunk's last sample was in hand.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
from scipy import signal

from edgekws.agent._audio import AudioError, load_audio, resample
from edgekws.agent._config import MicrophoneSourceConfig, SourceConfig, StdinSourceConfig, WavSourceConfig

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class SourceError(RuntimeError):
    """An audio source cannot be opened or read; the message says why and how to fix it."""


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the audio stream at ``sample_rate``."""

    samples: np.ndarray  # (n,) float32 mono in [-1, 1]
    sample_rate: int
    start_s: float  # stream time of the first sample (seconds since the source started)
    available_at: float  # time.monotonic() when the last sample of the chunk was available
    origin: str = ""  # file name, "stdin" or "microphone"
    origin_offset_s: float = 0.0  # time of the first sample within ``origin``

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class StreamResampler:
    """Stateful polyphase resampling: the concatenated outputs of ``process`` + ``flush`` equal
    ``scipy.signal.resample_poly(whole, up, down)`` (to float rounding), whatever the chunking.

    Output sample ``n`` needs input up to about ``10 * max(up, down) / up`` samples after it (the
    filter's half length), so that much audio waits in the resampler (0.6 ms for 48 kHz -> 16 kHz).
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.rate_in, self.rate_out = rate_in, rate_out
        self._buf = np.zeros(0)
        self._buf_start = 0  # input index of _buf[0]; always a multiple of `down`
        self._n_in = 0
        self._n_out = 0
        if self.passthrough:
            return
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate  # scipy's resample_poly filter design, reproduced exactly
        h = signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down
        self._h = np.concatenate([np.zeros(pre_pad), h])
        self._skip = (half_len + pre_pad) // self.down  # output n is z[(n + skip) * down]

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resampled output for every sample whose inputs have all arrived (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if self.passthrough:
            return x
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.size
        return self._emit(-(-self.up * self._n_in // self.down) - self._skip)

    def flush(self) -> np.ndarray:
        """The remaining output at the end of the stream (input padded with zeros, as resample_poly does)."""
        if self.passthrough:
            return np.zeros(0)
        total = -(-self.up * self._n_in // self.down)
        n_in = self._n_in
        self._buf = np.concatenate([self._buf, np.zeros(self._h.size // self.up + 2 * self.down + 2)])
        out = self._emit(total)
        self._n_in = n_in
        return out

    def _emit(self, n_end: int) -> np.ndarray:
        n0 = self._n_out
        if n_end <= n0:
            return np.zeros(0)
        z = signal.upfirdn(self._h, self._buf, self.up, self.down)
        k0 = n0 + self._skip - self.up * self._buf_start // self.down
        out = z[k0 : k0 + (n_end - n0)]
        self._n_out = n_end
        # Keep the inputs that the next output's filter support reaches back to.
        first_needed = ((n_end + self._skip) * self.down - self._h.size + 1) // self.up
        new_start = max(self._buf_start, (max(first_needed, 0) // self.down) * self.down)
        self._buf = self._buf[new_start - self._buf_start :]
        self._buf_start = new_start
        return np.asarray(out, dtype=np.float64)


class AudioSource:
    """Base of every source: ``open()``, then iterate ``chunks(stop)``, then ``close()``."""

    description = "audio source"

    def __init__(self, target_rate: int, chunk_ms: float) -> None:
        self.target_rate = target_rate
        self.chunk_samples = max(1, round(target_rate * chunk_ms / 1000.0))

    def open(self) -> None:
        """Acquire the device or file (may raise :class:`SourceError`)."""

    def close(self) -> None:
        """Release what ``open`` acquired (safe to call twice)."""

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:  # pragma: no cover - abstract
        """Chunks until the stream ends or ``stop`` is set."""
        raise NotImplementedError


class WavSource(AudioSource):
    """Replay one audio file or a folder of them (sorted by name), one continuous stream."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        target_rate: int,
        *,
        chunk_ms: float = 20.0,
        realtime: bool = True,
        loop: bool = False,
    ) -> None:
        super().__init__(target_rate, chunk_ms)
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self.files: list[Path] = []
        self.description = f"wav:{self.path}"

    def open(self) -> None:
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not self.files:
                raise SourceError(
                    f"{self.path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in the folder; "
                    "point source.path at a file or a folder of recordings"
                )
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise SourceError(f"{self.path}: no such file or folder; fix source.path in the config")

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        t0 = time.monotonic()
        offset = 0  # output samples emitted so far (stream position)
        while not stop.is_set():
            for path in self.files:
                try:
                    audio, sr = load_audio(path)
                    audio = resample(audio.astype(np.float64), sr, self.target_rate).astype(np.float32)
                except AudioError as exc:
                    raise SourceError(str(exc)) from exc
                for i in range(0, audio.size, self.chunk_samples):
                    piece = audio[i : i + self.chunk_samples]
                    start = offset + i
                    if self.realtime:
                        due = t0 + (start + piece.size) / self.target_rate
                        if stop.wait(max(0.0, due - time.monotonic())):
                            return
                    elif stop.is_set():
                        return
                    yield AudioChunk(
                        piece,
                        self.target_rate,
                        start / self.target_rate,
                        time.monotonic(),
                        str(path),
                        i / self.target_rate,
                    )
                offset += audio.size
            if not self.loop:
                return


class StdinSource(AudioSource):
    """Raw mono PCM from a file descriptor (standard input by default), resampled to the target rate."""

    FORMATS: ClassVar[dict[str, np.dtype[Any]]] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}

    def __init__(
        self,
        target_rate: int,
        *,
        sample_rate: int = 16000,
        fmt: str = "s16le",
        chunk_ms: float = 20.0,
        stream: BinaryIO | None = None,
    ) -> None:
        super().__init__(target_rate, chunk_ms)
        if fmt not in self.FORMATS:
            raise SourceError(f"stdin format must be one of {sorted(self.FORMATS)}, got {fmt!r}")
        self.dtype = self.FORMATS[fmt]
        self.sample_rate = sample_rate
        self.stream = stream
        self.description = f"stdin:{fmt}@{sample_rate}"

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        fd = stream.fileno()
        rs = StreamResampler(self.sample_rate, self.target_rate)
        in_chunk = max(1, round(self.chunk_samples * self.sample_rate / self.target_rate))
        want = in_chunk * self.dtype.itemsize
        pending = b""
        emitted = 0
        eof = False
        while not stop.is_set() and not eof:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, want - len(pending))
            eof = not data
            pending += data
            if len(pending) < want and not eof:
                continue
            usable = len(pending) - len(pending) % self.dtype.itemsize
            raw = np.frombuffer(pending[:usable], dtype=self.dtype)
            pending = pending[usable:]
            x = raw.astype(np.float64) / 32768.0 if self.dtype.kind == "i" else raw.astype(np.float64)
            y = rs.process(np.clip(x, -1.0, 1.0))
            if eof:
                y = np.concatenate([y, rs.flush()])
            if y.size:
                yield AudioChunk(
                    y.astype(np.float32),
                    self.target_rate,
                    emitted / self.target_rate,
                    time.monotonic(),
                    "stdin",
                    emitted / self.target_rate,
                )
                emitted += y.size


_PORTAUDIO_FIX = (
    "install the microphone support: `pip install sounddevice` and the PortAudio library "
    "(`apt install libportaudio2` on Debian/Ubuntu/Jetson), or use a wav or stdin source"
)


def import_sounddevice() -> Any:
    """The ``sounddevice`` module, or :class:`SourceError` saying what to install."""
    try:
        import sounddevice
    except ImportError as exc:
        raise SourceError(
            f"microphone source needs the sounddevice package ({exc}); {_PORTAUDIO_FIX}"
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise SourceError(f"microphone source needs the PortAudio library ({exc}); {_PORTAUDIO_FIX}") from exc
    return sounddevice


class MicrophoneSource(AudioSource):
    """Capture from a PortAudio input device, resampled to the target rate."""

    def __init__(
        self,
        target_rate: int,
        *,
        sample_rate: int = 16000,
        device: str | int | None = None,
        chunk_ms: float = 20.0,
    ) -> None:
        super().__init__(target_rate, chunk_ms)
        self.sample_rate = sample_rate
        self.device = device
        self.description = f"microphone:{device if device is not None else 'default'}@{sample_rate}"
        self._queue: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(maxsize=500)
        self._stream: Any = None
        self.overflows = 0

    def open(self) -> None:
        sd = import_sounddevice()
        blocksize = max(1, round(self.chunk_samples * self.sample_rate / self.target_rate))

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status:
                self.overflows += 1
            try:
                self._queue.put_nowait((indata[:, 0].copy(), time.monotonic()))
            except queue.Full:
                self.overflows += 1

        try:
            self._stream = sd.InputStream(
                samplerate=self.sample_rate,
                blocksize=blocksize,
                device=self.device,
                channels=1,
                dtype="float32",
                callback=callback,
            )
            self._stream.start()
        except Exception as exc:  # PortAudioError and ValueError for a bad device
            raise SourceError(
                f"cannot open microphone {self.device!r} at {self.sample_rate} Hz ({exc}); list devices with "
                "`python -m sounddevice` and set source.device / source.sample_rate"
            ) from exc

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.stop()
            stream.close()

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        rs = StreamResampler(self.sample_rate, self.target_rate)
        emitted = 0
        while not stop.is_set():
            try:
                block, at = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            y = rs.process(block)
            if y.size:
                yield AudioChunk(
                    y.astype(np.float32),
                    self.target_rate,
                    emitted / self.target_rate,
                    at,
                    "microphone",
                    emitted / self.target_rate,
                )
                emitted += y.size


def make_source(cfg: SourceConfig, target_rate: int) -> AudioSource:
    """The source a config section describes, delivering audio at ``target_rate``."""
    if isinstance(cfg, WavSourceConfig):
        return WavSource(cfg.path, target_rate, chunk_ms=cfg.chunk_ms, realtime=cfg.realtime, loop=cfg.loop)
    if isinstance(cfg, StdinSourceConfig):
        return StdinSource(target_rate, sample_rate=cfg.sample_rate, fmt=cfg.format, chunk_ms=cfg.chunk_ms)
    if isinstance(cfg, MicrophoneSourceConfig):
        return MicrophoneSource(
            target_rate, sample_rate=cfg.sample_rate, device=cfg.device, chunk_ms=cfg.chunk_ms
        )
    raise SourceError(f"unknown source type {getattr(cfg, 'type', cfg)!r}")  # pragma: no cover

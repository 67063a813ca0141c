"""The audio front-end: 16 kHz mono audio in, binary spikes on ``num_channels`` channels per 1 ms step out.

One implementation serves the agent (streaming, chunk by chunk) and the toolkit (whole training clips,
through :func:`encode`, which is literally ``Frontend(spec).process(whole)``), so what a network was
trained on is what the device feeds it. Every stage is a recurrence whose state is carried across
chunks, so feeding a signal in chunks of any sizes gives bit-identical spikes to feeding it whole.

Stages (see docs/frontend.md for the reasoning behind each default):

1. **Cochlear filterbank**: ``num_bands`` Butterworth band-pass filters (order ``2 * filter_order``,
   second-order sections), centres spaced evenly on the ERB-number scale between ``f_min_hz`` and
   ``f_max_hz``, adjacent bands meeting at their ERB-scale midpoints.
2. **Envelope**: mean power of each band over each step (``samples_per_step`` samples), smoothed by two
   cascaded one-pole low-passes of time constant ``smoothing_ms`` at the step rate, in dB:
   ``L[b, t] = 10 log10(e[b, t] + 1e-12)``.
3. **Adaptive gain (AGC)**: a peak tracker over the loudest band,
   ``P[t] = max(max_b L[b, t], P[t-1] - agc_release_db_per_s * dt)``, floored at ``agc_floor_db``:
   ``R[b, t] = L[b, t] - max(P[t], agc_floor_db)``. Levels are coded relative to the recent peak, so
   a word spoken 20 dB louder gives the same spikes. An absolute threshold keeps quiet input quiet:
   unit drives are scaled by ``clip((L - gate_db) / level_span_db, 0, 1)``.
4. **Spiking units**: per band, one integrate-and-fire unit per threshold in ``thresholds_db``; unit
   ``j`` is driven at ``max_rate_hz * clip((R - thresholds_db[j]) / level_span_db, 0, 1)`` and spikes
   (subtractive reset) each time its integer charge passes a multiple of ``2**16``. The charge is
   integer, so it is exact and bounded however long the stream runs.

   With a **noise floor** (optional, ``noise_floor_rise_db_per_s > 0``) each band also tracks its own floor,
   ``N[b, t] = min(S[b, t], N[b, t-1] + noise_floor_rise_db_per_s * dt)`` over its level ``S`` smoothed
   further (``noise_floor_smoothing_ms``): instant fall, slow linear rise, like the AGC's peak upside down,
   starting at ``gate_db`` (a fresh front-end assumes a quiet room and rises to the noise it hears).
   Drives are also scaled by ``clip((L - N - noise_floor_margin_db) / level_span_db, 0, 1)``, so steady
   noise stops driving the units and only what stands above it in a band is coded.
5. **Delay taps** (optional): with ``delay_taps_ms = (d_0, ..., d_{K-1})`` every unit's spikes also leave on
   ``K`` lines, line ``k`` ``d_k`` later, so one recurrent layer sees a few hundred milliseconds of the
   spectrogram at once (the default ``(0.0,)`` is the plain front-end). A delayed copy starts silent: it
   carries what the unit did ``d_k`` ago in this stream.

Channel ``c = (b * len(thresholds_db) + j) * len(delay_taps_ms) + k``: band ``b`` (lowest frequency first),
threshold ``j``, tap ``k`` -- band-major, so every band's channels stay contiguous.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy import signal

from edgekws.agent import _audio

try:  # the compiled kernel behind scipy.signal.sosfilt, without its per-call argument handling
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - a scipy that moved it: the public function does the same
    _sosfilt_kernel = None

_CHARGE_ONE = 1 << 16  # integer charge of one spike in the integrate-and-fire units
_POWER_FLOOR = 1e-12  # -120 dB: keeps log10 finite in digital silence
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_BLOCK_STEPS = 100  # steps per internal block for long inputs
_MAX_TAP_MS = 1000.0  # longest delay tap: a second of history per unit at most
_NOISE_FLOOR_OFF = {  # the noise-floor fields' defaults, left out of a spec's dict (FrontendSpec.to_dict)
    "noise_floor_rise_db_per_s": 0.0,
    "noise_floor_margin_db": 6.0,
    "noise_floor_smoothing_ms": 20.0,
}


class FrontendSpecError(ValueError):
    """A front-end spec (or its dictionary form) is malformed; the message names the field and the fix."""


@dataclass(frozen=True)
class FrontendSpec:
    """Configuration of the audio-to-spike front-end; bundles carry it in their manifest.

    The number of output channels is ``num_bands * len(thresholds_db)`` (:attr:`num_channels`).
    """

    TYPE: ClassVar[str] = "edgekws.frontend"
    FORMAT_VERSION: ClassVar[int] = 1

    sample_rate: int = 16000  # Hz; the front-end's input rate (other rates are resampled before)
    dt_ms: float = 1.0  # step length; sample_rate * dt_ms / 1000 must be a whole number of samples
    num_bands: int = 32  # cochlear bands, ERB-spaced
    f_min_hz: float = 100.0  # centre of the lowest band
    f_max_hz: float = 7000.0  # centre of the highest band
    filter_order: int = 2  # Butterworth band-pass order per band (2 sections of a biquad for 2)
    smoothing_ms: float = 2.5  # time constant of each of the two envelope low-passes
    agc_release_db_per_s: float = 20.0  # how fast the gain reference falls after a loud sound
    agc_floor_db: float = -40.0  # gain reference never below this band power (dB re full scale)
    gate_db: float = -70.0  # absolute threshold: bands below this power (dB re full scale) stay silent
    thresholds_db: tuple[float, ...] = (-40.0, -30.0, -20.0, -10.0)  # unit onsets, dB re the reference
    level_span_db: float = 10.0  # a unit's rate rises from 0 to max over this many dB above its onset
    max_rate_hz: float = 200.0  # saturated firing rate of one unit
    delay_taps_ms: tuple[float, ...] = (0.0,)  # each unit's spikes on one line per delay (docs/frontend.md)
    noise_floor_rise_db_per_s: float = 0.0  # per-band noise floor's rise; 0: none (docs/frontend.md)
    noise_floor_margin_db: float = 6.0  # a band codes only what stands this far above its floor
    noise_floor_smoothing_ms: float = 20.0  # the floor follows the band's power smoothed this much

    def __post_init__(self) -> None:
        # JSON gives lists: store tuples so the spec stays hashable and immutable.
        object.__setattr__(self, "thresholds_db", tuple(float(t) for t in self.thresholds_db))
        object.__setattr__(self, "delay_taps_ms", tuple(float(t) for t in self.delay_taps_ms))
        problems = []
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            problems.append(f"sample_rate must be a positive integer (Hz), got {self.sample_rate!r}")
        if not self.dt_ms > 0:
            problems.append(f"dt_ms must be positive, got {self.dt_ms}")
        elif isinstance(self.sample_rate, int) and self.sample_rate > 0:
            sps = self.sample_rate * self.dt_ms / 1000.0
            if sps < 1 or abs(sps - round(sps)) > 1e-9:
                problems.append(
                    f"sample_rate * dt_ms / 1000 must be a whole number of samples, got {sps:g}; "
                    "pick dt_ms as a multiple of 1000 / sample_rate"
                )
        if not isinstance(self.num_bands, int) or self.num_bands <= 0:
            problems.append(f"num_bands must be a positive integer, got {self.num_bands!r}")
        nyquist = self.sample_rate / 2 if isinstance(self.sample_rate, int) else math.inf
        if not 0 < self.f_min_hz <= self.f_max_hz < nyquist:
            problems.append(
                f"need 0 < f_min_hz <= f_max_hz < sample_rate / 2 ({nyquist:g} Hz), "
                f"got f_min_hz={self.f_min_hz}, f_max_hz={self.f_max_hz}"
            )
        if not isinstance(self.filter_order, int) or not 1 <= self.filter_order <= 4:
            problems.append(f"filter_order must be an integer in 1..4, got {self.filter_order!r}")
        if not self.smoothing_ms > 0:
            problems.append(f"smoothing_ms must be positive, got {self.smoothing_ms}")
        if not self.agc_release_db_per_s >= 0:
            problems.append(f"agc_release_db_per_s must be >= 0, got {self.agc_release_db_per_s}")
        if not math.isfinite(self.agc_floor_db) or not math.isfinite(self.gate_db):
            problems.append(
                f"agc_floor_db and gate_db must be finite, got {self.agc_floor_db}, {self.gate_db}"
            )
        if not (math.isfinite(self.noise_floor_rise_db_per_s) and self.noise_floor_rise_db_per_s >= 0):
            problems.append(
                "noise_floor_rise_db_per_s must be >= 0 (0: no noise floor), "
                f"got {self.noise_floor_rise_db_per_s}"
            )
        if not math.isfinite(self.noise_floor_margin_db):
            problems.append(f"noise_floor_margin_db must be finite, got {self.noise_floor_margin_db}")
        if not (math.isfinite(self.noise_floor_smoothing_ms) and self.noise_floor_smoothing_ms > 0):
            problems.append(f"noise_floor_smoothing_ms must be positive, got {self.noise_floor_smoothing_ms}")
        if not self.thresholds_db or not all(math.isfinite(t) for t in self.thresholds_db):
            problems.append(f"thresholds_db must list at least one finite level, got {self.thresholds_db}")
        if not self.level_span_db > 0:
            problems.append(f"level_span_db must be positive, got {self.level_span_db}")
        if isinstance(self.dt_ms, (int, float)) and not 0 < self.max_rate_hz * self.dt_ms / 1000.0 <= 1.0:
            problems.append(
                f"max_rate_hz must be positive and at most one spike per step ({1000.0 / self.dt_ms:g} Hz), "
                f"got {self.max_rate_hz}"
            )
        taps = self.delay_taps_ms
        if not taps or not all(math.isfinite(t) and 0 <= t <= _MAX_TAP_MS for t in taps):
            problems.append(
                f"delay_taps_ms must list ascending delays in 0..{_MAX_TAP_MS:g} ms, got {list(taps)}"
            )
        elif isinstance(self.dt_ms, (int, float)) and self.dt_ms > 0:
            off = [t for t in taps if abs(t / self.dt_ms - round(t / self.dt_ms)) > 1e-9]
            if off:
                problems.append(f"delay_taps_ms must be whole steps of dt_ms ({self.dt_ms:g} ms), got {off}")
            elif any(b <= a for a, b in itertools.pairwise(round(t / self.dt_ms) for t in taps)):
                problems.append(
                    f"delay_taps_ms must list ascending delays in 0..{_MAX_TAP_MS:g} ms, "
                    f"a step ({self.dt_ms:g} ms) apart at least, got {list(taps)}"
                )
            else:  # snap to whole steps: the spec (and its dict) says exactly what the taps do
                object.__setattr__(
                    self, "delay_taps_ms", tuple(round(t / self.dt_ms) * self.dt_ms for t in taps)
                )
        if problems:
            raise FrontendSpecError("invalid front-end spec: " + "; ".join(problems))

    @property
    def num_units(self) -> int:
        """Spiking units: ``num_bands * len(thresholds_db)`` (the channels before delay taps)."""
        return self.num_bands * len(self.thresholds_db)

    @property
    def num_channels(self) -> int:
        """Output channels: ``num_bands * len(thresholds_db) * len(delay_taps_ms)``."""
        return self.num_units * len(self.delay_taps_ms)

    @property
    def tap_steps(self) -> tuple[int, ...]:
        """The delay taps in steps of ``dt_ms``."""
        return tuple(round(t / self.dt_ms) for t in self.delay_taps_ms)

    @property
    def samples_per_step(self) -> int:
        """Audio samples per time step (16 at 16 kHz and 1 ms)."""
        return round(self.sample_rate * self.dt_ms / 1000.0)

    def center_frequencies(self) -> np.ndarray:
        """Centre frequency of every band in Hz, lowest first (evenly spaced on the ERB-number scale)."""
        return _erb_inverse(
            np.linspace(_erb_number(self.f_min_hz), _erb_number(self.f_max_hz), self.num_bands)
        )

    @property
    def noise_floor(self) -> bool:
        """Whether the per-band noise floor is on (``noise_floor_rise_db_per_s > 0``)."""
        return self.noise_floor_rise_db_per_s > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with ``type`` and ``format_version`` tags (and the derived ``num_channels``)."""
        d: dict[str, Any] = {"type": self.TYPE, "format_version": self.FORMAT_VERSION}
        d.update(asdict(self))
        if all(d[k] == _NOISE_FLOOR_OFF[k] for k in _NOISE_FLOOR_OFF):
            # As with the taps: a spec without a noise floor keeps the dict it had before the option existed.
            for k in _NOISE_FLOOR_OFF:
                del d[k]
        d["thresholds_db"] = list(self.thresholds_db)
        if self.delay_taps_ms == (0.0,):
            # The plain front-end's dict stays as it was before taps existed: earlier bundles, spike sets
            # and their front-end comparisons (SpikeDataset.concat) are unchanged, and older agents read it.
            del d["delay_taps_ms"]
        else:
            d["delay_taps_ms"] = list(self.delay_taps_ms)
        d["num_channels"] = self.num_channels
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys, a wrong type tag or version raise."""
        if not isinstance(data, dict):
            raise FrontendSpecError(f"a front-end spec must be a mapping, got {type(data).__name__}")
        d = dict(data)
        problems = []
        kind = d.pop("type", None)
        if kind != cls.TYPE:
            problems.append(f"type must be {cls.TYPE!r}, got {kind!r}")
        version = d.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            problems.append(
                f"format_version must be {cls.FORMAT_VERSION}, got {version!r}; "
                "a newer edgekws wrote this spec: upgrade edgekws"
            )
        num_channels = d.pop("num_channels", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            problems.append(f"unknown key(s) {unknown}; known keys are {sorted(known)}")
        for f in fields(cls):
            if f.name in d and not _has_type(d[f.name], f.default):
                problems.append(
                    f"{f.name} must be {_type_words(f.default)}, got {type(d[f.name]).__name__} {d[f.name]!r}"
                )
        if problems:
            raise FrontendSpecError("invalid front-end spec: " + "; ".join(problems))
        spec = cls(**d)
        if num_channels is not None and num_channels != spec.num_channels:
            raise FrontendSpecError(
                f"invalid front-end spec: num_channels says {num_channels} but num_bands * "
                f"len(thresholds_db) * len(delay_taps_ms) gives {spec.num_channels}; fix one of them"
            )
        return spec


def _has_type(value: Any, default: Any) -> bool:
    """Whether a JSON value fits a field with this default (ints for ints, numbers for floats)."""
    if isinstance(value, bool):
        return False
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(_has_type(v, 0.0) for v in value)
    if isinstance(default, int):
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _type_words(default: Any) -> str:
    if isinstance(default, tuple):
        return "a list of numbers"
    return "an integer" if isinstance(default, int) else "a number"


def _erb_number(f: Any) -> Any:
    """Glasberg & Moore (1990) ERB-number of frequency ``f`` in Hz."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(f, dtype=np.float64))


def _erb_inverse(e: Any) -> np.ndarray:
    return np.asarray((10.0 ** (np.asarray(e) / 21.4) - 1.0) / 0.00437, dtype=np.float64)


@dataclass(frozen=True)
class _Design:
    """Coefficients derived once per spec."""

    band_sos: tuple[np.ndarray, ...]  # one (sections, 6) array per band
    smooth_sos: np.ndarray  # (2, 6): two one-pole low-passes at the step rate
    release_per_step: float  # dB per step
    drive_scale: np.ndarray  # (J,) 1 / level_span_db (broadcast helper)
    thresholds: np.ndarray  # (J,)
    charge_per_step: float  # integer charge per step of a saturated unit
    initial_charge: np.ndarray  # (units,) int64 starting charge: spread phases, no lockstep firing
    tap_steps: tuple[int, ...]  # spec.tap_steps, not recomputed per chunk
    floor_sos: np.ndarray  # (1, 6): the noise floor's extra one-pole low-pass on band power
    floor_rise_per_step: float  # dB per step (0: no noise floor)
    floor_warmup_steps: int  # steps before the floor starts: 3 time constants of its low-pass


@functools.lru_cache(maxsize=16)
def _design(spec: FrontendSpec) -> _Design:
    fs = spec.sample_rate
    centres = spec.center_frequencies()
    e = _erb_number(centres)
    step = (e[1] - e[0]) if spec.num_bands > 1 else 1.0
    # With few, wide bands the lowest edge half an ERB step below the centre can fall below 0 Hz: keep every
    # lower edge at least an octave below its centre, which leaves the default 32-band design unchanged.
    lo = np.maximum(_erb_inverse(e - step / 2), 0.5 * centres)
    hi = np.minimum(_erb_inverse(e + step / 2), 0.49 * fs)
    band_sos = tuple(
        np.ascontiguousarray(
            signal.butter(spec.filter_order, [float(lo[b]), float(hi[b])], "bandpass", fs=fs, output="sos")
        )
        for b in range(spec.num_bands)
    )
    a = math.exp(-spec.dt_ms / spec.smoothing_ms)
    b = math.exp(-spec.dt_ms / spec.noise_floor_smoothing_ms)
    one_pole = [1.0 - a, 0.0, 0.0, 1.0, -a, 0.0]
    return _Design(
        band_sos=band_sos,
        smooth_sos=np.array([one_pole, one_pole]),
        release_per_step=spec.agc_release_db_per_s * spec.dt_ms / 1000.0,
        drive_scale=np.full(len(spec.thresholds_db), 1.0 / spec.level_span_db),
        thresholds=np.array(spec.thresholds_db, dtype=np.float64),
        charge_per_step=spec.max_rate_hz * spec.dt_ms / 1000.0 * _CHARGE_ONE,
        # Golden-ratio phases: deterministic and evenly spread over [0, 1) spike for any channel count.
        initial_charge=np.floor(np.mod(np.arange(1, spec.num_units + 1) * _GOLDEN, 1.0) * _CHARGE_ONE).astype(
            np.int64
        ),
        tap_steps=spec.tap_steps,
        floor_sos=np.array([[1.0 - b, 0.0, 0.0, 1.0, -b, 0.0]]),
        floor_rise_per_step=spec.noise_floor_rise_db_per_s * spec.dt_ms / 1000.0,
        floor_warmup_steps=math.ceil(3.0 * (spec.noise_floor_smoothing_ms + spec.smoothing_ms) / spec.dt_ms),
    )


def _sosfilt_inplace(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """Filter the rows of ``x`` (rows, n) through ``sos`` in place, updating ``zi`` (rows, sections, 2).

    The same arithmetic as ``scipy.signal.sosfilt`` (it is its kernel), minus ~20 us of argument
    handling per call, which matters with 32 bands and 10 ms chunks.
    """
    if _sosfilt_kernel is not None:
        _sosfilt_kernel(sos, x, zi)
    else:  # pragma: no cover
        _sosfilt_public(sos, x, zi)


def _sosfilt_public(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """:func:`_sosfilt_inplace` through the public ``scipy.signal.sosfilt``."""
    y, z = signal.sosfilt(sos, x, axis=-1, zi=np.moveaxis(zi, 1, 0))
    x[...] = y
    zi[...] = np.moveaxis(z, 0, 1)


def _db(power: np.ndarray) -> np.ndarray:
    """Band power in dB re full scale, finite in digital silence (``_POWER_FLOOR``)."""
    return np.asarray(10.0 * np.log10(np.maximum(power, 0.0) + _POWER_FLOOR))


class Frontend:
    """Streaming front-end: feed audio chunks at ``spec.sample_rate``, get the spikes of every completed step.

    ``process(chunk)`` returns a ``(k, spec.num_channels)`` uint8 array of 0/1 spikes for the ``k`` steps
    completed by this chunk (samples of an unfinished step wait for the next chunk). Chunks may be int16,
    int32, uint8 or float, mono or ``(frames, channels)``; see :func:`edgekws.agent.load_audio` for the
    conversions. ``reset()`` returns to the initial state. Chunking never changes the output: the spikes
    of a signal fed in any pieces are bit-identical to those of the signal fed whole.
    """

    def __init__(self, spec: FrontendSpec | None = None) -> None:
        self.spec = spec if spec is not None else FrontendSpec()
        self._d = _design(self.spec)
        self.reset()

    def reset(self) -> None:
        """Forget all state: the next chunk is the start of a new signal."""
        spec, d = self.spec, self._d
        self._pending = np.zeros(0, dtype=np.float64)
        self._band_zi = np.zeros((spec.num_bands, 1, d.band_sos[0].shape[0], 2))
        self._smooth_zi = np.zeros((spec.num_bands, 2, 2))
        self._peak = -math.inf  # running max of (loudest band level + release * step index)
        self._floor_zi = np.zeros((spec.num_bands, 1, 2))  # the noise floor's low-pass state
        # Running min of (slow level - rise * step index), starting at the absolute gate: a fresh front-end
        # assumes a quiet room and learns the noise as the floor rises to it (not from a word's first steps).
        self._floor = np.full(spec.num_bands, spec.gate_db)
        self._charge = d.initial_charge.copy()
        # The last max(tap) steps of the units' spikes, oldest first: what the delayed taps still owe.
        self._history = np.zeros((max(d.tap_steps), spec.num_units), dtype=np.uint8)
        self.steps_done = 0
        self.samples_seen = 0
        self.clipped_samples = 0

    @property
    def clipped_fraction(self) -> float:
        """Fraction of the samples fed so far (since the last reset) that were at or beyond full scale."""
        return self.clipped_samples / self.samples_seen if self.samples_seen else 0.0

    def process(self, chunk: Any) -> np.ndarray:
        """Spikes ``(k, num_channels)`` uint8 for the steps this chunk completes (``k`` may be 0)."""
        x = _audio.as_float_mono(chunk)  # validates before any state changes
        n_clipped = _audio.clipped_count(chunk) if x.size else 0
        self.samples_seen += x.size
        self.clipped_samples += n_clipped
        sps = self.spec.samples_per_step
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        k = x.size // sps
        self._pending = x[k * sps :].copy()
        if k <= _BLOCK_STEPS:
            return self._steps(x[: k * sps], k)
        # Long input in blocks: the same spikes (chunk invariance), with working arrays that fit in cache.
        out = np.empty((k, self.spec.num_channels), dtype=np.uint8)
        for start in range(0, k, _BLOCK_STEPS):
            stop = min(start + _BLOCK_STEPS, k)
            out[start:stop] = self._steps(x[start * sps : stop * sps], stop - start)
        return out

    def _steps(self, x: np.ndarray, k: int) -> np.ndarray:
        spec, d = self.spec, self._d
        if k == 0:
            return np.zeros((0, spec.num_channels), dtype=np.uint8)
        sps, nb = spec.samples_per_step, spec.num_bands
        # 1. filterbank (filters and their states updated in place, band by band).
        y = np.empty((nb, x.size))
        y[:] = x
        for b, sos in enumerate(d.band_sos):
            _sosfilt_inplace(sos, y[b : b + 1], self._band_zi[b])
        # 2. per-step band power, summed sample by sample in a fixed order (so chunk-invariant), smoothed.
        np.square(y, out=y)
        per_sample = y.reshape(nb, k, sps)
        power = per_sample[:, :, 0].copy()
        for i in range(1, sps):
            power += per_sample[:, :, i]
        power *= 1.0 / sps
        _sosfilt_inplace(d.smooth_sos, power, self._smooth_zi)
        level = _db(power)  # (nb, k) dB re full scale
        # 3. AGC: peak tracker with linear release in dB, as a running max (exact, order-free).
        t = np.arange(self.steps_done, self.steps_done + k, dtype=np.float64) * d.release_per_step
        lifted = np.maximum.accumulate(np.concatenate([[self._peak], level.max(axis=0) + t]))[1:]
        self._peak = float(lifted[-1])
        reference = np.maximum(lifted - t, spec.agc_floor_db)
        rel = (level - reference).T  # (k, nb)
        gate = np.clip((level.T - spec.gate_db) * d.drive_scale[0], 0.0, 1.0)  # (k, nb) absolute threshold
        if d.floor_rise_per_step > 0:  # per-band noise floor: a running min with linear rise, as the AGC
            slow = power.copy()
            _sosfilt_inplace(d.floor_sos, slow, self._floor_zi)
            slow_db = _db(slow)
            index = np.arange(self.steps_done, self.steps_done + k)
            rise = index * d.floor_rise_per_step
            # The filters' first steps ring up from silence: they do not pull the floor down (warm-up).
            lowered = np.where(index < d.floor_warmup_steps, math.inf, slow_db - rise)
            lowered = np.minimum.accumulate(np.concatenate([self._floor[:, None], lowered], axis=1), axis=1)
            self._floor = lowered[:, -1].copy()
            above = level - (lowered[:, 1:] + rise) - spec.noise_floor_margin_db  # (nb, k)
            gate *= np.clip(above.T * d.drive_scale[0], 0.0, 1.0)
        # 4. integrate-and-fire units with integer charge.
        drive = np.clip((rel[:, :, None] - d.thresholds) * d.drive_scale, 0.0, 1.0)  # (k, nb, J)
        drive *= gate[:, :, None]
        charge = np.rint(drive * d.charge_per_step).astype(np.int64).reshape(k, spec.num_units)
        total = np.cumsum(charge, axis=0)
        total += self._charge
        count = total // _CHARGE_ONE
        spikes = np.empty(count.shape, dtype=np.uint8)
        spikes[0] = count[0] != 0  # the carried charge is below one spike
        spikes[1:] = count[1:] != count[:-1]
        self._charge = total[-1] - count[-1] * _CHARGE_ONE
        self.steps_done += k
        return self._tap(spikes)

    def _tap(self, spikes: np.ndarray) -> np.ndarray:
        """5. delay taps: ``(k, units)`` spikes to ``(k, units * taps)``, tap ``i`` ``tap_steps[i]`` late."""
        taps = self._d.tap_steps
        if taps == (0,):
            return spikes
        k, depth = spikes.shape[0], self._history.shape[0]
        full = np.concatenate([self._history, spikes])  # (depth + k, units): the past, then this block
        out = np.empty((k, spikes.shape[1], len(taps)), dtype=np.uint8)
        for i, delay in enumerate(taps):
            out[:, :, i] = full[depth - delay : depth - delay + k]
        self._history = full[k:]
        return out.reshape(k, -1)


def encode(
    audio: Any, sample_rate: float, spec: FrontendSpec | None = None, *, resample: bool = True
) -> np.ndarray:
    """Encode a whole signal: ``(steps, num_channels)`` uint8 spikes, ``steps = samples // samples_per_step``.

    ``audio`` may be int16/int32/uint8 or float, mono or ``(frames, channels)``, at any ``sample_rate``;
    other rates are resampled to ``spec.sample_rate`` when ``resample`` is true, else :class:`AudioError`.
    This is exactly ``Frontend(spec).process(audio at spec.sample_rate)``.
    """
    spec = spec if spec is not None else FrontendSpec()
    whole = _audio.prepare(audio, sample_rate, spec.sample_rate, resample_ok=resample)
    return Frontend(spec).process(whole)

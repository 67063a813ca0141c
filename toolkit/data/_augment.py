"""Audio-level augmentations of synthetic speech: what separates one voice, room and microphone from another.

Each augmentation is drawn per utterance by :func:`draw` from an :class:`AugmentPolicy` (a probability and
parameter ranges), recorded with every parameter in the corpus manifest, and applied by a pure function of
the audio and those parameters, in this order (:func:`voice`, :func:`room`, noise, :func:`channel`):

==========  =================================================================  ==========================
name        what                                                                library
==========  =================================================================  ==========================
formant     vocal-tract length: the spectral envelope's frequency axis scaled  pyworld (WORLD vocoder)
pitch       f0 scaled by 2**(semitones/12), formants kept                      pyworld
tempo       duration scaled, pitch and formants kept                           pyworld
room        a shoebox room: size, RT60 (absorption by inverse Sabine),         pyroomacoustics
            source and microphone positions
noise       white, pink or babble (2-5 other synthetic utterances) at an SNR   numpy (mixing only)
band        band limit: down to a lower sample rate and back (8000 Hz is       scipy resample_poly,
            telephone audio, 4 kHz wide), and a high-pass                      audiomentations
eq          random peaking filters (centre, gain, Q)                           audiomentations
gain        a level change in dB                                               audiomentations
clip        clipping at a percentile of the word's absolute samples            numpy (a threshold)
==========  =================================================================  ==========================

Why these: WORLD separates f0, spectral envelope and aperiodicity, so formants, pitch and tempo change
independently (a phase-vocoder pitch shift moves the formants with the pitch; Praat's "Change gender" does
this too but is GPL); pyroomacoustics' image-source shoebox rooms are the field's standard simulated RIRs;
audiomentations' filters are fixed here by giving each range a single value (min = max), so every random
choice is ours, drawn from the utterance's seeded generator: the same seed gives the same audio whatever the
number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

AUGMENTATIONS = ("formant", "pitch", "tempo", "room", "noise", "band", "eq", "gain", "clip")
NOISE_KINDS = ("white", "pink", "babble")
WORLD_FRAME_MS = 5.0


class AugmentError(ValueError):
    """A bad augmentation policy or parameter; the message names it."""


@dataclass(frozen=True)
class AugmentPolicy:
    """Per-utterance probabilities (``*_p``) and parameter ranges ``(low, high)`` of each augmentation.

    The noise is always added (``noise_weights`` white/pink/babble, at ``snr_db``); the others each with
    their probability. :data:`PRESETS` names the policies ``none`` (white noise at 10-40 dB SNR only: the
    corpus before augmentations), ``default`` and ``recordings`` (default without babble, for
    ``edgekws data import --copies``; babble there is other speakers' recorded words, asked for by a policy).
    """

    formant_p: float = 0.0
    formant_factor: tuple[float, float] = (0.85, 1.18)  # > 1: shorter vocal tract, higher formants
    pitch_p: float = 0.0
    pitch_semitones: tuple[float, float] = (-5.0, 5.0)
    tempo_p: float = 0.0
    tempo_factor: tuple[float, float] = (0.8, 1.25)  # duration multiplier
    room_p: float = 0.0
    room_rt60_s: tuple[float, float] = (0.15, 0.8)
    room_size_m: tuple[float, float] = (3.0, 9.0)  # length and width; height 2.4-3.5 m
    room_distance_m: tuple[float, float] = (0.4, 3.0)  # source to microphone
    noise_weights: tuple[float, float, float] = (1.0, 0.0, 0.0)  # white, pink, babble
    snr_db: tuple[float, float] = (10.0, 40.0)
    babble_talkers: tuple[int, int] = (2, 5)
    band_p: float = 0.0
    band_rates: tuple[int, ...] = (8000, 11025, 12000)  # Hz; the band ends at half the rate
    band_highpass_hz: tuple[float, float] = (50.0, 300.0)
    eq_p: float = 0.0
    eq_bands: tuple[int, int] = (1, 3)
    eq_gain_db: tuple[float, float] = (-10.0, 10.0)
    gain_p: float = 0.0
    gain_db: tuple[float, float] = (-18.0, 6.0)
    clip_p: float = 0.0
    clip_percentile: tuple[float, float] = (1.0, 15.0)  # % of samples at or beyond the clipping level

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
                problems.append(f"{f.name} must be a probability in [0, 1], got {value}")
            elif f.name == "noise_weights":
                if len(value) != 3 or min(value) < 0 or sum(value) <= 0:
                    problems.append(
                        f"noise_weights must be three weights >= 0 (white, pink, babble), got {value}"
                    )
            elif f.name == "band_rates":
                if not value or any(int(r) < 2000 for r in value):
                    problems.append(f"band_rates must be sample rates of at least 2000 Hz, got {value}")
            elif isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                problems.append(f"{f.name} must be a range (low, high) with low <= high, got {value}")
        if self.formant_factor[0] <= 0 or self.tempo_factor[0] <= 0:
            problems.append("formant_factor and tempo_factor must be positive")
        if problems:
            raise AugmentError("bad augmentation policy: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: AugmentPolicy | None = None) -> AugmentPolicy:
        """A policy from a dict of fields (``base``'s values, else the defaults, for those not given)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AugmentError(f"unknown augmentation setting(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return replace(base or cls(), **values)


PRESETS = {
    "none": AugmentPolicy(),
    "default": AugmentPolicy(
        formant_p=0.5,
        pitch_p=0.5,
        tempo_p=0.4,
        room_p=0.4,
        noise_weights=(1.0, 1.0, 1.0),
        snr_db=(5.0, 35.0),
        band_p=0.4,
        eq_p=0.4,
        gain_p=0.5,
        clip_p=0.1,
    ),
}
# default's draws for recordings (edgekws data import --copies) without babble: babble for recordings is
# other speakers' other words (_recordings.augment_copies), which an import may not have; a policy file with
# a babble weight asks for it.
PRESETS["recordings"] = replace(PRESETS["default"], noise_weights=(1.0, 1.0, 0.0))


def policy(name_or_dict: str | dict[str, Any] | AugmentPolicy) -> AugmentPolicy:
    """A preset by name, or a dict of settings over the ``default`` preset (a policy is returned as is)."""
    if isinstance(name_or_dict, AugmentPolicy):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return AugmentPolicy.from_dict(name_or_dict, PRESETS["default"])
    if name_or_dict not in PRESETS:
        raise AugmentError(f"augmentation preset must be one of {', '.join(PRESETS)}, got {name_or_dict!r}")
    return PRESETS[name_or_dict]


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def draw(p: AugmentPolicy, rng: np.random.Generator) -> dict[str, Any]:
    """One utterance's augmentations: ``{name: parameters}`` for those that apply, noise always.

    Every draw is made whatever the probabilities say, so turning one augmentation off leaves the others'
    parameters as they were for the same seed.
    """
    out: dict[str, Any] = {}
    coin = rng.random(8)
    formant = _r(np.exp(rng.uniform(*np.log(p.formant_factor))))
    pitch = _r(rng.uniform(*p.pitch_semitones), 3)
    tempo = _r(np.exp(rng.uniform(*np.log(p.tempo_factor))))
    length, width = rng.uniform(*p.room_size_m, size=2)
    height = rng.uniform(2.4, 3.5)
    rt60 = _r(rng.uniform(*p.room_rt60_s), 3)
    distance = rng.uniform(*p.room_distance_m)
    mic_at = rng.uniform(0.0, 1.0, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    kind = NOISE_KINDS[int(rng.choice(3, p=np.array(p.noise_weights) / sum(p.noise_weights)))]
    snr = _r(rng.uniform(*p.snr_db), 2)
    talkers = int(rng.integers(p.babble_talkers[0], p.babble_talkers[1] + 1))
    band_rate = int(p.band_rates[int(rng.integers(len(p.band_rates)))])
    highpass = _r(rng.uniform(*p.band_highpass_hz), 1)
    n_eq = int(rng.integers(p.eq_bands[0], p.eq_bands[1] + 1))
    eq = [
        {"hz": _r(np.exp(rng.uniform(np.log(100), np.log(6000))), 1),
         "gain_db": _r(rng.uniform(*p.eq_gain_db), 2),
         "q": _r(rng.uniform(0.5, 2.5), 3)}
        for _ in range(n_eq)
    ]  # fmt: skip
    gain = _r(rng.uniform(*p.gain_db), 2)
    clip = _r(rng.uniform(*p.clip_percentile), 2)
    if coin[0] < p.formant_p:
        out["formant"] = {"factor": formant}
    if coin[1] < p.pitch_p:
        out["pitch"] = {"semitones": pitch}
    if coin[2] < p.tempo_p:
        out["tempo"] = {"factor": tempo}
    if coin[3] < p.room_p:
        out["room"] = _room_geometry(length, width, height, rt60, distance, mic_at, angle)
    out["noise"] = {"kind": kind, "snr_db": snr, **({"talkers": talkers} if kind == "babble" else {})}
    if coin[4] < p.band_p:
        out["band"] = {"rate": band_rate, "highpass_hz": highpass}
    if coin[5] < p.eq_p:
        out["eq"] = eq
    if coin[6] < p.gain_p:
        out["gain"] = {"db": gain}
    if coin[7] < p.clip_p:
        out["clip"] = {"percentile": clip}
    return out


def _room_geometry(
    length: float, width: float, height: float, rt60: float, distance: float, mic_at: np.ndarray, angle: float
) -> dict[str, Any]:
    """A room, a microphone at least 0.5 m from the walls and a talker ``distance`` from it (closer if the
    room is too small), mouth 1.2-1.8 m high."""
    dims = np.array([length, width, height])
    margin = 0.5
    mic = margin + mic_at * (dims - 2 * margin)
    mic[2] = 0.8 + mic_at[2] * 0.7
    direction = np.array([np.cos(angle), np.sin(angle)])
    room_left = [
        ((dims[i] - margin - mic[i]) / d if d > 0 else (margin - mic[i]) / d if d < 0 else np.inf)
        for i, d in enumerate(direction)
    ]
    reach = min(distance, *room_left)
    source = np.array([mic[0] + reach * direction[0], mic[1] + reach * direction[1], 1.2 + mic_at[2] * 0.6])
    return {
        "size_m": [_r(v, 2) for v in dims],
        "rt60_s": rt60,
        "mic_m": [_r(v, 2) for v in mic],
        "source_m": [_r(v, 2) for v in source],
        "distance_m": _r(float(np.linalg.norm(source - mic)), 2),
    }


def names(augment: dict[str, Any]) -> str:
    """The augmentations applied, "+"-joined in order ("formant+room+babble+band"); noise by its kind."""
    parts = []
    for name in AUGMENTATIONS:
        if name == "noise" and name in augment:
            parts.append(augment["noise"]["kind"])
        elif name in augment:
            parts.append(name)
    return "+".join(parts)


def voice(
    audio: np.ndarray,
    rate: int,
    formant: float = 1.0,
    semitones: float = 0.0,
    tempo: float = 1.0,
    f0_method: str = "dio",
) -> np.ndarray:
    """``audio`` with its formants scaled by ``formant``, its f0 by ``2**(semitones/12)`` and its duration
    by ``tempo``, through the WORLD vocoder (one analysis, one synthesis).

    The spectral envelope of each frame is read at ``f / formant`` (a uniform vocal-tract-length warp, up to
    the Nyquist frequency); f0 is analysed with DIO refined by StoneMask (every engine's but piper's,
    unchanged so corpora stay reproducible), or with Harvest (``f0_method="harvest"``: piper's words, whose
    low male voice DIO reads 30-80 % high on some words; ``_engines.F0_METHOD``).
    """
    import pyworld

    if formant == 1.0 and semitones == 0.0 and tempo == 1.0:
        return audio
    x = np.ascontiguousarray(audio, dtype=np.float64)
    if len(x) < rate * WORLD_FRAME_MS / 1000 * 4:
        return audio
    if f0_method == "harvest":
        f0, t = pyworld.harvest(x, rate, frame_period=WORLD_FRAME_MS)
    elif f0_method == "dio":
        f0, t = pyworld.dio(x, rate, frame_period=WORLD_FRAME_MS)
        f0 = pyworld.stonemask(x, f0, t, rate)
    else:
        raise ValueError(f"f0_method must be 'dio' or 'harvest', got {f0_method!r}")
    sp = pyworld.cheaptrick(x, f0, t, rate)
    ap = pyworld.d4c(x, f0, t, rate)
    if formant != 1.0:
        axis = np.arange(sp.shape[1], dtype=np.float64)
        source = np.clip(axis / formant, 0, axis[-1])
        sp = np.stack([np.interp(source, axis, row) for row in sp])
    f0 = f0 * 2 ** (semitones / 12)
    if tempo != 1.0:
        n = max(2, round(len(f0) * tempo))
        pos = np.linspace(0, len(f0) - 1, n)
        lo = np.floor(pos).astype(int)
        voiced = f0 > 0
        f0 = np.where(
            voiced[lo] & voiced[np.minimum(lo + 1, len(f0) - 1)], np.interp(pos, np.arange(len(f0)), f0), 0.0
        )
        sp = np.stack([np.interp(pos, np.arange(len(col)), col) for col in sp.T], axis=1)
        ap = np.stack([np.interp(pos, np.arange(len(col)), col) for col in ap.T], axis=1)
    y = pyworld.synthesize(
        np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), rate, WORLD_FRAME_MS
    )
    peak_in, peak_out = float(np.abs(x).max()), float(np.abs(y).max())
    return y * (peak_in / peak_out) if peak_out > 0 else y


def voice_of(audio: np.ndarray, rate: int, augment: dict[str, Any], f0_method: str = "dio") -> np.ndarray:
    """``audio`` through :func:`voice` with the formant, pitch and tempo of ``augment`` (those present)."""
    return voice(
        audio,
        rate,
        formant=augment.get("formant", {}).get("factor", 1.0),
        semitones=augment.get("pitch", {}).get("semitones", 0.0),
        tempo=augment.get("tempo", {}).get("factor", 1.0),
        f0_method=f0_method,
    )


def surroundings(
    clip: np.ndarray, rate: int, augment: dict[str, Any], power: float, noise: np.ndarray, snr_db: float
) -> np.ndarray:
    """The rest of the chain after the voice: ``clip`` heard in the room of ``augment`` (if any), mixed with
    ``noise`` at ``snr_db`` below ``power`` (the dry speech's power) and sent through the channel."""
    if "room" in augment:
        clip = room(clip, rate, augment["room"])
    return channel(clip + mix_at_snr(power, noise, snr_db), rate, augment)


def room_impulse_response(params: dict[str, Any], rate: int) -> np.ndarray:
    """The impulse response from source to microphone of the shoebox room ``params`` (:func:`draw`).

    Wall absorption and the image order come from the RT60 by Sabine's formula
    (``pyroomacoustics.inverse_sabine``); the order is capped at 40 (about 30 ms a room here).
    """
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(params["rt60_s"], params["size_m"])
    room = pra.ShoeBox(
        params["size_m"], fs=rate, materials=pra.Material(absorption), max_order=min(int(order), 40)
    )
    room.add_source(params["source_m"])
    room.add_microphone(params["mic_m"])
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


def room(audio: np.ndarray, rate: int, params: dict[str, Any]) -> np.ndarray:
    """``audio`` as heard in the room ``params``: convolved with its impulse response, the same length,
    the direct sound where the dry sound was, at the dry signal's power."""
    from scipy.signal import fftconvolve

    rir = room_impulse_response(params, rate)
    direct = int(np.argmax(np.abs(rir)))
    wet = fftconvolve(audio, rir)[direct : direct + len(audio)]
    dry_power, wet_power = float(np.mean(audio**2)), float(np.mean(wet**2))
    return wet * np.sqrt(dry_power / wet_power) if wet_power > 0 else wet


def channel(audio: np.ndarray, rate: int, augment: dict[str, Any]) -> np.ndarray:
    """The microphone and line: band limit, EQ, gain and clipping of ``augment`` (those present)."""
    x = np.asarray(audio, dtype=np.float64)
    if not {"band", "eq", "gain", "clip"} & set(augment):
        return x
    import audiomentations as am

    from edgekws.agent import resample

    if "band" in augment:
        band = augment["band"]
        if band["rate"] < rate:
            x = resample(resample(x, rate, int(band["rate"])), int(band["rate"]), rate)[: len(audio)]
        hp = float(band["highpass_hz"])
        x = _run(
            am.HighPassFilter(min_cutoff_freq=hp, max_cutoff_freq=hp, min_rolloff=12, max_rolloff=12, p=1.0),
            x,
            rate,
        )
    for peak in augment.get("eq", []):
        f, g, q = float(peak["hz"]), float(peak["gain_db"]), float(peak["q"])
        x = _run(am.PeakingFilter(min_center_freq=f, max_center_freq=f, min_gain_db=g, max_gain_db=g,
                                  min_q=q, max_q=q, p=1.0), x, rate)  # fmt: skip
    if "gain" in augment:
        g = float(augment["gain"]["db"])
        x = _run(am.Gain(min_gain_db=g, max_gain_db=g, p=1.0), x, rate)
    if "clip" in augment:
        pct = float(augment["clip"]["percentile"])
        x = clip(x, pct)
    return x


def clip(audio: np.ndarray, percentile: float) -> np.ndarray:
    """``audio`` clipped at the ``100 - percentile`` percentile of ``|x|`` over its non-silent samples
    (|x| > 1e-4), so about ``percentile`` % of the speech sits at the clipping level. Written here (three
    lines) rather than audiomentations' ClippingDistortion, whose percentile is over the whole clip: in a
    1 s clip that is mostly silence its threshold would not say how much of the word is clipped."""
    loud = np.abs(audio)[np.abs(audio) > 1e-4]
    if len(loud) == 0:
        return audio
    level = float(np.percentile(loud, 100 - percentile))
    return np.clip(audio, -level, level)


def _run(transform: Any, x: np.ndarray, rate: int) -> np.ndarray:
    return np.asarray(transform(samples=x.astype(np.float32), sample_rate=rate), dtype=np.float64)


BABBLE_OFFSET_S = (-0.3, 0.6)  # where each babble talker starts, relative to the clip


def babble(words: Iterable[tuple[np.ndarray, float]], rate: int, n: int) -> np.ndarray:
    """Babble noise of ``n`` samples: each ``(word, offset_s)`` at unit power, starting ``offset_s`` into the
    clip (cropped at its edges), summed; silent words are left out."""
    noise = np.zeros(n)
    for word, offset_s in words:
        power = float(np.mean(word**2)) if len(word) else 0.0
        if power <= 0:
            continue
        word = word / np.sqrt(power)
        start = round(offset_s * rate)
        a, b = max(0, start), min(n, start + len(word))
        if b > a:
            noise[a:b] += word[a - start : b - start]
    return noise


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise with unit standard deviation."""
    if n < 2:  # no spectrum to shape
        return rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return x / (x.std() + 1e-12)


def mix_at_snr(signal_power: float, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that ``signal_power / noise power`` is ``snr_db``."""
    power = float(np.mean(noise**2))
    if power <= 0:
        return noise
    return noise * np.sqrt(signal_power / 10 ** (snr_db / 10) / power)

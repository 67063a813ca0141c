"""Labelled keyword streams: held-out utterances of a corpus among distractor words, silence and noise.

What a streaming keyword spotter meets on a device, with a ground truth to score it by
(:func:`edgekws.toolkit.data.score_stream`). A stream is deterministic for ``(corpus, split, minutes,
seed, snr_db)`` and is made from one split of an ``edgekws data synth`` corpus:

- **keywords**: the split's utterances, cut from their 1 s clips at the manifest's ``lead_silence_s`` /
  ``speech_s`` (plus 30 ms of the clip on each side, 5 ms fades), so the ground truth is the speech span;
- **distractors**: non-keyword words (no digit words; some near misses such as "seventeen", "zwanzig")
  spoken with espeak-ng by the same split's voices, at the corpus' random rate, pitch and amplitude;
- **silence stretches** (2-6 s), random gaps of 0.5-3 s between events;
- **background noise** in segments of 5-20 s: white, pink (1/f) or none, at a random SNR (10-30 dB by
  default) relative to the mean speech power of the stream.

:func:`write_stream` saves the audio as a 16-bit WAV and the ground truth next to it as JSON
(``edgekws data stream``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekws.packaging import atomic_path, atomic_write_text
from edgekws.toolkit.data._kws_scoring import KeywordSpan
from edgekws.toolkit.data._synth import pink_noise, prosody, spoken_word, voice_of

RATE = 16000
STREAM_FORMAT_VERSION = 1


class StreamError(ValueError):
    """The corpus cannot make a stream (wrong rate, no utterances with timings); the message says why."""


EDGE_S = 0.03  # clip audio kept on each side of a keyword's speech span
GAP_S = (0.5, 3.0)
SILENCE_S = (2.0, 6.0)
NOISE_SEGMENT_S = (5.0, 20.0)
EVENT_P = {"keyword": 0.5, "distractor": 0.35, "silence": 0.15}
NOISE_P = {"white": 0.4, "pink": 0.4, "none": 0.2}

# fmt: off
DISTRACTORS = {
    "en": (
        "hello", "house", "table", "music", "window", "orange", "seventeen", "twenty", "morning", "coffee",
        "yellow", "garden", "picture", "weather", "doctor", "paper", "kitchen", "monday", "water", "thirty",
        "hundred", "eleven", "computer", "banana", "forty", "thousand", "open", "tennis", "seventy",
        "nineteen",
    ),
    "de": (
        "guten", "morgen", "danke", "bitte", "hallo", "fenster", "tisch", "wasser", "zeitung", "zwanzig",
        "elf", "zwölf", "hundert", "schule", "kaffee", "straße", "dreißig", "sonne", "achtzig", "tausend",
    ),
}
# fmt: on


@dataclass
class Segment:
    """One event of the stream: where its speech (or silence) starts and ends, in stream seconds."""

    kind: str  # keyword | distractor | silence
    label: str  # class name of a keyword, the word of a distractor, "" for silence
    speaker: str
    start_s: float
    end_s: float


@dataclass
class Stream:
    """The audio (float32 mono at :data:`RATE`), its events in time order, the background noise segments."""

    split: str
    audio: np.ndarray
    segments: list[Segment]
    noise: list[dict[str, Any]] = field(default_factory=list)
    rate: ClassVar[int] = RATE  # samples per second of ``audio``

    @property
    def duration_s(self) -> float:
        return self.audio.size / RATE

    def truth(self) -> list[KeywordSpan]:
        return [KeywordSpan(s.label, s.start_s, s.end_s) for s in self.segments if s.kind == "keyword"]

    def composition(self) -> dict[str, Any]:
        kinds = {k: [s for s in self.segments if s.kind == k] for k in EVENT_P}
        noise_s = {t: sum(n["end_s"] - n["start_s"] for n in self.noise if n["type"] == t) for t in NOISE_P}
        return {
            "split": self.split,
            "duration_s": round(self.duration_s, 2),
            "keywords": len(kinds["keyword"]),
            "keyword_classes": len({s.label for s in kinds["keyword"]}),
            "keyword_speakers": len({s.speaker for s in kinds["keyword"]}),
            "keyword_speech_s": round(sum(s.end_s - s.start_s for s in kinds["keyword"]), 2),
            "distractors": len(kinds["distractor"]),
            "distractor_words": sorted({s.label for s in kinds["distractor"]}),
            "distractor_speech_s": round(sum(s.end_s - s.start_s for s in kinds["distractor"]), 2),
            "silence_stretches": len(kinds["silence"]),
            "noise_seconds": {k: round(v, 1) for k, v in noise_s.items()},
            "noise_snr_db": [round(n["snr_db"], 1) for n in self.noise if n["type"] != "none"],
        }


def _fade(x: np.ndarray, ms: float = 5.0) -> np.ndarray:
    n = min(x.size // 2, int(RATE * ms / 1000))
    if n:
        ramp = np.linspace(0.0, 1.0, n)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _keyword_piece(corpus: Path, utt: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """The utterance's speech with EDGE_S of its clip on each side; (audio, speech start, speech end)."""
    import soundfile as sf

    clip, sr = sf.read(corpus / utt["wav"], dtype="float64")
    if sr != RATE:
        raise StreamError(
            f"{utt['wav']}: {sr} Hz, expected {RATE}; re-make the corpus with edgekws data synth"
        )
    a, b = round(utt["lead_silence_s"] * RATE), round((utt["lead_silence_s"] + utt["speech_s"]) * RATE)
    lo, hi = max(0, a - round(EDGE_S * RATE)), min(clip.size, b + round(EDGE_S * RATE))
    return _fade(clip[lo:hi]), (a - lo) / RATE, (b - lo) / RATE


def _distractor_piece(word: str, speaker: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """``word`` said by ``speaker`` like a corpus utterance, trimmed and faded."""
    return _fade(spoken_word(voice_of(speaker), word, prosody(speaker, rng)))


def build_stream(
    corpus: Path,
    split: str,
    minutes: float,
    seed: int,
    snr_db: tuple[float, float] = (10.0, 30.0),
    background: bool = True,
    event_p: dict[str, float] | None = None,
) -> Stream:
    """A deterministic stream of ``split`` keywords, distractors, silence and background noise.

    ``background=False`` makes the same stream (same words at the same times) without the background noise.
    ``event_p`` overrides :data:`EVENT_P`, the chance of each event kind (keys ``keyword``, ``distractor``,
    ``silence``; missing kinds never occur).
    """
    corpus = Path(corpus)
    if split not in ("train", "val", "test"):
        raise StreamError(f"split must be train, val or test, got {split!r}")
    if minutes <= 0:
        raise StreamError(f"minutes must be > 0, got {minutes}")
    probs = dict(EVENT_P if event_p is None else event_p)
    unknown = set(probs) - set(EVENT_P)
    if unknown or not probs or min(probs.values()) < 0 or sum(probs.values()) <= 0:
        raise StreamError(f"event_p needs non-negative chances of {sorted(EVENT_P)}, got {probs}")
    try:
        manifest = json.loads((corpus / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise StreamError(f"{corpus}: not a corpus made by edgekws data synth ({exc})") from exc
    rng = np.random.default_rng(np.random.SeedSequence([seed, ["train", "val", "test"].index(split)]))
    utts = [
        u
        for u in manifest["utterances"]
        if u["split"] == split and "speech_s" in u and not u["class"].startswith("_")  # no filler classes
    ]
    if not utts:
        raise StreamError(f"{corpus}/manifest.json: no {split} utterances with timings; re-make the corpus")
    order = [utts[int(i)] for i in rng.permutation(len(utts))]
    speakers = {
        lang: [s for s in manifest["speakers"] if s["split"] == split and s["language"] == lang]
        for lang in DISTRACTORS
    }
    if probs.get("distractor", 0) > 0 and not any(speakers.values()):
        raise StreamError(f"{corpus}: no {split} speakers of {sorted(DISTRACTORS)} to speak distractors")
    total = round(minutes * 60 * RATE)
    speech = np.zeros(total)
    segments: list[Segment] = []
    t = 0.5
    k = 0
    kinds = list(probs)
    p = [probs[k] / sum(probs.values()) for k in kinds]
    while True:
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        if kind == "silence":
            d = float(rng.uniform(*SILENCE_S))
            if t + d > total / RATE - 0.5:
                break
            segments.append(Segment("silence", "", "", t, t + d))
            t += d
            continue
        if kind == "keyword":
            utt = order[k % len(order)]
            k += 1
            piece, s0, s1 = _keyword_piece(corpus, utt)
            label, speaker = utt["class"], utt["speaker"]
        else:
            lang = "en" if rng.random() < 0.6 else "de"
            if not speakers[lang]:  # a one-language corpus (the commands task is English only)
                lang = "en" if speakers["en"] else "de"
            pool = DISTRACTORS[lang]
            word = pool[int(rng.integers(len(pool)))]
            spk = speakers[lang][int(rng.integers(len(speakers[lang])))]
            piece = _distractor_piece(word, spk, rng)
            s0, s1, label, speaker = 0.0, piece.size / RATE, word, spk["id"]
        i = round(t * RATE)
        if i + piece.size > total - RATE // 2:
            break
        speech[i : i + piece.size] += piece
        segments.append(Segment(kind, label, speaker, i / RATE + s0, i / RATE + s1))
        t = (i + piece.size) / RATE + float(rng.uniform(*GAP_S))
    words = [s for s in segments if s.kind != "silence"]
    ref_power = float(
        np.mean([np.mean(speech[round(s.start_s * RATE) : round(s.end_s * RATE)] ** 2) for s in words])
    )
    audio = speech.copy()
    noise: list[dict[str, Any]] = []
    a = 0
    ntypes, nprob = list(NOISE_P), list(NOISE_P.values())
    while a < total:
        b = min(total, a + round(rng.uniform(*NOISE_SEGMENT_S) * RATE))
        kind = ntypes[int(rng.choice(len(ntypes), p=nprob))]
        snr = float(rng.uniform(*snr_db))
        if kind != "none":
            x = rng.standard_normal(b - a) if kind == "white" else pink_noise(b - a, rng)
            if background:
                audio[a:b] += _fade(x) * math.sqrt(ref_power / 10 ** (snr / 10))
        noise.append(
            {"type": kind, "snr_db": snr if kind != "none" else None, "start_s": a / RATE, "end_s": b / RATE}
        )
        a = b
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # keep the stream in [-1, 1] (a uniform gain changes no SNR)
        audio *= 0.99 / peak
    return Stream(split, audio.astype(np.float32), segments, noise if background else [])


def write_stream(stream: Stream, wav: Path) -> Path:
    """Write ``stream`` as a 16-bit WAV at ``wav`` and its ground truth as ``wav`` with ``.json``; return it.

    Both files are written under temporary names and renamed, so a failure leaves no half-written pair.
    """
    import soundfile as sf

    wav = Path(wav)
    truth = wav.with_suffix(".json")
    doc = {
        "format": "edgekws-stream",
        "format_version": STREAM_FORMAT_VERSION,
        "sample_rate": RATE,
        "composition": stream.composition(),
        "segments": [asdict(s) for s in stream.segments],
        "noise": stream.noise,
    }
    with atomic_path(wav) as tmp:
        sf.write(tmp, stream.audio, RATE, subtype="PCM_16", format="WAV")
    atomic_write_text(truth, json.dumps(doc, indent=1) + "\n")  # last: its presence means the WAV is whole
    return truth


def read_truth(path: Path) -> list[KeywordSpan]:
    """The keyword spans of a stream's ground-truth JSON (written by :func:`write_stream`)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != "edgekws-stream":
        raise ValueError(f"{path}: not an edgekws stream ground truth (format {doc.get('format')!r})")
    return [
        KeywordSpan(s["label"], float(s["start_s"]), float(s["end_s"]))
        for s in doc["segments"]
        if s["kind"] == "keyword"
    ]

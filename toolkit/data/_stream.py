"""Labelled keyword streams: keywords among other words, silence and noise, with the ground truth.

What a streaming keyword spotter meets on a device, with a ground truth to score it by
(:func:`edgekws.toolkit.data.score_stream`), and what a network trained on streams learns from
(``edgekws data stretches``, :mod:`edgekws.toolkit.data._stretches`). One composer (:func:`compose`) lays
words from two pools out in time:

- **keywords** (:class:`Clip` with ``kind == "keyword"``): utterances cut at their speech span (plus 30 ms of
  the recording on each side, 5 ms fades), so the ground truth is the speech;
- **distractors**: other words (never a keyword of the task), from recordings or spoken by a synthesizer;
- **silence stretches** (2-6 s) and random gaps of 0.5-3 s between events;
- **background noise** in segments of 5-20 s: white, pink (1/f), brown (1/f^2), babble (several
  distractor talkers at once) or none, at a random SNR relative to the stream's mean speech power.

The pools come from a corpus made by ``edgekws data synth`` (:func:`corpus_pools`: its split's keyword
utterances, distractor words spoken by the split's voices, and for training its ``_unknown_`` utterances)
or from labelled recordings such as ``shared/data/real-speech/labels.csv`` (:func:`recording_pools`, by
speaker). :func:`build_stream` is the synthetic-corpus stream of ``edgekws data stream``;
:func:`write_stream` saves the audio as a 16-bit WAV and the ground truth next to it as JSON.
Everything is deterministic for a seed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
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


EDGE_S = 0.03  # recording kept on each side of a keyword's speech span
GAP_S = (0.5, 3.0)
SILENCE_S = (2.0, 6.0)
NOISE_SEGMENT_S = (5.0, 20.0)
EVENT_P = {"keyword": 0.5, "distractor": 0.35, "silence": 0.15}
NOISE_P = {"white": 0.4, "pink": 0.4, "none": 0.2}
NOISE_KINDS = ("white", "pink", "brown", "babble", "none")
BABBLE_TALKERS = (3, 6)
LOUD_FRACTION = 0.05  # a recording's speech span: where its smoothed envelope exceeds 5 % of its peak

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
        kinds_heard = sorted({n["type"] for n in self.noise})
        noise_s = {
            t: sum(n["end_s"] - n["start_s"] for n in self.noise if n["type"] == t) for t in kinds_heard
        }
        return {
            "split": self.split,
            "duration_s": round(self.duration_s, 2),
            "keywords": len(kinds["keyword"]),
            "keyword_classes": len({s.label for s in kinds["keyword"]}),
            "keyword_speakers": len({s.speaker for s in kinds["keyword"]}),
            "speakers": sorted({s.speaker for s in self.segments if s.speaker}),
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


@dataclass(frozen=True)
class Clip:
    """A word a stream can hold: who said what, and where its audio comes from.

    From a file (``path``, any rate; with the speech span ``span_s`` when known, else found as the loud part)
    or spoken by a synthesizer on demand (``voice``: a corpus speaker's manifest entry, ``path`` None).
    """

    kind: str  # "keyword" or "distractor"
    label: str  # the keyword's class, or the distractor's word
    speaker: str
    path: Path | None = None
    span_s: tuple[float, float] | None = None  # speech start and end in the file
    voice: dict[str, Any] | None = None  # a corpus speaker, to speak ``label`` (distractors)

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
        """The word at :data:`RATE` (float64) with :data:`EDGE_S` of its recording on each side and 5 ms
        fades, and where its speech starts and ends in it (seconds)."""
        if self.path is None:
            if self.voice is None:
                raise StreamError(f"clip {self.label!r} of {self.speaker}: neither a file nor a voice")
            word = _fade(spoken_word(voice_of(self.voice), self.label, prosody(self.voice, rng)))
            return word, 0.0, word.size / RATE
        audio = _recording(self.path).astype(np.float64)
        if self.span_s is not None:
            a, b = round(self.span_s[0] * RATE), round(self.span_s[1] * RATE)
        else:
            a, b = _loud_part(audio)
        lo, hi = max(0, a - round(EDGE_S * RATE)), min(audio.size, b + round(EDGE_S * RATE))
        return _fade(audio[lo:hi]), (a - lo) / RATE, (b - lo) / RATE


@functools.lru_cache(maxsize=2048)
def _recording(path: Path) -> np.ndarray:
    """A recording as float32 mono at :data:`RATE` (read once, kept: pools reuse their clips; 2048 one-second
    clips are 128 MB)."""
    from edgekws.agent import AudioError, load_audio, resample

    try:
        audio, rate = load_audio(path)
    except AudioError as exc:
        raise StreamError(str(exc)) from exc
    out = resample(np.asarray(audio, np.float64), rate, RATE).astype(np.float32)
    out.flags.writeable = False
    return out


def _loud_part(audio: np.ndarray) -> tuple[int, int]:
    """Where a recording's 10 ms envelope exceeds :data:`LOUD_FRACTION` of its peak (its speech span)."""
    if audio.size == 0:
        return 0, 0
    n = max(1, RATE // 100)
    env = np.convolve(np.abs(audio), np.ones(n) / n, mode="same")
    loud = np.flatnonzero(env > LOUD_FRACTION * float(env.max()))
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, audio.size)


@dataclass(frozen=True)
class Pools:
    """The words of a stream: ``keywords`` are used in a random order, each once before any repeats;
    ``distractors`` are drawn at random (and talk in the babble noise)."""

    keywords: Sequence[Clip]
    distractors: Sequence[Clip] = ()


def _corpus(corpus: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((Path(corpus) / "manifest.json").read_text()))
    except (OSError, ValueError) as exc:
        raise StreamError(f"{corpus}: not a corpus made by edgekws data synth ({exc})") from exc


def corpus_pools(corpus: Path, split: str, distractors: str = "spoken") -> Pools:
    """The pools of a synthetic corpus' ``split``: its keyword utterances (never a filler class), and as
    distractors (``distractors``) words of :data:`DISTRACTORS` spoken by the split's voices (``"spoken"``:
    words the corpus never holds, for test streams), its ``_unknown_`` utterances (``"unknown"``: what
    training stretches use), both, or none (``"none"``)."""
    if split not in ("train", "val", "test"):
        raise StreamError(f"split must be train, val or test, got {split!r}")
    corpus = Path(corpus)
    manifest = _corpus(corpus)
    if manifest.get("sample_rate", RATE) != RATE:
        raise StreamError(f"{corpus}: {manifest.get('sample_rate')} Hz, expected {RATE}; re-make the corpus")
    utts = [u for u in manifest["utterances"] if u["split"] == split and "speech_s" in u]
    keywords = [
        Clip(
            "keyword",
            u["class"],
            u["speaker"],
            corpus / u["wav"],
            (u["lead_silence_s"], u["lead_silence_s"] + u["speech_s"]),
        )
        for u in utts
        if not u["class"].startswith("_")
    ]
    if not keywords:
        raise StreamError(f"{corpus}/manifest.json: no {split} utterances with timings; re-make the corpus")
    others: list[Clip] = []
    if distractors in ("unknown", "both"):
        others += [
            Clip(
                "distractor",
                u.get("text") or "_unknown_",
                u["speaker"],
                corpus / u["wav"],
                (u["lead_silence_s"], u["lead_silence_s"] + u["speech_s"]),
            )
            for u in utts
            if u["class"] == "_unknown_" and u.get("speech_s", 0) > 0
        ]
    if distractors in ("spoken", "both"):
        speakers = [s for s in manifest["speakers"] if s["split"] == split and s["language"] in DISTRACTORS]
        others += [
            Clip("distractor", word, spk["id"], voice=spk)
            for spk in speakers
            for word in DISTRACTORS[spk["language"]]
        ]
    if distractors not in ("spoken", "unknown", "both", "none"):
        raise StreamError(f"distractors must be spoken, unknown, both or none, got {distractors!r}")
    return Pools(keywords, others)


def recording_pools(
    recordings: Sequence[Any], keywords: Sequence[str], speakers: Sequence[str] | None = None
) -> Pools:
    """The pools of labelled recordings (:class:`edgekws.toolkit.data._recordings.Recording` rows, e.g. of
    ``shared/data/real-speech/labels.csv``): the clips whose label maps onto ``keywords`` are keywords,
    every other word a distractor (silence and background noise files are left out); only ``speakers``
    when given. Speech spans are found as each recording's loud part."""
    from edgekws.toolkit.data._recordings import BACKGROUND, SILENCE, map_label

    chosen = set(speakers) if speakers is not None else None
    kw: list[Clip] = []
    others: list[Clip] = []
    for r in recordings:
        if r.label in (BACKGROUND, SILENCE) or (chosen is not None and r.speaker not in chosen):
            continue
        label = map_label(r.label, list(keywords), unknown="drop")
        if label is not None:
            kw.append(Clip("keyword", label, r.speaker, r.path))
        else:
            others.append(Clip("distractor", r.label, r.speaker, r.path))
    if not kw:
        raise StreamError(f"no recording of {list(keywords)} by the speakers {sorted(chosen or [])}")
    return Pools(kw, others)


def _noise(kind: str, n: int, rng: np.random.Generator, talk: Callable[[], np.ndarray]) -> np.ndarray:
    """``n`` samples of background noise of ``kind`` (unit power), ``talk()`` giving babble words."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "brown":
        x = np.cumsum(rng.standard_normal(n))
        w = min(RATE // 10, n)  # a segment cut short by the stretch's end may be under 100 ms
        x -= np.convolve(x, np.ones(w) / w, mode="same")  # no drift below ~10 Hz
        return x / (x.std() + 1e-12)
    if kind == "babble":
        out = np.zeros(n)
        for _ in range(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))):
            pos = int(rng.integers(0, RATE // 2))
            while pos < n:
                word = talk()
                if word.size:
                    word = word / np.sqrt(np.mean(word**2) + 1e-12)
                    m = min(word.size, n - pos)
                    out[pos : pos + m] += word[:m]
                pos += word.size + int(rng.integers(RATE // 20, RATE // 3))
        return out / (out.std() + 1e-12)
    raise StreamError(f"noise kinds are {', '.join(NOISE_KINDS)}, got {kind!r}")


def compose(
    pools: Pools,
    seconds: float,
    rng: np.random.Generator,
    *,
    split: str = "",
    snr_db: tuple[float, float] = (10.0, 30.0),
    background: bool = True,
    event_p: dict[str, float] | None = None,
    noise_p: dict[str, float] | None = None,
    word_gain_db: tuple[float, float] = (0.0, 0.0),
    lead_s: float = 0.5,
) -> Stream:
    """A stream of ``seconds`` made of the words of ``pools`` (module docstring).

    ``event_p`` (default :data:`EVENT_P`) is the chance of each event kind (keys ``keyword``, ``distractor``,
    ``silence``; missing kinds never occur); ``noise_p`` (default :data:`NOISE_P`) of each noise kind per
    segment; each word is scaled by a random gain in ``word_gain_db``; the first event starts after
    ``lead_s``. ``background=False`` makes the same stream (same words at the same times) without the noise.
    """
    probs = dict(EVENT_P if event_p is None else event_p)
    unknown = set(probs) - set(EVENT_P)
    if unknown or not probs or min(probs.values()) < 0 or sum(probs.values()) <= 0:
        raise StreamError(f"event_p needs non-negative chances of {sorted(EVENT_P)}, got {probs}")
    nprobs = dict(NOISE_P if noise_p is None else noise_p)
    if set(nprobs) - set(NOISE_KINDS) or not nprobs or sum(nprobs.values()) <= 0:
        raise StreamError(f"noise_p needs non-negative chances of {list(NOISE_KINDS)}, got {nprobs}")
    if not seconds > 0:
        raise StreamError(f"a stream must be longer than 0 s, got {seconds}")
    if probs.get("distractor", 0) > 0 and not pools.distractors:
        raise StreamError("the stream should hold distractor words but the pools have none")
    if nprobs.get("babble", 0) > 0 and not pools.distractors:
        raise StreamError("babble noise is made of distractor words but the pools have none")
    order = [pools.keywords[int(i)] for i in rng.permutation(len(pools.keywords))]
    total = round(seconds * RATE)
    speech = np.zeros(total)
    segments: list[Segment] = []
    t, k = lead_s, 0
    kinds = list(probs)
    p = [probs[x] / sum(probs.values()) for x in kinds]
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
            clip = order[k % len(order)]
            k += 1
        else:
            clip = pools.distractors[int(rng.integers(len(pools.distractors)))]
        piece, s0, s1 = clip.render(rng)
        piece = piece * 10 ** (float(rng.uniform(*word_gain_db)) / 20)
        i = round(t * RATE)
        if i + piece.size > total - RATE // 2:
            break
        speech[i : i + piece.size] += piece
        segments.append(Segment(kind, clip.label, clip.speaker, i / RATE + s0, i / RATE + s1))
        t = (i + piece.size) / RATE + float(rng.uniform(*GAP_S))
    words = [s for s in segments if s.kind != "silence"]
    powers = [np.mean(speech[round(s.start_s * RATE) : round(s.end_s * RATE)] ** 2) for s in words]
    ref_power = float(np.mean([x for x in powers if x > 0])) if any(x > 0 for x in powers) else 1e-4
    audio = speech.copy()
    noise: list[dict[str, Any]] = []
    a = 0
    ntypes = list(nprobs)
    nprob = [nprobs[x] / sum(nprobs.values()) for x in ntypes]

    def talk() -> np.ndarray:
        return pools.distractors[int(rng.integers(len(pools.distractors)))].render(rng)[0]

    while a < total:
        b = min(total, a + round(rng.uniform(*NOISE_SEGMENT_S) * RATE))
        kind = ntypes[int(rng.choice(len(ntypes), p=nprob))]
        snr = float(rng.uniform(*snr_db))
        if kind != "none":
            x = _noise(kind, b - a, rng, talk)
            if background:
                audio[a:b] += _fade(x) * math.sqrt(ref_power / 10 ** (snr / 10))
        noise.append(
            {"type": kind, "snr_db": snr if kind != "none" else None, "start_s": a / RATE, "end_s": b / RATE}
        )
        a = b
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:  # keep the stream in [-1, 1] (a uniform gain changes no SNR)
        audio *= 0.99 / peak
    return Stream(split, audio.astype(np.float32), segments, noise if background else [])


def build_stream(
    corpus: Path,
    split: str,
    minutes: float,
    seed: int,
    snr_db: tuple[float, float] = (10.0, 30.0),
    background: bool = True,
    event_p: dict[str, float] | None = None,
) -> Stream:
    """A deterministic stream of a synthetic corpus' ``split``: its keywords, distractor words of
    :data:`DISTRACTORS` spoken by its voices, silence and white/pink noise (:func:`compose`).

    ``background=False`` makes the same stream (same words at the same times) without the background noise.
    ``event_p`` overrides :data:`EVENT_P`, the chance of each event kind.
    """
    if split not in ("train", "val", "test"):
        raise StreamError(f"split must be train, val or test, got {split!r}")
    if minutes <= 0:
        raise StreamError(f"minutes must be > 0, got {minutes}")
    wants_distractors = (EVENT_P if event_p is None else event_p).get("distractor", 0) > 0
    pools = corpus_pools(corpus, split, "spoken" if wants_distractors else "none")
    if wants_distractors and not pools.distractors:
        raise StreamError(f"{corpus}: no {split} speakers of {sorted(DISTRACTORS)} to speak distractors")
    rng = np.random.default_rng(np.random.SeedSequence([seed, ["train", "val", "test"].index(split)]))
    return compose(
        pools, minutes * 60, rng, split=split, snr_db=snr_db, background=background, event_p=event_p
    )


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

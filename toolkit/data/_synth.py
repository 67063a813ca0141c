"""A synthetic spoken-keyword corpus from every speech synthesizer here, in the shape of SHD or SSC.

Every utterance is a word spoken by a *speaker* (an engine voice: an espeak-ng voice + variant such as
``en-gb+f3``, a flite voice such as ``flite-slt``, a festival voice such as ``festival-kal``, one of the
derived speakers of a neural voice such as ``hibari-heart+m3`` or ``piper-joe+f2``;
:mod:`edgekws.toolkit.data._engines`) at a random tempo (and, for espeak-ng, pitch and amplitude), changed at
the audio level by the augmentations of a policy (formants, pitch, tempo, room, band limit, EQ, gain,
clipping; :mod:`edgekws.toolkit.data._augment`), placed at a random onset in a clip of exactly 1.0 s at
16 kHz with white, pink or babble noise at a random SNR. Speakers are split 70/10/20 into
train/validation/test per language and engine family by the person behind the voice, so no test speaker
is heard in training (as in SHD). The clip is encoded by the agent's front-end (1000 steps at 1 ms with the
default spec) and stored as ``train.h5``, ``val.h5``, ``test.h5`` in the SHD layout with per-sample
metadata (engine, speaker, voice, gender, accent, augmentations); the 16-bit WAVs form a Speech
Commands-style folder under ``wavs/``; ``manifest.json`` records every utterance's parameters. The same seed
gives byte-identical spikes and manifest, whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data import _augment, _engines
from edgekws.toolkit.data._augment import AugmentPolicy, pink_noise
from edgekws.toolkit.data._engines import (
    DEFAULT_ENGINES,
    ENGINES,
    ENGLISH_VOICES,
    ESPEAK_RATE,
    GERMAN_VOICES,
    VARIANTS,
    SynthError,
    Voice,
)
from edgekws.toolkit.data._output import folder_in_place, manifest_text
from edgekws.toolkit.data._recordings import FORMAT as IMPORT_FORMAT
from edgekws.toolkit.data._shd import write_shd
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset, events_of

__all__ = ["ENGLISH_VOICES", "ESPEAK_RATE", "GERMAN_VOICES", "VARIANTS", "SynthError", "pink_noise"]

FORMAT = "edgekws-synth"
FORMAT_VERSION = 2  # 2: engines, augmentations, per-sample metadata
SAMPLE_RATE = 16000
DURATION_S = 1.0  # every clip is padded/cropped to exactly this long
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {
    "val": 0.1,
    "test": 0.2,
}  # of each language's (and engine family's) persons; the rest train
TASKS = ("en-digits", "en-commands", "digits", "commands")
DEFAULT_PER_CLASS = {"digits": 300, "commands": 100, "en-digits": 300, "en-commands": 300}
# The reference tasks (with _unknown_ and _silence_, every engine, the default augmentations) and the older
# tasks kept for compatibility (espeak-ng only, no augmentation unless asked).
REFERENCE_TASKS = ("en-digits", "en-commands")

DIGITS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_DE = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
COMMANDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
COMMANDS = (
    *COMMANDS_10,
    *DIGITS_EN,
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip

# Filler classes, named as the agent's default ``ignore_labels``: "_unknown_" is another word (these lists;
# edgekws.toolkit.data._stream's distractors are different words), "_silence_" is background noise alone.
# They teach a streaming spotter what is not a keyword.
UNKNOWN_CLASS, SILENCE_CLASS = "_unknown_", "_silence_"
# fmt: off
FILLER_WORDS = {
    "en": (
        "apple", "river", "purple", "station", "blanket", "candle", "mountain", "pocket", "yesterday",
        "village", "engine", "market", "silver", "holiday", "button", "travel", "letter", "summer", "basket",
        "island", "number", "twelve", "fifteen", "sixty", "ninety", "often", "tuesday", "fourteen", "pencil",
        "freedom",
    ),
    "de": (
        "apfel", "fluss", "blume", "bahnhof", "kerze", "berg", "tasche", "gestern", "dorf", "motor", "markt",
        "silber", "urlaub", "knopf", "reise", "brief", "sommer", "korb", "insel", "nummer", "dreizehn",
        "fünfzehn", "sechzig", "neunzig", "vierzig", "siebzehn", "wolke", "stuhl", "lampe", "ferien",
    ),
}
# fmt: on
# Speech Commands words that `edgekws data stream` uses as distractors: never _unknown_ words.
_STREAM_WORDS = ("house",)
SILENCE_DBFS = (-65.0, -20.0)  # level of the noise in a "_silence_" clip, per utterance

RATE_WPM = (130, 190)  # espeak-ng speaker's base rate; each utterance adds up to ±20
PITCH = (30, 70)  # espeak-ng speaker's base pitch (0..99); each utterance adds up to ±10
AMPLITUDE = (70, 130)  # espeak -a, per utterance
STRETCH = (0.85, 1.2)  # flite/festival/neural speaker's base duration stretch; each utterance x exp(±0.1)
PEAK = (0.25, 0.9)  # flite/festival/neural output peak, per utterance
LEAD_SILENCE_S = (0.05, 0.30)  # onset of the word in the clip, per utterance


@dataclass(frozen=True)
class Word:
    name: str  # class name, ASCII: "en-seven", "de-fuenf", "marvin"
    text: str  # what the engine says
    language: str  # "en" or "de"


@dataclass(frozen=True)
class Speaker:
    id: str  # "en-gb+f3", "flite-slt", "festival-kal"
    voice: str  # the engine's voice name
    variant: str  # espeak-ng variant ("" for other engines)
    language: str
    gender: str
    rate: int  # espeak-ng base rate (wpm); 0 for other engines
    pitch: int  # espeak-ng base pitch; 0 for other engines
    split: str
    engine: str = "espeak-ng"
    accent: str = ""
    person: str = ""  # the unit of the split: flite and festival voices of one recorded person share it
    stretch: float = 1.0  # flite/festival base duration stretch


def vocabulary(task: str) -> list[Word]:
    """The keyword classes of ``task`` (the filler classes come on top, :func:`plan_corpus`).

    "en-digits": zero..nine; "en-commands": the ten Speech Commands command words (yes .. go); "digits":
    20 classes, English then German, like SHD; "commands": the 35 Speech Commands words, like SSC.
    """
    if task == "en-digits":
        return [Word(w, w, "en") for w in DIGITS_EN]
    if task == "en-commands":
        return [Word(w, w, "en") for w in COMMANDS_10]
    if task == "digits":
        return [Word(f"en-{w}", w, "en") for w in DIGITS_EN] + [
            Word("de-" + w.replace("ü", "ue"), w, "de") for w in DIGITS_DE
        ]
    if task == "commands":
        return [Word(w, w, "en") for w in COMMANDS]
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def class_names(task: str) -> list[str]:
    """Every class of ``task`` in label order: the keywords, then _unknown_ and _silence_ for the
    reference tasks."""
    names = [w.name for w in vocabulary(task)]
    return [*names, UNKNOWN_CLASS, SILENCE_CLASS] if task in REFERENCE_TASKS else names


def unknown_words(task: str, language: str) -> tuple[str, ...]:
    """The words said as "_unknown_": for the reference tasks every English filler word and Speech Commands
    word that is not a keyword of the task (nor a stream distractor); otherwise the language's fillers."""
    if task not in REFERENCE_TASKS:
        return FILLER_WORDS[language]
    keywords = {w.text for w in vocabulary(task)}
    pool = set(FILLER_WORDS["en"]) | set(COMMANDS)
    return tuple(sorted(pool - keywords - set(_STREAM_WORDS)))


def _split_counts(n: int) -> dict[str, int]:
    """Utterances per split for one class: 10 % validation, 20 % test, at least one each from n >= 3."""
    val = round(n * SPLIT_FRACTIONS["val"])
    test = round(n * SPLIT_FRACTIONS["test"])
    if n >= 3:
        val, test = max(val, 1), max(test, 1)
    return {"train": n - val - test, "val": val, "test": test}


def _split_persons(
    persons: list[str], rng: np.random.Generator, coverage: dict[str, int] | None = None
) -> dict[str, str]:
    """20 % of ``persons`` test, 10 % validation (at least one each), the rest train, at random; persons
    with voices in more engines (``coverage``) go to test and validation first, so those splits hear as many
    engines as they can (flite and festival share kal and slt). Keys in the order drawn."""
    order = rng.permutation(len(persons))
    if coverage:
        order = np.array(sorted(order.tolist(), key=lambda k: -coverage[persons[k]]), dtype=np.int64)
    n_test = max(1, round(len(persons) * SPLIT_FRACTIONS["test"]))
    n_val = max(1, round(len(persons) * SPLIT_FRACTIONS["val"]))
    return {
        persons[int(k)]: "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        for rank, k in enumerate(order)
    }


def _excluded(voice: Voice, exclude: Sequence[str]) -> bool:
    """Whether ``exclude`` names the voice's engine, id, voice name or person."""
    return bool({voice.engine, voice.id, voice.voice, voice.person} & set(exclude))


def _speaker(v: Voice, split: str, rate: int = 0, pitch: int = 0, stretch: float = 1.0) -> Speaker:
    return Speaker(v.id, v.voice, v.variant, v.language, v.gender, rate, pitch, split, v.engine, v.accent,
                   v.person, stretch)  # fmt: skip


def make_speakers(
    languages: Iterable[str],
    rng: np.random.Generator,
    engines: Sequence[str] = ("espeak-ng",),
    exclude: Sequence[str] = (),
    engine_rng: np.random.Generator | None = None,
) -> list[Speaker]:
    """Every voice of ``engines`` in the languages (less ``exclude``), each with a base delivery and a split.

    Persons are split per language, espeak-ng's voice+variant pairs apart from flite's and festival's
    recorded persons, so every split hears every language and both families; no person is in two splits.
    espeak-ng speakers draw from ``rng`` (the corpus before engines drew the same), the others from
    ``engine_rng``.
    """
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SynthError(f"engine(s) {unknown} unknown; choose from {', '.join(ENGINES)}")
    if "kokoro-mix" in engines and "kokoro" not in engines:
        raise SynthError(
            "kokoro-mix blends kokoro's voices within each split, so it needs kokoro among the engines "
            "(give kokoro engine weight 0 to hear only the blends)"
        )
    engine_rng = engine_rng if engine_rng is not None else np.random.default_rng(0)
    speakers: list[Speaker] = []
    for language in sorted(set(languages)):
        if "espeak-ng" in engines:
            pool = {v.person: v for v in _engines.voices("espeak-ng", language)}
            split_of = _split_persons(list(pool), rng)
            for v in (pool[person] for person in split_of):  # in the order drawn, as before engines
                rate = int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1))
                pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
                if not _excluded(v, exclude):
                    speakers.append(_speaker(v, split_of[v.person], rate=rate, pitch=pitch))
        recorded = [
            v
            for e in engines
            if e not in ("espeak-ng", "kokoro-mix")
            for v in _engines.voices(e, language)
            if not _excluded(v, exclude)
        ]
        split_of = {}
        if recorded:
            engines_of: dict[str, set[str]] = {}
            for v in recorded:
                engines_of.setdefault(v.person, set()).add(v.engine)
            split_of = _split_persons(
                sorted(engines_of), engine_rng, {p: len(e) for p, e in engines_of.items()}
            )
            for v in recorded:
                stretch = round(float(engine_rng.uniform(*STRETCH)), 3)
                speakers.append(_speaker(v, split_of[v.person], stretch=stretch))
        if "kokoro-mix" in engines:
            speakers += _blends(language, split_of, engine_rng, exclude)
    return speakers


def _blends(
    language: str, split_of: dict[str, str], rng: np.random.Generator, exclude: Sequence[str]
) -> list[Speaker]:
    """kokoro-mix's speakers: each blend of two kokoro persons of one split, in that split (a blend of a
    training and a test person would put part of a test voice in training: none is made); blends with an
    excluded or absent person are left out. Drawn after every other engine, so corpora without blends
    are as before."""
    out = []
    for v in _engines.voices("kokoro-mix", language):
        a, b = v.person.split("+")
        if _excluded(v, exclude) or a not in split_of or b not in split_of or split_of[a] != split_of[b]:
            continue
        stretch = round(float(rng.uniform(*STRETCH)), 3)
        out.append(_speaker(v, split_of[a], stretch=stretch))
    return out


def voice_of(speaker: Speaker | dict[str, Any]) -> Voice:
    """The engine voice of a speaker (or of a manifest's speaker row; older rows are espeak-ng voices)."""
    d = asdict(speaker) if isinstance(speaker, Speaker) else speaker
    return Voice(
        d["id"], d.get("engine", "espeak-ng"), d["voice"], d["variant"], d["language"], d["gender"],
        d.get("accent", ""), d.get("person") or d["id"],
    )  # fmt: skip


def prosody(speaker: Speaker | dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One utterance's delivery around the speaker's: espeak-ng rate, pitch and amplitude
    (:func:`delivery`), flite/festival/hibari/piper duration stretch and output peak, and the neural engines'
    F0 and formant scales around their speaker's (:data:`edgekws.toolkit.data._engines.NEURAL_VARIANTS`)."""
    d = asdict(speaker) if isinstance(speaker, Speaker) else speaker
    if d.get("engine", "espeak-ng") == "espeak-ng":
        return delivery(d["rate"], d["pitch"], rng)
    said = {
        "stretch": round(float(d["stretch"] * np.exp(rng.uniform(-0.1, 0.1))), 3),
        "peak": round(float(rng.uniform(*PEAK)), 3),
    }
    if d["engine"] in _engines.NEURAL_VARIANTS:
        f0, formant, _ = _engines.NEURAL_VARIANTS[d["engine"]][d["variant"]]
        jitter_f0, jitter_formant = _engines.NEURAL_JITTER
        said["f0"] = round(float(f0 * np.exp(rng.uniform(-jitter_f0, jitter_f0))), 3)
        said["formant"] = round(float(formant * np.exp(rng.uniform(-jitter_formant, jitter_formant))), 3)
    return said


def plan_corpus(
    task: str,
    per_class: int,
    seed: int,
    classes: list[str] | None = None,
    fillers: bool = False,
    engines: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    engine_weights: dict[str, float] | None = None,
    augment: AugmentPolicy | str | dict[str, Any] | None = None,
) -> tuple[list[Word], list[Speaker], list[dict[str, Any]]]:
    """The words, speakers and every utterance's parameters; a pure function of its arguments.

    ``classes`` restricts the keywords to those class names (for small test corpora). ``fillers`` adds the
    classes "_unknown_" (other words, :func:`unknown_words`) and "_silence_" (noise alone) after the
    keywords, with ``per_class`` utterances each (always on for the reference tasks); the keywords'
    utterances are the same with or without. ``engines`` (default: DEFAULT_ENGINES for the reference
    tasks, espeak-ng for the others) less ``exclude`` (engines, voice ids, voice names or persons) speak;
    each utterance picks an engine by ``engine_weights`` (default equal), then the engine's next speaker of
    its split. ``augment`` is a policy or preset name (default: "default" for the reference tasks, else
    "none").
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    words = vocabulary(task)
    reference = task in REFERENCE_TASKS
    fillers = fillers or reference
    engines = list(engines) if engines is not None else list(DEFAULT_ENGINES if reference else ("espeak-ng",))
    policy = _augment.policy(augment if augment is not None else "default" if reference else "none")
    if classes is not None:
        unknown = sorted(set(classes) - {w.name for w in words})
        if unknown:
            raise ValueError(
                f"unknown class(es) {unknown} for task {task!r}; known: {[w.name for w in words]}"
            )
        words = [w for w in words if w.name in classes]
    weights = {e: 1.0 for e in engines} | {k: float(v) for k, v in (engine_weights or {}).items()}
    bad = sorted(k for k, v in weights.items() if k not in ENGINES or v < 0)
    if bad:
        raise SynthError(
            f"engine weights must name engines ({', '.join(ENGINES)}) with weights >= 0, got {bad}"
        )
    rng = np.random.default_rng(seed)
    engine_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE9]))
    aug_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA6]))
    speakers = make_speakers((w.language for w in words), rng, engines, exclude, engine_rng)
    index_of = {s.id: i for i, s in enumerate(speakers)}
    queues: dict[tuple[str, str, str], list[Speaker]] = {}
    cursor: dict[tuple[str, str, str], int] = {}
    for s in speakers:
        queues.setdefault((s.language, s.split, s.engine), []).append(s)
    for w in words:
        for split in SPLITS:
            if not any(key[:2] == (w.language, split) for key in queues):
                raise SynthError(
                    f"no {w.language} speaker left for the {split} split (engines {engines}, excluded "
                    f"{list(exclude)}): every split needs a person of its own (hibari's and piper's voices "
                    "are one person each); name more engines, such as espeak-ng, or exclude fewer voices"
                )
    utterances: list[dict[str, Any]] = []
    take_counts: dict[tuple[str, str], int] = {}

    def pick(language: str, split: str) -> Speaker:
        """The next speaker of (language, split) of an engine drawn by weight (no draw for one engine)."""
        options = [e for e in engines if (language, split, e) in queues and weights.get(e, 0) > 0]
        if not options:
            options = [e for e in engines if (language, split, e) in queues]
        if len(options) == 1:
            engine = options[0]
        else:
            p = np.array([weights[e] for e in options])
            engine = options[int(engine_rng.choice(len(options), p=p / p.sum()))]
        key = (language, split, engine)
        k = cursor.get(key, 0)
        cursor[key] = k + 1
        return queues[key][k % len(queues[key])]

    def say(label: int, name: str, text: str | None, language: str, split: str) -> dict[str, Any]:
        """The next utterance of class ``name`` by the next speaker of (language, split); ``text`` None:
        a random _unknown_ word of the language."""
        speaker = pick(language, split)
        n_said = take_counts.get((name, speaker.id), 0)
        take_counts[(name, speaker.id)] = n_said + 1
        if text is None:
            pool = unknown_words(task, language)
            text = pool[int(rng.integers(len(pool)))]
        utterance = {
            "index": len(utterances),
            "split": split,
            "label": label,
            "class": name,
            "text": text,
            "language": language,
            "speaker": speaker.id,
            "speaker_index": index_of[speaker.id],
            "engine": speaker.engine,
            "voice": speaker.voice,
            "variant": speaker.variant,
            **prosody(speaker, rng if speaker.engine == "espeak-ng" else engine_rng),
            "lead_silence_s": round(float(rng.uniform(*LEAD_SILENCE_S)), 4),
            "snr_db": round(float(rng.uniform(*policy.snr_db)), 2),
            "wav": f"wavs/{name}/{speaker.id}_nohash_{n_said}.wav",
        }
        drawn = _augment.draw(policy, aug_rng)
        noise = drawn.pop("noise")
        if text:
            utterance["noise"] = noise["kind"]
        if noise["kind"] == "babble" and text:
            babble_words = unknown_words(task, language)  # never a keyword: the label stays true
            talkers = []
            for _ in range(noise["talkers"]):
                other = pick(language, split)
                said = prosody(other, aug_rng)
                talkers.append(
                    {"text": babble_words[int(aug_rng.integers(len(babble_words)))], "speaker": other.id,
                     "engine": other.engine, "voice": other.voice, "variant": other.variant, **said,
                     "offset_s": round(float(aug_rng.uniform(*_augment.BABBLE_OFFSET_S)), 4)}
                )  # fmt: skip
            utterance["babble"] = talkers
        if text:  # _silence_ clips get the channel but no voice or room
            utterance["augment"] = drawn
        else:
            utterance["augment"] = {k: v for k, v in drawn.items() if k in ("band", "eq", "gain")}
        utterances.append(utterance)
        return utterance

    for label, word in enumerate(words):
        for split, count in _split_counts(per_class).items():
            for _ in range(count):
                say(label, word.name, word.text, word.language, split)
    if fillers:
        languages = sorted({w.language for w in words})
        for name in (UNKNOWN_CLASS, SILENCE_CLASS):
            label = len(words)
            words.append(Word(name, "", "any"))
            for split, count in _split_counts(per_class).items():
                for _ in range(count):
                    language = languages[int(rng.integers(len(languages)))]
                    u = say(label, name, None if name == UNKNOWN_CLASS else "", language, split)
                    u["noise_dbfs"] = round(float(rng.uniform(*SILENCE_DBFS)), 2)
                    kind = "pink" if rng.random() < 0.5 else "white"
                    # _silence_ is white or pink noise; so are _unknown_ words under a white-noise policy
                    # (as before augmentations), else their noise is the policy's
                    if name == SILENCE_CLASS or tuple(policy.noise_weights[1:]) == (0.0, 0.0):
                        u["noise"] = kind
    for u in utterances:
        u["augment_names"] = _augment.names({**u["augment"], "noise": {"kind": u.get("noise", "white")}})
    return words, speakers, utterances


def espeak_version() -> str:
    return _engines.version("espeak-ng")


def speak(text: str, voice: str, variant: str, rate: int, pitch: int, amplitude: int) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as float64 samples at 22050 Hz."""
    v = Voice(f"{voice}+{variant}", "espeak-ng", voice, variant, "", "", "", "")
    return _engines.speak(v, text, {"rate": rate, "pitch": pitch, "amplitude": amplitude})[0]


def delivery(rate: int, pitch: int, rng: np.random.Generator) -> dict[str, int]:
    """One utterance's espeak-ng rate, pitch and amplitude around a speaker's base rate and pitch."""
    return {
        "rate": int(np.clip(rate + rng.integers(-20, 21), 80, 450)),
        "pitch": int(np.clip(pitch + rng.integers(-10, 11), 0, 99)),
        "amplitude": int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1)),
    }


def spoken_word(voice: Voice, text: str, said: dict[str, Any]) -> np.ndarray:
    """``voice`` saying ``text`` at 16 kHz (float64), trimmed to where it exceeds 1 % of its peak."""
    from edgekws.agent import resample

    audio, rate = _engines.speak(voice, text, said)
    speech = resample(audio, rate, SAMPLE_RATE)
    if not len(speech):
        return speech
    loud = np.flatnonzero(np.abs(speech) > 0.01 * max(float(np.abs(speech).max()), 1e-9))
    return speech[loud[0] : loud[-1] + 1] if len(loud) else speech[:0]


def _said(utt: dict[str, Any]) -> dict[str, Any]:
    engine = utt.get("engine", "espeak-ng")
    if engine == "espeak-ng":
        keys: tuple[str, ...] = ("rate", "pitch", "amplitude")
    elif engine in _engines.NEURAL_VARIANTS:
        keys = ("stretch", "peak", "f0", "formant")
    else:
        keys = ("stretch", "peak")
    return {k: utt[k] for k in keys}


def _talker_voice(d: dict[str, Any]) -> Voice:
    return Voice(d["speaker"], d.get("engine", "espeak-ng"), d["voice"], d["variant"], "", "", "", "")


def render(utt: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """The utterance's 1.0 s clip as int16 at 16 kHz, and the measured speech/silence durations.

    The word (:func:`spoken_word`) gets its voice augmentations (formant, pitch, tempo), is placed at its
    onset, heard in its room, mixed with its noise at its SNR (of the dry word's power) and sent through
    its channel (band, EQ, gain, clipping); :mod:`edgekws.toolkit.data._augment`.
    """
    augment = utt.get("augment", {})
    total = round(DURATION_S * SAMPLE_RATE)
    if utt["text"]:
        speech = spoken_word(_talker_voice(utt), utt["text"], _said(utt))
        method = _engines.F0_METHOD.get(utt.get("engine", "espeak-ng"), "dio")
        speech = _augment.voice_of(speech, SAMPLE_RATE, augment, f0_method=method)
    else:  # a "_silence_" clip: noise alone, at the utterance's noise_dbfs
        speech = np.zeros(0)
    speech = speech[:total]  # a word longer than the clip is cropped at the end
    lead = min(round(utt["lead_silence_s"] * SAMPLE_RATE), total - len(speech))
    clip = np.zeros(total)
    clip[lead : lead + len(speech)] = speech
    if len(speech):
        power = float(np.mean(speech**2))
    else:
        power = 10 ** (utt.get("noise_dbfs", -60.0) / 10) * 10 ** (utt["snr_db"] / 10)
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, utt["index"]]))
    kind = utt.get("noise", "white")
    if kind == "babble":
        words = ((spoken_word(_talker_voice(t), t["text"], _said(t)), t["offset_s"]) for t in utt["babble"])
        noise = _augment.babble(words, SAMPLE_RATE, total)
    elif kind == "pink":
        noise = pink_noise(total, noise_rng)
    else:
        noise = noise_rng.standard_normal(total)
    clip = _augment.surroundings(clip, SAMPLE_RATE, augment, power, noise, utt["snr_db"])
    pcm = np.round(np.clip(clip, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    timing = {
        "lead_silence_s": lead / SAMPLE_RATE,
        "speech_s": len(speech) / SAMPLE_RATE,
        "trail_silence_s": (total - lead - len(speech)) / SAMPLE_RATE,
    }
    return pcm, timing


def _worker(
    job: tuple[dict[str, Any], int, dict[str, Any], str],
) -> tuple[int, dict[str, float], np.ndarray, np.ndarray]:
    """Render, write the WAV and encode one utterance; returns (index, timing, spike times, units)."""
    import soundfile as sf

    from edgekws.agent import FrontendSpec, encode

    utt, seed, spec_dict, root = job
    spec = FrontendSpec.from_dict(spec_dict)
    pcm, timing = render(utt, seed)
    wav = Path(root) / utt["wav"]
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, pcm, SAMPLE_RATE, subtype="PCM_16")
    raster = np.asarray(encode(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, spec, resample=False))
    times, units = events_of(raster[: num_steps(spec)], spec.dt_ms / 1000.0)
    return utt["index"], timing, times, units


def num_steps(spec: Any) -> int:
    """Time steps per clip: 1000 at the default 1 ms."""
    return round(DURATION_S * 1000 / spec.dt_ms)


def _versions(engines: Sequence[str], augmented: bool) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], **{e: _engines.version(e) for e in engines}}
    dists = ["edgekws", "numpy", "scipy", "soundfile", "h5py"]
    if augmented:
        dists += ["pyworld", "pyroomacoustics", "audiomentations"]
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def synthesize(
    out: str | os.PathLike[str],
    task: str = "en-digits",
    per_class: int | None = None,
    seed: int = 0,
    workers: int = 2,
    force: bool = False,
    classes: list[str] | None = None,
    spec: Any = None,
    progress: Callable[[int, int], None] | None = None,
    fillers: bool = False,
    engines: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    engine_weights: dict[str, float] | None = None,
    augment: AugmentPolicy | str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make a synthetic corpus in ``out``; returns the manifest.

    ``fillers``, ``engines``, ``exclude``, ``engine_weights`` and ``augment`` as in :func:`plan_corpus`.

    Works in a temporary folder beside ``out`` and moves it into place at the end, so an interrupted
    run leaves no half corpus. Refuses a non-empty ``out`` unless ``force``. ``progress(done, total)``
    is called after each utterance.
    """
    from edgekws.agent import FrontendSpec

    out = Path(out)
    per_class = DEFAULT_PER_CLASS[task] if per_class is None and task in DEFAULT_PER_CLASS else per_class
    words, speakers, utterances = plan_corpus(
        task, per_class or 0, seed, classes, fillers, engines, exclude, engine_weights, augment
    )
    used_engines = sorted({s.engine for s in speakers}, key=ENGINES.index)
    policy = _augment.policy(
        augment if augment is not None else "default" if task in REFERENCE_TASKS else "none"
    )
    spec = spec if spec is not None else FrontendSpec()
    spec_dict = spec.to_dict()
    versions = _versions(used_engines, policy != _augment.PRESETS["none"])
    dt = spec.dt_ms / 1000.0
    with folder_in_place(out, force, SynthError) as tmp:
        events: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        jobs = [(u, seed, spec_dict, str(tmp)) for u in utterances]
        results: Iterable[tuple[int, dict[str, float], np.ndarray, np.ndarray]]
        if workers <= 1:
            results = map(_worker, jobs)
            pool = None
        else:
            import multiprocessing

            from edgekws.toolkit._interrupt import die_with_parent

            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,  # no orphaned workers, even if this process is SIGKILLed
            )
            results = pool.map(_worker, jobs, chunksize=4)
        try:
            for done, (index, timing, times, units) in enumerate(results, start=1):
                utterances[index].update({k: round(v, 6) for k, v in timing.items()})
                utterances[index]["num_spikes"] = len(times)
                events[index] = (times, units)
                if progress is not None:
                    progress(done, len(jobs))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            _engines.close()
        meta_info = {
            "gender": [s.gender for s in speakers],
            "voice": [s.voice for s in speakers],
            "variant": [s.variant for s in speakers],
            "engine": [s.engine for s in speakers],
            "person": [s.person or s.id for s in speakers],
        }
        names = [w.name for w in words]
        accent = {s.id: s.accent for s in speakers}
        for split in SPLITS:
            members = [u for u in utterances if u["split"] == split]
            for position, u in enumerate(members):
                u["sample_index"] = position
            attrs = {
                "format": FORMAT,
                "task": task,
                "split": split,
                "seed": seed,
                "duration_s": DURATION_S,
                "num_steps": num_steps(spec),
                "dt": dt,
                "frontend": spec_dict,
                "meta_info": meta_info,
                "speakers": [s.id for s in speakers],
            }
            column = {
                "source": [u["engine"] for u in members],
                "speaker_name": [u["speaker"] for u in members],
                "voice": [u["voice"] + (f"+{u['variant']}" if u["variant"] else "") for u in members],
                "gender": [speakers[u["speaker_index"]].gender for u in members],
                "accent": [accent[u["speaker"]] for u in members],
                "augment": [u["augment_names"] for u in members],
            }
            dataset = SpikeDataset(
                times=[events[u["index"]][0] for u in members],
                units=[events[u["index"]][1] for u in members],
                labels=np.array([u["label"] for u in members], dtype=np.int64),
                num_channels=int(spec.num_channels),
                class_names=names,
                extra={
                    "speaker": np.array([u["speaker_index"] for u in members], dtype=np.int64),
                    "utterance": np.array([u["index"] for u in members], dtype=np.uint32),
                    **{k: np.array(v, dtype=str) for k, v in column.items()},
                },
                attrs=attrs,
            )
            write_shd(dataset, tmp / f"{split}.h5")
        for split, list_name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
            lines = sorted(u["wav"].removeprefix("wavs/") for u in utterances if u["split"] == split)
            (tmp / "wavs" / list_name).write_text("".join(f"{line}\n" for line in lines))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "seed": seed,
            "per_class": per_class,
            "fillers": fillers or task in REFERENCE_TASKS,
            "engines": used_engines,
            "exclude": list(exclude),
            "engine_weights": {e: float((engine_weights or {}).get(e, 1.0)) for e in used_engines},
            "augment": policy.to_dict(),
            "sample_rate": SAMPLE_RATE,
            "duration_s": DURATION_S,
            "num_steps": num_steps(spec),
            "frontend": spec_dict,
            "versions": versions,
            "classes": [{"name": w.name, "text": w.text, "language": w.language} for w in words],
            "speakers": [asdict(s) for s in speakers],
            "splits": {s: sum(u["split"] == s for u in utterances) for s in SPLITS},
            "files": {s: f"{s}.h5" for s in SPLITS},
            "utterances": utterances,
        }
        (tmp / "manifest.json").write_text(manifest_text(manifest, "utterances"))
    return manifest


def is_corpus(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder made by :func:`synthesize` or ``edgekws data import``."""
    return (Path(path) / "manifest.json").is_file()


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the corpus at ``path`` (or of the corpus holding the file ``path``), synthesized
    (``utterances``) or imported (``recordings``)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = folder / "manifest.json"
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{file}: cannot read the corpus manifest ({exc}); make the corpus again") from exc
    if manifest.get("format") not in (FORMAT, IMPORT_FORMAT):
        raise DatasetError(
            f"{file}: not an {FORMAT} or {IMPORT_FORMAT} manifest (format={manifest.get('format')!r})"
        )
    return dict(manifest)

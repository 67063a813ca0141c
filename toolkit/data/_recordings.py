"""Read labelled recordings of speech and encode them through the agent's front-end.

One reader for every layout of real (or synthetic) labelled audio, WAV or FLAC at any sample rate, mono or
stereo (down-mixed):

- a **CSV manifest** with a header holding at least ``file`` and ``label`` and optionally ``speaker``,
  ``source``, ``sample_rate``, ``gender``, ``accent`` and ``split`` (paths relative to the CSV's folder),
  e.g. ``shared/data/real-speech/labels.csv``;
- a **Speech Commands-style folder** ``root/<label>/<file>`` (Warden 2018) with optional
  ``validation_list.txt`` / ``testing_list.txt`` (paths relative to root; every other file is training
  data), ``root/_background_noise_/`` (long noise recordings, cut into 1 s ``_silence_`` clips on request)
  and ``_unknown_`` / ``_silence_`` folders of clips labelled so;
- a **flat folder** of clips whose names carry label and speaker, e.g. FSDD's ``{label}_{speaker}_{take}``.

Speakers come from the ``speaker`` column or from a filename rule (:data:`SPEAKER_RULES`, or a template
such as ``"{label}_{speaker}_{take}"``). Labels are mapped onto a task's vocabulary by :func:`map_label`
("0" and "zero" are the class "zero"; other words become ``_unknown_`` or are dropped). Splits are
speaker-disjoint by construction and checked (:func:`assign_splits`). :func:`encode_recordings` turns the
clips into a :class:`SpikeDataset` with per-sample metadata; ``edgekws data import`` writes them as SHD-layout
files (:func:`import_recordings`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data import _augment
from edgekws.toolkit.data._output import check_out, folder_in_place, manifest_text
from edgekws.toolkit.data._shd import write_shd
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset, events_of

FORMAT = "edgekws-import"
FORMAT_VERSION = 1
AUDIO_SUFFIXES = (".wav", ".flac")
BACKGROUND = "_background_noise_"
UNKNOWN, SILENCE = "_unknown_", "_silence_"
SPLITS = ("train", "val", "test")
SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
SPLIT_ALIASES = {"validation": "val", "valid": "val", "testing": "test", "training": "train"}
# Filename rules: a template over the file's stem; {speaker} is required, {label} optional.
SPEAKER_RULES = {
    "speech-commands": "{speaker}_nohash_{take}",  # yes/0a7c2a8d_nohash_3.wav
    "fsdd": "{label}_{speaker}_{take}",  # 7_george_12.wav (Free Spoken Digit Dataset)
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CSV_COLUMNS = ("file", "label", "speaker", "source", "sample_rate", "gender", "accent", "split")
# per-sample string extras (the speaker's as "speaker_name": "speaker" is SHD's integer id)
METADATA_COLUMNS = ("source", "speaker_name", "voice", "gender", "accent", "augment")


@dataclass(frozen=True)
class Recording:
    """One labelled clip (or, with ``label == BACKGROUND``, a long noise recording)."""

    path: Path  # absolute path of the audio file
    file: str  # as listed: relative to the root folder or the CSV's folder
    label: str  # as found; mapped onto a vocabulary by map_label
    speaker: str
    source: str  # the data set it comes from: "fsdd", "speech-commands-v0.01", a folder name
    gender: str = ""
    accent: str = ""
    split: str = ""  # the source's own split ("train", "val", "test"), "" when it has none
    sample_rate: int = 0  # as declared by a manifest (0: not declared), checked against the file
    start_s: float = 0.0  # a clip cut from a longer recording (_silence_ from background noise)
    gain: float = 1.0
    copy: int = 0  # 0: the recording as it is; k >= 1: its k-th augmented copy (augment_copies)
    augment: dict[str, Any] | None = None  # the copy's augmentations (_augment.draw), every parameter
    noise_seed: int = 0  # seeds the copy's noise samples


def compile_rule(rule: str) -> re.Pattern[str]:
    """A filename rule (a :data:`SPEAKER_RULES` name or a template with ``{speaker}``) as a regex on stems."""
    template = SPEAKER_RULES.get(rule, rule)
    fields = re.findall(r"\{(\w+)\}", template)
    if "speaker" not in fields:
        raise DatasetError(
            f"speaker rule must be one of {', '.join(SPEAKER_RULES)} or a template naming {{speaker}} "
            f"(e.g. '{{label}}_{{speaker}}_{{take}}'), got {rule!r}"
        )
    if len(set(fields)) != len(fields):
        raise DatasetError(f"speaker rule {rule!r} names a field twice")
    pattern, pos = "^", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        pattern += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>.+?)"
        pos = m.end()
    return re.compile(pattern + re.escape(template[pos:]) + "$")


def _apply_rule(rule: re.Pattern[str] | None, name: str, where: Path) -> dict[str, str]:
    if rule is None:
        return {}
    m = rule.match(Path(name).stem)
    if m is None:
        raise DatasetError(
            f"{where}: file name {Path(name).name!r} does not match the speaker rule {rule.pattern!r}; "
            "pass --speaker-rule with a template that fits (e.g. '{label}_{speaker}_{take}')"
        )
    return m.groupdict()


def _default_rule(names: Iterable[str]) -> str | None:
    """The rule that fits every file name: Speech Commands' if they hold _nohash_, else FSDD's, else none."""
    stems = [Path(n).stem for n in names]
    if not stems:
        return None
    for rule in ("speech-commands", "fsdd"):
        pattern = compile_rule(rule)
        if all(pattern.match(s) for s in stems):
            return rule
    return None


def scan(
    source: str | os.PathLike[str],
    speaker_rule: str | None = None,
    source_name: str | None = None,
) -> list[Recording]:
    """Every recording listed by a CSV manifest or found in a folder, sorted by file.

    ``speaker_rule`` derives speakers (and, for flat folders, labels) from file names; by default the
    ``speaker`` column of a CSV, else Speech Commands' ``_nohash_`` rule or FSDD's rule where every name
    fits. ``source_name`` names the data set where a CSV has no ``source`` column (default: the folder name).
    """
    path = Path(source)
    if path.is_file():
        return _scan_csv(path, speaker_rule, source_name)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder; pass a CSV manifest or a folder of recordings")
    return _scan_folder(path, speaker_rule, source_name or path.name)


def _scan_csv(path: Path, speaker_rule: str | None, source_name: str | None) -> list[Recording]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the CSV manifest ({exc})") from exc
    columns = set(rows[0]) if rows else set()
    missing = [c for c in ("file", "label") if c not in columns]
    if not rows or missing:
        raise DatasetError(
            f"{path}: a manifest needs a header with the columns file and label (optionally "
            f"{', '.join(CSV_COLUMNS[2:])}) and at least one row; "
            + (f"missing {', '.join(missing)}" if rows else "it has no rows")
        )
    rule = compile_rule(speaker_rule) if speaker_rule else None
    if rule is None and "speaker" not in columns:
        default = _default_rule(r["file"] for r in rows)
        if default is None:
            raise DatasetError(
                f"{path}: no speaker column and the file names fit no known rule; add a speaker column "
                "or pass --speaker-rule (e.g. '{label}_{speaker}_{take}')"
            )
        rule = compile_rule(default)
    problems: list[str] = []
    out: list[Recording] = []
    for line, row in enumerate(rows, start=2):
        file = (row.get("file") or "").strip()
        label = (row.get("label") or "").strip()
        if not file or not label:
            problems.append(f"line {line}: empty file or label")
            continue
        fields = _apply_rule(rule, file, path) if rule is not None else {}
        speaker = fields.get("speaker") or (row.get("speaker") or "").strip()
        if not speaker:
            problems.append(f"line {line}: {file} has no speaker")
            continue
        split = SPLIT_ALIASES.get((row.get("split") or "").strip(), (row.get("split") or "").strip())
        if split and split not in SPLITS:
            problems.append(f"line {line}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            continue
        rate_text = (row.get("sample_rate") or "").strip()
        try:
            rate = int(float(rate_text)) if rate_text else 0
        except ValueError:
            problems.append(f"line {line}: sample_rate must be a number of Hz, got {rate_text!r}")
            continue
        out.append(
            Recording(
                path=(path.parent / file).resolve(),
                file=file,
                label=label,
                speaker=speaker,
                source=(row.get("source") or "").strip() or source_name or path.parent.name,
                gender=(row.get("gender") or "").strip(),
                accent=(row.get("accent") or "").strip(),
                split=split,
                sample_rate=rate,
            )
        )
    if problems:
        raise DatasetError(f"{path}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems[:50]))
    return sorted(out, key=lambda r: r.file)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _scan_folder(root: Path, speaker_rule: str | None, source_name: str) -> list[Recording]:
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat = _audio_files(root)
    if not label_dirs and not flat:
        raise DatasetError(
            f"{root}: no recordings; expected root/<label>/*.wav|flac (Speech Commands layout), a flat "
            "folder of clips named like '{label}_{speaker}_{take}.flac', or a CSV manifest"
        )
    listed: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        if (root / name).is_file():
            for line in (root / name).read_text().split():
                listed[line] = split
    clips = [(p.parent.name, p) for d in label_dirs if d.name != BACKGROUND for p in _audio_files(d)]
    clips += [("", p) for p in flat]
    rule_name = speaker_rule or _default_rule(p.name for _, p in clips)
    if rule_name is None and clips:
        raise DatasetError(
            f"{root}: cannot tell the speakers from the file names; pass --speaker-rule "
            "(e.g. '{speaker}_nohash_{take}' or '{label}_{speaker}_{take}')"
        )
    rule = compile_rule(rule_name) if rule_name else None
    out: list[Recording] = []
    for folder_label, p in clips:
        rel = p.relative_to(root).as_posix()
        fields = _apply_rule(rule, p.name, root)
        label = folder_label or fields.get("label", "")
        if not label:
            raise DatasetError(
                f"{root}: {rel} has no label: put clips in root/<label>/ or use a speaker rule with "
                "{label} (e.g. '{label}_{speaker}_{take}')"
            )
        out.append(
            Recording(
                path=p.resolve(),
                file=rel,
                label=label,
                speaker=fields["speaker"],
                source=source_name,
                split=listed.get(rel, "train" if listed else ""),
            )
        )
    if (root / BACKGROUND).is_dir():
        for p in _audio_files(root / BACKGROUND):
            out.append(
                Recording(
                    path=p.resolve(),
                    file=p.relative_to(root).as_posix(),
                    label=BACKGROUND,
                    speaker=f"noise:{p.stem}",
                    source=source_name,
                )
            )
    return sorted(out, key=lambda r: r.file)


def normalise_label(label: str) -> str:
    """A label as a class name: lower case, digits as English words ("7" is "seven"), "silence" and
    "unknown" as "_silence_" and "_unknown_"."""
    word = label.strip().lower()
    if word.isdigit() and int(word) < len(NUMBER_WORDS):
        word = NUMBER_WORDS[int(word)]
    return f"_{word}_" if word in ("silence", "unknown") else word


def map_label(label: str, classes: Sequence[str], unknown: str = "map") -> str | None:
    """The class of ``label`` in ``classes``, or what ``unknown`` says for words outside them.

    Case and surrounding space are ignored; digits name their English word ("7" is "seven"); a class
    with a language prefix answers to the bare word where that is unambiguous ("seven" is "en-seven" in
    the 20-class digits task); "silence" is "_silence_". A word outside the vocabulary becomes
    ``_unknown_`` (``unknown="map"``, which needs that class), is dropped (``"drop"``: returns None) or
    raises (``"error"``).
    """
    if unknown not in ("map", "drop", "error"):
        raise ValueError(f"unknown must be 'map', 'drop' or 'error', got {unknown!r}")
    word = normalise_label(label)
    aliases: dict[str, list[str]] = {}
    for c in classes:
        aliases.setdefault(c.lower(), []).append(c)
        bare = c.split("-", 1)[1] if re.match(r"^[a-z]{2}-", c) else None
        if bare:
            aliases.setdefault(bare.lower(), []).append(c)
    found = aliases.get(word, [])
    exact = [c for c in found if c.lower() == word]
    if exact or len(found) == 1:
        return (exact or found)[0]
    if unknown == "drop":
        return None
    if unknown == "map" and UNKNOWN in classes:
        return UNKNOWN
    raise DatasetError(
        f"label {label!r} is not one of the classes {', '.join(classes)}"
        + ("; pass --unknown drop to leave such words out" if unknown == "map" else "")
        + ("" if UNKNOWN in classes else f" (the vocabulary has no {UNKNOWN} class to map it to)")
    )


def _speaker_list(values: Iterable[str] | None) -> set[str]:
    return {v.strip() for v in (values or []) if v.strip()}


def assign_splits(
    recordings: Sequence[Recording],
    train_speakers: Iterable[str] | None = None,
    val_speakers: Iterable[str] | None = None,
    test_speakers: Iterable[str] | None = None,
    fractions: tuple[float, float, float] | None = None,
    rest: str = "test",
    seed: int = 0,
) -> list[Recording]:
    """The recordings with their split, speaker-disjoint (checked); those sent to ``rest="drop"`` left out.

    In order of precedence: explicit speaker lists (speakers in none of them go to ``rest``); else
    ``fractions`` (train, val, test) of the speakers, chosen at random with ``seed``; else the source's
    own split (Speech Commands' lists, a CSV's ``split`` column); else everything goes to ``rest``.
    ``_silence_`` clips cut from background noise are not speakers and are spread over the splits.
    """
    if rest not in (*SPLITS, "drop"):
        raise ValueError(f"rest must be one of {', '.join(SPLITS)} or drop, got {rest!r}")
    lists = {
        "train": _speaker_list(train_speakers),
        "val": _speaker_list(val_speakers),
        "test": _speaker_list(test_speakers),
    }
    speakers = sorted({r.speaker for r in recordings if r.label != BACKGROUND})
    problems = []
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = lists[a] & lists[b]
        if both:
            problems.append(f"speaker(s) {', '.join(sorted(both))} listed for both {a} and {b}")
    unknown = sorted(set().union(*lists.values()) - set(speakers))
    if unknown:
        problems.append(
            f"speaker(s) {', '.join(unknown)} not in the data (it has {len(speakers)}: "
            f"{', '.join(speakers[:12])}{', ...' if len(speakers) > 12 else ''})"
        )
    if problems:
        raise DatasetError("cannot split by speaker: " + "; ".join(problems))
    split_of: dict[str, str] = {}
    if any(lists.values()):
        for s in speakers:
            split_of[s] = next((name for name, members in lists.items() if s in members), rest)
    elif fractions is not None:
        if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
            raise DatasetError(
                f"split fractions must be three non-negative numbers adding to 1, got {fractions}"
            )
        order = np.random.default_rng(seed).permutation(len(speakers))
        n_test = round(len(speakers) * fractions[2])
        n_val = round(len(speakers) * fractions[1])
        for rank, k in enumerate(order):
            split_of[speakers[int(k)]] = (
                "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            )
    out: list[Recording] = []
    for r in recordings:
        if r.label == BACKGROUND:
            out.append(r)
            continue
        split = split_of.get(r.speaker) or r.split or rest
        if split != "drop":
            out.append(replace(r, split=split))
    check_speaker_disjoint(out)
    return out


def check_speaker_disjoint(recordings: Iterable[Recording]) -> None:
    """Raise :class:`DatasetError` naming every speaker found in more than one split."""
    seen: dict[str, set[str]] = {}
    for r in recordings:
        if r.label not in (BACKGROUND, SILENCE) or not r.speaker.startswith("noise:"):
            seen.setdefault(r.speaker, set()).add(r.split)
    shared = {s: sorted(v) for s, v in seen.items() if len(v) > 1}
    if shared:
        raise DatasetError(
            "splits are not speaker-disjoint: "
            + "; ".join(f"{s} in {'+'.join(v)}" for s, v in sorted(shared.items())[:20])
            + "; split by speaker (--train-speakers/--test-speakers, or fix the split lists)"
        )


def audio_seconds(path: Path) -> float:
    """The length of an audio file from its header (:class:`DatasetError` when unreadable)."""
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DatasetError(
            f"{path}: cannot read the audio header ({exc}); re-export or remove the file"
        ) from exc


def cut_silence(
    recordings: Sequence[Recording], per_split: dict[str, int], duration: float, seed: int
) -> list[Recording]:
    """``per_split[split]`` clips of ``duration`` s cut at random from the background-noise recordings.

    Each clip is a random stretch of a random noise file at a random gain (0.05 to 1, log-uniform), the
    way Speech Commands' ``_silence_`` class is usually made. The same seed cuts the same clips.
    """

    noise = [r for r in recordings if r.label == BACKGROUND]
    if not noise or not any(per_split.values()):
        return []
    lengths = [audio_seconds(r.path) for r in noise]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5113]))
    out = []
    for split in SPLITS:
        for k in range(per_split.get(split, 0)):
            i = int(rng.integers(len(noise)))
            start = float(rng.uniform(0.0, max(0.0, lengths[i] - duration)))
            gain = float(np.exp(rng.uniform(np.log(0.05), 0.0)))
            r = noise[i]
            out.append(
                replace(
                    r,
                    file=f"{r.file}@{start:.3f}s#{split}{k}",
                    label=SILENCE,
                    split=split,
                    start_s=round(start, 3),
                    gain=round(gain, 4),
                )
            )
    return out


def _fit(audio: np.ndarray, rate: int, duration: float, lead_s: float = 0.0) -> np.ndarray:
    """``audio`` after ``lead_s`` of silence, padded with silence or cropped to ``duration`` seconds."""
    n = round(duration * rate)
    lead = np.zeros(min(n, round(lead_s * rate)), dtype=audio.dtype)
    audio = np.concatenate([lead, audio])[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), dtype=audio.dtype)])


def augment_copies(
    recordings: Sequence[Recording],
    policy: Any,
    copies: int,
    seed: int,
    classes: Sequence[str] | None = None,
) -> list[Recording]:
    """``copies`` augmented copies of each of ``recordings`` (background noise excepted), drawn from
    ``policy`` (an :class:`~edgekws.toolkit.data._augment.AugmentPolicy`, preset name or dict of settings).

    Copy ``k`` of the ``i``-th recording draws its augmentations from the generator seeded by
    ``(seed, k, i)``: the same recordings in the same order and seed give the same copies. Voice, room,
    noise and channel are applied as to synthetic speech (:func:`augmented`). **Babble** is spoken by other
    people among ``recordings``: words that are none of ``classes``' keywords (they map to ``_unknown_``),
    of other speakers where there are any, each at a random offset (the talkers and offsets drawn from the
    generator seeded by ``(seed, k, i, 1)``, so a policy without babble gives the copies it gave before).
    Pass the train split only, so that no other split's voice is heard in training.
    """
    pol = _augment.policy(policy)
    clips = [r for r in recordings if r.label != BACKGROUND]
    talkers: list[Recording] = []
    if pol.noise_weights[2] > 0:
        keywords = [c for c in classes or () if c not in (UNKNOWN, SILENCE)]
        talkers = [
            r
            for r in clips
            if keywords
            and map_label(r.label, [*keywords, SILENCE], "drop") is None  # neither word nor silence
        ]
        if len({r.speaker for r in talkers}) < 2:
            raise DatasetError(
                "babble for recordings is spoken by other speakers' words that are not keywords, and these "
                f"recordings have them from {len({r.speaker for r in talkers})} speaker(s) "
                f"({len(talkers)} clips; classes {list(classes or [])}): import recordings with other words "
                "(--unknown map, e.g. the Speech Commands sample), or set the policy's noise_weights to "
                "[white, pink, 0] (the preset 'recordings' is 'default' so)"
            )
    out = []
    for k in range(1, copies + 1):
        for i, r in enumerate(clips):
            rng = np.random.default_rng([seed, k, i])
            augment = _augment.draw(pol, rng)
            if augment["noise"]["kind"] == "babble":
                augment["noise"]["voices"] = _babble(r, talkers, augment["noise"]["talkers"], [seed, k, i, 1])
            out.append(replace(r, copy=k, augment=augment, noise_seed=int(rng.integers(2**63))))
    return out


def _babble(r: Recording, talkers: Sequence[Recording], n: int, seed: list[int]) -> list[dict[str, Any]]:
    """``n`` talkers for ``r``'s babble: other speakers' clips where there are any, each with its offset."""
    rng = np.random.default_rng(seed)
    others = [t for t in talkers if t.speaker != r.speaker and t.path != r.path] or list(talkers)
    picks = rng.choice(len(others), size=n, replace=len(others) < n)
    return [
        {"file": others[j].file, "path": str(others[j].path), "speaker": others[j].speaker,
         "offset_s": round(float(rng.uniform(*_augment.BABBLE_OFFSET_S)), 3)}
        for j in picks
    ]  # fmt: skip


def _babble_noise(voices: Sequence[dict[str, Any]], rate: int, n: int) -> np.ndarray:
    """The babble of ``voices`` (:func:`_babble`): each talker's recording at ``rate``, mixed by
    :func:`~edgekws.toolkit.data._augment.babble` as ``data synth`` mixes its talkers."""
    from edgekws.agent import load_audio, resample

    def word(path: str) -> np.ndarray:
        audio, word_rate = load_audio(path)
        audio = np.asarray(audio, dtype=np.float64)
        return resample(audio, word_rate, rate) if word_rate != rate else audio

    return _augment.babble(((word(v["path"]), v["offset_s"]) for v in voices), rate, n)


def augmented(
    audio: np.ndarray, rate: int, rec: Recording, to_rate: int, duration: float, lead_s: float
) -> np.ndarray:
    """The recording ``audio`` as its copy ``rec`` hears it, ``duration`` seconds at ``to_rate``: resampled,
    its voice changed (formant, pitch, tempo), placed after ``lead_s``, then room, noise at the drawn SNR of
    the (changed) recording's power, and channel, as :func:`edgekws.toolkit.data._synth.render` does."""
    from edgekws.agent import resample

    augment = rec.augment or {}
    x = np.asarray(audio, dtype=np.float64)
    if rate != to_rate:
        x = resample(x, rate, to_rate)
    x = _augment.voice_of(x, to_rate, augment)
    clip = _fit(x, to_rate, duration, lead_s)
    power = float(np.mean(x**2)) if len(x) else 0.0
    rng = np.random.default_rng(rec.noise_seed)
    noise = augment.get("noise", {"kind": "white", "snr_db": 100.0})
    n = len(clip)
    if noise["kind"] == "babble":
        samples = _babble_noise(noise["voices"], to_rate, n)
    else:
        samples = _augment.pink_noise(n, rng) if noise["kind"] == "pink" else rng.standard_normal(n)
    clip = _augment.surroundings(clip, to_rate, augment, power, samples, float(noise["snr_db"]))
    return np.clip(clip, -1.0, 1.0 - 1 / 32768)


def _encode_job(job: tuple[Recording, dict[str, Any], float, float]) -> tuple[Any, ...]:
    """Read, check, fit and encode one recording; returns (times, units, audio seconds) or an error text."""
    from edgekws.agent import AudioError, FrontendSpec, encode, load_audio

    rec, spec_dict, duration, lead_s = job
    spec = FrontendSpec.from_dict(spec_dict)
    try:
        if not rec.path.is_file():
            return (f"{rec.path}: no such file (listed as {rec.file}); fix the path or remove the row",)
        audio, rate = load_audio(rec.path)
        if rec.sample_rate and rec.sample_rate != rate:
            return (
                f"{rec.path}: the manifest says {rec.sample_rate} Hz but the file is {rate} Hz; fix the row",
            )
        if rec.label == SILENCE and rec.speaker.startswith("noise:"):
            first = round(rec.start_s * rate)
            audio = audio[first : first + round(duration * rate)] * rec.gain
            lead_s = 0.0
        elif len(audio) == 0:
            return (f"{rec.path}: empty recording (0 samples); re-export or remove it",)
        seconds = len(audio) / rate
        if rec.augment is not None:
            audio, rate = augmented(audio, rate, rec, spec.sample_rate, duration, lead_s), spec.sample_rate
        else:
            audio = _fit(audio, rate, duration, lead_s)
        raster = np.asarray(encode(audio, rate, spec, resample=True))
    except AudioError as exc:
        return (str(exc),)
    times, units = events_of(raster[: round(duration * 1000 / spec.dt_ms)], spec.dt_ms / 1000.0)
    return times, units, seconds


def encode_recordings(
    recordings: Sequence[Recording],
    classes: Sequence[str],
    spec: Any = None,
    duration: float = 1.0,
    lead_s: float = 0.0,
    unknown: str = "map",
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SpikeDataset, list[dict[str, Any]]]:
    """Encode ``recordings`` as one data set of ``classes``, and one metadata row per sample.

    Each clip is delayed by ``lead_s`` seconds of silence, padded or cropped to ``duration`` seconds,
    resampled to the front-end's rate and encoded by :func:`edgekws.agent.encode` with ``spec``
    (default :class:`edgekws.agent.FrontendSpec`). Labels are mapped by :func:`map_label` (``unknown``).
    Every unreadable file (missing, empty, truncated, NaN, a rate that disagrees with the manifest) is
    listed in one :class:`DatasetError`; nothing is returned then. Per-sample string extras
    (:data:`METADATA_COLUMNS`) carry source, speaker, gender and accent; ``extra["speaker"]`` indexes
    ``attrs["speakers"]`` (sorted).
    """
    from edgekws.agent import FrontendSpec

    spec = spec if spec is not None else FrontendSpec()
    kept: list[tuple[Recording, int]] = []
    for r in recordings:
        if r.label == BACKGROUND:
            continue
        name = map_label(r.label, classes, unknown)
        if name is not None:
            kept.append((r, list(classes).index(name)))
    jobs = [(r, spec.to_dict(), duration, lead_s) for r, _ in kept]
    results: list[tuple[Any, ...]] = []
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        mapped = pool.map(_encode_job, jobs, chunksize=8) if pool is not None else map(_encode_job, jobs)
        for done, result in enumerate(mapped, start=1):
            results.append(result)
            if progress is not None:
                progress(done, len(jobs))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    problems = [res[0] for res in results if len(res) == 1]
    if problems:
        raise DatasetError(
            f"{len(problems)} unreadable recording(s) of {len(jobs)}; nothing was written:\n  "
            + "\n  ".join(problems[:50])
            + ("\n  ..." if len(problems) > 50 else "")
        )
    speakers = sorted({r.speaker for r, _ in kept})
    index = {s: i for i, s in enumerate(speakers)}
    rows = [
        {
            "file": r.file,
            "label": r.label,
            "class": classes[label],
            "speaker": r.speaker,
            "source": r.source,
            "gender": r.gender,
            "accent": r.accent,
            "split": r.split,
            "audio_s": round(float(res[2]), 4),
            "num_spikes": len(res[0]),
            **({"copy": r.copy, "augment": r.augment} if r.augment is not None else {}),
            **({"start_s": r.start_s, "gain": r.gain} if r.label == SILENCE and r.start_s else {}),
        }
        for (r, label), res in zip(kept, results, strict=True)
    ]
    column = {
        "source": [r.source for r, _ in kept],
        "speaker_name": [r.speaker for r, _ in kept],
        "voice": ["" for _ in kept],
        "gender": [r.gender for r, _ in kept],
        "accent": [r.accent for r, _ in kept],
        "augment": ["" if r.augment is None else _augment.names(r.augment) for r, _ in kept],
    }
    dataset = SpikeDataset(
        times=[res[0] for res in results],
        units=[res[1] for res in results],
        labels=np.array([label for _, label in kept], dtype=np.int64),
        num_channels=int(spec.num_channels),
        class_names=list(classes),
        extra={
            "speaker": np.array([index[r.speaker] for r, _ in kept], dtype=np.int64),
            **{k: np.array(v, dtype=str) for k, v in column.items()},
        },
        attrs={
            "format": FORMAT,
            "duration_s": duration,
            "lead_s": lead_s,
            "num_steps": round(duration * 1000 / spec.dt_ms),
            "dt": spec.dt_ms / 1000.0,
            "frontend": spec.to_dict(),
            "speakers": speakers,
            "files": [r.file for r, _ in kept],
        },
    )
    return dataset, rows


def default_classes(recordings: Sequence[Recording]) -> list[str]:
    """The labels found (sorted; background noise left out, digits named as words)."""
    labels = {normalise_label(r.label) for r in recordings if r.label != BACKGROUND}
    return sorted(labels, key=lambda c: (c.startswith("_"), c))


def read_recordings(
    source: str | os.PathLike[str],
    split: str | None = None,
    classes: Sequence[str] | None = None,
    spec: Any = None,
    duration: float = 1.0,
    speaker_rule: str | None = None,
    unknown: str = "map",
    progress: Callable[[int, int], None] | None = None,
) -> SpikeDataset:
    """Encode the recordings of a CSV manifest or folder (only ``split`` of the source's own split when
    given: "train", "val"/"validation" or "test"/"testing"); ``classes`` defaults to the labels found."""
    recordings = scan(source, speaker_rule)
    if split is not None:
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        recordings = [r for r in recordings if (r.split or "train") == split and r.label != BACKGROUND]
    classes = list(classes) if classes is not None else default_classes(recordings)
    if not [r for r in recordings if r.label != BACKGROUND]:
        raise DatasetError(f"{source}: no recordings" + (f" in split {split!r}" if split else ""))
    return encode_recordings(recordings, classes, spec, duration, unknown=unknown, progress=progress)[0]


def import_recordings(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    classes: Sequence[str],
    *,
    task: str | None = None,
    speaker_rule: str | None = None,
    only: dict[str, set[str]] | None = None,
    unknown: str = "map",
    train_speakers: Iterable[str] | None = None,
    val_speakers: Iterable[str] | None = None,
    test_speakers: Iterable[str] | None = None,
    fractions: tuple[float, float, float] | None = None,
    rest: str = "test",
    silence: int | None = None,
    duration: float = 1.0,
    lead_s: float = 0.0,
    seed: int = 0,
    spec: Any = None,
    workers: int = 2,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    per_speaker_label: int | None = None,
    augment: Any = None,
    copies: int = 0,
) -> dict[str, Any]:
    """Encode the recordings of ``sources`` into ``out``/{train,val,test}.h5 and ``out``/manifest.json.

    ``only`` keeps recordings whose field (source, speaker, label, gender, accent) is one of the given values;
    ``per_speaker_label`` keeps at most that many recordings of each speaker and label (the first listed; for
    quick runs, EDGEKWS_SHRINK). ``silence`` clips per split are cut from background noise when the vocabulary
    has ``_silence_`` (default: as many as the median class of the split). Written to a temporary folder and
    renamed into place, so a failure leaves nothing; a non-empty ``out`` is refused unless ``force``.
    ``copies`` augmented copies of every train-split clip are added, drawn from the ``augment`` policy
    (:func:`augment_copies`; validation and test clips stay as recorded). Returns the manifest.
    """
    from edgekws.agent import FrontendSpec

    out = Path(out)
    check_out(out, force)
    spec = spec if spec is not None else FrontendSpec()
    recordings: list[Recording] = []
    for source in sources:
        recordings += scan(source, speaker_rule)
    for field, values in (only or {}).items():
        if field not in ("source", "speaker", "label", "gender", "accent", "split"):
            raise DatasetError(f"--only takes source, speaker, label, gender, accent or split, got {field!r}")
        recordings = [r for r in recordings if r.label == BACKGROUND or getattr(r, field) in values]
    if per_speaker_label is not None:
        taken: dict[tuple[str, str], int] = {}
        kept = []
        for r in recordings:
            taken[r.speaker, r.label] = taken.get((r.speaker, r.label), 0) + 1
            if r.label == BACKGROUND or taken[r.speaker, r.label] <= per_speaker_label:
                kept.append(r)
        recordings = kept
    recordings = assign_splits(recordings, train_speakers, val_speakers, test_speakers, fractions, rest, seed)
    if SILENCE in classes:
        per_split = {}
        for split in SPLITS:
            labels = [map_label(r.label, classes, unknown) for r in recordings if r.split == split]
            counts = [labels.count(c) for c in classes if c not in (SILENCE,) and labels.count(c)]
            per_split[split] = int(np.median(counts)) if silence is None and counts else silence or 0
        recordings += cut_silence(recordings, per_split, duration, seed)
    if not [r for r in recordings if r.label != BACKGROUND]:
        raise DatasetError(f"no recordings left to import from {', '.join(map(str, sources))}")
    if copies > 0:
        if augment is None:
            raise DatasetError("copies > 0 needs an augmentation policy (augment=...)")
        recordings += augment_copies(
            [r for r in recordings if r.split == "train"], augment, copies, seed, classes=classes
        )
    dataset, rows = encode_recordings(
        recordings, classes, spec, duration, lead_s, unknown, workers=workers, progress=progress
    )
    with folder_in_place(out, force, DatasetError) as tmp:
        split_of = np.array([row["split"] for row in rows])
        for split in SPLITS:
            idx = np.flatnonzero(split_of == split)
            part = dataset.subset(idx)
            part.attrs.update({"split": split, "files": [rows[i]["file"] for i in idx], "task": task})
            for position, i in enumerate(idx):
                rows[i]["sample_index"] = position
            write_shd(part, tmp / f"{split}.h5")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "sources": [str(Path(s).resolve()) for s in sources],
            "classes": list(classes),
            "unknown": unknown,
            "seed": seed,
            "duration_s": duration,
            "lead_s": lead_s,
            "train_copies": (
                {"copies": copies, "policy": _augment.policy(augment).to_dict()} if copies > 0 else None
            ),
            "frontend": spec.to_dict(),
            "speakers": {
                split: sorted(
                    {row["speaker"] for row in rows if row["split"] == split and row["class"] != SILENCE}
                )
                for split in SPLITS
            },
            "splits": {split: int((split_of == split).sum()) for split in SPLITS},
            "files": {split: f"{split}.h5" for split in SPLITS},
            "recordings": rows,
        }
        (tmp / "manifest.json").write_text(manifest_text(manifest, "recordings"))
    return manifest


def is_recordings(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a CSV manifest or a folder holding recordings (label folders or flat clips)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in SPLIT_LISTS.values()) or _audio_files(path):
        return True
    return any(_audio_files(d) for d in path.iterdir() if d.is_dir() and d.name != BACKGROUND)


def as_dict(r: Recording) -> dict[str, Any]:
    d = asdict(r)
    d["path"] = str(r.path)
    return d

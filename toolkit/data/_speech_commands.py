"""Read a Speech Commands-style WAV folder and encode it through the agent's front-end.

Layout (Warden 2018, v0.02)::

    root/<word>/<speaker>_nohash_<n>.wav     one folder per word; speaker id = file name before "_nohash_"
    root/validation_list.txt                 paths relative to root ("<word>/<file>.wav"), one a line
    root/testing_list.txt                    likewise; every other file is training data
    root/_background_noise_/                 long noise recordings, not samples: ignored

Each clip is padded with silence or cropped to ``duration`` seconds (1.0 s, the length of every full
Speech Commands clip) and encoded by :func:`edgekws.agent.encode`, resampling other rates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset

SPLITS = ("train", "validation", "testing")
BACKGROUND = "_background_noise_"
SPLIT_LISTS = {"validation": "validation_list.txt", "testing": "testing_list.txt"}


def speaker_of(filename: str) -> str:
    """The speaker id of a Speech Commands file: the name before ``_nohash_`` (the stem if absent)."""
    stem = Path(filename).name
    return stem.split("_nohash_")[0] if "_nohash_" in stem else Path(stem).stem


def list_words(root: str | os.PathLike[str]) -> list[str]:
    """The word folders of ``root`` (sorted; ``_background_noise_`` and hidden folders left out)."""
    root = Path(root)
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and p.name != BACKGROUND and not p.name.startswith((".", "_"))
    )


def is_speech_commands(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a Speech Commands folder (a split list or word folders of WAVs)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in SPLIT_LISTS.values()):
        return True
    return any(any((path / w).glob("*.wav")) for w in list_words(path))


def list_split(
    root: str | os.PathLike[str], split: str = "train", words: list[str] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """The class names and the ``(relative path, label)`` of every file of ``split``, sorted by path."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass the root of a Speech Commands-style folder")
    available = list_words(root)
    words = list(words) if words is not None else available
    missing = [w for w in words if w not in available]
    if missing:
        raise DatasetError(
            f"{root}: no folder for word(s) {', '.join(missing)}; available: {', '.join(available)}"
        )
    if not words:
        raise DatasetError(f"{root}: no word folders; expected root/<word>/*.wav")
    listed: dict[str, set[str]] = {}
    for name, list_file in SPLIT_LISTS.items():
        path = root / list_file
        listed[name] = set(path.read_text().split()) if path.is_file() else set()
    files: list[tuple[str, int]] = []
    for label, word in enumerate(words):
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            in_split = (
                "validation"
                if rel in listed["validation"]
                else "testing"
                if rel in listed["testing"]
                else "train"
            )
            if in_split == split:
                files.append((rel, label))
    return words, files


def read_speech_commands(
    root: str | os.PathLike[str],
    split: str = "train",
    words: list[str] | None = None,
    spec: Any = None,
    duration: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> SpikeDataset:
    """Encode the ``split`` ("train", "validation" or "testing") of a Speech Commands folder.

    ``words`` picks and orders the classes (default: every word folder, sorted). ``spec`` is the
    front-end spec (default :class:`edgekws.agent.FrontendSpec`). Every clip is padded or cropped to
    ``duration`` seconds. ``extra["speaker"]`` indexes ``attrs["speakers"]`` (the speaker ids of the
    whole folder, sorted, so indices agree across splits); ``attrs["files"]`` lists the WAV paths.
    """
    from edgekws.agent import AudioError, FrontendSpec, encode, load_audio

    root = Path(root)
    class_names, files = list_split(root, split, words)
    if not files:
        raise DatasetError(
            f"{root}: split {split!r} holds no WAV files of the words {', '.join(class_names)}"
        )
    spec = spec if spec is not None else FrontendSpec()
    all_speakers = sorted({speaker_of(w.name) for word in class_names for w in (root / word).glob("*.wav")})
    speaker_index = {s: i for i, s in enumerate(all_speakers)}
    steps = round(duration * 1000 / spec.dt_ms)
    dt = spec.dt_ms / 1000.0
    times, units, problems = [], [], []
    for done, (rel, _) in enumerate(files, start=1):
        try:
            audio, rate = load_audio(root / rel)
            raster = encode(_fit(audio, rate, duration), rate, spec, resample=True)
        except AudioError as exc:
            problems.append(str(exc))
            continue
        raster = np.asarray(raster)[:steps]
        s, u = np.nonzero(raster)
        order = np.lexsort((u, s))
        times.append((s[order] * dt).astype(np.float32))
        units.append(u[order].astype(np.uint16))
        if progress is not None:
            progress(done, len(files))
    if problems:
        raise DatasetError(f"{root}: {len(problems)} unreadable file(s):\n  " + "\n  ".join(problems))
    return SpikeDataset(
        times=times,
        units=units,
        labels=np.array([label for _, label in files], dtype=np.int64),
        num_channels=int(spec.num_channels),
        class_names=class_names,
        extra={"speaker": np.array([speaker_index[speaker_of(rel)] for rel, _ in files], dtype=np.int64)},
        attrs={
            "format": "speech-commands",
            "split": split,
            "duration_s": duration,
            "num_steps": steps,
            "dt": dt,
            "frontend": spec.to_dict(),
            "speakers": all_speakers,
            "files": [rel for rel, _ in files],
        },
    )


def _fit(audio: np.ndarray, rate: int, duration: float) -> np.ndarray:
    """Pad with silence or crop ``audio`` (at ``rate``) to ``duration`` seconds."""
    n = round(duration * rate)
    if len(audio) >= n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), dtype=audio.dtype)])

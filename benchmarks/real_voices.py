"""How models trained on synthetic speech hear real people: the three protocols of issue #12.

Given a *recipe* (a TOML or JSON file: the task, the synthetic corpus, the front-end and the training
configuration; see ``DEFAULT_RECIPE``), this benchmark makes every data set it needs with the project's own
commands (``edgekws data synth`` / ``data import`` as library calls), trains with ``edgekws train``'s loop and
scores with ``edgekws eval``'s ``evaluate`` (accuracy overall, per speaker and by source):

(a) **synthetic only**: trained on the synthetic corpus (all engines); scored on its unseen test voices, on
    every FSDD speaker and on the Speech Commands sample (its words outside the task map to ``_unknown_``);
(b) **leave one engine out**: for each engine, trained on a corpus without it (``--exclude ENGINE``) and
    scored on a corpus of that engine alone (all its voices, all splits). flite and festival share the
    recorded persons kal and slt; a row says when such a person is in the training split by another engine
    (``data synth`` holds kal and slt out of training, for validation and test);
(c) **synthetic + 4 FSDD speakers**: trained on the synthetic corpus plus four FSDD speakers, scored on the
    other two; three rotations so every speaker is held out once; mean and spread (min, max, std).
(d) **synthetic + half the Speech Commands sample's speakers** (``sc_finetune``, the commands task's (c)): its
    34 speakers dealt into two halves balanced by their clips of the task's words; trained on the synthetic
    corpus plus one half, scored on the other, then the other way round, so every clip is scored once by a
    model that never heard its speaker; the two folds pooled.

Real speech comes from ``shared/data/real-speech`` (``--real``; FSDD CC BY-SA 4.0, Speech Commands v0.01
sample CC BY 4.0; its README's rules apply: speaker-disjoint, the SC v0.02 test set is never used). Every
accuracy in the output names what it was trained on and which speakers it was tested on.

Run:   .venv/bin/python benchmarks/real_voices.py --recipe RECIPE.toml           (hours on 2 cores)
       ... --recipe RECIPE.toml --set train.seed=1 --set train.method=bptt  (another seed or trainer)
       ... --protocols sc_finetune --set sc_finetune.augment=recordings --set sc_finetune.copies=3
           (add "--set 'sc_finetune.folds=[0]'" and "[1]" to run the two folds side by side, same --work;
           "--set 'fsdd_finetune.rotations=[0]'" likewise for (c)'s three rotations; then all of them once
           more in one process, which reuses the runs and writes the results; a finished run in --work is
           reused only if it was trained with the recipe's [train] and front-end, else the script stops)
Proof: .venv/bin/python benchmarks/real_voices.py --tiny              (minutes; the numbers mean nothing)
Writes benchmarks/results/real_voices.{json,md} (``--tiny``: real_voices_tiny.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _common import RESULTS, command_line, load_average, machine, write_results

from edgekws.toolkit.data import SpikeDataset, import_recordings, read_shd, synthesize
from edgekws.toolkit.data._engines import DEFAULT_ENGINES, voices
from edgekws.toolkit.data._synth import SILENCE_CLASS, UNKNOWN_CLASS, class_names

FSDD_SPEAKERS = ("fsdd-george", "fsdd-jackson", "fsdd-lucas", "fsdd-nicolas", "fsdd-theo", "fsdd-yweweler")
ROTATIONS = (("fsdd-lucas", "fsdd-theo"), ("fsdd-george", "fsdd-jackson"), ("fsdd-nicolas", "fsdd-yweweler"))
SC_SOURCE = "speech-commands-v0.01"
DEFAULT_RECIPE: dict[str, Any] = {
    "name": "default",
    "task": "en-digits",
    # edgekws.toolkit.data.synthesize arguments (engines, exclude, engine_weights, augment, per_class, seed)
    "synth": {"per_class": 300, "seed": 0, "augment": "default"},
    # edgekws.toolkit.data.import_recordings arguments for the real recordings (lead_s, duration)
    "import": {"lead_s": 0.0},
    # edgekws.agent.FrontendSpec fields ({} = the default front-end)
    "frontend": {},
    # edgekws.toolkit.train.TrainConfig fields
    "train": {"epochs": 25},
    "protocols": ["synthetic", "leave_one_engine_out", "fsdd_finetune"],
    # synthesize arguments over "synth" for the leave-one-engine-out corpora (e.g. a smaller per_class)
    "leave_one_engine_out": {},
    # import_recordings arguments for the 4 training speakers (augment, copies: augmented copies of them),
    # "rotations": which of the three to run ([0, 1, 2]; as sc_finetune's "folds")
    "fsdd_finetune": {},
    # import_recordings arguments for the Speech Commands sample's training half (augment, copies),
    # "folds": which of the two to run ([0, 1]; a run of the other fold's process is reused when found),
    # "train_words": "all" its clips (default) or only its clips of the task's "keywords",
    # "keyword_copies": N > 0 imports the half's command-word clips once more with N other augmented copies
    # (weighs them up against its other words)
    "sc_finetune": {},
}
TINY: dict[str, Any] = {
    "name": "tiny",
    "synth": {"per_class": 3, "seed": 0, "augment": "default"},
    "train": {"epochs": 1, "hidden": [16], "batch_size": 8, "eval_batch_size": 16},
    "real_per_speaker_class": 2,  # FSDD takes per speaker and digit; SC sample clips per word
}


def _default_real() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[1].parent / "shared", here.parents[2] / "shared", Path("/work/shared")):
        if (candidate / "data" / "real-speech" / "labels.csv").is_file():
            return candidate / "data" / "real-speech"
    return Path("shared/data/real-speech")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``SECTION.KEY=VALUE`` (``--set``) as its key path and value: the value is read as TOML (``30``,
    ``1e-3``, ``true``, ``[0.0, 25.0]``, ``"bptt"``), a bare word as a string (``train.method=bptt``)."""
    import tomllib

    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    value = raw.strip()
    if not sep or not all(path) or not value:
        raise ValueError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set train.seed=1")
    try:
        return path, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as err:
        if value[0] in "[{\"'" or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--set {text!r}: {raw!r} is not a TOML value ({err})") from None
        return path, value


def load_recipe(path: Path | None, tiny: bool, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """DEFAULT_RECIPE with the file at ``path`` over it (a section's keys merge), then ``--tiny``'s sizes,
    then each ``--set SECTION.KEY=VALUE`` in ``overrides`` (a run that differs from a recipe in a seed or a
    trainer needs no copy of the file)."""
    recipe = json.loads(json.dumps(DEFAULT_RECIPE))
    if path is not None:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            given = tomllib.loads(text)
        else:
            given = json.loads(text)
        for key, value in given.items():
            recipe[key] = {**recipe[key], **value} if isinstance(recipe.get(key), dict) else value
    if tiny:
        for key, value in TINY.items():
            recipe[key] = {**recipe[key], **value} if isinstance(recipe.get(key), dict) else value
    for text in overrides:
        keys, value = parse_override(text)
        node = recipe
        for part in keys[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {part!r} is a value ({child!r}), not a section")
            node = child
        node[keys[-1]] = value
    return recipe


def _spec(recipe: dict[str, Any]) -> Any:
    from edgekws.agent import FrontendSpec

    default = {k: v for k, v in FrontendSpec().to_dict().items() if k != "num_channels"}  # derived
    return FrontendSpec.from_dict({**default, **recipe["frontend"]})


def _subset_manifest(real: Path, per: int, work: Path) -> Path:
    """labels.csv cut to ``per`` clips per (speaker, label), for the tiny proof run."""
    import csv

    with (real / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept: list[dict[str, str]] = []
    count: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["speaker"], row["label"])
        if count.get(key, 0) < per:
            count[key] = count.get(key, 0) + 1
            kept.append({**row, "file": str((real / row["file"]).resolve())})
    out = work / "labels-subset.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


class Bench:
    """The data sets, runs and scores of one recipe, made in ``work`` as they are needed."""

    def __init__(self, recipe: dict[str, Any], real: Path, work: Path, workers: int) -> None:
        self.recipe, self.work, self.workers = recipe, work, workers
        self.task = recipe["task"]
        self.classes = class_names(self.task)
        self.spec = _spec(recipe)
        # Data sets are encoded with the plain front-end and gain the recipe's delay taps when read (a pure
        # function of the plain spikes, bit for bit what encoding with the taps gives): one encoded corpus
        # serves every tap setting.
        self.plain = replace(self.spec, delay_taps_ms=(0.0,))
        per = recipe.get("real_per_speaker_class")
        self.labels = _subset_manifest(real, per, work) if per else real / "labels.csv"
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = round(time.perf_counter() - start, 1)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.timings[name]} s", file=sys.stderr, flush=True)

    def synth(self, name: str, **changes: Any) -> Path:
        out = self.work / "synth" / name
        if not (out / "manifest.json").is_file():
            start = time.perf_counter()
            args = {**self.recipe["synth"], **changes}
            synthesize(out, self.task, spec=self.plain, workers=self.workers, force=True, **args)
            self._timed(f"synth {name}", start)
        return out

    def real(
        self,
        name: str,
        source: str,
        train: tuple[str, ...] = (),
        labels: set[str] | None = None,
        **changes: Any,
    ) -> Path:
        """The recordings of ``source`` (of ``labels`` only, if given) imported; ``train``'s speakers form
        the train split, every other speaker the test split."""
        out = self.work / "real" / name
        only = {"source": {source}, **({"label": labels} if labels else {})}
        if not (out / "manifest.json").is_file():
            start = time.perf_counter()
            import_recordings(
                [self.labels], out, self.classes, task=self.task, only=only,
                train_speakers=train, rest="test", spec=self.plain, workers=self.workers, force=True,
                **{**self.recipe["import"], **changes},
            )  # fmt: skip
            self._timed(f"import {name}", start)
        return out

    def read(self, path: Path) -> SpikeDataset:
        """A data set of ``path`` as the recipe's front-end makes it (its delay taps added)."""
        data = read_shd(path)
        return data if self.spec == self.plain else data.with_delay_taps(self.spec.delay_taps_ms)

    def train(self, name: str, train: SpikeDataset, val: SpikeDataset) -> Any:
        from edgekws.toolkit.train import TrainConfig, load_run
        from edgekws.toolkit.train import train as run_training

        out = self.work / "runs" / name
        config = TrainConfig.from_dict(self.recipe["train"])
        if (out / "best.npz").is_file():
            check_reusable(out, config.to_dict(), train.attrs.get("frontend"))
        else:
            start = time.perf_counter()
            run_training(train, out, config, val_data=val, progress=True)
            self._timed(f"train {name}", start)
        return load_run(out)

    @staticmethod
    def score(run: Any, data: SpikeDataset, trained_on: str, tested_on: str) -> dict[str, Any]:
        from edgekws.toolkit.train import evaluate

        result = evaluate(run, data, backend="float")
        keep = ("samples", "accuracy", "per_class_accuracy", "per_speaker_accuracy", "per_source_accuracy")
        return {
            "trained_on": trained_on,
            "tested_on": tested_on,
            **{k: result[k] for k in keep if k in result},
        }


def check_reusable(run: Path, config: dict[str, Any], frontend: Any) -> None:
    """Refuse to reuse ``run`` (a folder with a ``best.npz``) unless it finished training with this
    recipe's training ``config`` and ``frontend``: a run's folder name says neither, so another seed,
    trainer or set of delay taps in the same ``--work`` would otherwise be scored with the old run, and a
    run still training (or stopped) has a ``best.npz`` of its last epoch."""
    from edgekws.agent import FrontendSpec
    from edgekws.toolkit.train import TrainConfig

    def stop(why: str) -> SystemExit:
        return SystemExit(
            f"{run} {why}: give the recipe a --work folder of its own (link its synth/ and real/ folders in "
            "to reuse them) or delete that run folder to train it again"
        )

    stored = json.loads((run / "run.json").read_text())
    if stored.get("status") != "finished":  # best.npz is written every epoch: a run still going, or stopped
        raise stop(f"has not finished training (status {stored.get('status')!r})")
    have_frontend = stored.get("frontend")
    have_frontend, frontend = (json.loads(f) if isinstance(f, str) else f for f in (have_frontend, frontend))
    try:
        if isinstance(have_frontend, dict) and isinstance(frontend, dict):  # fields left out: their defaults
            have_frontend = FrontendSpec.from_dict(have_frontend).to_dict()
            frontend = FrontendSpec.from_dict(frontend).to_dict()
        have_config = TrainConfig.from_dict(stored["config"]).to_dict()  # older runs: new fields at defaults
    except (KeyError, ValueError) as err:  # ConfigError and FrontendSpecError are ValueErrors
        raise stop(f"records settings this version cannot read ({err})") from None
    differ = []
    for part, have, want in (("config", have_config, config), ("frontend", have_frontend, frontend)):
        if isinstance(have, dict) and isinstance(want, dict):
            keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            differ += [
                f"{part}.{k}: run {have.get(k, 'default')!r}, recipe {want.get(k, 'default')!r}" for k in keys
            ]
        elif have != want:
            differ.append(f"{part}: run {have!r}, recipe {want!r}")
    if differ:
        raise stop(f"was trained with other settings than this recipe's ({'; '.join(differ)})")


def _all_splits(b: Bench, folder: Path) -> SpikeDataset:
    return SpikeDataset.concat([b.read(folder / f"{s}.h5") for s in ("train", "val", "test")])


def _persons(corpus: Path, split: str | None) -> set[str]:
    """The recorded persons of a synthetic corpus's speakers (of one split, or all)."""
    speakers = json.loads((corpus / "manifest.json").read_text())["speakers"]
    return {s.get("person", s["id"]) for s in speakers if split is None or s["split"] == split}


def task_words(data: SpikeDataset) -> np.ndarray:
    """Indices of the samples labelled with one of the task's words (not ``_unknown_`` or ``_silence_``)."""
    names = np.asarray(data.class_names)[data.labels]
    return np.flatnonzero(~np.isin(names, [UNKNOWN_CLASS, SILENCE_CLASS]))


def _nonempty(b: Bench, folder: Path, split: str) -> SpikeDataset | None:
    data = b.read(folder / f"{split}.h5")
    return data if len(data) else None


def synthetic_only(b: Bench) -> dict[str, Any]:
    corpus = b.synth("all")
    run = b.train("synthetic", b.read(corpus / "train.h5"), b.read(corpus / "val.h5"))
    return score_synthetic_only(b, run, corpus)


def score_synthetic_only(b: Bench, run: Any, corpus: Path) -> dict[str, Any]:
    """Protocol (a)'s scores of a run trained on ``corpus``: its unseen test voices, FSDD, the SC sample."""
    trained = f"synthetic {b.task}, all engines, train voices ({corpus.name})"
    fsdd = b.read(b.real("fsdd-all", "fsdd") / "test.h5")
    out = {
        "synthetic_test": b.score(run, b.read(corpus / "test.h5"), trained, "synthetic test voices (unseen)"),
        "fsdd": b.score(
            run,
            fsdd,
            trained,
            "FSDD, all 6 speakers"
            + ("" if "zero" in b.classes else " (digits: every clip's truth is _unknown_)"),
        ),
    }
    sc = _nonempty(b, b.real("sc-sample", SC_SOURCE), "test")
    if sc is not None:
        out["speech_commands_sample"] = b.score(
            run, sc, trained, "Speech Commands v0.01 sample, all 34 speakers (other words as _unknown_)"
        )
        words = task_words(sc)
        if len(words):
            out["speech_commands_sample_keywords"] = b.score(
                run,
                sc.subset(words),
                trained,
                f"Speech Commands v0.01 sample, the task's {len(set(sc.labels[words]))} words",
            )
    return out


def leave_one_engine_out(b: Bench) -> dict[str, Any]:
    out = {}
    engines = b.recipe["synth"].get("engines") or list(DEFAULT_ENGINES)
    changes = b.recipe["leave_one_engine_out"]
    size = f", {changes['per_class']} per class" if "per_class" in changes else ""
    for engine in engines:
        train = b.synth(f"without-{engine}", **{"exclude": [engine], **changes})
        # an engine of fewer than 3 persons (hibari: one) cannot fill three splits alone: espeak-ng fills the
        # others and only the engine's clips are scored
        persons_of_engine = {v.person for v in voices(engine, "en")}
        few = len(persons_of_engine) < 3
        alone = [engine, "espeak-ng"] if few else [engine]
        only = b.synth(f"only-{engine}", **{"engines": alone, "exclude": [], **changes})
        test = _all_splits(b, only)
        if few:
            test = test.subset(np.flatnonzero(np.asarray(test.metadata("source")) == engine))
        run = b.train(f"without-{engine}", b.read(train / "train.h5"), b.read(train / "val.h5"))
        persons = _persons(train, "train") & persons_of_engine
        shared = (
            f" (persons also in training by another engine: {', '.join(sorted(persons))})" if persons else ""
        )
        out[engine] = b.score(
            run,
            test,
            f"synthetic {b.task} without {engine}{size}",
            f"every {engine} voice (all splits){shared}",
        )
    return out


def fsdd_options(recipe: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """The ``[fsdd_finetune]`` section: which rotations this process runs (indices into ``ROTATIONS``) and
    the import's arguments; a bad value raises ValueError before any run."""
    changes = dict(recipe.get("fsdd_finetune", {}))
    rotations = changes.pop("rotations", list(range(len(ROTATIONS))))  # a few a process: they share cores
    if (
        not isinstance(rotations, list)
        or not rotations
        or any(isinstance(r, bool) or r not in range(len(ROTATIONS)) for r in rotations)
    ):
        raise ValueError(
            f"fsdd_finetune.rotations must list some of 0, 1, 2 (held out: "
            f"{', '.join('+'.join(s[5:] for s in r) for r in ROTATIONS)}), e.g. [0], got {rotations!r}"
        )
    return rotations, changes


def fsdd_finetune(b: Bench) -> dict[str, Any]:
    corpus = b.synth("all")
    rotations, changes = fsdd_options(b.recipe)
    copies = int(changes.get("copies", 0))
    tag = f"-copies{copies}" if copies else ""
    folds = {}
    for rotation, held_out in enumerate(ROTATIONS):
        if rotation not in rotations:
            continue
        train_speakers = tuple(s for s in FSDD_SPEAKERS if s not in held_out)
        real = b.real(
            f"fsdd-without-{'-'.join(s[5:] for s in held_out)}{tag}", "fsdd", train_speakers, **changes
        )
        train = SpikeDataset.concat([b.read(corpus / "train.h5"), b.read(real / "train.h5")])
        name = "synthetic+fsdd-" + "-".join(s[5:] for s in train_speakers) + tag
        run = b.train(name, train, b.read(corpus / "val.h5"))
        augmented = f" (each clip also {copies}x augmented: {changes.get('augment')})" if copies else ""
        folds["+".join(held_out)] = b.score(
            run, b.read(real / "test.h5"),
            f"synthetic {b.task} + FSDD {', '.join(train_speakers)}{augmented}",
            f"FSDD {', '.join(held_out)} (held out)",
        )  # fmt: skip
    accs = [f["accuracy"] for f in folds.values()]
    return {
        "folds": folds,
        "mean_accuracy": statistics.mean(accs),
        "std_accuracy": statistics.pstdev(accs),
        "min_accuracy": min(accs),
        "max_accuracy": max(accs),
    }


def sc_clip_counts(labels: Path, keywords: set[str]) -> dict[str, tuple[int, int]]:
    """Per Speech Commands sample speaker: (clips of ``keywords``, all clips)."""
    import csv

    with labels.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == SC_SOURCE]
    clips: dict[str, tuple[int, int]] = {}
    for row in rows:
        key, every = clips.get(row["speaker"], (0, 0))
        clips[row["speaker"]] = (key + (row["label"] in keywords), every + 1)
    return clips


def sc_halves(clips: dict[str, tuple[int, int]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The Speech Commands sample's speakers (``sc_clip_counts``) in two halves: ordered by their keyword
    clips (then all their clips, then name) and dealt A, B, B, A, A, B, ... so both halves hold about as many
    keyword clips."""
    order = sorted(clips, key=lambda s: (-clips[s][0], -clips[s][1], s))
    halves: tuple[list[str], list[str]] = ([], [])
    for i, speaker in enumerate(order):
        halves[(i + i // 2) % 2].append(speaker)
    return tuple(halves[0]), tuple(halves[1])


def _pooled(blocks: list[dict[str, Any]]) -> float:
    return sum(b["accuracy"] * b["samples"] for b in blocks) / sum(b["samples"] for b in blocks)


class ScOptions(NamedTuple):
    """The ``[sc_finetune]`` section, checked."""

    folds: list[int]  # which folds this process runs
    train_words: str  # "all" the training half's clips, or only its "keywords" (the task's words)
    keyword_copies: int  # the half's keyword clips imported once more with this many augmented copies
    import_args: dict[str, Any]  # import_recordings arguments (augment, copies)


def sc_options(recipe: dict[str, Any]) -> ScOptions:
    """The ``[sc_finetune]`` section as :class:`ScOptions`; a bad value raises ValueError before any run."""
    changes = dict(recipe.get("sc_finetune", {}))
    run_folds = changes.pop("folds", [0, 1])  # one fold a process lets two processes share the cores
    real_words = changes.pop("train_words", "all")  # "keywords": the training half's other words left out
    keyword_copies = changes.pop("keyword_copies", 0)
    if real_words not in ("all", "keywords"):
        raise ValueError(f"sc_finetune.train_words must be 'all' or 'keywords', got {real_words!r}")
    if not isinstance(run_folds, list) or not run_folds or set(run_folds) - {0, 1}:
        raise ValueError(f"sc_finetune.folds must list 0, 1 or both, e.g. [0], got {run_folds!r}")
    if not isinstance(keyword_copies, int) or isinstance(keyword_copies, bool) or keyword_copies < 0:
        raise ValueError(f"sc_finetune.keyword_copies must be a whole number >= 0, got {keyword_copies!r}")
    return ScOptions(run_folds, real_words, keyword_copies, changes)


def sc_finetune(b: Bench) -> dict[str, Any]:
    corpus = b.synth("all")
    run_folds, real_words, keyword_copies, changes = sc_options(b.recipe)
    copies = int(changes.get("copies", 0))
    tag = f"-copies{copies}" if copies else ""
    keywords = set(b.classes) - {UNKNOWN_CLASS, SILENCE_CLASS}
    counts = sc_clip_counts(b.labels, keywords)
    halves = sc_halves(counts)
    folds = {}
    for fold, (trained, held_out) in enumerate((halves, halves[::-1])):
        if fold not in run_folds:
            continue
        real = b.real(f"sc-fold{fold}{tag}", SC_SOURCE, trained, **changes)
        speakers = tuple(s for s in trained if counts[s][0])  # with keyword clips: the others add none
        if real_words == "keywords":
            heard = b.real(f"sc-fold{fold}-keywords{tag}", SC_SOURCE, speakers, keywords, **changes)
            which = "the task's words of "
        else:
            heard, which = real, ""
        parts = [b.read(corpus / "train.h5"), b.read(heard / "train.h5")]
        augmented = f" (each clip also {copies}x augmented: {changes.get('augment')})" if copies else ""
        kw = "-keywords" if real_words == "keywords" else ""
        if keyword_copies:  # the command-word clips again, other augmented copies (seed 1): weighed up
            again = b.real(
                f"sc-fold{fold}-keywords-seed1-copies{keyword_copies}", SC_SOURCE, speakers, keywords,
                **{**changes, "copies": keyword_copies, "seed": 1},
            )  # fmt: skip
            extra = b.read(again / "train.h5")
            parts.append(extra.subset(task_words(extra)))  # without the import's _silence_ clips
            kw += f"-kwx{keyword_copies}"
            augmented += f"; their command-word clips once more with {keyword_copies} other augmented copies"
        train = SpikeDataset.concat(parts)
        run = b.train(f"synthetic+sc-fold{fold}{kw}{tag}", train, b.read(corpus / "val.h5"))
        trained_on = (
            f"synthetic {b.task} + {which}Speech Commands sample speakers {', '.join(trained)}{augmented}"
        )
        test = b.read(real / "test.h5")
        tested_on = f"Speech Commands v0.01 sample speakers {', '.join(held_out)} (held out)"
        said = task_words(test)
        folds[f"fold{fold}"] = {
            "all": b.score(run, test, trained_on, tested_on + ", other words as _unknown_"),
            "keywords": b.score(run, test.subset(said), trained_on, tested_on + ", the task's words"),
        }
    return {
        "folds": folds,
        "halves": [list(h) for h in halves],
        "pooled_accuracy": _pooled([f["all"] for f in folds.values()]),
        "pooled_keyword_accuracy": _pooled([f["keywords"] for f in folds.values()]),
    }


PROTOCOLS = {
    "synthetic": synthetic_only,
    "leave_one_engine_out": leave_one_engine_out,
    "fsdd_finetune": fsdd_finetune,
    "sc_finetune": sc_finetune,
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(doc: dict[str, Any]) -> str:
    r = doc["results"]
    lines = [
        f"# Real voices: recipe `{doc['recipe']['name']}`"
        + (" (TINY PROOF RUN: numbers mean nothing)" if doc["tiny"] else ""),
        "",
        f"Task {doc['recipe']['task']} ({', '.join(doc['classes'])}). Reproduce: `{doc['command']}`. "
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores (shared), load average "
        f"{doc['machine']['load_average_1min']} at the start and {doc['load_average_1min_at_end']} at the "
        "end; "
        f"{doc['seconds']:.0f} s in all. Real speech: FSDD (CC BY-SA 4.0, Z. Jackson et al.) and a Speech "
        "Commands v0.01 sample (CC BY 4.0, P. Warden), speaker-disjoint from every training set they are "
        "scored on.",
        "",
        "| protocol | trained on | tested on | samples | accuracy |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = []
    for block in r.get("synthetic", {}).values():
        rows.append(("synthetic only", block))
    for engine, block in r.get("leave_one_engine_out", {}).items():
        rows.append((f"leave {engine} out", block))
    for block in r.get("fsdd_finetune", {}).get("folds", {}).values():
        rows.append(("synthetic + 4 FSDD", block))
    for fold in r.get("sc_finetune", {}).get("folds", {}).values():
        rows += [("synthetic + half the SC speakers", fold[k]) for k in ("keywords", "all")]
    for name, block in rows:
        lines.append(
            f"| {name} | {block['trained_on']} | {block['tested_on']} | {block['samples']} "
            f"| {_pct(block['accuracy'])} |"
        )
    ft = r.get("fsdd_finetune")
    if ft:
        spread = f"range {_pct(ft['min_accuracy'])}–{_pct(ft['max_accuracy'])}"
        lines += [
            "",
            f"Synthetic + 4 FSDD speakers, held-out pairs: mean {_pct(ft['mean_accuracy'])}, "
            f"std {_pct(ft['std_accuracy'])}, {spread}.",
        ]
    sc = r.get("sc_finetune")
    if sc:
        lines += [
            "",
            "Synthetic + half the Speech Commands sample's speakers, the folds pooled (every clip scored by "
            f"a model that never heard its speaker): the task's words {_pct(sc['pooled_keyword_accuracy'])}, "
            f"all clips {_pct(sc['pooled_accuracy'])}.",
        ]
    if ft:
        held = {k: v for f in ft["folds"].values() for k, v in f.get("per_speaker_accuracy", {}).items()}
        if held:
            lines += ["", "Synthetic + 4 FSDD speakers, per held-out speaker: " + ", ".join(
                f"{k} {_pct(v['accuracy'])}" for k, v in sorted(held.items()))]  # fmt: skip
    fsdd = r.get("synthetic", {}).get("fsdd")
    if fsdd and "per_speaker_accuracy" in fsdd:
        lines += ["", "Synthetic only, FSDD per speaker: " + ", ".join(
            f"{k} {_pct(v['accuracy'])}" for k, v in fsdd["per_speaker_accuracy"].items())]  # fmt: skip
    test = r.get("synthetic", {}).get("synthetic_test")
    if test:
        for column in ("source", "augment"):
            table = test.get("per_source_accuracy", {}).get(column)
            if table:
                lines += ["", f"Synthetic test voices by {column}: " + ", ".join(
                    f"{k} {_pct(v['accuracy'])} ({v['samples']})" for k, v in table.items())]  # fmt: skip
    if doc.get("note"):
        lines += ["", doc["note"]]
    lines += ["", "Recipe:", "", "```json", json.dumps(doc["recipe"], indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, help="TOML/JSON recipe over DEFAULT_RECIPE")
    parser.add_argument("--tiny", action="store_true", help="tiny corpora and 1 epoch: proves the plumbing")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one recipe value (TOML syntax; repeatable): --set train.seed=1 --set train.method=bptt",
    )
    parser.add_argument(
        "--real", type=Path, default=None, help="folder of labels.csv (shared/data/real-speech)"
    )
    parser.add_argument("--work", type=Path, default=None, help="folder for corpora and runs (kept; reused)")
    parser.add_argument("--protocols", default=None, help="comma-separated subset of " + ", ".join(PROTOCOLS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--note", default="", help="a paragraph for the .md (e.g. how reused runs were made)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path (the .md goes beside it)")
    args = parser.parse_args()
    try:
        recipe = load_recipe(args.recipe, args.tiny, tuple(args.overrides))
        sc_options(recipe)
        fsdd_options(recipe)
    except ValueError as err:
        sys.exit(str(err))
    real = args.real or _default_real()
    if not (real / "labels.csv").is_file():
        sys.exit(f"{real}/labels.csv not found; pass --real shared/data/real-speech")
    protocols = args.protocols.split(",") if args.protocols else recipe["protocols"]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        sys.exit(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="real-voices-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    info = machine()
    bench = Bench(recipe, real, work, args.workers)
    results = {name: PROTOCOLS[name](bench) for name in protocols}
    doc = {
        "benchmark": "real_voices",
        "tiny": args.tiny,
        "command": command_line(without=["--note"]),
        "machine": info,
        "load_average_1min_at_end": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
        "stage_seconds": bench.timings,
        "recipe": recipe,
        "classes": bench.classes,
        "work": str(work),
        "results": results,
        "note": args.note,
    }
    out = args.out or RESULTS / ("real_voices_tiny.json" if args.tiny else "real_voices.json")
    write_results(out, doc, markdown(doc))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Commands runs side by side on what they hear and what they reject: ``OUT.{md,json}``.

For each ``LABEL=RUN`` (a run trained without the Speech Commands sample: scored on all of it) or
``LABEL=RUN0,RUN1`` (protocol (d)'s two fold runs of ``benchmarks/real_voices.py``, each scored on the half
it never heard, the halves pooled): the sample's command words named right and answered ``_unknown_``,
its other words rejected, FSDD's digits rejected (every digit is ``_unknown_`` to the commands task) and
the unseen synthetic voices (for fold runs, the mean of the two runs). Issue #12 rounds 14 to 17
(docs/training.md; the results file's command has every row, rounds 15 to 17's runs added to these):

```
F=runs/r14/sc/runs/synthetic+sc-fold
.venv/bin/python benchmarks/research/sc_rejection.py benchmarks/results/sc_finetune_commands \
    --sc runs/r12/ep/real/sc-sample/test.h5 --fsdd runs/r12/ep/real/fsdd-all/test.h5 \
    --synthetic runs/r12/ep/synth/all/test.h5 \
    --folds runs/r14/sc/real/sc-fold0-copies3/test.h5,runs/r14/sc/real/sc-fold1-copies3/test.h5 \
    'synthetic only, seed 1234=runs/r12/ep/runs/synthetic' \
    "synthetic + half the SC speakers, seed 1234=${F}0-copies3,${F}1-copies3"
```

With ``--add`` (and the same data sets) the results file keeps its rows and gains the given runs' only,
and its command becomes the one that makes every row (round 17's were added so). Data sets are read plain
and given the run's delay taps (``SpikeDataset.with_delay_taps``).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import command_line, machine, write_results  # benchmarks/ is on the path from here on

from edgekws.toolkit.data import SpikeDataset, read_shd
from edgekws.toolkit.data._synth import SILENCE_CLASS, UNKNOWN_CLASS
from edgekws.toolkit.train import evaluate, load_run


def taps_of(run: Any) -> tuple[float, ...]:
    """The delay taps of the front-end ``run`` was trained with ((0.0,): none, the plain front-end)."""
    return tuple((run.info.get("frontend") or {}).get("delay_taps_ms", (0.0,)))


def heard(data: SpikeDataset, taps: tuple[float, ...]) -> SpikeDataset:
    """The plain front-end's spikes ``data`` as a front-end with ``taps`` makes them."""
    return data if taps == (0.0,) else data.with_delay_taps(taps)


@functools.cache  # FSDD and the synthetic test set are scored by every run: read (and tapped) once
def _read(path: Path, taps: tuple[float, ...]) -> SpikeDataset:
    return heard(read_shd(path), taps)


def counts(run: Any, data: SpikeDataset) -> dict[str, int]:
    """Clips of the task's words (right, answered _unknown_), other clips (rejected right), all (right),
    from ``edgekws eval``'s confusion matrix (rows: truth, columns: answer)."""
    result = evaluate(run, data, backend="float")
    confusion = np.asarray(result["confusion_matrix"])
    names = list(result["class_names"])
    filler = np.isin(names, [UNKNOWN_CLASS, SILENCE_CLASS])
    right = confusion.diagonal()
    return {
        "words": int(confusion[~filler].sum()),
        "words_right": int(right[~filler].sum()),
        "words_as_unknown": int(confusion[~filler, names.index(UNKNOWN_CLASS)].sum()),
        "others": int(confusion[filler].sum()),
        "others_rejected": int(right[filler].sum()),
        "clips": int(confusion.sum()),
        "right": int(right.sum()),
    }


def row(paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    runs = [load_run(p) for p in paths]
    taps = taps_of(runs[0])
    if len(runs) == 1:
        sc = counts(runs[0], _read(args.sc, taps))
    elif len(runs) == len(args.folds):
        per_fold = [counts(r, _read(f, taps)) for r, f in zip(runs, args.folds, strict=True)]
        sc = {k: sum(c[k] for c in per_fold) for k in per_fold[0]}
    else:
        raise SystemExit(f"{len(runs)} runs for {len(args.folds)} folds: give one run, or one run a fold")
    fsdd = [counts(r, _read(args.fsdd, taps)) for r in runs]
    synthetic = [counts(r, _read(args.synthetic, taps)) for r in runs]
    return {
        "runs": [str(p) for p in paths],
        "speech_commands_sample": sc,
        "fsdd_rejected": float(np.mean([c["right"] / c["clips"] for c in fsdd])),
        "synthetic_test": float(np.mean([c["right"] / c["clips"] for c in synthetic])),
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Commands runs: the Speech Commands sample heard and rejected",
        "",
        f"Reproduce: `{doc['command']}`. Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores. "
        "Fold runs are scored on the half of the sample they never heard, pooled; other runs on all of it.",
        "",
        "| run | SC command words right | command words answered _unknown_ | SC other words rejected "
        "| SC all clips | FSDD rejected | unseen synthetic voices |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in doc["rows"].items():
        sc = r["speech_commands_sample"]
        lines.append(
            f"| {label} | {sc['words_right']}/{sc['words']} ({100 * sc['words_right'] / sc['words']:.1f} %) "
            f"| {sc['words_as_unknown']} | {sc['others_rejected']}/{sc['others']} "
            f"({100 * sc['others_rejected'] / sc['others']:.1f} %) | {100 * sc['right'] / sc['clips']:.1f} % "
            f"| {100 * r['fsdd_rejected']:.1f} % | {100 * r['synthetic_test']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="results path without suffix")
    parser.add_argument("runs", nargs="+", help="LABEL=RUN or LABEL=RUN0,RUN1")
    parser.add_argument("--sc", type=Path, required=True, help="the whole sample's test.h5 (plain)")
    parser.add_argument("--folds", required=True, help="FOLD0.h5,FOLD1.h5: protocol (d)'s held-out halves")
    parser.add_argument("--fsdd", type=Path, required=True)
    parser.add_argument("--synthetic", type=Path, required=True, help="the corpus's unseen test voices")
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep OUT.json's rows and score only these runs: the same data sets as its command, new labels; "
        "the file's command becomes its command with these runs added, which reproduces every row",
    )
    return parser


def _labelled(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, list[Path]]:
    runs = {}
    for item in items:
        label, sep, paths = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected LABEL=RUN[,RUN]")
        runs[label] = [Path(p) for p in paths.split(",")]
    return runs


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    new = _labelled(parser, args.runs)
    given = sys.argv[1:]
    rows: dict[str, Any] = {}
    if args.add:  # the earlier rows as they are, if the data sets are the same
        path = args.out.with_suffix(".json")
        if not path.exists():
            parser.error(f"--add: {path} does not exist; run without --add to write it")
        before = json.loads(path.read_text())
        earlier = shlex.split(before["command"])[2:]  # after the interpreter and the script
        old = parser.parse_args(earlier)
        for key in ("out", "sc", "folds", "fsdd", "synthetic"):
            now, then = getattr(args, key), getattr(old, key)
            if now != then:
                parser.error(f"--add: {key} {now} is not {path}'s {then}: give the same, or no --add")
        clash = sorted(set(_labelled(parser, old.runs)) & set(new))
        if clash:
            parser.error(f"--add: {path} already has rows {clash}; give new labels")
        rows = dict(before["rows"])
        given = earlier + args.runs
    args.folds = [Path(p) for p in args.folds.split(",")]
    for label, paths in new.items():
        rows[label] = row(paths, args)
        print(label, rows[label]["speech_commands_sample"], flush=True)
    command = command_line(given)
    doc = {"command": command, "machine": machine(), "rows": rows}
    write_results(args.out.with_suffix(".json"), doc, markdown(doc))


if __name__ == "__main__":
    main()

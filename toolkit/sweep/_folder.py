"""The sweep folder: its layout and the two JSON files the driver keeps there (readable without Ray).

``SWEEP`` holds::

    sweep.json      type "edgekws.sweep", format_version 1: the spec, the engine (Ray version, address,
                    storage, experiment path, resources per trial), created / finished times, status
                    (starting / running / interrupted / finished)
    trials.json     one entry per trial Ray Tune started, by trial name: point, seed, status (pending /
                    running / finished / stopped / error), epoch reached, best validation accuracy, run
                    folder, CPU cores, GPU ids (Ray's), pid and node, restarts, the epoch it last resumed
                    from
    runs/NAME/      the trial's run folder, exactly as `edgekws train` writes it (docs/training.md)
    tune/           Ray Tune's experiment state, what --resume restores (elsewhere with --storage)
    report.json, report.md, report.png   written by `edgekws sweep report`
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekws.packaging import atomic_write_text
from edgekws.toolkit._typed_json import read_typed_json
from edgekws.toolkit.sweep._spec import SweepError

SWEEP_TYPE = "edgekws.sweep"
SWEEP_FORMAT_VERSION = 1
SWEEP_INFO = "sweep.json"
TRIALS = "trials.json"
RUNS = "runs"
TUNE = "tune"
UNFINISHED = ("pending", "running")


def read_sweep_info(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return read_typed_json(
        Path(sweep_dir) / SWEEP_INFO, SWEEP_TYPE, SweepError, "sweep description", f"is {sweep_dir} a sweep?"
    )


def read_trials(sweep_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    path = Path(sweep_dir) / TRIALS
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()))


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON (keys in their order: a spec's keys keep the file's), atomically."""
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

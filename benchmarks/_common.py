"""What every benchmark shares: the machine a result was measured on, and writing the result files.

The benchmarks run as scripts (``.venv/bin/python benchmarks/<name>.py``), so Python puts this folder first
on ``sys.path`` and ``from _common import ...`` finds this module without installing anything.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]

# The seed paper's SHD training setting (reference/seed-paper.md §3), which the training benchmarks time:
# 8,156 samples, 700 channels -> 256 recurrent -> 20 classes, T = 1000 steps of 1 ms, batch 32.
SHD = {"samples": 8156, "channels": 700, "hidden": 256, "classes": 20, "steps": 1000, "batch": 32}
SHD_DENSITY = 0.012  # SHD's fraction of active (step, channel) bins


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float:
    """The 1-minute load average, rounded to two decimals (the machine is shared: say how busy it was)."""
    return round(os.getloadavg()[0], 2)


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU model, cores, 1-min load average, Python and numpy versions, plus ``extra`` fields."""
    import numpy as np

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1min": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    info.update(extra)
    return info


def command_line(args: Sequence[str] | None = None, *, without: Sequence[str] = ()) -> str:
    """The command that reproduces this run, quoted so it can be pasted back into a shell.

    ``.venv/bin/python benchmarks/<script>.py ARGS`` (the script as a path from the repository root), ``args``
    being ``sys.argv[1:]`` unless given, less each option named in ``without`` and its value, in either
    spelling (``--note TEXT`` or ``--note=TEXT``): options such as a free-text note that do not change the
    result. Every benchmark writes its results file's ``command`` with this, so they read alike.
    """
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else sys.argv[0]
    given = list(sys.argv[1:] if args is None else args)
    kept: list[str] = []
    skip = False
    for arg in given:
        if skip:
            skip = False
        elif arg in without:
            skip = True
        elif not any(arg.startswith(option + "=") for option in without):
            kept.append(arg)
    return shlex.join([".venv/bin/python", shown, *kept])


def write_results(json_path: Path, doc: Any, markdown: str, *, sort_keys: bool = False) -> Path:
    """Write ``doc`` as indented JSON to ``json_path`` and ``markdown`` next to it (same name, ``.md``)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n")
    json_path.with_suffix(".md").write_text(markdown)
    return json_path

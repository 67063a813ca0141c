"""``EDGEKWS_SHRINK``: caps on a workflow's sizes, to run the documented commands quickly and unchanged.

``EDGEKWS_SHRINK="per-class=3,epochs=1,recordings=2"`` makes ``edgekws data synth`` speak at most 3 utterances
per class, ``edgekws train`` (and each trial of ``edgekws sweep``) run at most 1 epoch and ``edgekws data
import`` take at most 2 recordings of each speaker and label, whatever the command line or the config file
asks for. Each cap that lowers a size is said on stderr. It never raises a size and changes nothing else: the
same commands write the same kinds of files. tests/test_docs.py runs README.md and docs/tutorial.md with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import click

ENV = "EDGEKWS_SHRINK"
# knob -> the option it caps
KNOBS = {
    "per-class": "edgekws data synth --per-class",
    "epochs": "edgekws train --epochs (and a sweep's trials)",
    "recordings": "edgekws data import, recordings per speaker and label,",
}


def caps(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The caps ``EDGEKWS_SHRINK`` sets (none when unset or empty); a malformed value is a UsageError."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    found: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        knob, _, value = item.partition("=")
        knob = knob.strip()
        if knob not in KNOBS:
            raise click.UsageError(
                f"{ENV}={text!r}: unknown size {knob!r}; known: {', '.join(sorted(KNOBS))} (e.g. per-class=3)"
            )
        try:
            found[knob] = int(value)
        except ValueError:
            found[knob] = 0
        if found[knob] < 1:
            raise click.UsageError(f"{ENV}={text!r}: {knob} needs a positive whole number, got {value!r}")
    return found


def shrink(knob: str, value: int) -> int:
    """``value``, or the cap ``EDGEKWS_SHRINK`` gives ``knob`` when that is smaller (said on stderr)."""
    cap = caps().get(knob)
    if cap is None or cap >= value:
        return value
    click.echo(f"{ENV}: {KNOBS[knob]} {value} -> {cap}", err=True)
    return cap


def limit(knob: str) -> int | None:
    """The cap ``EDGEKWS_SHRINK`` puts on a size that is otherwise unlimited (said on stderr), else None."""
    cap = caps().get(knob)
    if cap is not None:
        click.echo(f"{ENV}: {KNOBS[knob]} all -> {cap}", err=True)
    return cap

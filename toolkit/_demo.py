"""`edgekws demo`: the main job, end to end on embedded defaults, every stage's output in one run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from edgekws.toolkit._progress import progress_bar

DEMO_PER_CLASS = 20  # utterances per class: 400 digits in about half a minute on two cores
DEMO_SEED = 0


def _stage(title: str) -> None:
    click.secho(f"\n== {title}", bold=True, err=True)


def run_demo(out: Path, per_class: int = DEMO_PER_CLASS, seed: int = DEMO_SEED) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary that is also written to ``out/summary.json``."""
    from edgekws.toolkit.data import _info, _synth

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run": str(out), "stages": {}}
    started = time.perf_counter()

    _stage(f"1. synthesize a spoken-digit corpus with espeak-ng ({per_class} per class) and encode it")
    corpus = out / "data"
    t0 = time.perf_counter()
    with progress_bar("synth digits") as update:
        manifest = _synth.synthesize(corpus, "digits", per_class, seed, force=True, progress=update)
    summary["stages"]["synth"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "utterances": len(manifest["utterances"]),
        "splits": manifest["splits"],
    }

    _stage("2. summarise the spike data set")
    described = _info.info(corpus)
    click.echo(_info.format_info(described))
    (out / "data_info.json").write_text(json.dumps(described, indent=2) + "\n")
    summary["stages"]["info"] = {"classes": len(described["classes"])}

    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Run folder: every stage writes its output here.")  # fmt: skip
@click.option("--per-class", type=click.IntRange(min=3), default=DEMO_PER_CLASS, show_default=True,
              help="Utterances per class in the demo corpus.")  # fmt: skip
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Seed for every stage.")
def demo(out: Path, per_class: int, seed: int) -> None:
    """Run the whole pipeline on embedded defaults.

    Synthesizes a small spoken-digit corpus with espeak-ng, encodes it to spikes with the agent's
    front-end and summarises it; every stage writes into the run folder.

    Example:

        edgekws demo --out runs/demo
    """
    summary = run_demo(out, per_class, seed)
    click.secho(f"\ndemo finished in {summary['seconds']} s; outputs in {out}", bold=True, err=True)

"""`edgekws demo`: the main job, end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Run folder: every stage writes its output here.")
def demo(out: Path) -> None:
    """Run the whole pipeline on embedded defaults.

    Example:

        edgekws demo --out runs/demo
    """
    raise click.ClickException("not built yet")

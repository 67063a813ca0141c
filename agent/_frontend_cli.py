"""`edgekws-agent encode`: audio to spikes through the bundle's front-end."""

from __future__ import annotations

import click


@click.command()
def encode() -> None:
    """Encode audio files to spikes.

    Example:

        edgekws-agent encode speech.wav --json
    """
    raise click.ClickException("not built yet")

"""`edgekws-agent lava-run`: the internal command the Lava subprocess bridge runs in the Lava interpreter."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from edgekws.agent.backends import BackendUnavailable, LavaBackend, backend_classes


def lava_backend_names() -> list[str]:
    """The registered backends that run on Lava (``lava-sim``, ``loihi2``)."""
    return [name for name, cls in backend_classes().items() if issubclass(cls, LavaBackend)]


@click.command("lava-run", hidden=True)
@click.option(
    "--netx", "netx_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--spikes", "spikes_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(lava_backend_names()),
    default="lava-sim",
    show_default=True,
    help="Which Lava backend runs the network.",
)
def lava_run(netx_path: Path, spikes_path: Path, out_path: Path, backend: str) -> None:
    """Run a NetX file on Lava over the spikes in an npz file (key 'spikes', (batch, steps, channels)).

    Writes the readout traces in float units to OUT (npz, key 'readout'). Internal: the toolkit's Lava
    bridge calls this in the Python 3.10 Lava environment.

    Example:

        .venv-lava/bin/edgekws-agent lava-run --netx model/netx.h5 --spikes in.npz --out out.npz
    """
    try:
        with np.load(spikes_path) as data:
            spikes = np.asarray(data["spikes"])
        runner = backend_classes()[backend](netx_path)
        readout = runner.run(spikes)
        runner.close()
    except (BackendUnavailable, ValueError, KeyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    np.savez(out_path, readout=readout)

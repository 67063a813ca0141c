"""`edgekws-agent`: the device daemon's command line."""

from __future__ import annotations

import click

from edgekws.packaging import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekws-agent")
def main() -> None:
    """The edgekws device agent: audio in, keyword detections and telemetry out.

    Example:

        edgekws-agent encode speech.wav --json
    """


def _register() -> None:
    from edgekws.agent import _frontend_cli

    main.add_command(_frontend_cli.encode)

    from edgekws.agent import _daemon_cli

    main.add_command(_daemon_cli.run)
    main.add_command(_daemon_cli.classify)

    from edgekws.agent import _bundle_cli

    main.add_command(_bundle_cli.bundle)

    from edgekws.agent import _lava_cli

    main.add_command(_lava_cli.lava_run)


_register()

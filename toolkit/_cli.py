"""`edgekws`: the host toolkit's command line. Thin commands over the library."""

from __future__ import annotations

import click

from edgekws.packaging import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekws")
def main() -> None:
    """edgekws: train spiking keyword spotters with Eventprop and ship them to Loihi 2, Jetson or CPU.

    Example:

        edgekws data synth --task digits --out data/digits
    """


def _register() -> None:
    from edgekws.toolkit import _bundle_build, _bundle_cli, _demo
    from edgekws.toolkit.data import _cli as data_cli
    from edgekws.toolkit.train import _cli as train_cli

    main.add_command(data_cli.data)
    main.add_command(_demo.demo)
    main.add_command(_bundle_cli.keys)
    _bundle_cli.register_build_command(_bundle_build.build)
    main.add_command(_bundle_cli.bundle)
    main.add_command(train_cli.train)
    main.add_command(train_cli.eval_cmd)
    main.add_command(train_cli.report_cmd)

    from edgekws.toolkit.fleet import _cli as fleet_cli

    main.add_command(fleet_cli.fleet)


_register()

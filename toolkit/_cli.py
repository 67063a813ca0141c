"""`edgekws`: the host toolkit's command line. Thin commands over the library.

Subcommands are imported when they run, so `edgekws fleet …` works where only `edgekws[fleet]` is
installed (no JAX), and `edgekws --help` stays fast.
"""

from __future__ import annotations

import importlib

import click

from edgekws.packaging import __version__

# command name -> (module, attribute, the extra that installs what it needs)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("edgekws.toolkit.data._cli", "data", "train"),
    "train": ("edgekws.toolkit.train._cli", "train", "train"),
    "eval": ("edgekws.toolkit.train._cli", "eval_cmd", "train"),
    "report": ("edgekws.toolkit.train._cli", "report_cmd", "train"),
    "sweep": ("edgekws.toolkit.sweep._cli", "sweep", "sweep"),
    "keys": ("edgekws.toolkit._bundle_cli", "keys", "agent"),
    "bundle": ("edgekws.toolkit._bundle_cli", "bundle", "agent"),
    "fleet": ("edgekws.toolkit.fleet._cli", "fleet", "fleet"),
    "demo": ("edgekws.toolkit._demo", "demo", "train"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, extra = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(
                f"`edgekws {cmd_name}` needs a dependency that is not installed ({exc}); "
                f"install it with: pip install 'edgekws[{extra}]'"
            ) from exc
        command: click.Command = getattr(module, attribute)
        if cmd_name == "bundle":
            _add_build_command(module)
        return command


def _add_build_command(bundle_cli: object) -> None:
    """`edgekws bundle RUN …` (quantize, export, sign) where the workstation dependencies are installed."""
    try:
        from edgekws.toolkit import _bundle_build
    except ImportError:  # an inspect/verify-only install: the other bundle subcommands still work
        return
    bundle_cli.register_build_command(_bundle_build.build)  # type: ignore[attr-defined]


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekws")
def main() -> None:
    """edgekws: train spiking keyword spotters with Eventprop and ship them to Loihi 2, Jetson or CPU.

    Example:

        edgekws data synth --task digits --out data/digits
    """

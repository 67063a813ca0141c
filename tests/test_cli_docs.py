"""Every `edgekws` and `edgekws-agent` command has help text with an example, and both answer --version."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from edgekws.agent._cli import main as agent_main
from edgekws.toolkit._cli import main as toolkit_main

CLIS = {"edgekws": toolkit_main, "edgekws-agent": agent_main}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{name} is listed but cannot be loaded"
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


CASES = [(prog, path) for prog, cli in CLIS.items() for path in _commands(cli)]


@pytest.mark.parametrize(("prog", "path"), CASES, ids=[" ".join((p, *c)) for p, c in CASES])
def test_every_command_has_help_with_an_example(prog: str, path: tuple[str, ...]) -> None:
    """`PROG … --help` exits 0 and shows an Example."""
    result = CliRunner().invoke(CLIS[prog], [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_version(prog: str) -> None:
    """`PROG --version` prints the package version."""
    result = CliRunner().invoke(CLIS[prog], ["--version"])
    assert result.exit_code == 0 and f"{prog}, version" in result.output


@pytest.mark.parametrize("args", [("fleet", "watch", "--help"), ("bundle", "verify", "--help")])
def test_fleet_and_bundle_commands_run_without_jax(args: tuple[str, ...]) -> None:
    """A host without the training stack (no JAX) can still run `edgekws fleet` and `edgekws bundle`."""
    script = (
        "import sys\n"
        "sys.modules['jax'] = None\n"  # importing jax now raises ImportError
        "from edgekws.toolkit._cli import main\n"
        f"main({list(args)!r})\n"
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    assert "Example" in done.stdout

"""`edgekws-agent bundle install|rollback|list`: the operator's hands on the device's bundle store."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_RELOAD = "the running agent picks it up on SIGHUP (systemctl reload edgekws-agent)"


def _store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="The agent's TOML config: its [store] dir and trusted_keys are used.",
        ),
        click.option(
            "--store",
            "store_dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="The store folder (overrides the config's [store] dir).",
        ),
        click.option(
            "--trust",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            help="A trusted Ed25519 public key file (repeatable; added to the config's trusted_keys).",
        ),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(config_path: Path | None, store_dir: Path | None, trust: tuple[str, ...], **kw: Any) -> Any:
        from edgekws.agent._config import ConfigError, load_config
        from edgekws.agent._device_store import DeviceStore, StoreError

        keys: list[Any] = list(trust)
        keep = 2
        if config_path is not None:
            try:
                cfg = load_config(config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
            store_dir = store_dir or cfg.store.dir
            keys = list(cfg.store.trusted_keys) + keys
            keep = cfg.store.keep_versions
        if store_dir is None:
            raise click.UsageError("give --store DIR or --config agent.toml")
        try:
            store = DeviceStore(store_dir, keys, keep_versions=keep)
            return func(store=store, **kw)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _row(b: Any, store: Any) -> dict[str, Any]:
    active, previous = store.active(), store.previous()
    return {
        "name": b.name,
        "version": b.version,
        "sha256": b.sha256,
        "active": active is not None and active.path == b.path,
        "previous": previous is not None and previous.path == b.path,
    }


@click.group()
def bundle() -> None:
    """Install, roll back and list the bundles in the device's store.

    Example:

        edgekws-agent bundle install kws-1.1.0.ekb --store /var/lib/edgekws/bundles --trust release.pub
    """


@bundle.command()
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_store_options
@click.option("--rollback", is_flag=True, help="Allow a version lower than the active one.")
@click.option("--json", "as_json", is_flag=True, help="Print the installed version as JSON.")
def install(store: Any, bundle_file: Path, rollback: bool, as_json: bool) -> None:
    """Verify a bundle (signature + hashes against the trusted keys) and make it the active version.

    A version lower than the active one is refused unless --rollback is given.

    Example:

        edgekws-agent bundle install kws-1.1.0.ekb --store /var/lib/edgekws/bundles --trust release.pub

        edgekws-agent bundle install kws-1.0.0.ekb --config /etc/edgekws/agent.toml --rollback
    """
    installed = store.install(bundle_file, rollback=rollback)
    if as_json:
        click.echo(json.dumps(_row(installed, store)))
    else:
        click.echo(f"active: {installed.label} (sha256 {installed.sha256[:16]}…); {_RELOAD}")


@bundle.command()
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print the now active version as JSON.")
def rollback(store: Any, as_json: bool) -> None:
    """Make the previous version active again (it is verified again first).

    Example:

        edgekws-agent bundle rollback --config /etc/edgekws/agent.toml
    """
    target = store.rollback()
    if as_json:
        click.echo(json.dumps(_row(target, store)))
    else:
        click.echo(f"active: {target.label}; {_RELOAD}")


@bundle.command(name="list")
@_store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per installed version.")
def list_(store: Any, as_json: bool) -> None:
    """List the installed versions, marking the active one (*) and the rollback target (-).

    Example:

        edgekws-agent bundle list --store /var/lib/edgekws/bundles --json
    """
    rows = [_row(b, store) for b in store.installed()]
    for r in rows:
        if as_json:
            click.echo(json.dumps(r))
        else:
            mark = "*" if r["active"] else "-" if r["previous"] else " "
            click.echo(f"{mark} {r['name']} {r['version']}  {r['sha256'][:16]}…")
    if not rows and not as_json:
        click.echo("no bundles installed")

"""`edgekws keys …` and `edgekws bundle …`: signing keys, and inspecting, verifying and storing bundles.

Thin commands over edgekws.packaging. The workstation command that makes a bundle from a training run
(`edgekws bundle RUN --name N --version V --key KEY --out FILE`) registers itself as `bundle build`
(see :func:`register_build_command`); `edgekws bundle RUN …` is routed to it when RUN is not a subcommand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgekws.packaging import (
    BundleStore,
    InvalidBundle,
    KeyFileError,
    Manifest,
    Report,
    StoreError,
    TrustStore,
    check_bundle,
    write_keypair,
)

BUILD_COMMAND = "build"


class _BundleGroup(click.Group):
    """A group that routes `bundle RUN …` to the `build` subcommand when RUN names no other subcommand."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if (
            args
            and args[0] not in self.commands
            and not args[0].startswith("-")
            and BUILD_COMMAND in self.commands
        ):
            args = [BUILD_COMMAND, *args]
        return super().resolve_command(ctx, args)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def _trust(paths: tuple[Path, ...]) -> TrustStore:
    try:
        return TrustStore.from_paths(paths)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc


_trust_option = click.option(
    "--trust",
    "trust",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A trusted public key (.pub) or a directory of them; repeat for several.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# ----------------------------------------------------------------------------------------------------------
# keys


@click.group()
def keys() -> None:
    """Make Ed25519 signing keys for bundles.

    Example:

        edgekws keys generate --out keys --name release
    """


@keys.command("generate")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME.key (private, mode 0600) and NAME.pub (created if missing).")  # fmt: skip
@click.option("--name", default="edgekws", show_default=True, help="Base name of the two key files.")
@_json_option
def keys_generate(out: Path, name: str, as_json: bool) -> None:
    """Generate a key pair and print its key id (first 16 hex digits of sha256 of the public key).

    Keep NAME.key secret; give NAME.pub to every device and store that should trust your bundles.

    Example:

        edgekws keys generate --out keys --name release
    """
    try:
        key = write_keypair(out, name)
    except (KeyFileError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    private, public = out / f"{name}.key", out / f"{name}.pub"
    if as_json:
        _echo_json({"key_id": key.key_id, "private_key": str(private), "public_key": str(public)})
    else:
        click.echo(f"key id {key.key_id}\n  private: {private} (keep secret)\n  public:  {public}")


# ----------------------------------------------------------------------------------------------------------
# bundle


@click.group(cls=_BundleGroup)
def bundle() -> None:
    """Inspect, verify, compare and store signed model bundles (.ekb).

    Example:

        edgekws bundle verify kws-1.2.0.ekb --trust keys/release.pub
    """


def _report_dict(report: Report) -> dict[str, Any]:
    return {
        "path": report.source,
        "size": report.size,
        "sha256": report.sha256,
        "verified": report.ok,
        "signature_checked": report.signature_checked,
        "signed_by": [s.key_id for s in report.signatures],
        "verified_key_ids": report.verified_key_ids,
        "members": [{"name": n, "type": t, "size": s} for n, t, s in report.members],
        "manifest": report.manifest.to_dict() if report.manifest else report.manifest_raw,
        "problems": [p.to_dict() for p in report.problems],
    }


@bundle.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_trust_option
@_json_option
def inspect(file: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Show a bundle's manifest, members and signers (verified only if --trust is given).

    Exits 1 when the file has problems (not a bundle, damaged, or failing --trust); an intact bundle
    inspected without --trust exits 0.

    Example:

        edgekws bundle inspect kws-1.2.0.ekb --json
    """
    report = check_bundle(file, _trust(trust) if trust else None)
    if as_json:
        _echo_json(_report_dict(report))
        if report.problems:
            raise SystemExit(1)
        return
    m = report.manifest
    state = "verified" if report.ok else ("NOT VERIFIED (pass --trust KEY.pub)" if not trust else "INVALID")
    click.echo(f"{file}  {report.size} bytes  sha256 {report.sha256}  [{state}]")
    if m is not None:
        lin = m.lineage
        click.echo(f"  {m.name} {m.version}   created {m.created} by edgekws {m.producer_version}")
        click.echo(
            f"  lineage: parent {lin.parent_version or '-'}, run {lin.training_run_id or '-'}, "
            f"data {lin.dataset_fingerprint or '-'}"
        )
        click.echo(f"  labels ({len(m.labels)}): {', '.join(m.labels)}")
        click.echo(f"  backends: {', '.join(m.backends) or '-'}")
        click.echo(
            f"  specs: frontend {m.frontend.get('type')}, network {m.network.get('type')}, quantization "
            f"{m.quantization.get('type') if m.quantization else '-'}"
        )
        for group, values in m.metrics.to_dict().items():
            if group == "backends":
                for b, vals in values.items():
                    click.echo(f"  metrics[{b}]: {', '.join(f'{k}={v:g}' for k, v in sorted(vals.items()))}")
            elif values:
                click.echo(
                    f"  metrics[{group}]: {', '.join(f'{k}={v:g}' for k, v in sorted(values.items()))}"
                )
        for path, entry in sorted(m.files.items()):
            click.echo(f"  {path:<28} {entry.size:>10} B  sha256 {entry.sha256[:16]}…")
    click.echo(f"  signed by: {', '.join(s.key_id for s in report.signatures) or '-'}")
    for p in report.problems:
        click.echo(f"  problem: {p}")
    if report.problems:
        raise SystemExit(1)


@bundle.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="A trusted public key (.pub) or a directory of them; repeat for several.")  # fmt: skip
@_json_option
def verify(file: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Verify a bundle completely: container, names, manifest, signature, every file's size and sha256,
    and the manifest's network spec against model/netx.h5.

    Exits 0 if the bundle is valid and signed by a trusted key, otherwise 1, listing every problem.

    Example:

        edgekws bundle verify kws-1.2.0.ekb --trust keys/release.pub
    """
    report = check_bundle(file, _trust(trust), check_model=True)
    if as_json:
        _echo_json(_report_dict(report))
    elif report.ok and report.manifest:
        click.echo(
            f"OK {report.manifest.name} {report.manifest.version}: signed by "
            f"{', '.join(report.verified_key_ids)}, {len(report.manifest.files)} file(s) checked"
        )
    else:
        click.echo(f"{file}: INVALID ({len(report.problems)} problem(s))", err=True)
        for p in report.problems:
            click.echo(f"  - {p}", err=True)
    if not report.ok:
        raise SystemExit(1)


def _diff(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[dict[str, Any]] = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path and "/" not in key else (f"{path}[{key!r}]" if path else key)
            out += _diff(a.get(key), b.get(key), sub)
        return out
    return [] if a == b else [{"field": path, "a": a, "b": b}]


def _manifest_of(file: Path) -> Manifest:
    report = check_bundle(file)
    if report.manifest is None:
        raise click.ClickException(f"{file}: no readable manifest: " + "; ".join(map(str, report.problems)))
    return report.manifest


@bundle.command()
@click.argument("file_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("file_b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_option
@click.option("--exit-code", is_flag=True, help="Exit 1 if the manifests differ (like git diff --exit-code).")
def diff(file_a: Path, file_b: Path, as_json: bool, exit_code: bool) -> None:
    """Compare two bundles' manifests: versions, lineage, metrics, specs and file hashes.

    Signatures are not checked (use verify for that); `created` differences are listed too.

    Example:

        edgekws bundle diff kws-1.1.0.ekb kws-1.2.0.ekb --json
    """
    a, b = _manifest_of(file_a), _manifest_of(file_b)
    changes = _diff(a.to_dict(), b.to_dict())
    if as_json:
        _echo_json({"a": str(file_a), "b": str(file_b), "changes": changes})
    elif not changes:
        click.echo("manifests are identical")
    else:
        for c in changes:
            click.echo(f"{c['field']}: {json.dumps(c['a'])} -> {json.dumps(c['b'])}")
    if exit_code and changes:
        raise SystemExit(1)


_store_option = click.option(
    "--store",
    "store",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Store directory.",
)


@bundle.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_store_option
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="A trusted public key (.pub) or a directory of them; repeat for several.")  # fmt: skip
@_json_option
def push(file: Path, store: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Verify a bundle and add it to a store as STORE/NAME/VERSION.ekb (versions are immutable).

    Example:

        edgekws bundle push kws-1.2.0.ekb --store /srv/bundles --trust keys/release.pub
    """
    try:
        entry = BundleStore(store, _trust(trust)).push(file)
    except InvalidBundle as exc:
        raise click.ClickException(str(exc)) from exc
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(entry.to_dict())
    else:
        click.echo(f"stored {entry.name} {entry.version} (sha256 {entry.sha256[:16]}…)")


@bundle.command("list")
@_store_option
@click.option("--name", default=None, help="Only this model.")
@_json_option
def list_(store: Path, name: str | None, as_json: bool) -> None:
    """List the bundles in a store, by model then version.

    Example:

        edgekws bundle list --store /srv/bundles --json
    """
    try:
        entries = BundleStore(store).list(name)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json([e.to_dict() for e in entries])
        return
    if not entries:
        click.echo("the store is empty")
    for e in entries:
        click.echo(
            f"{e.name:<24} {e.version:<16} {e.size:>10} B  created {e.created}  sha256 {e.sha256[:12]}…"
        )


@bundle.command()
@click.argument("ref")
@_store_option
@click.option("--out", "out", type=click.Path(), required=True,
              help="File to write, or a folder (ending in / or existing; created if missing) for "
                   "NAME-VERSION.ekb.")  # fmt: skip
@_trust_option
@_json_option
def pull(ref: str, store: Path, out: str, trust: tuple[Path, ...], as_json: bool) -> None:
    """Copy NAME[@VERSION] (default: latest release) out of a store, checking its sha256 (and signature
    if --trust is given).

    Example:

        edgekws bundle pull kws@1.2.0 --store /srv/bundles --out deploy/
    """
    name, _, version = ref.partition("@")
    try:
        s = BundleStore(store, _trust(trust) if trust else None)
        entry = s.resolve(name, version or "latest")  # pin "latest" once, then pull exactly that version
        path = s.pull(entry.name, entry.version, out)
    except InvalidBundle as exc:
        raise click.ClickException(str(exc)) from exc
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json({**entry.to_dict(), "path": str(path)})
    else:
        click.echo(f"pulled {entry.name} {entry.version} to {path}")


def register_build_command(command: click.Command) -> None:
    """Install the workstation's `bundle build` command (`edgekws bundle RUN …` routes to it)."""
    bundle.add_command(command, BUILD_COMMAND)

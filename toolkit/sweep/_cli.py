"""`edgekws sweep SPEC --out SWEEP` and `edgekws sweep report SWEEP`: sweeps of TrainConfig keys and seeds."""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgekws.toolkit._shrink import shrink
from edgekws.toolkit.sweep._spec import SweepError

_PATH = click.Path(path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


class _SweepGroup(click.Group):
    """`edgekws sweep SPEC ...` is `edgekws sweep run SPEC ...`; `report` is the other subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SweepGroup)
def sweep() -> None:
    """Sweep TrainConfig keys and seeds on Ray: a local Ray by default, a cluster with --address.

    `edgekws sweep SPEC.toml --out SWEEP` runs a sweep (short for `edgekws sweep run`); `edgekws sweep report
    SWEEP` tabulates it. The spec format and cluster use are in docs/sweeps.md.

    Example:

    \b
        edgekws sweep docs/sweeps/en-digits-reference.toml --out sweeps/en-digits
        edgekws sweep report sweeps/en-digits --bundle-best --key keys/release.key
    """


@dataclass(frozen=True)
class _ReportOptions:
    """What both commands do with the finished (or interrupted) sweep: the report, a test set, a bundle."""

    as_json: bool
    test: Path | None
    bundle_best: bool
    key: Path | None
    bundle_name: str | None
    bundle_version: str
    eval_data: Path | None


def _report_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The report options of both commands, handed to the command as one ``report`` argument."""
    options = [
        click.option(
            "--test",
            type=_FILE,
            help="Held-out set to score every trial on (reported beside validation; never selects).",
        ),
        click.option(
            "--bundle-best", is_flag=True, help="Bundle the best trial into SWEEP/best/ (needs --key)."
        ),
        click.option("--key", type=_PATH, help="Private signing key for --bundle-best."),
        click.option("--name", "bundle_name", help="Bundle name. [default: the sweep's name]"),
        click.option("--bundle-version", default="1.0.0", show_default=True, help="Bundle version."),
        click.option("--eval-data", type=_FILE, help="Held-out set the bundle's models are scored on."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]

    @functools.wraps(f)
    def command(**kwargs: Any) -> Any:
        report = _ReportOptions(**{k: kwargs.pop(k) for k in _ReportOptions.__dataclass_fields__})
        if report.bundle_best and report.key is None:
            raise click.UsageError("--bundle-best needs --key (a private key from `edgekws keys generate`)")
        return f(report=report, **kwargs)

    for option in reversed(options):
        command = option(command)
    return command


@sweep.command("run")
@click.argument("spec_path", metavar="SPEC", type=_FILE)
@click.option("--out", type=_PATH, required=True, help="Sweep folder to create (or continue with --resume).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: unfinished trials resume.")
@click.option("--data", "data_path", type=_FILE, help="Training set. [default: the spec's data]")
@click.option("--val", "val_path", type=_FILE, help="Validation set. [default: the spec's val]")
@click.option(
    "--address",
    help="Ray cluster to run on (ray://host:10001, or host:6379 on a cluster node). "
    "[default: RAY_ADDRESS, else a local Ray]",
)
@click.option(
    "--storage",
    help="Ray storage path (s3://…, gs://…, or a shared folder) through which run folders travel when "
    "the nodes do not share --out's file system. [default: none; --out is shared]",
)
@click.option("--cpus", type=float, help="CPUs of the local Ray. [default: all this process may use]")
@click.option(
    "--cpus-per-trial", type=float, default=1.0, show_default=True, help="CPUs (and threads) of a trial."
)
@click.option(
    "--gpus-per-trial",
    type=float,
    default=0.0,
    show_default=True,
    help="GPUs of a trial; 0.5 shares one GPU.",
)
@click.option("--max-concurrent", type=int, help="Most trials at once. [default: as many as resources allow]")
@click.option(
    "--max-failures", type=int, default=3, show_default=True, help="Restarts of a trial whose worker failed."
)
@_report_options
def run_cmd(
    spec_path: Path,
    out: Path,
    resume: bool,
    data_path: Path | None,
    val_path: Path | None,
    address: str | None,
    storage: str | None,
    cpus: float | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_concurrent: int | None,
    max_failures: int,
    report: _ReportOptions,
) -> None:
    """Run a sweep: every point of the spec's search space, once per seed, each trial a run folder.

    Trials train like `edgekws train` into SWEEP/runs/NAME (same files, resumable with `edgekws train
    --resume`). ASHA stops lagging trials when the spec has [sweep.early_stop]. Ctrl-C leaves every trial
    resumable; run the same command with --resume to continue. At the end the report is written
    (SWEEP/report.md, .json, .png) and printed.

    Example:

    \b
        edgekws sweep docs/sweeps/en-digits-reference.toml --out sweeps/en-digits
        edgekws sweep docs/sweeps/en-digits-reference.toml --out /shared/sweeps/en-digits --address ray://head:10001
    """
    try:
        from edgekws.toolkit.sweep._engine import EngineOptions, run_sweep
    except ImportError as exc:
        raise click.ClickException(
            f"`edgekws sweep` needs Ray Tune and Optuna ({exc}); install them: pip install 'edgekws[sweep]'"
        ) from exc
    from edgekws.toolkit.sweep._spec import SweepSpec

    options = EngineOptions(
        address=address,
        storage=storage,
        cpus=cpus,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        max_failures=max_failures,
    )
    try:
        spec = SweepSpec.load(spec_path, data=data_path, val=val_path)
        epochs = shrink("epochs", spec.max_epochs)  # EDGEKWS_SHRINK caps a sweep's trials as it caps train
        if epochs < spec.max_epochs:
            spec = spec.capped(epochs)
        outcome = run_sweep(spec, out, options, resume=resume, progress=not report.as_json)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from exc
    if outcome.interrupted:
        ended = sum(1 for t in outcome.trials.values() if t["status"] in ("finished", "stopped", "error"))
        click.echo(
            f"interrupted: {spec.num_trials - ended} of {spec.num_trials} trial(s) unfinished, each "
            "resumable from its last checkpoint",
            err=True,
        )
        data = "".join(
            f" --{k} {shlex.quote(str(v))}" for k, v in (("data", data_path), ("val", val_path)) if v
        )
        command = f"edgekws sweep {shlex.quote(str(spec_path))} --out {shlex.quote(str(out))}{data} --resume"
        click.echo(f"continue with: {command}", err=True)
        sys.exit(130)
    _report(out, report)
    failed = sorted(name for name, t in outcome.trials.items() if t["status"] == "error")
    if failed:
        click.echo(f"{len(failed)} trial(s) failed after {max_failures} restart(s):", err=True)
        for name in failed:
            trial = outcome.trials[name]
            click.echo(f"  {name}: {trial.get('error')} (traceback: {trial.get('error_file')})", err=True)
        sys.exit(1)


@sweep.command("report")
@click.argument("sweep_dir", metavar="SWEEP", type=_DIR)
@_report_options
def report_cmd(sweep_dir: Path, report: _ReportOptions) -> None:
    """Tabulate a sweep from its run folders: validation accuracy per point, mean ± spread over seeds.

    Writes SWEEP/report.json, SWEEP/report.md and SWEEP/report.png (accuracy against each swept key) and
    names the best trial; --bundle-best --key K bundles it into SWEEP/best/. Works on a running or
    interrupted sweep too (its unfinished trials are marked).

    Example:

    \b
        edgekws sweep report sweeps/en-digits --bundle-best --key keys/release.key
    """
    _report(sweep_dir, report)


def _report(sweep_dir: Path, options: _ReportOptions) -> None:
    from edgekws.toolkit.sweep._report import write_report

    try:
        doc = write_report(sweep_dir, options.test, progress=not options.as_json)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from exc
    if options.bundle_best:
        doc["bundle"] = _bundle(doc, options)
    if options.as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    _print_table(doc)


def _bundle(doc: dict[str, Any], options: _ReportOptions) -> dict[str, Any]:
    from edgekws.toolkit._bundle_build import BundleBuildError, build_run_bundle
    from edgekws.toolkit._progress import progress_bar

    best = doc["best_trial"]
    if best is None:
        raise click.ClickException("no trial has finished an epoch: nothing to bundle yet")
    name = options.bundle_name or re.sub(r"[^a-z0-9._-]+", "-", doc["name"].lower()).strip("-._") or "sweep"
    out = Path(doc["sweep"]) / "best"
    out.mkdir(exist_ok=True)
    key = options.key
    assert key is not None  # checked with the options
    try:
        with progress_bar("bundle", disable=options.as_json) as update:
            result = build_run_bundle(
                best["run"],
                name,
                options.bundle_version,
                key,
                out,
                eval_data=options.eval_data,
                progress=update,
            )
    except BundleBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    return {"trial": best["name"], **result.to_dict()}


def _print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgekws.toolkit.sweep._report import mean_spread

    table = Table(
        title=f"sweep {escape(doc['name'])}: best validation accuracy per trial, over seeds {doc['seeds']}"
    )
    test = doc["data"]["test"]
    columns = ["point", "trials", "finished", "stopped", "val mean ± spread", "val min – max"]
    for column in columns + (["test mean ± spread"] if test else []):
        table.add_column(column, justify="left" if column == "point" else "right", no_wrap=column != "point")
    for p in doc["points"]:
        span = "-" if p["min"] is None else f"{p['min']:.4f} – {p['max']:.4f}"
        mark = "" if p["over"] == "finished" else " *"
        cells = [escape(p["label"]), str(p["trials"]), str(p["finished"]), str(p["stopped"])]
        cells += [mean_spread(p["mean"], p["std"]) + mark, span]
        table.add_row(*cells, *([mean_spread(p["test_mean"], p["test_std"])] if test else []))
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)
    if any(p["over"] != "finished" for p in doc["points"]):
        console.print("* no finished trial: over the stopped or unfinished ones")
    best = doc["best_trial"]
    if best is not None:
        console.print(
            f"best trial: {best['name']} ({best['best_val_accuracy']:.4f} at epoch {best['best_epoch']})",
            markup=False,
        )
        console.print(f"  run folder: {best['run']}", markup=False)
    console.print(f"report: {Path(doc['sweep']) / 'report.md'}, plot: {doc['plot']}", markup=False)
    if "bundle" in doc:
        console.print(f"bundle of the best trial: {doc['bundle']['path']}", markup=False)

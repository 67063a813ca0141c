"""`edgekws train|eval|report`: train a network, score it on a data set, draw its figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgekws.toolkit._interrupt import sigterm_as_ctrl_c
from edgekws.toolkit._shrink import shrink
from edgekws.toolkit.train._config import METHODS, ConfigError, TrainConfig
from edgekws.toolkit.train._evaluate import BACKENDS
from edgekws.toolkit.train._step import DEVICES, KERNELS

_PATH = click.Path(path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _read_data(path: Path) -> Any:
    from edgekws.toolkit.data import DatasetError, read_shd

    try:
        return read_shd(path)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(invoke_without_command=True)
@click.option(
    "--data", "data_path", type=_FILE, help="Training set (SHD-layout .h5, e.g. from `edgekws data synth`)."
)
@click.option(
    "--val", "val_path", type=_FILE, help="Validation set; selects the best epoch (else training accuracy)."
)
@click.option("--out", type=_PATH, help="Run folder to create (or continue with --resume).")
@click.option(
    "--config",
    "config_path",
    type=_FILE,
    help="TOML or JSON file of TrainConfig keys (see docs/training.md).",
)
@click.option(
    "--hidden", type=int, multiple=True, help="Hidden layer size; repeat for more layers. [default: 256]"
)
@click.option("--epochs", type=int, help="Number of epochs. [default: 50]")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    help="Gradient: exact Eventprop or surrogate BPTT. [default: eventprop]",
)
@click.option("--seed", type=int, help="Seed of initialisation, shuffling and augmentation. [default: 1234]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to train: the GPU(s) JAX sees, the CPU cores, or auto (a GPU if there is one).",
)
@click.option(
    "--kernel",
    type=click.Choice(KERNELS),
    default="auto",
    show_default=True,
    help="Gradient kernel: sparse (event-driven, CPU), dense (JAX/XLA, any device), or auto "
    "(sparse on CPU, dense on GPU; see docs/training.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train(
    ctx: click.Context,
    data_path: Path | None,
    val_path: Path | None,
    out: Path | None,
    config_path: Path | None,
    hidden: tuple[int, ...],
    epochs: int | None,
    method: str | None,
    seed: int | None,
    resume: bool,
    device: str,
    kernel: str,
    as_json: bool,
) -> None:
    """Train a recurrent spiking network with Eventprop (or BPTT) into a run folder.

    Writes RUN/run.json, RUN/metrics.jsonl (one line per epoch), RUN/checkpoints/ (every epoch, and on
    Ctrl-C) and RUN/best.npz (the epoch with the best validation accuracy). Options given on the command
    line override the --config file. Ctrl-C or SIGTERM saves a checkpoint; --resume continues exactly where
    it stopped.

    Example:

    \b
        edgekws train --data data/digits/train.h5 --val data/digits/val.h5 --out runs/digits --epochs 30
    """
    if ctx.invoked_subcommand is not None:
        return
    if data_path is None or out is None:
        raise click.UsageError("--data and --out are required (see edgekws train --help)")
    from edgekws.toolkit.train._loop import TrainError
    from edgekws.toolkit.train._loop import train as run_training
    from edgekws.toolkit.train._run import RunError, read_run_info

    try:
        if resume and config_path is None and (out / "run.json").is_file():
            base = TrainConfig.from_dict(read_run_info(out)["config"])
        else:
            base = TrainConfig.load(config_path) if config_path else TrainConfig()
        changes: dict[str, Any] = {"epochs": epochs, "method": method, "seed": seed}
        if hidden:
            changes["hidden"] = list(hidden)
            if len(hidden) != len(base.hidden):
                changes["recurrent"] = [True] * len(hidden)
        config = base.replace(**changes)
        config = config.replace(epochs=shrink("epochs", config.epochs))
    except (ConfigError, TrainError, RunError) as exc:
        raise click.ClickException(str(exc)) from exc
    train_data = _read_data(data_path)
    val_data = _read_data(val_path) if val_path else None
    if val_data is None and not as_json:
        click.echo(
            "no --val given: the best epoch is chosen by training accuracy (on augmented data)", err=True
        )
    paths = {"train": data_path, **({"val": val_path} if val_path else {})}
    try:
        with sigterm_as_ctrl_c():
            result = run_training(
                train_data,
                out,
                config,
                val_data=val_data,
                resume=resume,
                data_paths=paths,
                progress=not as_json,
                device=device,
                kernel=kernel,
            )
    except (TrainError, RunError) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {
        "run": str(result.run_dir),
        "epochs_done": result.epochs_done,
        "best_epoch": result.best_epoch,
        "selection": result.selection,
        "best_score": result.best_score,
        "interrupted": result.interrupted,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif not result.interrupted:
        click.echo(
            f"trained {result.epochs_done} epochs into {out}; best epoch {result.best_epoch} "
            f"({result.selection} {result.best_score:.4f}) saved as {out / 'best.npz'}"
        )
    if result.interrupted:
        click.echo(
            f"interrupted: checkpoint saved; continue with: "
            f"edgekws train --data {data_path} --out {out} --resume",
            err=True,
        )
        sys.exit(130)


@train.command("import-mlgenn")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=_PATH, required=True, help="Run folder to create.")
@click.option("--epoch", type=int, help="Checkpoint epoch to import. [default: the last one]")
@click.option("--num-inputs", type=int, help="Input channels (needed only without a recurrent connection).")
@click.option("--num-steps", type=int, default=1000, show_default=True, help="Steps per sample.")
@click.option(
    "--dt-ms", type=float, default=1.0, show_default=True, help="Time step the network was trained with."
)
@click.option("--classes", help="Comma-separated class names, in label order.")
def import_mlgenn_cmd(
    directory: Path,
    out: Path,
    epoch: int | None,
    num_inputs: int | None,
    num_steps: int,
    dt_ms: float,
    classes: str | None,
) -> None:
    """Turn an mlGeNN Eventprop checkpoint ({epoch}-Conn_*-g.npy files) into a run folder.

    Weights are transposed to (post, pre) and converted to edgekws units (x0.0442 at dt = 1 ms); the
    result is accepted by `edgekws eval`, `report` and `bundle`. Checkpoints with learned delays are refused.

    Example:

    \b
        edgekws train import-mlgenn checkpoints/shd_512 --epoch 48 --out runs/shd512-mlgenn
    """
    from edgekws.toolkit.train._mlgenn import MlgennError, import_mlgenn

    names = tuple(c.strip() for c in classes.split(",")) if classes else ()
    try:
        run = import_mlgenn(
            directory,
            out,
            epoch=epoch,
            num_inputs=num_inputs,
            dt_ms=dt_ms,
            num_steps=num_steps,
            class_names=names,
        )
    except (MlgennError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"imported into {run}")


@train.command("merge")
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--out", type=_PATH, required=True, help="Run folder to create.")
def merge_cmd(runs: tuple[Path, ...], out: Path) -> None:
    """Merge runs of one architecture into one network whose readout is their mean.

    The members' hidden layers sit side by side without synapses between them (block-diagonal weights), and
    each readout weight is divided by the number of runs: in float the merged network's readout is the mean
    of the members' (with the default exp_weighted_mean readout, its scores are the mean of theirs), and it
    is bundled, quantized and run on every backend like a trained run. It costs the sum of the members'
    neurons, nonzero synapses and spikes per inference (docs/training.md, "Merging runs").

    Example:

    \b
        edgekws train merge runs/kws-s1234 runs/kws-s1 runs/kws-s2 --out runs/kws-merged3
    """
    from edgekws.toolkit.train._merge import MergeError, merge_runs
    from edgekws.toolkit.train._run import RunError

    try:
        merged = merge_runs(list(runs), out)
    except (MergeError, RunError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"merged {len(runs)} runs into {merged}")


@click.command("eval")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "data_path", type=_FILE, required=True, help="Evaluation set (SHD-layout .h5).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="float",
    show_default=True,
    help="Which model computes the readout: the float model, or the quantized one on an agent backend.",
)
@click.option("--json", "as_json", is_flag=True, help="Print all metrics as JSON.")
def eval_cmd(run_dir: Path, data_path: Path, backend: str, as_json: bool) -> None:
    """Score a run's selected parameters on a data set.

    Stretches (`edgekws data stretches`) and an always-on run are scored by detection instead: each
    stretch runs never reset, the agent's decision stage with the settings training validates with,
    recall, false accepts per hour and latency after each keyword's end (--json for everything).

    Prints accuracy, per-class accuracy, the weakest speakers and the accuracy by source (engine or
    data set), voice, gender, accent and augmentation (where the data name them), spike-rate statistics,
    and writes the confusion matrix to
    RUN/confusion_<data>_<backend>.png. Decisions use the device's rule (edgekws.agent.decide).

    Example:

    \b
        edgekws eval runs/digits --data data/digits/test.h5 --json
    """
    from edgekws.toolkit._progress import progress_bar
    from edgekws.toolkit.train._evaluate import EvalError, evaluate, plot_confusion
    from edgekws.toolkit.train._run import RunError, load_run

    try:
        run = load_run(run_dir)
        data = _read_data(data_path)
        with progress_bar(f"scoring on {backend}") as update:  # on stderr: --json output stays clean
            result = evaluate(run, data, backend=backend, progress=update)
    except (EvalError, RunError) as exc:
        raise click.ClickException(str(exc)) from exc
    if "stretches" in result:  # an always-on run on stretches: detection, not clip accuracy
        result["data"] = str(data_path)
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        lat = result["latency_ms"]
        click.echo(
            f"{result['stretches']} stretches ({result['seconds']:.0f} s) on {backend}, never reset: recall "
            f"{result['recall']:.3f} ({result['hits']}/{result['keywords']}), false accepts "
            f"{result['false_accepts']} ({result['false_accepts_per_hour']:.1f}/h), latency p50 "
            f"{lat['p50']} ms"
        )
        return
    png = run_dir / f"confusion_{data_path.stem}_{backend}.png"
    plot_confusion(result["confusion_matrix"], result["class_names"], png, f"{data_path.name} ({backend})")
    result["data"] = str(data_path)
    result["confusion_png"] = str(png)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"accuracy {result['accuracy']:.4f} on {result['samples']} samples ({backend})")
    for name, acc in result["per_class_accuracy"].items():
        click.echo(f"  {name:>16s}  {'-' if acc is None else f'{acc:.3f}'}")
    speakers = result.get("per_speaker_accuracy")
    if speakers:
        worst = list(speakers.items())[:5]
        click.echo(
            f"{len(speakers)} speakers; weakest: "
            + ", ".join(f"{name} {v['accuracy']:.3f} ({v['samples']})" for name, v in worst)
        )
    for column, table in result.get("per_source_accuracy", {}).items():
        click.echo(
            f"by {column}: "
            + ", ".join(f"{k} {v['accuracy']:.3f} ({v['samples']})" for k, v in table.items())
        )
    spikes = result.get("hidden_spikes")
    if spikes:
        click.echo(
            f"hidden rate {spikes['mean_rate_hz']:.1f} Hz mean, "
            f"{spikes['p95_neuron_rate_hz']:.1f} Hz p95 neuron, "
            f"{100 * spikes['silent_fraction']:.1f}% silent"
        )
    click.echo(f"confusion matrix: {png}")


@click.command("report")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data", "data_path", type=_FILE, help="Data for the raster plot. [default: the run's training set]"
)
@click.option("--sample", type=int, default=0, show_default=True, help="Index of the sample to draw.")
def report_cmd(run_dir: Path, data_path: Path | None, sample: int) -> None:
    """Draw a run's training curves (RUN/curves.png) and one sample's hidden spikes (RUN/raster.png).

    Example:

    \b
        edgekws report runs/digits --data data/digits/test.h5 --sample 3
    """
    from edgekws.toolkit.train._report import plot_curves, plot_raster
    from edgekws.toolkit.train._run import RunError, load_run

    try:
        run = load_run(run_dir)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    curves = plot_curves(run_dir, run_dir / "curves.png")
    click.echo(
        f"training curves: {curves}" if curves else "no metrics.jsonl entries: no training curves drawn"
    )
    if data_path is None:
        recorded = run.info.get("data", {}).get("train", {}).get("path")
        data_path = Path(recorded) if recorded and Path(recorded).is_file() else None
    if data_path is None:
        click.echo("no data for a raster (pass --data FILE)")
        return
    try:
        raster = plot_raster(run, _read_data(data_path), sample, run_dir / "raster.png")
    except IndexError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"spike raster: {raster}")

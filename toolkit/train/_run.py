"""Run folders: the one place that knows their layout, their metadata and their checkpoints.

A run folder ``RUN`` holds::

    run.json                    type "edgekws.run", format_version 1: network spec, training config, data
                                fingerprints, class names, front-end spec, model selection and status
    metrics.jsonl               one JSON object per finished epoch
    checkpoints/epoch_NNN.npz   state after epoch NNN (params, optimizer state, counters, rng)
    checkpoints/interrupt_eNNN_bMMMM.npz   state saved on Ctrl-C during epoch NNN before batch MMMM
    best.npz                    parameters of the selected epoch (best validation accuracy, else training)

The trainer (``_loop``), the mlGeNN importer, ``edgekws eval|report`` and the bundle builder read and write
runs only through these functions. Every file is written with :func:`edgekws.packaging.atomic_path`, so a
crash leaves the previous version of each file, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import NetworkSpec, SpecError, __version__, atomic_path, atomic_write_text
from edgekws.toolkit._typed_json import read_typed_json
from edgekws.toolkit.data import SpikeDataset

RUN_TYPE = "edgekws.run"
RUN_FORMAT_VERSION = 1
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
BEST = "best.npz"
CHECKPOINTS = "checkpoints"


class RunError(ValueError):
    """A run folder that cannot be read or used; the message says why and what to do."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` to ``path``, atomically and durably."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


# ---------------------------------------------------------------------------------------------- run info


def new_run_info(
    spec: NetworkSpec,
    config: Any,
    train_data: SpikeDataset,
    val_data: SpikeDataset | None,
    data_paths: dict[str, Path] | None,
) -> dict[str, Any]:
    """The ``run.json`` of a new training run (``config`` is the run's ``TrainConfig``)."""
    data_info: dict[str, Any] = {}
    for split, ds in (("train", train_data), ("val", val_data)):
        if ds is None:
            continue
        entry: dict[str, Any] = {"samples": len(ds), "num_channels": ds.num_channels}
        path = (data_paths or {}).get(split)
        if path is not None:
            entry.update(path=str(path), sha256=file_sha256(path))
        data_info[split] = entry
    from edgekws.toolkit.data import is_stream_set

    selection = "val_accuracy" if val_data is not None else "train_accuracy"
    return {
        # the streaming mode the model is trained for: stretches make an always-on model, clips a lanes one
        "detection_mode": "always_on" if is_stream_set(train_data) else "lanes",
        "type": RUN_TYPE,
        "format_version": RUN_FORMAT_VERSION,
        "producer": f"edgekws {__version__}",
        "network": spec.to_dict(),
        "config": config.to_dict(),
        "class_names": list(train_data.class_names),
        "frontend": train_data.attrs.get("frontend"),
        "data": data_info,
        "selection": {
            "metric": selection,
            "note": None
            if val_data is not None
            else "no validation set given: the best epoch is chosen by training accuracy (on augmented data)",
        },
        "status": "running",
    }


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / RUN_INFO, json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_run_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return read_typed_json(
        Path(run_dir) / RUN_INFO, RUN_TYPE, RunError, "run description", f"is {run_dir} a training run?"
    )


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder and its ``checkpoints/``."""
    (Path(run_dir) / CHECKPOINTS).mkdir(parents=True, exist_ok=True)


def has_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run (a ``run.json`` or a checkpoint)."""
    return (run_dir / RUN_INFO).exists() or latest_checkpoint(run_dir) is not None


# ---------------------------------------------------------------------------------------------- metrics


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- parameters


def save_best(run_dir: Path, params: dict[str, Any]) -> None:
    """The selected parameters, ``best.npz``."""
    save_arrays(Path(run_dir) / BEST, {k: np.asarray(v) for k, v in params.items()})


@dataclass(frozen=True)
class LoadedRun:
    run_dir: Path
    spec: NetworkSpec
    params: dict[str, np.ndarray]
    info: dict[str, Any]


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = BEST) -> LoadedRun:
    """The network spec (``run.json``) and parameters (``best.npz`` by default) of a run folder."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    network = info.get("network")
    if not isinstance(network, dict):
        raise RunError(
            f"{run_dir / RUN_INFO} has no network spec ('network'): the run stopped before training "
            "began, or the file was not written by edgekws train; train it again "
            f"(edgekws train ... --out {run_dir})"
        )
    try:
        spec = NetworkSpec.from_dict(network)
    except SpecError as exc:
        raise RunError(f"{run_dir / RUN_INFO}: {exc}") from exc
    path = run_dir / checkpoint
    if not path.is_file():
        raise RunError(f"{path}: no parameters; train at least one epoch (edgekws train ... --out {run_dir})")
    with np.load(path) as z:
        params = {k: np.asarray(z[k], np.float32) for k in z.files}
    shapes = spec.parameter_shapes()
    problems = [
        f"{name}: expected shape {shape}, got {params[name].shape if name in params else 'missing'}"
        for name, shape in shapes.items()
        if name not in params or params[name].shape != shape
    ]
    if problems:
        raise RunError(f"{path} does not match the network in {RUN_INFO}: " + "; ".join(problems))
    return LoadedRun(run_dir=run_dir, spec=spec, params=params, info=info)


# ---------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class TrainState:
    """Where training stands: what a checkpoint holds."""

    params: dict[str, Any]
    opt_state: Any
    epoch: int  # the epoch in progress (0-based) = number of finished epochs
    batch: int  # the next batch of that epoch
    step: int  # optimizer steps so far
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    counts: tuple[np.ndarray, ...] = ()
    best_score: float = -1.0
    best_epoch: int = 0


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    """``checkpoints/epoch_NNN.npz``: the state after ``epoch`` finished epochs."""
    return Path(run_dir) / CHECKPOINTS / f"epoch_{epoch:03d}.npz"


def interrupt_checkpoint(run_dir: Path, state: TrainState) -> Path:
    """``checkpoints/interrupt_eNNN_bMMMM.npz``: the state saved on Ctrl-C."""
    return Path(run_dir) / CHECKPOINTS / f"interrupt_e{state.epoch:03d}_b{state.batch:04d}.npz"


def save_checkpoint(path: Path, state: TrainState, config: Any) -> None:
    import jax

    leaves = jax.tree_util.tree_leaves(state.opt_state)
    arrays: dict[str, Any] = {f"param/{k}": np.asarray(v) for k, v in state.params.items()}
    arrays.update({f"opt/{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    arrays.update({f"counts/{i}": np.asarray(c) for i, c in enumerate(state.counts)})
    arrays.update(
        epoch=np.int64(state.epoch),
        batch=np.int64(state.batch),
        step=np.int64(state.step),
        loss_sum=np.float64(state.loss_sum),
        correct=np.float64(state.correct),
        seen=np.int64(state.seen),
        best_score=np.float64(state.best_score),
        best_epoch=np.int64(state.best_epoch),
        rng=np.asarray([config.seed, state.epoch], dtype=np.int64),  # numpy rng of the epoch: (seed, epoch)
        config=np.asarray(json.dumps(config.to_dict(), sort_keys=True)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_arrays(path, arrays)


def load_checkpoint(path: Path, template_opt_state: Any) -> TrainState:
    import jax
    import jax.numpy as jnp

    with np.load(path) as z:
        params = {k.removeprefix("param/"): jnp.asarray(z[k]) for k in z.files if k.startswith("param/")}
        opt_keys = sorted(k for k in z.files if k.startswith("opt/"))
        count_keys = sorted(
            (k for k in z.files if k.startswith("counts/")), key=lambda k: int(k.split("/")[1])
        )
        treedef = jax.tree_util.tree_structure(template_opt_state)
        if len(jax.tree_util.tree_leaves(template_opt_state)) != len(opt_keys):
            raise RunError(f"{path}: optimizer state does not match this configuration; start a new run")
        opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(z[k]) for k in opt_keys])
        return TrainState(
            params=params,
            opt_state=opt_state,
            epoch=int(z["epoch"]),
            batch=int(z["batch"]),
            step=int(z["step"]),
            loss_sum=float(z["loss_sum"]),
            correct=float(z["correct"]),
            seen=int(z["seen"]),
            counts=tuple(np.asarray(z[k]) for k in count_keys),
            best_score=float(z["best_score"]),
            best_epoch=int(z["best_epoch"]),
        )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint furthest into training (by epoch, then batch), or ``None``."""
    best: tuple[tuple[int, int], Path] | None = None
    for path in (Path(run_dir) / CHECKPOINTS).glob("*.npz"):
        if path.name.startswith("."):  # a temporary file of an interrupted write
            continue
        try:
            with np.load(path) as z:
                key = (int(z["epoch"]), int(z["batch"]))
        except (OSError, KeyError, ValueError):
            continue
        if best is None or key > best[0]:
            best = (key, path)
    return None if best is None else best[1]

"""Import mlGeNN Eventprop checkpoints (the seed paper's trained networks) as edgekws runs.

mlGeNN's ``Numpy`` serialiser writes one file per connection and variable,
``{epoch}-Conn_{Source}_{Target}-g.npy``: a flat float32 array of length ``n_pre * n_post`` in row-major
``(pre, post)`` order (seed-paper.md §4). Ours are ``(post, pre)`` and in different units: mlGeNN's LIF and
exponential synapse use "scaled input" (``V ← αV + (1-α) I`` and an injected current
``(τ_s/dt)(1-e^{-dt/τ_s}) · inSyn``), ours add the weight straight into ``u``, so

    w_ours = w_genn · (1 - e^{-dt/τ_m}) · (τ_s/dt)(1 - e^{-dt/τ_s})

(0.0442 at dt = 1 ms, τ_m = 20 ms, τ_s = 5 ms; the ml_genn_netx converter's factor). docs/training.md
derives it and lists what remains different.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import DEFAULT_READOUT, NetworkSpec

CONNECTIONS = {
    "Conn_Input_Hidden": "layer0.weight",
    "Conn_Hidden_Hidden": "layer0.weight_rec",
    "Conn_Hidden_Output": "layer1.weight",
}


class MlgennError(ValueError):
    """An mlGeNN checkpoint folder cannot be imported; the message says why and what to do."""


def mlgenn_weight_factor(spec: NetworkSpec) -> float:
    """``(1 - e^{-dt/τ_m}) (τ_s/dt)(1 - e^{-dt/τ_s})``: one mlGeNN weight unit in ours."""
    from edgekws.toolkit.train._model import genn_weight_scale

    return genn_weight_scale(spec)


def checkpoint_epochs(directory: str | os.PathLike[str]) -> list[int]:
    """Epochs that have a ``Conn_Input_Hidden`` weight file in ``directory``, ascending."""
    pattern = re.compile(r"^(\d+)-Conn_Input_Hidden-g\.npy$")
    found = (pattern.match(p.name) for p in Path(directory).glob("*-Conn_Input_Hidden-g.npy"))
    return sorted(int(m.group(1)) for m in found if m)


def read_mlgenn_weights(directory: str | os.PathLike[str], epoch: int) -> dict[str, np.ndarray]:
    """The raw arrays ``{connection: array}`` of one epoch (flat as stored, or 2-D if so saved)."""
    directory = Path(directory)
    delays = sorted(p.name for p in directory.glob(f"{epoch}-Conn_*-d.npy"))
    if delays:
        raise MlgennError(
            f"{directory}: epoch {epoch} has learned synaptic delays ({', '.join(delays)}); edgekws does not "
            "model delays yet, so this network would run wrongly. Import a checkpoint trained without delays"
        )
    weights: dict[str, np.ndarray] = {}
    for conn in CONNECTIONS:
        path = directory / f"{epoch}-{conn}-g.npy"
        if path.is_file():
            try:
                weights[conn] = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise MlgennError(f"{path}: not a numpy array file ({exc})") from exc
    missing = [c for c in ("Conn_Input_Hidden", "Conn_Hidden_Output") if c not in weights]
    if missing:
        have = checkpoint_epochs(directory)
        raise MlgennError(
            f"{directory}: epoch {epoch} lacks {', '.join(f'{epoch}-{c}-g.npy' for c in missing)}; "
            f"epochs with weights here: {have or 'none'}"
        )
    return weights


def infer_sizes(weights: dict[str, np.ndarray], num_inputs: int | None) -> tuple[int, int, int]:
    """``(inputs, hidden, outputs)`` from the array lengths (the recurrent matrix fixes ``hidden``)."""
    ih, ho = weights["Conn_Input_Hidden"], weights["Conn_Hidden_Output"]
    if ih.ndim == 2 and ho.ndim == 2:
        return int(ih.shape[0]), int(ih.shape[1]), int(ho.shape[1])
    if "Conn_Hidden_Hidden" in weights:
        hidden = math.isqrt(weights["Conn_Hidden_Hidden"].size)
        if hidden * hidden != weights["Conn_Hidden_Hidden"].size:
            raise MlgennError(
                f"Conn_Hidden_Hidden has {weights['Conn_Hidden_Hidden'].size} weights, not a square number"
            )
    elif num_inputs:
        hidden = ih.size // num_inputs
    else:
        raise MlgennError("without a recurrent connection the input size is ambiguous; pass --num-inputs")
    if hidden <= 0 or ih.size % hidden or ho.size % hidden:
        raise MlgennError(
            f"array sizes do not fit one hidden layer of {hidden}: "
            f"Input_Hidden {ih.size}, Hidden_Output {ho.size}"
        )
    inputs, outputs = ih.size // hidden, ho.size // hidden
    if num_inputs is not None and inputs != num_inputs:
        raise MlgennError(f"Conn_Input_Hidden implies {inputs} inputs but --num-inputs is {num_inputs}")
    return inputs, hidden, outputs


def mlgenn_to_params(weights: dict[str, np.ndarray], spec: NetworkSpec) -> dict[str, np.ndarray]:
    """Our parameters ``(post, pre)`` in our units from mlGeNN arrays ``(pre, post)`` in mlGeNN units."""
    factor = mlgenn_weight_factor(spec)
    shapes = spec.parameter_shapes()
    params: dict[str, np.ndarray] = {}
    for conn, name in CONNECTIONS.items():
        if conn not in weights:
            continue
        if name not in shapes:
            raise MlgennError(f"{conn} has no place in the network spec (is the hidden layer recurrent?)")
        post, pre = shapes[name]
        w = np.asarray(weights[conn], np.float64).reshape(pre, post)
        params[name] = (w.T * factor).astype(np.float32)
    return params


def import_mlgenn(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    num_inputs: int | None = None,
    dt_ms: float = 1.0,
    num_steps: int = 1000,
    class_names: tuple[str, ...] = (),
    readout: str = DEFAULT_READOUT,
) -> Path:
    """Write a run folder (``run.json``, ``best.npz``) holding an mlGeNN checkpoint; returns its path.

    ``epoch`` defaults to the last one in ``directory``. The run is accepted by ``edgekws eval``,
    ``report`` and ``bundle`` like a trained one.
    """
    from edgekws.toolkit.train._config import TrainConfig
    from edgekws.toolkit.train._run import (
        RUN_FORMAT_VERSION,
        RUN_TYPE,
        file_sha256,
        save_best,
        write_run_info,
    )

    directory = Path(directory)
    if not directory.is_dir():
        raise MlgennError(f"{directory}: no such folder; pass the mlGeNN checkpoint folder")
    if epoch is None:
        epochs = checkpoint_epochs(directory)
        if not epochs:
            raise MlgennError(f"{directory}: no '{{epoch}}-Conn_Input_Hidden-g.npy' files found")
        epoch = epochs[-1]
    weights = read_mlgenn_weights(directory, epoch)
    inputs, hidden, outputs = infer_sizes(weights, num_inputs)
    recurrent = "Conn_Hidden_Hidden" in weights
    spec = NetworkSpec(
        num_inputs=inputs,
        hidden=(hidden,),
        recurrent=(recurrent,),
        num_outputs=outputs,
        dt_ms=dt_ms,
        num_steps=num_steps,
        readout=readout,
        class_names=tuple(class_names),
    )
    params = mlgenn_to_params(weights, spec)
    out = Path(out)
    if (out / "run.json").exists():
        raise MlgennError(f"{out} already holds a run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        hidden=(hidden,), recurrent=(recurrent,), readout=readout, dt_ms=dt_ms, num_steps=num_steps
    )
    files = {
        f"{epoch}-{conn}-g.npy": file_sha256(directory / f"{epoch}-{conn}-g.npy") for conn in sorted(weights)
    }
    info: dict[str, Any] = {
        "type": RUN_TYPE,
        "format_version": RUN_FORMAT_VERSION,
        "network": spec.to_dict(),
        "config": config.to_dict(),
        "class_names": list(class_names),
        "frontend": None,
        "data": {},
        "source": {
            "kind": "mlgenn",
            "directory": str(directory),
            "epoch": epoch,
            "files": files,
            "weight_factor": mlgenn_weight_factor(spec),
        },
        "selection": {"metric": "imported", "best_epoch": epoch, "note": "imported mlGeNN checkpoint"},
        "status": "imported",
    }
    save_best(out, params)
    write_run_info(out, info)
    (out / "metrics.jsonl").touch()
    return out

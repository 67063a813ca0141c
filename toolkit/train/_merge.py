"""Merge trained runs into one network whose readout is their mean: an ensemble that is a single SNN.

``k`` runs of the same architecture (same inputs, classes, readout, time constants, time grid and front-end,
typically one recipe trained with ``k`` seeds) become one network with ``k`` times the hidden neurons:

    layer0.weight       the members' input weights stacked (every member hears the same input spikes)
    layer{i}.weight     block-diagonal for hidden layers i > 0 (member j's layer i feeds only its layer i+1)
    layer{i}.weight_rec block-diagonal (no synapse between members)
    readout weight      the members' readout weights side by side, each divided by ``k``

No synapse joins two members, so each member's hidden layers spike exactly as they did alone, and the
readout (leaky integrators, linear in their input) holds the mean of the members' readout voltages at every
step: for the ``exp_weighted_mean`` readout, the mean of their scores. The result is one run folder that
``edgekws eval``, ``report`` and ``bundle`` take like a trained one: on Loihi 2 it is one network of
``k × hidden`` neurons with ``k × hidden²`` recurrent synapses (a dense network as wide has ``k²``× that),
and ``k`` times a member's work and energy per inference.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import NetworkSpec

#: Network spec fields every member must share (``hidden`` is summed instead).
SHARED_SPEC_FIELDS = (
    "num_inputs",
    "recurrent",
    "num_outputs",
    "dt_ms",
    "num_steps",
    "tau_mem_ms",
    "tau_syn_ms",
    "threshold",
    "readout",
    "class_names",
)


class MergeError(ValueError):
    """Runs that cannot be merged; the message names every difference."""


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), np.float32)
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def merged_spec(specs: list[NetworkSpec]) -> NetworkSpec:
    """The spec of the merged network: the members' shared fields, hidden sizes summed layer by layer."""
    first = specs[0]
    problems = []
    for i, spec in enumerate(specs[1:], start=1):
        if len(spec.hidden) != len(first.hidden):
            problems.append(f"run {i} has {len(spec.hidden)} hidden layers, run 0 {len(first.hidden)}")
        problems += [
            f"{name}: run 0 {getattr(first, name)!r}, run {i} {getattr(spec, name)!r}"
            for name in SHARED_SPEC_FIELDS
            if getattr(spec, name) != getattr(first, name)
        ]
    if problems:
        raise MergeError("the runs are not one architecture: " + "; ".join(problems))
    hidden = tuple(sum(s.hidden[layer] for s in specs) for layer in range(len(first.hidden)))
    return NetworkSpec(**{**{n: getattr(first, n) for n in SHARED_SPEC_FIELDS}, "hidden": hidden})


def merge_params(specs: list[NetworkSpec], params: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The merged network's weights (see the module docstring); float32, shapes of :func:`merged_spec`."""
    spec = merged_spec(specs)
    k, last = len(params), len(spec.hidden)
    out: dict[str, np.ndarray] = {}
    for name in spec.parameter_shapes():
        members = [np.asarray(p[name], np.float32) for p in params]
        if name == "layer0.weight":
            out[name] = np.concatenate(members, axis=0)
        elif name == f"layer{last}.weight":
            out[name] = np.concatenate(members, axis=1) / np.float32(k)
        else:
            out[name] = _block_diagonal(members)
    return out


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def merge_runs(run_dirs: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write the run folder ``out`` holding the merge of ``run_dirs`` (at least two); returns its path.

    Members must share the architecture (:data:`SHARED_SPEC_FIELDS`), the front-end and the detection mode,
    and must have finished training. ``run.json`` records each member (folder, selected epoch, sha256 of its
    ``run.json`` and ``best.npz``); its ``data`` are the members' where they all trained and validated on the
    same files, else empty.
    """
    from edgekws.toolkit.train._config import TrainConfig
    from edgekws.toolkit.train._run import (
        BEST,
        RUN_FORMAT_VERSION,
        RUN_INFO,
        RUN_TYPE,
        load_run,
        save_best,
        write_run_info,
    )

    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise MergeError(f"give at least two runs to merge, got {len(paths)}")
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise MergeError("a run is given twice: its copy would only weigh it double")
    out = Path(out)
    if (out / RUN_INFO).exists():
        raise MergeError(f"{out} already holds a run; choose another --out")
    runs = [load_run(p) for p in paths]
    problems = []
    for i, run in enumerate(runs):
        status = run.info.get("status")
        if status in ("running", "interrupted"):
            problems.append(f"run {i} ({run.run_dir}) has not finished training (status {status!r})")
        if i and run.info.get("frontend") != runs[0].info.get("frontend"):
            problems.append(f"run {i} ({run.run_dir}) was trained with another front-end than run 0")
        if i and run.info.get("detection_mode", "lanes") != runs[0].info.get("detection_mode", "lanes"):
            problems.append(
                f"run {i} is a {run.info.get('detection_mode', 'lanes')!r} model, run 0 "
                f"{runs[0].info.get('detection_mode', 'lanes')!r}"
            )
    if problems:
        raise MergeError("; ".join(problems))
    specs = [r.spec for r in runs]
    spec = merged_spec(specs)
    params = merge_params(specs, [r.params for r in runs])
    data = runs[0].info.get("data") or {}
    if any((r.info.get("data") or {}) != data for r in runs[1:]):
        data = {}
    config = TrainConfig(
        hidden=spec.hidden,
        recurrent=spec.recurrent,
        readout=spec.readout,
        tau_mem_ms=spec.tau_mem_ms,
        tau_syn_ms=spec.tau_syn_ms,
        dt_ms=spec.dt_ms,
        num_steps=spec.num_steps,
    )
    info: dict[str, Any] = {
        "type": RUN_TYPE,
        "format_version": RUN_FORMAT_VERSION,
        "network": spec.to_dict(),
        "config": config.to_dict(),
        "class_names": list(spec.class_names or runs[0].info.get("class_names") or ()),
        "frontend": runs[0].info.get("frontend"),
        "detection_mode": runs[0].info.get("detection_mode", "lanes"),
        "data": data,
        "source": {
            "kind": "merge",
            "members": [
                {
                    "run": str(r.run_dir),
                    "hidden": list(r.spec.hidden),
                    "best_epoch": (r.info.get("selection") or {}).get("best_epoch"),
                    "seed": (r.info.get("config") or {}).get("seed"),
                    "run_json": _digest(r.run_dir / RUN_INFO),
                    "best_npz": _digest(r.run_dir / BEST),
                }
                for r in runs
            ],
        },
        "selection": {"metric": "merged", "best_epoch": None, "note": f"mean readout of {len(runs)} runs"},
        "status": "merged",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_best(out, params)
    write_run_info(out, info)
    (out / "metrics.jsonl").touch()
    return out

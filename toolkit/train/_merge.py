"""Merge trained runs into one network whose readout is their mean: an ensemble that is a single SNN.

``k`` runs of the same architecture (same inputs, classes, readout, time constants, time grid and front-end,
typically one recipe trained with ``k`` seeds) become one network with ``k`` times the hidden neurons:

    layer0.weight       the members' input weights stacked (every member hears the same input spikes)
    layer{i}.weight     block-diagonal for hidden layers i > 0 (member j's layer i feeds only its layer i+1)
    layer{i}.weight_rec block-diagonal (no synapse between members)
    readout weight      the members' readout weights side by side, each divided by ``k``

No synapse joins two members, so each member's hidden layers spike exactly as they did alone, and the
readout (leaky integrators, linear in their input) holds the mean of the members' readout voltages at every
step: for the ``exp_weighted_mean`` readout, the mean of their scores (for ``max_over_time``, the maximum of
the mean voltage, not the mean of the members' maxima). The result is one run folder that ``edgekws eval``,
``report`` and ``bundle`` take like a trained one: ``k × hidden`` neurons, ``k`` times a member's nonzero
synapses (a dense layer as wide has ``k`` times more recurrent synapses again), and ``k`` times a member's
spikes per inference. The weight files and NetX's dense layers hold the zero blocks too, and the agent's
``estimated:loihi2-opcount`` counts each spike against its layer's whole width, so estimated synaptic
events grow about ``k²``-fold (docs/training.md, "Merging runs").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import block_diag

from edgekws.packaging import NetworkSpec, SpecError

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
    try:
        return NetworkSpec(**{**{n: getattr(first, n) for n in SHARED_SPEC_FIELDS}, "hidden": hidden})
    except SpecError as exc:  # e.g. more neurons in a layer than a spec allows
        raise MergeError(f"the merged network is not a valid network: {exc}") from exc


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
            out[name] = block_diag(*members).astype(np.float32)
    return out


def _differences(a: Any, b: Any) -> list[str]:
    """Keys whose values differ between two front-end specs (dicts; anything else compared whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [] if a == b else ["the whole spec"]


def _digest(path: Path) -> str:
    from edgekws.toolkit.train._run import file_sha256

    return "sha256:" + file_sha256(path)


def merge_runs(run_dirs: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write the run folder ``out`` holding the merge of ``run_dirs`` (at least two); returns its path.

    Members must share the architecture (:data:`SHARED_SPEC_FIELDS`), the front-end and the detection mode,
    must have finished training, must not be merges themselves and must differ in their weights. ``run.json``
    records each member (absolute folder, seed, selected epoch, sha256 of its ``run.json`` and ``best.npz``);
    its ``config`` holds the training settings all members shared, its ``data`` the members' data where they
    all trained and validated on the same files, else nothing.
    """
    from edgekws.toolkit.train._run import (
        BEST,
        RUN_FORMAT_VERSION,
        RUN_INFO,
        RUN_TYPE,
        has_run,
        load_run,
        save_best,
        write_run_info,
    )

    paths = [Path(p).resolve() for p in run_dirs]
    if len(paths) < 2:
        raise MergeError(f"give at least two runs to merge, got {len(paths)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or has_run(out)):
        raise MergeError(f"{out} already holds a run or a file; choose another --out")
    runs = [load_run(p) for p in paths]
    problems = []
    digests = [_digest(r.run_dir / BEST) for r in runs]
    for i, run in enumerate(runs):
        status = run.info.get("status")
        if status in ("running", "interrupted"):
            problems.append(
                f"run {i} ({run.run_dir}) has not finished training (status {status!r}); finish it with "
                f"`edgekws train ... --out {run.run_dir} --resume`"
            )
        if status == "merged":
            problems.append(f"run {i} ({run.run_dir}) is itself a merge; merge its members instead")
        if digests[i] in digests[:i]:
            problems.append(
                f"run {i} ({run.run_dir}) has the weights of run {digests.index(digests[i])}: "
                "a copy would weigh one network double"
            )
        if i:
            differ = _differences(runs[0].info.get("frontend"), run.info.get("frontend"))
            if differ:
                problems.append(
                    f"run {i} was trained with another front-end than run 0 ({', '.join(differ)})"
                )
            mode, mode0 = (r.info.get("detection_mode", "lanes") for r in (run, runs[0]))
            if mode != mode0:
                problems.append(f"run {i} is a {mode!r} model, run 0 {mode0!r}")
    if problems:
        raise MergeError("; ".join(problems))
    specs = [r.spec for r in runs]
    spec = merged_spec(specs)
    params = merge_params(specs, [r.params for r in runs])
    data = runs[0].info.get("data") or {}
    if any((r.info.get("data") or {}) != data for r in runs[1:]):
        data = {}
    configs = [r.info.get("config") or {} for r in runs]
    shared = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs[1:])}
    info: dict[str, Any] = {
        "type": RUN_TYPE,
        "format_version": RUN_FORMAT_VERSION,
        "network": spec.to_dict(),
        # what the members' training had in common (seeds and whatever else differed are per member below)
        "config": {**shared, "hidden": list(spec.hidden), "recurrent": list(spec.recurrent)},
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
                    "best_npz": digest,
                }
                for r, digest in zip(runs, digests, strict=True)
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

"""Evaluate a trained run on a data set: accuracy, per-class accuracy, confusion matrix, spike rates.

Decisions come from ``edgekws.agent.decide``, the rule the device runs. The readout trace comes from a
*backend*: ``float`` is the float model of the trainer; every other name is a backend of the agent's
registry (``emulator``, ``lava-sim``, ``loihi2``, ``onnx``, …), run on the quantized model exactly as the
device runs it (:func:`edgekws.toolkit.quant.deployed`). :data:`BACKENDS` lists them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.agent.backends import BackendUnavailable, backend_names
from edgekws.packaging import DetectionSpec, NetworkSpec, atomic_path
from edgekws.toolkit.data import SpikeDataset, is_stream_set
from edgekws.toolkit.quant import deployed, deployment_files, quantize, run_in_batches
from edgekws.toolkit.train._run import LoadedRun


class EvalError(ValueError):
    """A run or data set cannot be evaluated; the message says why and what to do."""


def _padded_batches(spikes: np.ndarray, batch_size: int) -> Any:
    """Yield ``(start, count, batch)`` with every batch padded to ``batch_size`` (one compiled shape)."""
    n = len(spikes)
    for start in range(0, n, batch_size):
        chunk = spikes[start : start + batch_size]
        count = len(chunk)
        if count < batch_size and n > batch_size:
            pad = np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        yield start, count, chunk


@functools.lru_cache(maxsize=8)
def _simulator(spec: NetworkSpec) -> Callable[..., Any]:
    import jax

    from edgekws.toolkit.train._model import simulate

    def run(params: Any, x: Any) -> Any:
        out = simulate(params, x, spec)
        return out.readout, list(out.hidden_counts)

    return jax.jit(run)


def simulate_batches(
    params: dict[str, Any], spec: NetworkSpec, spikes: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Float-model readout ``(B, T, O)`` and hidden spike counts ``[(B, H)]``, in padded batches."""
    import jax.numpy as jnp

    run = _simulator(spec)
    jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    readouts, counts = [], []
    for _, count, chunk in _padded_batches(np.asarray(spikes), batch_size):
        r, c = run(jparams, jnp.asarray(chunk, jnp.float32))
        readouts.append(np.asarray(r)[:count])
        counts.append([np.asarray(ci)[:count] for ci in c])
    readout = np.concatenate(readouts) if readouts else np.zeros((0, spec.num_steps, spec.num_outputs))
    hidden = [np.concatenate([c[i] for c in counts]) for i in range(len(spec.hidden))] if counts else []
    return readout, hidden


def float_readout(
    params: dict[str, Any], spec: NetworkSpec, spikes: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The float model's readout trace ``(B, T, O)`` for spikes ``(B, T, C)``."""
    return simulate_batches(params, spec, spikes, batch_size)[0]


#: ``float`` (the trainer's model), then the agent's backends on the quantized model.
BACKENDS: tuple[str, ...] = ("float", *backend_names())
CHUNK = 512  # samples binned at a time: memory stays bounded on SSC-sized sets


def _open_deployed(
    stack: contextlib.ExitStack, backend: str, params: dict[str, Any], spec: NetworkSpec, batch_size: int
) -> Callable[..., np.ndarray]:
    """Readout of ``backend`` on the quantized model (default percentile), open until ``stack`` closes."""
    net, _ = quantize({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, spec)
    try:
        run = stack.enter_context(deployed(deployment_files(params, spec, net, [backend])))(backend)
    except BackendUnavailable as exc:
        raise EvalError(f"backend {backend!r} cannot run here: {exc}") from exc

    def readout(spikes: np.ndarray, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        try:
            return run_in_batches(run, spikes, batch_size, spec.num_outputs, on_batch)
        except BackendUnavailable as exc:  # e.g. the Lava bridge's subprocess failed
            raise EvalError(f"backend {backend!r} failed: {exc}") from exc

    return readout


@dataclass(frozen=True)
class Scored:
    """Decisions over a whole data set, and what the float backend also reports."""

    labels: np.ndarray  # (N,) predicted class
    confidence: np.ndarray  # (N,)
    scores: np.ndarray  # (N, O)
    hidden_counts: list[np.ndarray] | None  # float backend: [(N, H)] spike counts per hidden layer
    input_spikes: int  # total input spikes seen


def score_dataset(
    params: dict[str, Any],
    spec: NetworkSpec,
    data: SpikeDataset,
    backend: str = "float",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Scored:
    """Bin ``data`` on the spec's grid chunk by chunk, run ``backend`` and apply ``edgekws.agent.decide``;
    ``progress(done, total)`` as samples are scored (a Lava backend takes seconds per sample)."""
    from edgekws.agent import decide

    if backend not in BACKENDS:
        raise EvalError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    labels, confidence, scores, counts = [], [], [], []
    input_spikes = 0
    with contextlib.ExitStack() as stack:
        fixed_point = None if backend == "float" else _open_deployed(stack, backend, params, spec, batch_size)
        for start in range(0, len(data), CHUNK):
            idx = np.arange(start, min(len(data), start + CHUNK))
            spikes = data.bin(spec.dt_ms / 1000.0, spec.num_steps, idx)
            input_spikes += int(spikes.sum(dtype=np.int64))
            if fixed_point is None:
                readout, hidden = simulate_batches(params, spec, spikes, batch_size)
                counts.append(hidden)
            else:
                step = None if progress is None else (lambda n, s=start: progress(s + n, len(data)))
                readout = fixed_point(spikes, step)
            if progress is not None:
                progress(start + len(idx), len(data))
            decision = decide(readout, spec.readout)
            labels.append(decision.labels)
            confidence.append(decision.confidence)
            scores.append(decision.scores)
    hidden_counts = (
        [np.concatenate([c[i] for c in counts]) for i in range(len(spec.hidden))] if counts else None
    )
    return Scored(
        labels=np.concatenate(labels),
        confidence=np.concatenate(confidence),
        scores=np.concatenate(scores),
        hidden_counts=hidden_counts,
        input_spikes=input_spikes,
    )


def evaluate(
    run: LoadedRun,
    data: SpikeDataset,
    backend: str = "float",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of ``run`` on ``data`` with ``backend``; JSON-serialisable (see docs/training.md)."""
    spec = run.spec
    if data.num_channels != spec.num_inputs:
        raise EvalError(
            f"the data have {data.num_channels} channels but the network expects {spec.num_inputs}; "
            "encode the data with the run's front-end"
        )
    if data.num_classes != spec.num_outputs:
        raise EvalError(f"the data have {data.num_classes} classes but the network {spec.num_outputs}")
    if len(data) == 0:
        raise EvalError("the evaluation set is empty")
    if is_stream_set(data):
        return evaluate_stretches(run, data, backend)
    decision = score_dataset(run.params, spec, data, backend, batch_size, progress)
    counts = decision.hidden_counts
    k = spec.num_outputs
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (data.labels, decision.labels), 1)
    support = confusion.sum(axis=1)
    per_class = {
        name: (float(confusion[i, i] / support[i]) if support[i] else None)
        for i, name in enumerate(spec.class_names or data.class_names)
    }
    result: dict[str, Any] = {
        "backend": backend,
        "samples": len(data),
        "accuracy": float(np.mean(decision.labels == data.labels)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(spec.class_names or data.class_names),
        "readout": spec.readout,
        "mean_confidence": float(np.mean(decision.confidence)),
    }
    right = decision.labels == data.labels
    by_speaker = _per_speaker(data, right)
    if by_speaker is not None:
        result["per_speaker_accuracy"] = by_speaker
    by_source = _per_source(data, right)
    if by_source:
        result["per_source_accuracy"] = by_source
    seconds = spec.num_steps * spec.dt_ms / 1000.0
    result["input_rate_hz"] = float(decision.input_spikes / len(data) / spec.num_inputs / seconds)
    if counts is not None:
        rates = np.concatenate([c for c in counts], axis=1) / seconds  # (B, sum(H)) Hz
        per_neuron = rates.mean(axis=0)
        result["hidden_spikes"] = {
            "mean_rate_hz": float(rates.mean()),
            "median_neuron_rate_hz": float(np.median(per_neuron)),
            "p95_neuron_rate_hz": float(np.percentile(per_neuron, 95)),
            "max_neuron_rate_hz": float(per_neuron.max()),
            "silent_fraction": float(np.mean(per_neuron == 0)),
            "spikes_per_sample": float(rates.sum(axis=1).mean() * seconds),
        }
    return result


def evaluate_stretches(
    run: LoadedRun, data: SpikeDataset, backend: str = "float", detection: DetectionSpec | None = None
) -> dict[str, Any]:
    """Detection metrics of an always-on run on stretches: every stretch runs on ``backend`` from zero state,
    never reset, and the agent's time-course decision stage (``detection``, default the settings validation
    uses during training) reads its readout; scored the MLPerf Tiny way (docs/training.md, "Stream
    training"). A Lava backend runs each stretch whole through the toolkit's Lava bridge."""
    from edgekws.toolkit.train._streams import (
        VALIDATION_DECISION,
        mlperf_ratio,
        readout_traces,
        score_stretches,
        spans_of,
    )

    spec = run.spec
    if backend not in BACKENDS:
        raise EvalError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    rule = detection or VALIDATION_DECISION

    def floating(x: np.ndarray) -> np.ndarray:
        return float_readout(run.params, spec, x, len(x))

    with contextlib.ExitStack() as stack:
        runner = floating if backend == "float" else _open_deployed(stack, backend, run.params, spec, 4)
        traces = readout_traces(runner, data, spec)
    labels = list(spec.class_names or data.class_names)
    s = score_stretches(traces, spans_of(data), rule, labels, spec.dt_ms)
    seconds = sum(t.shape[0] for t in traces) * spec.dt_ms / 1000.0
    result: dict[str, Any] = {
        "backend": backend,
        "stretches": len(data),
        "seconds": round(seconds, 3),
        "detection": rule.to_dict(),
        **s.to_dict(),
        "miss_rate": s.misses / s.keywords if s.keywords else None,
        "mlperf_ratio": mlperf_ratio(s),
        "class_names": labels,
    }
    return result


BREAKDOWNS = ("source", "voice", "gender", "accent", "augment")  # besides the speaker


def _accuracy_by(values: np.ndarray, right: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy and sample count per distinct value, worst first."""
    out = {}
    for value in np.unique(values):
        mask = values == value
        out[str(value)] = {"accuracy": float(right[mask].mean()), "samples": int(mask.sum())}
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["accuracy"], kv[0])))


def _per_speaker(data: SpikeDataset, right: np.ndarray) -> dict[str, dict[str, float]] | None:
    """Accuracy and sample count per speaker, worst first, when the data name speakers (per-sample speaker
    names, or SHD's ids, or voice+variant from ``meta_info`` for older synthetic corpora)."""
    speakers = data.metadata("speaker")
    return _accuracy_by(speakers, right) if speakers is not None and len(speakers) == len(data) else None


def _per_source(data: SpikeDataset, right: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy by each per-sample metadata column the data carry: ``source`` (the engine of a synthetic
    sample, the data set of a recording), ``voice``, ``gender``, ``accent`` (empty values left out) and
    ``augment``, where each augmentation a sample had counts it once ("none": no augmentation but noise)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column in BREAKDOWNS:
        values = data.metadata(column)
        if values is None or len(values) != len(data):
            continue
        if column == "augment":
            parts = [v.split("+") if v else [] for v in values.tolist()]
            kinds = sorted({p for ps in parts for p in ps})
            table = {}
            for kind in kinds:
                mask = np.array([kind in ps for ps in parts])
                table[kind] = {"accuracy": float(right[mask].mean()), "samples": int(mask.sum())}
            if table:
                out[column] = dict(sorted(table.items(), key=lambda kv: (kv[1]["accuracy"], kv[0])))
            continue
        known = values != ""
        if known.any():
            out[column] = _accuracy_by(values[known], right[known])
    return out


def plot_confusion(
    confusion: np.ndarray | list[list[int]], class_names: list[str], path: Path, title: str
) -> Path:
    """Write a confusion-matrix PNG (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(confusion)
    size = max(4.0, 0.35 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(class_names) <= 40:
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path

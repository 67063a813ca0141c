"""Stream training around the kernels: targets of a batch, validation on stretches, decision tuning.

A data set of stretches (``edgekws data stretches``; :func:`edgekws.toolkit.data._stretches.is_stream_set`)
trains an always-on model: the loop turns each batch's keyword spans into time-resolved targets
(:func:`batch_targets`), validates by running the float network over whole validation stretches and the
agent's own decision stage over their readout (:func:`validate_stretches`), and the bundle builder sets the
decision defaults by replaying the quantized network's readout of those stretches through that stage
(:func:`tune_detection`, the same replay the stream benchmark uses).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edgekws.packaging import BACKGROUND_LABEL, DetectionSpec, NetworkSpec
from edgekws.toolkit.data import (
    KeywordSpan,
    SpikeDataset,
    StreamDetection,
    StreamScore,
    background_index,
    score_stream,
    stream_spans,
)
from edgekws.toolkit.train._targets import FrameTargets, StreamLoss, frame_targets

#: The decision settings validation runs with during training (the bundle builder tunes its own).
VALIDATION_DECISION = DetectionSpec(
    "always_on", smoothing_ms=100.0, threshold=0.5, min_margin=0.0, refractory_ms=1000.0
)
#: MLPerf Tiny Streaming Wakeword's mark (<= 8 false positives and 8 misses on a 1200 s stream with ~50
#: wakewords), as rates: at most 24 false accepts per hour at a miss rate of at most 8/50.
MLPERF_FA_PER_HOUR = 8 * 3600 / 1200
MLPERF_MISS_RATE = 8 / 50
TOLERANCE_S = 1.0  # a hit: the keyword's label from its start to 1 s after its end
DEBOUNCE_S = 1.0
#: The grid :func:`tune_detection` searches by default.
GRID: dict[str, tuple[float, ...]] = {
    "smoothing_ms": (0.0, 50.0, 100.0, 200.0, 300.0),
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "min_margin": (0.0, 0.2, 0.4),
    "refractory_ms": (500.0, 1000.0, 1500.0),
}


def stream_loss(config: Any) -> StreamLoss:
    """The target settings of a training config (its ``stream_*`` keys)."""
    return StreamLoss(
        mode=config.stream_loss,
        window_ms=config.stream_window_ms,
        window_start_ms=config.stream_window_start_ms,
        guard_ms=config.stream_guard_ms,
        background_weight=config.stream_background_weight,
    )


def max_windows(data: SpikeDataset) -> int:
    """The most keywords any stretch of ``data`` holds (the pooled-window width of every batch)."""
    return max([len(s) for s in stream_spans(data)] + [1])


def batch_targets(
    data: SpikeDataset, index: np.ndarray, steps: int, dt_s: float, loss: StreamLoss, width: int
) -> FrameTargets:
    """The time-resolved targets of stretches ``index`` of ``data`` on a grid of ``steps`` x ``dt_s``."""
    spans = stream_spans(data)
    return frame_targets([spans[int(i)] for i in index], steps, dt_s, background_index(data), loss, width)


def stream_regulariser(reg_lambda: float, reg_nu: float, seconds: float) -> tuple[float, float]:
    """The spike-count penalty of a ``seconds``-long stretch that equals the per-second one of clips:
    ``(lambda / 2)(mean count / s - nu)^2`` is ``(lambda / s^2 / 2)(mean count - nu s)^2``."""
    return reg_lambda / seconds**2, reg_nu * seconds


def spans_of(data: SpikeDataset) -> list[list[KeywordSpan]]:
    """Each stretch's keywords as :class:`KeywordSpan` (class names, seconds)."""
    return [[KeywordSpan(data.class_names[c], a, b) for c, a, b in s] for s in stream_spans(data)]


def detect(
    readout: np.ndarray, spec: DetectionSpec, labels: Sequence[str], dt_ms: float, ignore: Iterable[str] = ()
) -> list[StreamDetection]:
    """The agent's always-on decision stage over one stretch's readout trace ``(steps, classes)``."""
    from edgekws.agent import TimeCourse

    found = TimeCourse(spec, labels, dt_ms, ignore).push(readout)
    return [StreamDetection(labels[k], (step + 1) * dt_ms / 1000.0) for step, k, _ in found]


Features = tuple[np.ndarray, np.ndarray, np.ndarray]


def stage_features(
    readout: np.ndarray, spec: DetectionSpec, labels: Sequence[str], dt_ms: float, ignore: Iterable[str] = ()
) -> Features:
    """What the decision stage ``spec`` computes from a whole trace before its threshold, margin and
    refractory rules (:meth:`edgekws.agent.TimeCourse.features`; it depends on the smoothing only)."""
    from edgekws.agent import TimeCourse

    return TimeCourse(spec, labels, dt_ms, ignore).features(readout)


def detect_features(
    features: Features, spec: DetectionSpec, labels: Sequence[str], dt_ms: float, ignore: Iterable[str] = ()
) -> list[StreamDetection]:
    """:func:`detect` from :func:`stage_features` made with the same smoothing: the same detections."""
    from edgekws.agent import TimeCourse

    found = TimeCourse(spec, labels, dt_ms, ignore).decide(*features)
    return [StreamDetection(labels[k], (step + 1) * dt_ms / 1000.0) for step, k, _ in found]


def score_stretches(
    traces: Sequence[np.ndarray],
    truth: Sequence[Sequence[KeywordSpan]],
    spec: DetectionSpec,
    labels: Sequence[str],
    dt_ms: float,
) -> StreamScore:
    """The score of the decision stage ``spec`` over several stretches, as one stream: the stretches laid
    end to end (each its own stream; their times shifted so that no window spans two). False accepts per
    hour are per hour of the stretches' own audio (the gaps between them are not counted)."""
    found = [detect(trace, spec, labels, dt_ms) for trace in traces]
    return score_detections(found, [t.shape[0] * dt_ms / 1000.0 for t in traces], truth)


def score_detections(
    found: Sequence[Sequence[StreamDetection]],
    seconds: Sequence[float],
    truth: Sequence[Sequence[KeywordSpan]],
) -> StreamScore:
    """:func:`score_stretches` from each stretch's detections and length."""
    all_truth: list[KeywordSpan] = []
    all_dets: list[StreamDetection] = []
    offset = 0.0
    for dets, length, keywords in zip(found, seconds, truth, strict=True):
        all_truth += [KeywordSpan(k.label, k.start_s + offset, k.end_s + offset) for k in keywords]
        all_dets += [StreamDetection(d.label, d.time_s + offset) for d in dets]
        offset += length + 2 * TOLERANCE_S
    return score_stream(all_truth, all_dets, sum(seconds), tolerance_s=TOLERANCE_S, debounce_s=DEBOUNCE_S)


def mlperf_ratio(score: StreamScore) -> float:
    """Distance from MLPerf Tiny's mark as rates, max(FA/h / 24, miss rate / 0.16): <= 1 meets it."""
    miss = score.misses / score.keywords if score.keywords else 0.0
    return max(score.false_accepts_per_hour / MLPERF_FA_PER_HOUR, miss / MLPERF_MISS_RATE)


def detection_score(score: StreamScore) -> float:
    """One number for model selection: hits / (keywords + false accepts), 1 for a perfect detector."""
    return score.hits / max(1, score.keywords + score.false_accepts)


def tune_detection(
    traces: Sequence[np.ndarray],
    truth: Sequence[Sequence[KeywordSpan]],
    labels: Sequence[str],
    dt_ms: float,
    grid: Mapping[str, Sequence[float]] | None = None,
    base: DetectionSpec | None = None,
) -> tuple[DetectionSpec, list[dict[str, Any]]]:
    """The decision settings of ``grid`` that come closest to MLPerf Tiny's mark on these stretches
    (:func:`mlperf_ratio`; ties: fewer misses + false accepts, then lower median latency), and every grid
    point's score, best first."""
    grid = dict(GRID if grid is None else grid)
    base = base or VALIDATION_DECISION
    rows = []
    names = list(grid)
    seconds = [t.shape[0] * dt_ms / 1000.0 for t in traces]
    features: dict[float, list[Features]] = {}  # per smoothing: the stage's work before its thresholds
    for values in itertools.product(*grid.values()):
        spec = replace(base, **dict(zip(names, values, strict=True)))
        if spec.smoothing_ms not in features:
            features[spec.smoothing_ms] = [stage_features(t, spec, labels, dt_ms) for t in traces]
        found = [detect_features(f, spec, labels, dt_ms) for f in features[spec.smoothing_ms]]
        s = score_detections(found, seconds, truth)
        p50 = s.latency_percentile_s(50)
        key = (mlperf_ratio(s), s.misses + s.false_accepts, p50 if p50 is not None else math.inf)
        rows.append({**dict(zip(names, values, strict=True)), "score": s.to_dict(), "_key": key})
    rows.sort(key=lambda r: r["_key"])
    for r in rows:
        r["ratio"] = round(r.pop("_key")[0], 4)
    best = replace(base, **{k: rows[0][k] for k in names})
    return best, rows


def readout_traces(
    run: Callable[[np.ndarray], np.ndarray], data: SpikeDataset, spec: NetworkSpec, batch: int = 4
) -> list[np.ndarray]:
    """The readout trace ``(steps, classes)`` of every stretch of ``data`` from ``run`` (spikes (B, T, C) ->
    readout (B, T, O)), each stretch from zero state and never reset, a few stretches at a time."""
    dt = spec.dt_ms / 1000.0
    steps = max(spec.num_steps, int(data.attrs.get("num_steps", spec.num_steps)))
    out: list[np.ndarray] = []
    for start in range(0, len(data), batch):
        idx = np.arange(start, min(len(data), start + batch))
        out += list(np.asarray(run(data.bin(dt, steps, idx)), np.float32))
    return out


def stream_ce(traces: Sequence[np.ndarray], targets: FrameTargets) -> tuple[float, float, float]:
    """The stream loss (without regulariser), frame accuracy and window accuracy of readout traces, as the
    kernels define them (docs/eventprop.md §9), in numpy."""
    v = np.stack(traces).astype(np.float64)
    z = v - v.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    cls, win = np.asarray(targets.cls), np.asarray(targets.win)
    frames = cls >= 0
    picked = np.take_along_axis(logp, np.maximum(cls, 0)[..., None], axis=2)[..., 0]
    total = -float(np.sum(np.where(frames, picked * targets.wt, 0.0)))
    pred = v.argmax(axis=2)
    right, windows = 0, 0
    for b, k in zip(*np.nonzero(np.asarray(targets.win_cls) >= 0), strict=True):
        steps = np.flatnonzero(win[b] == k)
        if steps.size == 0:
            continue
        c = int(targets.win_cls[b, k])
        t = steps[int(np.argmax(logp[b, steps, c]))]
        total -= float(targets.win_wt[b, k] * logp[b, t, c])
        right += int(pred[b, t] == c)
        windows += 1
    frame_acc = float(np.mean(pred[frames] == cls[frames])) if frames.any() else 0.0
    return total / len(traces), frame_acc, right / max(1, windows)


def validate_stretches(
    params: dict[str, Any], spec: NetworkSpec, data: SpikeDataset, config: Any
) -> dict[str, float]:
    """The float model over every validation stretch, never reset: the stream loss and accuracies, and the
    agent's decision stage (:data:`VALIDATION_DECISION`) scored like the stream benchmark. ``val_accuracy``
    is :func:`detection_score` (the loop selects the best epoch by it)."""
    from edgekws.toolkit.train._evaluate import float_readout

    dt_s = spec.dt_ms / 1000.0
    traces = readout_traces(lambda x: float_readout(params, spec, x, batch_size=len(x)), data, spec)
    steps = traces[0].shape[0]
    targets = batch_targets(data, np.arange(len(data)), steps, dt_s, stream_loss(config), max_windows(data))
    loss, frame_acc, window_acc = stream_ce(traces, targets)
    score = score_stretches(traces, spans_of(data), VALIDATION_DECISION, data.class_names, spec.dt_ms)
    return {
        "val_loss": loss,
        "val_accuracy": detection_score(score),
        "val_frame_accuracy": frame_acc,
        "val_window_accuracy": window_acc,
        "val_recall": score.recall,
        "val_false_accepts_per_hour": score.false_accepts_per_hour,
    }


def init_from_run(params: dict[str, Any], spec: NetworkSpec, source: Any) -> dict[str, Any]:
    """``params`` with the weights of a trained run ``source`` (:class:`~edgekws.toolkit.train.LoadedRun`)
    where they fit: every hidden array of the same shape, and the readout row of every class both networks
    have (``_background_`` takes the source's ``_silence_`` row when the source has no background class)."""
    old = source.spec
    out = dict(params)
    problems = []
    for name, shape in spec.parameter_shapes().items():
        readout = name == f"layer{len(spec.hidden)}.weight"
        if name not in source.params:
            problems.append(f"{name} is not in the source run")
            continue
        src = np.asarray(source.params[name])
        if not readout:
            if src.shape != shape:
                problems.append(f"{name} is {src.shape} in the source run, {shape} here")
            else:
                out[name] = src.astype(np.float32)
            continue
        if src.shape[1] != shape[1]:
            problems.append(f"{name} takes {src.shape[1]} inputs in the source run, {shape[1]} here")
            continue
        rows = np.array(out[name], dtype=np.float32)
        old_names = list(old.class_names)
        for i, cls in enumerate(spec.class_names):
            pick = cls if cls in old_names else "_silence_" if cls == BACKGROUND_LABEL else None
            if pick in old_names:
                rows[i] = src[old_names.index(pick)]
        out[name] = rows
    if problems:
        raise ValueError("cannot start from that run: " + "; ".join(problems))
    return out

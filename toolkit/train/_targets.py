"""Time-resolved targets for stream training: what the readout should say at every step of a stretch.

A *stretch* is tens of seconds of audio (keywords, other words, silence, noise) run through the network from
zero state once, never reset (docs/training.md, "Stream training"). Its loss is a sum of per-step
cross-entropies of the softmax of the readout voltage ``V[t]`` (the logits), in two kinds of terms:

- **frame terms**: step ``t`` with ``cls[b, t] >= 0`` adds ``wt[b, t] * CE(V[b, t], cls[b, t])``: the
  background class everywhere nothing is being said or only other words are, and (``stream_loss = "frame"``)
  the keyword's class at every step of its window;
- **pooled windows** (``stream_loss = "max"``, the max-pooling loss of Sun et al. 2016): the steps with
  ``win[b, t] = k >= 0`` form window ``k`` of sample ``b``; only the step of the window where the window's
  class ``win_cls[b, k]`` has the highest log-probability counts, with weight ``win_wt[b, k]``. The network
  is free to say the keyword at any moment of its window, as long as it says it once, clearly.

Steps with ``cls = -1`` and ``win = -1`` carry no loss (the keyword itself, while it is being said, and a
guard after its window). The batch loss is the sum of all terms divided by the batch size;
:func:`frame_targets` sets the weights so that each stretch contributes ``background_weight x`` (mean
frame CE) ``+`` (mean window CE). Both Eventprop kernels take a :class:`FrameTargets` in place of the label
vector and feed ``dL/dV[t]`` into the adjoint step by step (docs/eventprop.md §9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

STREAM_LOSSES: tuple[str, ...] = ("max", "frame")


class FrameTargets(NamedTuple):
    """Per-step targets of a batch of stretches (a JAX pytree; every array has the batch first)."""

    cls: Any  # (B, T) int32: class of step t's frame term, -1 where it has none
    win: Any  # (B, T) int32: the pooled window step t belongs to (index into win_cls), -1 outside windows
    wt: Any  # (B, T) float32: weight of step t's frame term
    win_cls: Any  # (B, W) int32: class of each pooled window, -1 for padding
    win_wt: Any  # (B, W) float32: weight of each pooled window's term

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.cls.shape[0]), int(self.cls.shape[1]))


def target_problems(targets: FrameTargets, batch: int, steps: int, num_outputs: int) -> list[str]:
    """Every way ``targets`` does not fit ``batch`` stretches of ``steps`` steps (empty if they fit)."""
    problems = []
    for name in ("cls", "win", "wt"):
        shape = tuple(np.shape(getattr(targets, name)))
        if shape != (batch, steps):
            problems.append(f"targets.{name} must be ({batch}, {steps}), got {shape}")
    shapes = {tuple(np.shape(targets.win_cls)), tuple(np.shape(targets.win_wt))}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != batch:
        problems.append(f"targets.win_cls and targets.win_wt must both be ({batch}, W), got {sorted(shapes)}")
    if problems or not all(isinstance(a, np.ndarray) for a in targets):
        return problems  # values are checked where they are concrete (not while JAX traces them)
    cls, win_cls = targets.cls, targets.win_cls
    if cls.size and (cls.max() >= num_outputs or cls.min() < -1):
        problems.append(f"targets.cls must hold -1 or classes 0..{num_outputs - 1}")
    if win_cls.size and (win_cls.max() >= num_outputs or win_cls.min() < -1):
        problems.append(f"targets.win_cls must hold -1 or classes 0..{num_outputs - 1}")
    win = targets.win
    if win.size and (win.min() < -1 or win.max() >= max(1, win_cls.shape[1])):
        problems.append(f"targets.win must hold -1 or window indices 0..{win_cls.shape[1] - 1}")
    both = (cls >= 0) & (win >= 0)
    if both.any():
        problems.append("a step cannot be both a frame term (cls >= 0) and in a pooled window (win >= 0)")
    return problems


@dataclass(frozen=True)
class StreamLoss:
    """How keyword spans become targets (the ``stream_*`` keys of the training config).

    After a keyword ending at ``e``, its class is the target in ``[e + window_start_ms, e + window_ms)``
    (pooled with ``mode = "max"``, every step with ``"frame"``); from the keyword's start to ``guard_ms``
    after the window nothing is asked; everywhere else the target is the background class, weighted
    ``background_weight`` against the keyword windows.
    """

    TYPE: ClassVar[str] = "edgekws.stream_loss"

    mode: str = "max"
    window_ms: float = 400.0
    window_start_ms: float = 0.0
    guard_ms: float = 200.0
    background_weight: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in STREAM_LOSSES:
            problems.append(f"stream_loss must be one of {list(STREAM_LOSSES)}, got {self.mode!r}")
        if not self.window_ms > self.window_start_ms:
            problems.append(
                f"stream_window_ms ({self.window_ms}) must be after stream_window_start_ms "
                f"({self.window_start_ms})"
            )
        if self.guard_ms < 0 or self.background_weight < 0:
            problems.append("stream_guard_ms and stream_background_weight must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


Span = tuple[int, float, float]  # (class index, start_s, end_s) of a keyword in its stretch


def frame_targets(
    spans: Sequence[Sequence[Span]],
    steps: int,
    dt_s: float,
    background: int,
    loss: StreamLoss,
    max_windows: int | None = None,
) -> FrameTargets:
    """The targets of a batch of stretches, from each stretch's keyword spans (seconds from its start).

    ``background`` is the class index of the background class. ``max_windows`` pads ``W`` (the pooled
    windows per stretch) to a fixed size, so that every batch has the same shapes (one compiled function).
    """
    batch = len(spans)
    cls = np.full((batch, steps), background, np.int32)
    win = np.full((batch, steps), -1, np.int32)
    wt = np.zeros((batch, steps), np.float32)
    width = max([len(s) for s in spans] + [max_windows or 0, 1])
    if max_windows is not None and any(len(s) > max_windows for s in spans):
        raise ValueError(f"a stretch holds more than max_windows={max_windows} keywords")
    win_cls = np.full((batch, width), -1, np.int32)
    win_wt = np.zeros((batch, width), np.float32)

    def step(seconds: float) -> int:
        return int(np.clip(round(seconds / dt_s), 0, steps))

    for b, sample in enumerate(spans):
        windows = []
        for label, start, end in sorted(sample, key=lambda s: s[1]):
            a = step(end + loss.window_start_ms / 1000.0)
            z = step(end + loss.window_ms / 1000.0)
            cls[b, step(start) : step(end + (loss.window_ms + loss.guard_ms) / 1000.0)] = -1
            if z > a:
                windows.append((int(label), a, z))
        frames = cls[b] >= 0  # background frames so far: the keyword windows are written next
        n_background = int(frames.sum())
        if n_background:
            wt[b, frames] = loss.background_weight / n_background
        for k, (label, a, z) in enumerate(windows):  # after every ignore zone: a window is never blanked
            if loss.mode == "max":
                cls[b, a:z] = -1
                win[b, a:z] = k
                win_cls[b, k] = label
                win_wt[b, k] = 1.0 / len(windows)
            else:  # each window's steps together weigh as one pooled window
                cls[b, a:z] = label
                wt[b, a:z] = 1.0 / (len(windows) * (z - a))
    return FrameTargets(cls, win, wt, win_cls, win_wt)

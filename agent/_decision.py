"""The decision rule over the readout voltage: one definition for training, evaluation and the device.

For a readout voltage trace ``V[t, k]`` (t = 0..T-1, float units where the hidden threshold is 1):

- ``exp_weighted_mean``: ``score_k = (1/T) * sum_t exp(-t/T) * V[t, k]`` — the paper's loss shaping
  (mlGeNN ``avg_var_exp_weight``), and the rule its Lava/Loihi evaluation used.
- ``max_over_time``: ``score_k = max_t V[t, k]``.

The predicted class is ``argmax_k score_k``; the confidence is the softmax of the scores at that class.

A network trained on streams is never reset and has no windows: :class:`TimeCourse` decides on its readout
step by step (smoothed per-step softmax, threshold, margin, refractory time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from edgekws.packaging import DEFAULT_READOUT, DetectionSpec, Readout, readout_problem


class Decision(NamedTuple):
    labels: np.ndarray  # (batch,) int64 predicted class
    confidence: np.ndarray  # (batch,) float64 softmax probability of the predicted class
    scores: np.ndarray  # (batch, classes) float64 readout scores


def readout_weights(num_steps: int) -> np.ndarray:
    """The per-step weights ``exp(-t/T) / T`` of the exponentially weighted mean."""
    t = np.arange(num_steps, dtype=np.float64)
    return np.exp(-t / num_steps) / num_steps


def readout_scores(readout: np.ndarray, rule: Readout = DEFAULT_READOUT) -> np.ndarray:
    """Scores ``(batch, classes)`` of a trace ``(batch, steps, classes)`` or ``(steps, classes)``."""
    v = np.asarray(readout, dtype=np.float64)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3:
        raise ValueError(f"readout must be (batch, steps, classes), got shape {np.shape(readout)}")
    if not np.all(np.isfinite(v)):
        raise ValueError("readout holds NaN or Inf values; the backend produced an invalid trace")
    if rule == "exp_weighted_mean":
        return np.einsum("btk,t->bk", v, readout_weights(v.shape[1]))
    if rule == "max_over_time":
        return v.max(axis=1)
    raise ValueError(readout_problem(rule))


def decide(readout: np.ndarray, rule: Readout = DEFAULT_READOUT) -> Decision:
    """Predicted class, confidence and scores for each sample of a readout trace."""
    scores = readout_scores(readout, rule)
    z = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = scores.argmax(axis=1)
    return Decision(labels=labels, confidence=p[np.arange(len(labels)), labels], scores=scores)


class TimeCourse:
    """The always-on decision stage: detections from the readout's time course, step by step.

    For a network that runs forever (docs/agent.md, "Always-on detection"): at every step ``t`` the class
    probabilities are the softmax of the readout voltage ``V[t]``, averaged over the last ``smoothing_ms``
    (over the steps seen so far at the start of a stream). A detection of class ``k`` is made at the first
    step where ``k`` is the most probable class that may be reported (not the background class, not one of
    ``ignore``), its smoothed probability reaches ``threshold`` and leads every other class (the background
    included) by ``min_margin``; after a detection nothing is reported for ``refractory_ms`` (any label: one
    word gives one detection). Feeding a trace chunk by chunk gives exactly the detections of feeding it
    whole (every sum runs in the same order): decision settings are tuned by replaying a recorded trace.
    """

    def __init__(
        self,
        spec: DetectionSpec,
        labels: Sequence[str],
        dt_ms: float,
        ignore: Iterable[str] = (),
    ) -> None:
        if spec.mode != "always_on":
            raise ValueError(f"the time-course decision stage is for always-on models, not {spec.mode!r}")
        if spec.background_label not in labels:
            raise ValueError(f"the background class {spec.background_label!r} is not one of {list(labels)}")
        self.spec = spec
        self.labels = list(labels)
        self.window = max(1, round(spec.smoothing_ms / dt_ms))
        self.refractory = round(spec.refractory_ms / dt_ms)
        blocked = {spec.background_label, *ignore}
        self._allowed = np.array([name not in blocked for name in self.labels])
        if not self._allowed.any():
            raise ValueError(f"every class of {self.labels} is background or ignored: nothing to detect")
        self._carry = np.zeros((self.window - 1, len(self.labels)))
        self._last = -(1 << 62)  # step of the last detection
        self.step = 0  # global step of the next readout row

    def push(self, readout: np.ndarray) -> list[tuple[int, int, float]]:
        """Feed the next readout rows ``(steps, classes)``; ``(step, class, confidence)`` of each detection,
        ``step`` counting from the start of the stream (the detection is at the end of that step)."""
        return self.decide(*self.features(readout))

    def features(self, readout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first half of :meth:`push`: per row of ``readout``, the reportable class with the highest
        smoothed probability, that probability and its lead over every other class (advances the smoothing
        window; :meth:`decide` must get them next). Depends only on ``smoothing_ms``, so a tuner computes
        them once per smoothing and replays :meth:`decide` for every threshold, margin and refractory time."""
        v = np.asarray(readout, dtype=np.float64)
        m = v.shape[0]
        if m == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        if v.ndim != 2 or v.shape[1] != len(self.labels):
            raise ValueError(f"readout must be (steps, {len(self.labels)}), got shape {v.shape}")
        z = np.exp(v - v.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        full = np.concatenate([self._carry, p])
        acc = full[:m].copy()
        for k in range(1, self.window):
            acc += full[k : k + m]
        seen = np.minimum(self.window, self.step + 1 + np.arange(m))
        smoothed = acc / seen[:, None]
        if self.window > 1:
            self._carry = full[-(self.window - 1) :]
        masked = np.where(self._allowed, smoothed, -1.0)
        best = masked.argmax(axis=1)
        rows = np.arange(m)
        conf = smoothed[rows, best]
        others = smoothed.copy()
        others[rows, best] = -1.0
        lead = conf - others.max(axis=1) if len(self.labels) > 1 else conf
        return best, conf, lead

    def decide(self, best: np.ndarray, conf: np.ndarray, lead: np.ndarray) -> list[tuple[int, int, float]]:
        """The second half of :meth:`push`: threshold, margin and refractory time over the :meth:`features`
        of the next rows; ``(step, class, confidence)`` of each detection."""
        m = conf.shape[0]
        hits = np.flatnonzero((conf >= self.spec.threshold) & (lead >= self.spec.min_margin))
        out = []
        for i in hits.tolist():
            step = self.step + i
            if step - self._last < self.refractory:
                continue
            self._last = step
            out.append((step, int(best[i]), float(conf[i])))
        self.step += m
        return out

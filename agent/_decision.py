"""The decision rule over the readout voltage: one definition for training, evaluation and the device.

For a readout voltage trace ``V[t, k]`` (t = 0..T-1, float units where the hidden threshold is 1):

- ``exp_weighted_mean``: ``score_k = (1/T) * sum_t exp(-t/T) * V[t, k]`` — the paper's loss shaping
  (mlGeNN ``avg_var_exp_weight``), and the rule its Lava/Loihi evaluation used.
- ``max_over_time``: ``score_k = max_t V[t, k]``.

The predicted class is ``argmax_k score_k``; the confidence is the softmax of the scores at that class.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edgekws.packaging import DEFAULT_READOUT, Readout, readout_problem


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

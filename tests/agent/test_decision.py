"""Tests for the one decision rule over the readout."""

from __future__ import annotations

import numpy as np
import pytest

from edgekws.agent import decide, readout_scores
from edgekws.agent._decision import TimeCourse
from edgekws.packaging import DetectionSpec


def test_exp_weighted_mean_weights_early_steps_more() -> None:
    """The same voltage bump scores higher early in the sample than late."""
    trace = np.zeros((1, 100, 2))
    trace[0, 10, 0] = 1.0
    trace[0, 90, 1] = 1.0
    scores = readout_scores(trace)
    assert scores[0, 0] == pytest.approx(np.exp(-10 / 100) / 100)
    assert decide(trace).labels.tolist() == [0]


def test_max_over_time_picks_the_peak() -> None:
    """With max over time, a late but larger peak wins."""
    trace = np.zeros((1, 100, 2))
    trace[0, 10, 0] = 1.0
    trace[0, 90, 1] = 1.5
    assert decide(trace, "max_over_time").labels.tolist() == [1]


def test_confidence_is_a_probability() -> None:
    """Confidence lies in (0, 1] and is highest for a clear winner."""
    rng = np.random.default_rng(0)
    trace = rng.normal(size=(5, 50, 4))
    d = decide(trace)
    assert np.all((d.confidence > 0) & (d.confidence <= 1))
    assert d.scores.shape == (5, 4)


def test_nan_readout_is_refused() -> None:
    """A readout with NaN raises a clear error instead of picking a class."""
    trace = np.zeros((1, 10, 3))
    trace[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        decide(trace)


# ---- the always-on decision stage ------------------------------------------------------------------------

LABELS3 = ["yes", "no", "_background_"]


def _spec(**kw: float) -> DetectionSpec:
    base = {"smoothing_ms": 0.0, "threshold": 0.6, "min_margin": 0.0, "refractory_ms": 100.0}
    return DetectionSpec("always_on", **{**base, **kw})


def _course(*bumps: tuple[int, int, int, float], steps: int = 600) -> np.ndarray:
    """A readout that says background (logit 2) except where ``(class, start, stop, logit)`` bumps are."""
    v = np.zeros((steps, 3))
    v[:, 2] = 2.0
    for cls, a, b, value in bumps:
        v[a:b, cls] = value
    return v


def test_time_course_fires_once_per_word_at_its_first_confident_step() -> None:
    """A keyword whose probability stays above the threshold for 50 steps is reported once, at its first
    such step; the background class is never reported; a second word after the refractory time is."""
    decider = TimeCourse(_spec(), LABELS3, dt_ms=1.0)
    found = decider.push(_course((0, 100, 150, 6.0), (1, 300, 320, 6.0)))
    assert [(s, LABELS3[k]) for s, k, _ in found] == [(100, "yes"), (300, "no")]
    assert all(0.6 <= c <= 1 for _, _, c in found)


def test_refractory_time_holds_back_any_label_and_margin_needs_a_lead() -> None:
    """Within refractory_ms of a detection nothing else is reported (one word, one detection); a class that
    leads the runner-up by less than min_margin is not reported."""
    close = _course((0, 100, 110, 6.0), (1, 150, 160, 6.0))
    assert [s for s, _, _ in TimeCourse(_spec(refractory_ms=100.0), LABELS3, 1.0).push(close)] == [100]
    assert [s for s, _, _ in TimeCourse(_spec(refractory_ms=40.0), LABELS3, 1.0).push(close)] == [100, 150]
    tie = _course((0, 100, 110, 2.2))  # yes 0.45 against background 0.37: above 0.4, lead 0.08
    assert TimeCourse(_spec(threshold=0.4), LABELS3, 1.0).push(tie)
    assert not TimeCourse(_spec(threshold=0.4, min_margin=0.1), LABELS3, 1.0).push(tie)


def test_smoothing_averages_the_last_steps_and_ignores_blips() -> None:
    """With 20 ms of smoothing a 5-step blip stays below the threshold while a 40-step word crosses it after
    enough of its steps (at 1 ms steps, 20 steps of history)."""
    v = _course((0, 100, 105, 8.0), (1, 300, 340, 8.0))
    found = TimeCourse(_spec(smoothing_ms=20.0), LABELS3, 1.0).push(v)
    assert [(s, LABELS3[k]) for s, k, _ in found] == [(311, "no")]


def test_chunked_and_whole_traces_give_the_same_detections() -> None:
    """Fed 7 steps at a time or all at once, the stage finds the same detections with the same confidences
    (what tuning by replaying a recorded trace relies on)."""
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1.5, (5000, 3)) + np.array([0.0, 0.0, 1.0])
    for start in rng.integers(0, 4900, 30):  # words: 60 steps of one class
        v[start : start + 60, rng.integers(0, 2)] += 3.0
    spec = _spec(smoothing_ms=30.0, threshold=0.5, min_margin=0.05, refractory_ms=200.0)
    whole = TimeCourse(spec, LABELS3, 1.0).push(v)
    chunked = TimeCourse(spec, LABELS3, 1.0)
    parts = [d for i in range(0, len(v), 7) for d in chunked.push(v[i : i + 7])]
    assert whole and parts == whole
    features = TimeCourse(spec, LABELS3, 1.0).features(v)  # what a tuner computes once per smoothing
    for threshold, margin, refractory in ((0.5, 0.05, 200.0), (0.7, 0.0, 50.0), (0.4, 0.2, 1000.0)):
        other = _spec(smoothing_ms=30.0, threshold=threshold, min_margin=margin, refractory_ms=refractory)
        assert TimeCourse(other, LABELS3, 1.0).decide(*features) == TimeCourse(other, LABELS3, 1.0).push(v)


def test_time_course_refuses_what_it_cannot_decide() -> None:
    with pytest.raises(ValueError, match="always-on models"):
        TimeCourse(DetectionSpec("lanes"), LABELS3, 1.0)
    with pytest.raises(ValueError, match="background class '_background_' is not one of"):
        TimeCourse(_spec(), ["yes", "no"], 1.0)
    with pytest.raises(ValueError, match="nothing to detect"):
        TimeCourse(_spec(), LABELS3, 1.0, ignore=["yes", "no"])

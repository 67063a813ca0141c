"""Tests for the one decision rule over the readout."""

from __future__ import annotations

import numpy as np
import pytest

from edgekws.agent import decide, readout_scores


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

"""Time-resolved targets of stream training, made from the keyword spans of a stretch."""

from __future__ import annotations

import numpy as np
import pytest

from edgekws.toolkit.train._targets import FrameTargets, StreamLoss, frame_targets, target_problems


def test_windows_follow_each_keyword_and_the_rest_is_background() -> None:
    """A keyword 0.10-0.30 s (class 1) in a 1 s stretch, 1 ms steps, window 0-100 ms after its end, guard
    50 ms: background before it and after the guard, nothing asked during the word and the guard, the window
    pooled; the background frames weigh background_weight in all, the window one."""
    loss = StreamLoss("max", window_ms=100.0, guard_ms=50.0, background_weight=0.5)
    t = frame_targets([[(1, 0.1, 0.3)]], 1000, 0.001, 3, loss)
    cls, win = t.cls[0], t.win[0]
    assert (cls[:100] == 3).all() and (cls[450:] == 3).all()
    assert (cls[100:450] == -1).all()
    assert (win[300:400] == 0).all() and (win[:300] == -1).all() and (win[400:] == -1).all()
    assert t.win_cls[0].tolist() == [1] and t.win_wt[0].tolist() == [1.0]
    assert float(t.wt[0][cls == 3].sum()) == pytest.approx(0.5)
    assert target_problems(t, 1, 1000, 4) == []


def test_frame_mode_labels_every_window_step_and_pads_windows() -> None:
    """``frame``: the keyword's class at every step of its window, the window's steps together weigh one
    window; ``max_windows`` pads W so every batch has one shape; a stretch without keywords is all
    background."""
    loss = StreamLoss("frame", window_ms=50.0, guard_ms=0.0)
    t = frame_targets([[(0, 0.1, 0.2), (2, 0.5, 0.6)], []], 1000, 0.001, 3, loss, max_windows=4)
    assert t.win_cls.shape == (2, 4) and (t.win_cls == -1).all() and (t.win == -1).all()
    assert (t.cls[0, 200:250] == 0).all() and (t.cls[0, 600:650] == 2).all()
    assert float(t.wt[0, 200:250].sum()) == pytest.approx(0.5)
    assert (t.cls[1] == 3).all() and float(t.wt[1].sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_windows=1"):
        frame_targets([[(0, 0.1, 0.2), (2, 0.5, 0.6)]], 1000, 0.001, 3, loss, max_windows=1)


def test_bad_targets_and_settings_are_named() -> None:
    t = frame_targets([[(1, 0.1, 0.3)]], 100, 0.001, 3, StreamLoss())
    bad = FrameTargets(t.cls[:, :50], t.win, t.wt, t.win_cls, t.win_wt)
    assert any("targets.cls must be (1, 100)" in p for p in target_problems(bad, 1, 100, 4))
    assert any("classes 0..2" in p for p in target_problems(t, 1, 100, 3))
    clash = FrameTargets(np.zeros_like(t.cls), np.zeros_like(t.win), t.wt, t.win_cls, t.win_wt)
    assert any("both a frame term" in p for p in target_problems(clash, 1, 100, 4))
    with pytest.raises(ValueError, match="stream_loss must be one of"):
        StreamLoss("mean")
    with pytest.raises(ValueError, match="must be after"):
        StreamLoss(window_ms=10.0, window_start_ms=20.0)

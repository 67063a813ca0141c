"""Tests for scoring keyword detections on a long stream (MLPerf Tiny Streaming Wakeword style)."""

from __future__ import annotations

import pytest

from edgekws.toolkit.data import KeywordSpan, StreamDetection, score_stream

TRUTH = [
    KeywordSpan("en-one", 2.0, 2.5),
    KeywordSpan("de-zwei", 10.0, 10.6),
    KeywordSpan("en-one", 20.0, 20.4),
]


def _d(label: str, t: float) -> StreamDetection:
    return StreamDetection(label, t)


def test_hits_misses_and_latency_after_the_keyword_end() -> None:
    """A matching label inside [start, end + tolerance] is a hit with latency t - end; an unmatched keyword is
    a miss."""
    s = score_stream(TRUTH, [_d("en-one", 2.55), _d("de-zwei", 10.5)], 60.0, tolerance_s=1.0)
    assert (s.hits, s.misses, s.false_accepts) == (2, 1, 0)
    assert s.missed == (2,)
    assert s.latencies_s == pytest.approx((0.05, -0.1))  # recognised before the word ended: negative
    assert s.recall == pytest.approx(2 / 3)
    assert [d.outcome for d in s.detections] == ["hit", "hit"]


def test_detection_after_the_tolerance_is_a_spurious_false_accept_and_the_keyword_a_miss() -> None:
    """A right label later than end + tolerance does not hit the keyword; it is a false accept."""
    s = score_stream(TRUTH[:1], [_d("en-one", 3.6)], 60.0, tolerance_s=1.0)
    assert (s.hits, s.misses, s.false_accepts, s.spurious, s.wrong_label) == (0, 1, 1, 1, 0)
    assert s.detections[0].outcome == "spurious" and s.detections[0].keyword is None


def test_wrong_label_inside_a_window_is_a_false_accept_with_its_confusion() -> None:
    """Another label inside a keyword's window counts as a wrong-label false accept and is recorded as a
    confusion; the keyword still counts as hit if its own label also came."""
    s = score_stream(TRUTH[:1], [_d("en-nine", 2.3), _d("en-one", 2.6)], 60.0, debounce_s=0.0)
    assert (s.hits, s.misses, s.false_accepts, s.wrong_label, s.spurious) == (1, 0, 1, 1, 0)
    assert s.confusions == {"en-one->en-nine": 1}
    assert s.detections[0].keyword == 0


def test_repeats_of_a_hit_keyword_are_not_false_accepts() -> None:
    """A second detection of the same label inside the same window is a repeat, not a false accept."""
    s = score_stream(TRUTH[:1], [_d("en-one", 2.5), _d("en-one", 3.2)], 60.0)
    assert (s.hits, s.repeats, s.false_accepts) == (1, 1, 0)


def test_false_detections_are_debounced_like_mlperf() -> None:
    """False detections within debounce_s of the last counted one merge into it; the raw count keeps all."""
    dets = [_d("en-two", 30.0), _d("de-drei", 30.4), _d("en-two", 31.2), _d("en-six", 40.0)]
    s = score_stream(TRUTH, dets, 3600.0, debounce_s=1.0)
    assert s.false_detections_raw == 4
    assert s.false_accepts == 3  # 30.0 (30.4 merged), 31.2, 40.0
    assert [d.counted for d in s.detections] == [True, False, True, True]
    assert s.false_accepts_per_hour == pytest.approx(3.0)


def test_each_keyword_is_hit_once_and_same_label_neighbours_are_matched_in_order() -> None:
    """With two same-label keywords whose windows overlap, two detections hit both, the earliest first."""
    truth = [KeywordSpan("en-one", 0.0, 0.5), KeywordSpan("en-one", 1.0, 1.4)]
    s = score_stream(truth, [_d("en-one", 1.1), _d("en-one", 1.5)], 10.0, tolerance_s=1.0)
    assert (s.hits, s.misses, s.repeats) == (2, 0, 0)
    assert s.latencies_s == pytest.approx((0.6, 0.1))


def test_unsorted_detections_are_scored_in_time_order_and_mlperf_mark() -> None:
    """Detections are sorted by time before matching, and the 8/8 mark reflects misses and false accepts."""
    s = score_stream(TRUTH, [_d("en-one", 20.5), _d("en-one", 2.6), _d("de-zwei", 10.7)], 60.0)
    assert s.hits == 3 and [d.time_s for d in s.detections] == [2.6, 10.7, 20.5]
    assert s.meets_mlperf_tiny
    many = score_stream(TRUTH, [_d("en-two", 30.0 + 2 * i) for i in range(9)], 60.0)
    assert many.false_accepts == 9 and not many.meets_mlperf_tiny
    d = many.to_dict()
    assert d["false_accepts"] == 9 and d["misses"] == 3 and d["latency_ms"]["p50"] is None


def test_bad_ground_truth_and_settings_are_reported_together() -> None:
    """A keyword ending before it starts and a negative tolerance are both named in one ValueError."""
    with pytest.raises(ValueError, match=r"ends at 1\.0 s before.*|tolerance_s") as err:
        score_stream([KeywordSpan("x", 2.0, 1.0)], [], 10.0, tolerance_s=-1.0)
    assert "tolerance_s" in str(err.value) and "ends at 1.0 s" in str(err.value)

"""Scoring keyword detections on a long stream, in the manner of MLPerf Tiny's Streaming Wakeword.

MLPerf Tiny (``mlcommons/tiny``, ``benchmark/training/streaming_wakeword/str_ww_util.py``,
``get_true_and_false_detections``) scores one wakeword: a wakeword instance is a true positive if the
detector fires between its start and ``true_pos_max_delay_sec`` after its end; detections from the start
to ``false_pos_suppresion_delay_sec`` after the end never count as false positives; the remaining
detections are debounced (one false positive per second at most) and counted; the pass mark is at most
8 false positives and 8 false negatives on the long stream. Here the keywords have labels, so:

- a detection at stream time ``t`` *hits* keyword ``k`` when ``start_k <= t <= end_k + tolerance_s`` and
  the labels agree; each keyword is hit at most once (its first such detection); later detections of the
  same label inside the same window are *repeats* (not false accepts, like MLPerf's suppression window);
- a detection inside some keyword's window with another label is a *wrong label*; one inside no window is
  *spurious*; both are false accepts, debounced like MLPerf's: a false detection within ``debounce_s`` of
  the last counted false accept is merged into it (the raw counts are reported too);
- a keyword with no hit is a *miss*;
- the decision latency of a hit is ``t - end_k`` (negative when the word was recognised before its end).

Host side (it needs the ground truth of a labelled stream, which a device never has); numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Outcome = Literal["hit", "repeat", "wrong_label", "spurious"]

#: MLPerf Tiny Streaming Wakeword's pass mark: at most this many false positives and false negatives.
MLPERF_TINY_MAX_ERRORS = 8


@dataclass(frozen=True)
class KeywordSpan:
    """A keyword in the stream (ground truth): its label and where its speech starts and ends."""

    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class StreamDetection:
    """A detection to score: its label and the stream time at which it was made."""

    label: str
    time_s: float


@dataclass(frozen=True)
class ScoredDetection:
    """What one detection was judged to be."""

    label: str
    time_s: float
    outcome: Outcome
    keyword: int | None  # index of the keyword whose window it fell in (None: spurious)
    counted: bool  # a false accept that survived debouncing (False for hits and repeats)


@dataclass(frozen=True)
class StreamScore:
    """The score of a stream: hits, misses, false accepts, latencies, and every detection's outcome."""

    duration_s: float
    tolerance_s: float
    debounce_s: float
    keywords: int
    hits: int
    misses: int
    repeats: int
    false_accepts: int  # debounced: wrong labels + spurious
    wrong_label: int  # debounced false accepts that fell inside a keyword's window
    spurious: int  # debounced false accepts outside every keyword's window
    false_detections_raw: int  # before debouncing
    latencies_s: tuple[float, ...]  # one per hit, in keyword order
    missed: tuple[int, ...]  # indices of the missed keywords
    confusions: dict[str, int] = field(default_factory=dict)  # "true->detected": wrong-label detections
    detections: tuple[ScoredDetection, ...] = ()

    @property
    def recall(self) -> float:
        """Fraction of keywords hit (the detection rate); 0 for a stream without keywords."""
        return self.hits / self.keywords if self.keywords else 0.0

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts * 3600.0 / self.duration_s if self.duration_s > 0 else 0.0

    def latency_percentile_s(self, q: float) -> float | None:
        """The ``q``-th percentile of the hits' decision latencies (None without hits)."""
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else None

    @property
    def meets_mlperf_tiny(self) -> bool:
        """At most 8 false accepts and 8 misses (MLPerf Tiny's mark, on a stream of its own length)."""
        return self.false_accepts <= MLPERF_TINY_MAX_ERRORS and self.misses <= MLPERF_TINY_MAX_ERRORS

    def to_dict(self, with_detections: bool = False) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            v = self.latency_percentile_s(q)
            return None if v is None else round(v * 1e3, 2)

        out: dict[str, Any] = {
            "duration_s": round(self.duration_s, 3),
            "tolerance_s": self.tolerance_s,
            "debounce_s": self.debounce_s,
            "keywords": self.keywords,
            "hits": self.hits,
            "misses": self.misses,
            "recall": round(self.recall, 4),
            "false_accepts": self.false_accepts,
            "false_accepts_per_hour": round(self.false_accepts_per_hour, 2),
            "wrong_label": self.wrong_label,
            "spurious": self.spurious,
            "false_detections_raw": self.false_detections_raw,
            "repeats": self.repeats,
            "latency_ms": {"p50": ms(50), "p90": ms(90), "max": ms(100)},
            "meets_mlperf_tiny_8_8": self.meets_mlperf_tiny,
            "confusions": dict(sorted(self.confusions.items())),
        }
        if with_detections:
            out["detections"] = [
                {
                    "label": d.label,
                    "time_s": round(d.time_s, 4),
                    "outcome": d.outcome,
                    "keyword": d.keyword,
                    "counted": d.counted,
                }
                for d in self.detections
            ]
        return out


def _check(truth: Sequence[KeywordSpan], duration_s: float, tolerance_s: float, debounce_s: float) -> None:
    problems = []
    if not duration_s > 0:
        problems.append(f"duration_s must be positive, got {duration_s}")
    if tolerance_s < 0:
        problems.append(f"tolerance_s must be >= 0, got {tolerance_s}")
    if debounce_s < 0:
        problems.append(f"debounce_s must be >= 0, got {debounce_s}")
    for i, k in enumerate(truth):
        if not k.start_s <= k.end_s:
            problems.append(f"keyword {i} ({k.label}) ends at {k.end_s} s before it starts at {k.start_s} s")
    if problems:
        raise ValueError("cannot score the stream: " + "; ".join(problems))


def score_stream(
    truth: Sequence[KeywordSpan],
    detections: Iterable[StreamDetection],
    duration_s: float,
    *,
    tolerance_s: float = 1.0,
    debounce_s: float = 1.0,
) -> StreamScore:
    """Score ``detections`` against the keywords of a stream ``duration_s`` long (module docstring)."""
    _check(truth, duration_s, tolerance_s, debounce_s)
    starts = np.array([k.start_s for k in truth], dtype=np.float64)
    ends = np.array([k.end_s for k in truth], dtype=np.float64) + tolerance_s
    hit_by: dict[int, float] = {}  # keyword -> time of its hit
    scored: list[ScoredDetection] = []
    confusions: dict[str, int] = {}
    last_counted = -np.inf
    raw_false = 0
    for det in sorted(detections, key=lambda d: d.time_s):
        inside = np.flatnonzero((starts <= det.time_s) & (det.time_s <= ends)).tolist()
        same = [k for k in inside if truth[k].label == det.label]
        fresh = [k for k in same if k not in hit_by]
        outcome: Outcome
        if fresh:
            keyword: int | None = min(fresh, key=lambda k: truth[k].end_s)
            assert keyword is not None
            hit_by[keyword] = det.time_s
            outcome = "hit"
        elif same:
            keyword, outcome = same[0], "repeat"
        elif inside:
            keyword = max(inside, key=lambda k: truth[k].start_s)  # the word being (or just) spoken
            outcome = "wrong_label"
            key = f"{truth[keyword].label}->{det.label}"
            confusions[key] = confusions.get(key, 0) + 1
        else:
            keyword, outcome = None, "spurious"
        counted = False
        if outcome in ("wrong_label", "spurious"):
            raw_false += 1
            if det.time_s - last_counted >= debounce_s:
                counted, last_counted = True, det.time_s
        scored.append(ScoredDetection(det.label, det.time_s, outcome, keyword, counted))
    hit_keywords = sorted(hit_by)
    return StreamScore(
        duration_s=float(duration_s),
        tolerance_s=float(tolerance_s),
        debounce_s=float(debounce_s),
        keywords=len(truth),
        hits=len(hit_by),
        misses=len(truth) - len(hit_by),
        repeats=sum(d.outcome == "repeat" for d in scored),
        false_accepts=sum(d.counted for d in scored),
        wrong_label=sum(d.counted and d.outcome == "wrong_label" for d in scored),
        spurious=sum(d.counted and d.outcome == "spurious" for d in scored),
        false_detections_raw=raw_false,
        latencies_s=tuple(hit_by[k] - truth[k].end_s for k in hit_keywords),
        missed=tuple(k for k in range(len(truth)) if k not in hit_by),
        confusions=confusions,
        detections=tuple(scored),
    )

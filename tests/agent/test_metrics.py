"""Tests for the runtime metrics."""

from __future__ import annotations

import time

import pytest

from edgekws.agent._metrics import LatencyWindow, RuntimeMetrics, rss_bytes


def test_latency_window_percentiles_cover_only_the_window() -> None:
    """Percentiles are over the most recent values only, in milliseconds."""
    w = LatencyWindow(100)
    for _ in range(100):
        w.add(1.0)  # old, slow values pushed out of the window below
    for i in range(1, 101):
        w.add(i / 1000.0)
    s = w.summary_ms()
    assert s["n"] == 100 and w.count == 200
    assert s["p50"] == pytest.approx(50.5) and s["max"] == pytest.approx(100.0)
    assert s["p99"] == pytest.approx(99.01)
    assert s["p95"] == pytest.approx(95.05)  # the fleet monitor's regression alert compares p95


def test_empty_window_reports_none() -> None:
    """An empty window gives None percentiles rather than a made-up zero."""
    assert LatencyWindow(5).summary_ms() == {
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "max": None,
        "n": 0,
    }


def test_snapshot_has_rtf_cpu_and_resets_counters() -> None:
    """The real-time factor is busy time over audio time, CPU is measured, and counters reset per snapshot."""
    m = RuntimeMetrics(window=10)
    m.record_chunk(audio_seconds=0.02, processing_seconds=0.001)
    m.record_chunk(audio_seconds=0.02, processing_seconds=0.003)
    m.record_backend_call(0.0005)
    m.record_inferences(3)
    t_end = time.process_time() + 0.05
    while time.process_time() < t_end:  # burn CPU so cpu_percent is clearly above zero
        pass
    snap = m.snapshot()
    assert snap["real_time_factor"] == pytest.approx(0.1)
    assert snap["inferences"] == 3 and snap["latency_ms"]["chunk"]["n"] == 2
    assert snap["cpu_percent"] > 10 and snap["rss_mb"] > 10
    again = m.snapshot()
    assert again["inferences"] == 0 and again["real_time_factor"] is None
    assert again["latency_ms"]["chunk"]["n"] == 2  # latency windows persist across snapshots


def test_rss_is_the_current_resident_size() -> None:
    """RSS grows when the process touches a large new buffer."""
    before = rss_bytes()
    buf = bytearray(64 * 2**20)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    assert rss_bytes() - before > 32 * 2**20

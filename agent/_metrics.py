"""Runtime metrics: latency percentiles over a window, real-time factor, CPU and memory of the process.

Latency is wall-clock seconds, per backend call (``inference``: every lane advanced over one chunk),
per audio chunk (front-end + backend + decision for one chunk) and per detection (``decision``: from
the moment the window's last sample was available to the event), kept in fixed-size windows of the
most recent values. The real-time factor is processing time over audio time since the last snapshot
(0.05 = 20x faster than real time).
CPU is the process's user + system time over wall time (1.0 = one core busy); RSS comes from
``/proc/self/status`` (``VmRSS``) where it exists, else ``resource.getrusage`` (peak, not current).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections import deque
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


class LatencyWindow:
    """The last ``size`` latencies (seconds) and their percentiles."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0  # values ever added

    def add(self, seconds: float) -> None:
        self._values.append(float(seconds))
        self.count += 1

    def __len__(self) -> int:
        return len(self._values)

    def summary_ms(self) -> dict[str, float | int | None]:
        """``{"p50", "p90", "p95", "p99", "max"}`` in ms (None when empty) and ``"n"``: count in window."""
        if not self._values:
            return {**{f"p{p}": None for p in PERCENTILES}, "max": None, "n": 0}
        a = np.fromiter(self._values, dtype=np.float64) * 1000.0
        out: dict[str, float | int | None] = {
            f"p{p}": round(float(v), 4)
            for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True)
        }
        out["max"] = round(float(a.max()), 4)
        out["n"] = int(a.size)
        return out


def rss_bytes() -> int:
    """Resident set size of this process (current from /proc, else the peak from getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class ProcessStats:
    """CPU utilisation of this process between calls of :meth:`sample`."""

    def __init__(self) -> None:
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, float]:
        """``cpu_percent`` (100 = one core) and ``cpu_s`` since the last sample, and ``rss_mb`` now."""
        cpu, wall = self._cpu_seconds(), time.monotonic()
        d_cpu, d_wall = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return {
            "cpu_percent": round(100.0 * d_cpu / d_wall, 2) if d_wall > 0 else 0.0,
            "cpu_s": round(d_cpu, 4),
            "rss_mb": round(rss_bytes() / 2**20, 2),
        }


class RuntimeMetrics:
    """What the agent records while it runs, and the periodic snapshot it reports."""

    def __init__(self, window: int = 1000) -> None:
        self.inference = LatencyWindow(window)  # per backend call
        self.chunk = LatencyWindow(window)
        self.decision = LatencyWindow(window)
        self.process = ProcessStats()
        self._audio_s = 0.0
        self._busy_s = 0.0
        self._inferences = 0
        self._detections = 0
        self.total_audio_s = 0.0
        self.total_inferences = 0

    def record_chunk(self, audio_seconds: float, processing_seconds: float) -> None:
        """One chunk of ``audio_seconds`` took ``processing_seconds`` of wall time end to end."""
        self.chunk.add(processing_seconds)
        self._audio_s += audio_seconds
        self._busy_s += processing_seconds
        self.total_audio_s += audio_seconds

    def record_backend_call(self, seconds: float) -> None:
        """One backend call (all lanes advanced over one chunk) took ``seconds``."""
        self.inference.add(seconds)

    def record_inferences(self, count: int) -> None:
        """``count`` inferences (windows scored by one network instance each) completed."""
        self._inferences += count
        self.total_inferences += count

    def record_detection(self, latency_seconds: float) -> None:
        self.decision.add(latency_seconds)
        self._detections += 1

    def snapshot(self) -> dict[str, Any]:
        """Aggregates since the last snapshot (counts, RTF, CPU) and over the window (latency)."""
        snap: dict[str, Any] = {
            "latency_ms": {
                "inference": self.inference.summary_ms(),
                "chunk": self.chunk.summary_ms(),
                "decision": self.decision.summary_ms(),
            },
            "audio_s": round(self._audio_s, 4),
            "real_time_factor": round(self._busy_s / self._audio_s, 5) if self._audio_s > 0 else None,
            "inferences": self._inferences,  # windows scored (one network instance over one window each)
            "detections": self._detections,
            **self.process.sample(),
        }
        self._audio_s = self._busy_s = 0.0
        self._inferences = self._detections = 0
        return snap

"""Fleet alerts: a device went offline, or latency/energy regressed after a rollout (bundle version change).

Regression rule (:func:`regression`): after a device changes bundle version, compare the median of the
last ``baseline_samples`` telemetry reports under the previous version with the median of the first
reports under the new one (once ``min_samples`` of them exist). An increase beyond ``threshold``
(0.2 = +20 %) raises an alert. Latency compares the inference p95 where the device reports it, else
p99, else p50 (the same key on both sides). Energy compares only figures with the same method: an
estimate is never compared with a measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the alerts."""

    threshold: float = 0.2  # relative increase that counts as a regression
    min_samples: int = 3  # reports under the new version before judging
    baseline_samples: int = 20  # reports under the old version that form the baseline

    def __post_init__(self) -> None:
        problems = []
        if self.threshold <= 0:
            problems.append(f"threshold must be > 0, got {self.threshold}")
        if self.min_samples < 1 or self.baseline_samples < 1:
            problems.append("min_samples and baseline_samples must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Alert:
    """One alert; ``resolved`` is None while it is active."""

    fleet: str
    device: str
    kind: str  # offline | latency_regression | energy_regression | error
    message: str
    raised: float = field(default_factory=time.time)
    resolved: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Regression:
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def regression(before: list[float], after: list[float], rules: AlertRules) -> Regression | None:
    """A :class:`Regression` when the median of ``after`` exceeds that of ``before`` by more than the
    threshold (and both have enough samples), else None."""
    before = before[-rules.baseline_samples :]
    if len(after) < rules.min_samples or not before:
        return None
    b, a = statistics.median(before), statistics.median(after)
    if b <= 0 or a <= b * (1.0 + rules.threshold):
        return None
    return Regression(b, a)


class AlertBook:
    """Active alerts by (fleet, device, kind), their history, and who to tell.

    ``shared``: several monitors raise and resolve the same alerts, and the store decides (one active alert
    per key): every raise and every resolve goes to ``pending`` even when this book thinks it is a repeat,
    since another monitor may have resolved or raised it meanwhile."""

    def __init__(self, on_change: Callable[[Alert], None] | None = None, shared: bool = False) -> None:
        self.shared = shared
        self.active: dict[tuple[str, str, str], Alert] = {}
        self.history: list[Alert] = []
        self.on_change = on_change
        self.pending: list[Alert] = []  # changes not yet written to the store

    def raise_(self, fleet: str, device: str, kind: str, message: str) -> Alert | None:
        key = (fleet, device, kind)
        if key in self.active:
            if self.shared:
                self.pending.append(Alert(fleet, device, kind, message))
            return None
        alert = Alert(fleet, device, kind, message)
        self.active[key] = alert
        self.history.append(alert)
        self._changed(alert)
        return alert

    def resolve(self, fleet: str, device: str, kind: str) -> Alert | None:
        alert = self.active.pop((fleet, device, kind), None)
        if alert is not None:
            alert.resolved = time.time()
            self._changed(alert)
        elif self.shared:
            self.pending.append(Alert(fleet, device, kind, "", resolved=time.time()))
        return alert

    def _changed(self, alert: Alert) -> None:
        self.pending.append(alert)
        if self.on_change is not None:
            self.on_change(alert)

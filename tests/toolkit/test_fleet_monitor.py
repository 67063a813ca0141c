"""The fleet monitor: de-duplication, device state, alerts, the store, and nothing lost when the broker is
SIGKILLed mid-stream (real mosquitto, real device telemetry links)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff, BrokerUrl
from edgekws.toolkit.fleet import AlertRules, FleetMonitor, FleetStore, MqttIngest
from edgekws.toolkit.fleet._alerts import regression


def _msg(kind: str, seq: int, epoch: str = "e1", **fields: Any) -> bytes:
    body = {
        "schema": f"edgekws.{kind}/1",
        "id": f"{epoch}:{seq}",
        "seq": seq,
        "ts": time.time(),
        "boot": "b",
        **fields,
    }
    return json.dumps(body).encode()


def _telemetry(seq: int, version: str, p95: float, mj: float, method: str = "measured:nvml") -> bytes:
    return _msg(
        "telemetry",
        seq,
        bundle={"name": "digits", "version": version},
        backend="onnx",
        latency_ms={"inference": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2}},
        energy=[
            {"mj_per_inference": mj * 9, "method": "estimated:cpu-tdp"},
            {"mj_per_inference": mj, "method": method},
        ],
        inferences=10,
        detections=0,
        queue={"depth": 2, "bytes": 100},
        dropped={"telemetry": 1},
    )


def test_ingest_deduplicates_by_id_and_keeps_device_state() -> None:
    """A repeated message id is counted once; telemetry sets latency, the measured energy and its method."""
    mon = FleetMonitor()
    t = "edgekws/v1/f1/d1/"
    assert mon.ingest(t + "telemetry", _telemetry(1, "1.0.0", 4.0, 0.5))
    assert not mon.ingest(t + "telemetry", _telemetry(1, "1.0.0", 4.0, 0.5))
    for seq in (2, 3, 4):
        mon.ingest(t + "detection", _msg("detection", seq, label="yes", confidence=0.9, latency_ms=3.0))
    assert not mon.ingest(t + "detection", b"not json") and not mon.ingest("other/topic", b"{}")
    d = mon.devices[("f1", "d1")]
    assert d.latency_p95_ms == 4.0 and d.latency_p50_ms == 2.0
    assert (d.energy_mj, d.energy_method) == (0.5, "measured:nvml")  # measured wins over the estimate
    assert d.bundle_version == "1.0.0" and d.backend == "onnx" and d.queue_depth == 2
    assert d.detections_per_minute() == 3 and d.duplicates == 1 and d.dropped == {"telemetry": 1}
    assert mon.messages_total["detection"] == 3 and mon.duplicates_total == 1 and mon.invalid_total == 2
    mon.ingest(t + "detection", _msg("detection", 3 - 1 + 10, label="no", confidence=0.8, latency_ms=1.0))
    mon.ingest(t + "detection", _msg("detection", 5, label="no", confidence=0.8, latency_ms=1.0))
    assert d.out_of_order == 1


def test_last_will_raises_an_offline_alert_and_online_resolves_it() -> None:
    """The retained offline status (Last Will) raises an offline alert; the next online status resolves it."""
    mon = FleetMonitor()
    t = "edgekws/v1/f1/d1/status"
    mon.ingest(t, _msg("status", 0, "s1", state="online", bundle=None, backend="emulator"))
    mon.ingest(
        t, _msg("status", 0, "s2", state="offline", bundle=None, backend="emulator", reason="connection lost")
    )
    assert mon.devices[("f1", "d1")].online is False
    assert [a.kind for a in mon.alerts.active.values()] == ["offline"]
    assert "connection lost" in next(iter(mon.alerts.active.values())).message
    mon.ingest(t, _msg("status", 0, "s3", state="online", bundle=None, backend="emulator"))
    assert not mon.alerts.active and mon.alerts.history[0].resolved is not None


def test_regression_after_a_rollout_raises_latency_and_energy_alerts() -> None:
    """After a bundle version change, p95 latency and same-method energy beyond the threshold raise alerts."""
    mon = FleetMonitor(rules=AlertRules(threshold=0.2, min_samples=3))
    t = "edgekws/v1/f1/d1/telemetry"
    seq = 0
    for _ in range(5):
        seq += 1
        mon.ingest(t, _telemetry(seq, "1.0.0", 4.0, 0.50))
    for _ in range(2):
        seq += 1
        mon.ingest(t, _telemetry(seq, "1.1.0", 5.5, 0.52))
    assert not mon.alerts.active  # only two samples of the new version yet
    seq += 1
    mon.ingest(t, _telemetry(seq, "1.1.0", 5.5, 0.52))
    kinds = {k[2]: a for k, a in mon.alerts.active.items()}
    assert set(kinds) == {"latency_regression"}  # energy +4 % is within the threshold
    assert "1.0.0 -> 1.1.0" in kinds["latency_regression"].message
    for _ in range(3):
        seq += 1
        mon.ingest(t, _telemetry(seq, "1.2.0", 4.0, 0.9, method="estimated:loihi2-opcount"))
    assert not mon.alerts.active  # new rollout judged afresh; energy of another method is not compared
    assert regression([1.0, 1.0], [1.3, 1.3, 1.3], AlertRules()) is not None
    assert regression([1.0, 1.0], [1.1, 1.1, 1.1], AlertRules()) is None


def test_store_deduplicates_across_monitor_restarts(tmp_path: Path) -> None:
    """Two monitors over the same database store a message id once and the second reloads device state."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    first = FleetMonitor(FleetStore(url))
    first.ingest("edgekws/v1/f1/d1/telemetry", _telemetry(1, "1.0.0", 4.0, 0.5))
    first.flush()
    second = FleetMonitor(FleetStore(url))
    assert second.devices[("f1", "d1")].bundle == {"name": "digits", "version": "1.0.0"}
    second.ingest(
        "edgekws/v1/f1/d1/telemetry", _telemetry(1, "1.0.0", 4.0, 0.5)
    )  # re-delivered after restart
    second.flush()
    assert second.store is not None and second.store.count("telemetry") == 1
    with pytest.raises(ValueError, match="SQLAlchemy URL"):
        FleetStore("nonsense://")


def test_broker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, broker_factory: Any
) -> None:
    """Two devices stream detections while the broker is SIGKILLed twice and restarted empty; the monitor
    stores every message exactly once, in order per device."""
    b = broker_factory()
    store = FleetStore(f"sqlite:///{tmp_path / 'fleet.db'}")
    monitor = FleetMonitor(store)
    ingest = MqttIngest(monitor, BrokerUrl.parse(b.url), flush_interval_s=0.05)
    ingest.start()
    assert ingest.connected.wait(5)
    links = []
    for name in ("d1", "d2"):
        settings = MqttConfig(broker=f"mqtt://127.0.0.1:{b.port}", outbox=tmp_path / f"{name}.sqlite")
        link = DeviceTelemetry(
            settings,
            fleet="f1",
            device=name,
            bundle={"name": "x", "version": "1"},
            backend="e",
            backoff=Backoff(0.05, 0.2),
        )
        link.start()
        links.append(link)
    n = 150
    sent: dict[str, list[str]] = {"d1": [], "d2": []}

    def produce(link: DeviceTelemetry) -> None:
        for i in range(n):
            msg_id = link.detection("yes", 0.9, float(i))
            assert msg_id is not None
            sent[link.device].append(msg_id)
            time.sleep(0.004)

    producers = [threading.Thread(target=produce, args=(link,)) for link in links]
    for p in producers:
        p.start()
    try:
        for _ in range(2):
            time.sleep(0.25)
            b.kill()  # SIGKILL, persistence off: the restarted broker knows no session or subscription
            time.sleep(0.2)
            b.start()
        for p in producers:
            p.join()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and monitor.messages_total["detection"] < 2 * n:
            time.sleep(0.05)
        time.sleep(0.3)
        monitor.flush()
        for name in ("d1", "d2"):
            stored = store.message_ids("detection", "f1", name)
            assert stored == sent[name], f"{name}: {len(stored)} stored of {len(sent[name])}"
        assert monitor.messages_total["detection"] == 2 * n
        assert all(link.connects >= 3 for link in links)  # they really were cut off twice
        assert all(link.queue_depth() == 0 for link in links)
    finally:
        for link in links:
            link.stop()
        ingest.stop()
        store.dispose()

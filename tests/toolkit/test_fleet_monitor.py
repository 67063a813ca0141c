"""The fleet monitor: de-duplication, device state, alerts, the store (on SQLite and on a real PostgreSQL),
nothing lost when the broker is SIGKILLed mid-stream (real mosquitto, real device telemetry links), and no
message whatever its bytes stopping ingest (the red team's poison table, H1/M4/L7)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _devices import stream_detections, wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff, BrokerUrl
from edgekws.toolkit.fleet import AlertRules, FleetMonitor, FleetStore, MqttIngest
from edgekws.toolkit.fleet._alerts import regression
from edgekws.toolkit.fleet._store import StoreError


def _msg(kind: str, seq: int, epoch: str = "e1", **fields: Any) -> bytes:
    body = {
        "schema": f"edgekws.{kind}/1",
        "id": f"{epoch}:{seq}",
        **({} if kind == "status" else {"seq": seq}),
        "ts": time.time(),
        "boot": "b",
        **fields,
    }
    return json.dumps(body).encode()


def _telemetry(seq: int, version: str, p95: float, mj: float, method: str = "measured:nvml") -> bytes:
    return _msg("telemetry", seq, **_telemetry_fields(version, p95, mj, method))


def _telemetry_fields(
    version: str = "1.0.0", p95: float = 4.0, mj: float = 0.5, method: str = "measured:nvml"
) -> dict[str, Any]:
    return {
        "bundle": {"name": "digits", "version": version},
        "backend": "onnx",
        "latency_ms": {"inference": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2}},
        "energy": [
            {"mj_per_inference": mj * 9, "method": "estimated:cpu-tdp"},
            {"mj_per_inference": mj, "method": method},
        ],
        "inferences": 10,
        "detections": 0,
        "queue": {"depth": 2, "bytes": 100},
        "dropped": {"telemetry": 1},
    }


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


def test_store_deduplicates_across_monitor_restarts(store_url: str) -> None:
    """Two monitors over the same database store a message id once and the second reloads device state."""
    first_store, second_store = FleetStore(store_url), FleetStore(store_url)
    try:
        first = FleetMonitor(first_store)
        first.ingest("edgekws/v1/f1/d1/telemetry", _telemetry(1, "1.0.0", 4.0, 0.5))
        first.flush()
        second = FleetMonitor(second_store)
        assert second.devices[("f1", "d1")].bundle == {"name": "digits", "version": "1.0.0"}
        second.ingest("edgekws/v1/f1/d1/telemetry", _telemetry(1, "1.0.0", 4.0, 0.5))  # re-delivered
        second.flush()
        assert second_store.count("telemetry") == 1
    finally:
        first_store.dispose()
        second_store.dispose()
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
    sent, producers = stream_detections(links, n, 0.004)
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


# ---- one bad message never stops the fleet (red team H1, M4, L7) -------------------------------------------
def _good(message: str, seq: int, **fields: Any) -> dict[str, Any]:
    head = {"schema": f"edgekws.{message}/1", "id": f"e1:{seq}", "ts": 1767225600.0 + seq, "boot": "b"}
    return {**head, **({} if message == "status" else {"seq": seq}), **fields}


_TELEMETRY = _good("telemetry", 1, **_telemetry_fields())
_DETECTION = _good("detection", 2, label="yes", confidence=0.9, latency_ms=3.0)
_STATUS = _good("status", 0, state="online", bundle=None, backend=None)


def _t(**fields: Any) -> bytes:
    """The good telemetry report with ``fields`` replaced."""
    return json.dumps({**_TELEMETRY, **fields}).encode()


def _d(**fields: Any) -> bytes:
    return json.dumps({**_DETECTION, **fields}).encode()


def _raw(key: str, literal: str) -> bytes:
    """The good telemetry report with ``key`` set to a JSON literal Python's json module would not write."""
    return json.dumps({**_TELEMETRY, key: 0}).replace(f'"{key}": 0', f'"{key}": {literal}').encode()


def _event(detail: dict[str, Any]) -> bytes:
    return json.dumps(_good("event", 4, kind="x", level="info", detail=detail)).encode()


def _p50(value: Any) -> dict[str, Any]:
    return {"inference": {"p50": value}}


# The red team's table (redteam-2026-12.md, H1 and M4), then more of the same kind and L7's size: each with
# the topic level it was sent on.
POISON: dict[str, tuple[str, bytes]] = {
    "deep nesting 100000": ("telemetry", b"[" * 100000),
    "deep nesting under the size limit": ("telemetry", b"[" * 60000),
    "5000-digit integer": ("telemetry", _raw("seq", "9" * 5000)),
    "dropped: []": ("telemetry", _t(dropped=[])),
    "dropped: {telemetry: many}": ("telemetry", _t(dropped={"telemetry": "many"})),
    "latency_ms: [1]": ("telemetry", _t(latency_ms=[1])),
    "queue: full": ("telemetry", _t(queue="full")),
    "ts: NaN": ("telemetry", _t(ts=float("nan"))),
    "p50: NaN (M4)": ("telemetry", _t(latency_ms=_p50(float("nan")))),
    "p50: Infinity": ("telemetry", _t(latency_ms=_p50(float("inf")))),
    "p50: fast": ("telemetry", _t(latency_ms=_p50("fast"))),
    "p50: {}": ("telemetry", _t(latency_ms=_p50({}))),
    "confidence: [1]": ("detection", _d(confidence=[1])),
    "ts: 401 digits": ("telemetry", _raw("ts", "9" * 401)),
    "ts: 10^400": ("telemetry", _raw("ts", "1e400")),
    "seq beyond 64 bits": ("detection", _d(seq=2**64)),
    "NUL in a label": ("detection", _d(label="ye\u0000s")),
    "label longer than its column": ("detection", _d(label="y" * 65)),
    "string for a number": ("detection", _d(confidence="0.9")),
    "event detail 10 levels deep": ("event", _event(json.loads('{"a":' * 10 + "1" + "}" * 10))),
    "not JSON": ("status", b"\xff\xfe not json"),
    "JSON array": ("status", b"[1, 2]"),
    "unknown key": ("status", json.dumps({**_STATUS, "extra": 1}).encode()),
    "300 KB payload (L7)": ("event", _event({"pad": "x" * 300_000})),
}


def _publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish each (topic, payload) at QoS 1 and wait for every PUBACK (a client like the red team's)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_poison_messages_are_parked_and_ingest_goes_on(store_url: str, broker_factory: Any) -> None:
    """Every payload of the red team's table (and L7's: a device id with an RTL override, a 300 KB payload)
    is refused, counted and parked as a dead letter with its device and topic, and acknowledged; a good
    message from another device sent afterwards is stored; a restarted monitor on the same persistent
    session gets none of the poison again (H1, M4, L7)."""
    b = broker_factory()
    url = BrokerUrl.parse(b.url)
    store, store_again = FleetStore(store_url), FleetStore(store_url)
    try:
        _poison_then_restart(b.port, url, store, store_again)
    finally:
        store.dispose()
        store_again.dispose()


def _poison_then_restart(port: int, url: BrokerUrl, store: FleetStore, store_again: FleetStore) -> None:
    monitor = FleetMonitor(store)
    ingest = MqttIngest(monitor, url, flush_interval_s=0.05)
    ingest.start()
    try:
        assert ingest.connected.wait(5)
        poison = [(f"edgekws/v1/lab/evil/{kind}", payload) for kind, payload in POISON.values()]
        poison.append(("edgekws/v1/lab/a\u202eevil/status", json.dumps(_STATUS).encode()))
        _publish_all(port, [*poison, ("edgekws/v1/lab/good/detection", json.dumps(_DETECTION).encode())])
        wait_until(
            lambda: store.message_ids("detection", "lab", "good") == ["e1:2"], 20, "the good detection"
        )
        assert ingest.alive and ingest.health()[0]
        assert monitor.invalid_total == len(poison)
        wait_until(lambda: store.count("dead_letter") == len(poison), 5, "every dead letter")
        letters = store.dead_letter_rows(len(poison))
        by_device = sorted((str(r["fleet"]), str(r["device"])) for r in letters)
        assert by_device == [("None", "None")] + [("lab", "evil")] * (len(poison) - 1)  # the RTL id too
        assert all(r["reason"] and r["size"] > 0 for r in letters)
        rtl = next(r for r in letters if r["fleet"] is None)
        assert "\\u202e" in rtl["topic"] and "device id must match" in rtl["reason"]
        big = next(r for r in letters if r["size"] > 300_000)
        assert "over the 65536-byte limit" in big["reason"] and len(big["payload"]) == 65536
        assert set(monitor.devices) == {("lab", "good")}  # nothing of the poison reached a device state
        assert store.count("telemetry") == store.count("event") == 0
    finally:
        ingest.stop()
    again = FleetMonitor(store_again)
    ingest = MqttIngest(again, url, flush_interval_s=0.05)  # same client id: the broker kept the session
    ingest.start()
    try:
        assert ingest.connected.wait(5)
        _publish_all(port, [("edgekws/v1/lab/good/detection", _d(id="e1:3", seq=3))])
        wait_until(
            lambda: store.message_ids("detection", "lab", "good") == ["e1:2", "e1:3"], 20, "the second one"
        )
        assert again.invalid_total == 0  # nothing re-delivered
    finally:
        ingest.stop()


def test_refused_queued_messages_are_acked_to_the_device(tmp_path: Path) -> None:
    """A refused message with a readable outbox id is acknowledged to its device after its dead letter is
    written (else the device would re-send it forever); an id whose seq exceeds 64 bits is stored but never
    acked (an ack range that large killed the device: H2)."""
    monitor = FleetMonitor(FleetStore(f"sqlite:///{tmp_path / 'fleet.db'}"))
    t = "edgekws/v1/lab/d1/detection"
    assert not monitor.ingest(t, _d(confidence="high"))
    assert monitor.ingest(t, _d(id=f"e1:{2**64}", seq=1))
    monitor.flush()
    assert monitor.take_acks() == [("lab", "d1", "e1", [(2, 2)])]
    assert monitor.store is not None and monitor.store.count("dead_letter") == 1
    assert monitor.store.count("detection") == 1
    monitor.store.dispose()


def test_healthz_fails_when_the_ingest_thread_dies(tmp_path: Path, broker: Any) -> None:
    """/healthz answers 200 while ingest runs and 503 once its thread has died (red team: it said ok)."""
    import urllib.error
    import urllib.request

    from edgekws.toolkit.fleet import FleetServer

    monitor = FleetMonitor(FleetStore(f"sqlite:///{tmp_path / 'fleet.db'}"))
    ingest = MqttIngest(monitor, BrokerUrl.parse(broker.url), flush_interval_s=0.05)
    server = FleetServer(monitor, port=0, health=ingest.health)
    server.start()
    ingest.start()
    try:
        assert ingest.connected.wait(5)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) == {
                "ok": True,
                "ingest": "running",
                "broker": "connected",
                "store": "ok",
            }

        def broken() -> None:
            raise RuntimeError("a bug in the monitor")

        monitor.flush = broken  # type: ignore[method-assign]
        wait_until(lambda: not ingest.alive, 5, "the ingest thread to die")
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert failed.value.code == 503 and json.loads(failed.value.read())["ingest"] == "stopped"
        assert ingest.failure == "RuntimeError: a bug in the monitor"
    finally:
        ingest.stop()
        server.stop()


def test_an_unwritable_store_holds_the_batch_and_loses_nothing(tmp_path: Path) -> None:
    """When the store cannot be written the batch is kept (StoreError, nothing acknowledged: take_acks
    gives only what a flush committed) and written by the next flush once the store works again."""
    path = tmp_path / "fleet.db"
    monitor = FleetMonitor(FleetStore(f"sqlite:///{path}"))
    monitor.ingest("edgekws/v1/lab/d1/detection", json.dumps(_DETECTION).encode())
    lock = sqlite3.connect(path, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    assert monitor.store is not None
    monitor.store.engine.dispose()
    monitor.store.engine.pool._creator = _locked_creator(path)  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="cannot write to the fleet store"):
        monitor.flush()
    assert monitor.take_acks() == []
    lock.rollback()
    lock.close()
    monitor.flush()
    assert monitor.store.message_ids("detection", "lab", "d1") == ["e1:2"]
    assert monitor.take_acks() == [("lab", "d1", "e1", [(2, 2)])]


def _locked_creator(path: Path) -> Any:
    return lambda: sqlite3.connect(path, timeout=0.1, check_same_thread=False)


def test_a_row_the_database_refuses_becomes_a_dead_letter(store_url: str) -> None:
    """A row that passed validation but that the database refuses (a bug) does not block its batch: the
    other rows are written, it is parked as a dead letter (on SQLite and PostgreSQL)."""
    store = FleetStore(store_url)
    good = {"fleet": "lab", "device": "d1", "ts": 1.0, "payload": "{}", "confidence": 0.9}
    rows = {
        "detection": [
            {**good, "msg_id": "e1:1", "label": "yes"},
            {**good, "msg_id": "e1:2", "label": None},  # NOT NULL
            {**good, "msg_id": "e1:3", "label": "no"},
        ]
    }
    try:
        assert store.write(rows, [], []).parked == 1
        assert store.message_ids("detection", "lab", "d1") == ["e1:1", "e1:3"]
        (letter,) = store.dead_letter_rows()
        assert letter["device"] == "d1" and "the store refused it" in letter["reason"]
    finally:
        store.dispose()


def test_groups_come_from_the_registry_and_two_monitors_share_a_store(store_url: str) -> None:
    """The operator's group assignment, not the device's claim, is a device's group; two monitors on one
    store store a message once, upsert device states and read the same registry."""
    first, second = FleetStore(store_url), FleetStore(store_url)
    try:
        first.assign_group("canary", [("lab", "d1"), ("lab", "d2")])
        first.assign_group("main", [("lab", "d2")])  # moves d2
        assert second.group_assignments() == {("lab", "d1"): "canary", ("lab", "d2"): "main"}
        a, b = FleetMonitor(first), FleetMonitor(second)
        status = json.dumps({**_STATUS, "group": "main"}).encode()
        for mon in (a, b):
            mon.ingest("edgekws/v1/lab/d1/status", status)
            mon.ingest("edgekws/v1/lab/d1/detection", json.dumps(_DETECTION).encode())
            mon.flush()
        d1 = b.devices[("lab", "d1")]
        assert (d1.group, d1.reported_group) == ("canary", "main")  # claimed main, assigned canary
        assert b.devices[("lab", "d2")].group == "main" and b.devices[("lab", "d2")].online is None
        assert first.count("detection") == 1 and len(first.device_states()) == 1
        assert first.unassign_group([("lab", "d1"), ("lab", "nope")]) == 1
        assert second.group_assignments("canary") == {}
    finally:
        first.dispose()
        second.dispose()


def test_nan_left_in_a_store_by_an_older_monitor_never_reaches_the_api(tmp_path: Path) -> None:
    """A device state holding NaN, a string for a number and a bad id (what the old monitor stored) is
    read back defensively: /api/devices' snapshot is strict JSON (M4: it used to survive restarts)."""
    path = tmp_path / "fleet.db"
    FleetStore(f"sqlite:///{path}").dispose()
    state = {"fleet": "lab", "device": "d1", "online": True, "latency_p50_ms": float("nan")}
    state |= {"energy_mj": "fast", "bundle": {"name": "digits", "version": "1.0.0"}, "queue_depth": 3}
    evil = {**state, "device": "a\u202eevil"}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO devices VALUES ('lab', 'd1', ?, 1.0)", (json.dumps(state),))
        db.execute("INSERT INTO devices VALUES ('lab', ?, ?, 1.0)", (evil["device"], json.dumps(evil)))
    monitor = FleetMonitor(FleetStore(f"sqlite:///{path}"))
    snap = json.loads(json.dumps(monitor.snapshot(), allow_nan=False))
    (d1,) = snap["devices"]
    assert (d1["device"], d1["online"], d1["latency_p50_ms"], d1["energy_mj"]) == ("d1", True, None, None)
    assert d1["bundle_version"] == "1.0.0"

"""Device-side MQTT telemetry against a real mosquitto: retained status, Last Will, the durable outbox,
replay after an outage, commands, and payloads checked against docs/schemas."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._config import MqttConfig
from edgekws.agent._outbox import Outbox
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff, InvalidCommand, parse_command, schema_name, topic

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {
    p.name.split(".")[0]: json.loads(p.read_text()) for p in (REPO / "docs" / "schemas").glob("*.json")
}
BUNDLE = {"name": "digits", "version": "1.0.0"}
SNAPSHOT: dict[str, Any] = {  # the shape of the daemon's RuntimeMetrics.snapshot() + energy
    "latency_ms": {
        "inference": {"p50": 0.4, "p90": 0.5, "p99": 0.9, "max": 1.0, "n": 10},
        "chunk": {"p50": None, "p90": None, "p99": None, "max": None, "n": 0},
    },
    "audio_s": 10.0,
    "real_time_factor": 0.05,
    "inferences": 100,
    "detections": 1,
    "cpu_percent": 10.0,
    "cpu_s": 1.0,
    "rss_mb": 50.0,
    "energy": [{"mj_per_inference": 0.2, "method": "estimated:loihi2-opcount", "detail": "Davies 2018"}],
}


class Listener:
    """A plain paho subscriber recording (topic, payload dict, retain flag)."""

    def __init__(self, port: int, pattern: str = "edgekws/v1/#") -> None:
        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = lambda c, u, m: self.got.append(
            (m.topic, json.loads(m.payload), bool(m.retain))
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(pattern, qos=1)
        self.client.loop_start()

    def wait(
        self, pred: Callable[[list[tuple[str, dict[str, Any], bool]]], bool], timeout: float = 10.0
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.got):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _link(tmp_path: Path, port: int, **kw: Any) -> DeviceTelemetry:
    settings = MqttConfig(broker=f"mqtt://127.0.0.1:{port}", outbox=tmp_path / "outbox.sqlite")
    return DeviceTelemetry(
        settings, fleet="f1", device="d1", bundle=BUNDLE, backend="emulator", backoff=Backoff(0.05, 0.3), **kw
    )


def test_outbox_is_ordered_durable_and_removes_only_acknowledged(tmp_path: Path) -> None:
    """Messages come back oldest first as '<epoch>:<seq>', survive reopening; only ack removes them."""
    box = Outbox(tmp_path / "q.sqlite")
    ids = [box.put("detection", "t", {"n": i}) for i in range(5)]
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.ack(2)
    box.close()
    box = Outbox(tmp_path / "q.sqlite")
    rows = box.after(0, 10)
    assert [r.seq for r in rows] == [1, 3, 4, 5]
    assert [json.loads(r.payload)["id"] for r in rows] == [ids[0], ids[2], ids[3], ids[4]]
    assert all(i is not None and i.startswith(box.epoch + ":") for i in ids)
    assert box.put("event", "t", {}) == f"{box.epoch}:6"  # seq is never reused


def test_outbox_full_policy_drops_telemetry_first_and_detections_last(tmp_path: Path) -> None:
    """Above the soft limit old telemetry goes; at the hard limit events go before detections; counted."""
    box = Outbox(tmp_path / "q.sqlite", max_bytes=2000, hard_max_bytes=4000)
    pad = "x" * 150  # each message is ~200 bytes
    for i in range(8):
        box.put("telemetry", "t", {"i": i, "pad": pad})
    for i in range(12):
        box.put("detection", "t", {"i": i, "pad": pad})
    kinds = [r.kind for r in box.after(0, 100)]
    assert kinds.count("detection") == 12  # detections are kept above the soft limit
    assert box.bytes <= 4000
    for i in range(5):
        box.put("event", "t", {"i": i, "pad": pad})
    for i in range(10):
        box.put("detection", "t", {"i": 100 + i, "pad": pad})
    rows = box.after(0, 1000)
    assert box.bytes <= 4000 and not [r for r in rows if r.kind == "telemetry"]
    drops = box.drops()
    assert drops["telemetry"] == 8 and drops["event"] == 5 and drops["detection"] > 0
    assert json.loads(rows[-1].payload)["i"] == 109  # the newest detection is kept
    box.forget_drops(drops)
    assert box.drops() == {"telemetry": 0, "event": 0, "detection": 0}
    assert box.put("telemetry", "t", {"pad": "y" * 5000}) is None  # larger than the hard limit


def test_outbox_on_a_full_disk_counts_the_drop_and_does_not_raise(tmp_path: Path) -> None:
    """When SQLite reports the disk full, put() returns None, records why and counts the drop."""
    box = Outbox(tmp_path / "q.sqlite")
    box.put("detection", "t", {"a": 1})
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full" path
    assert box.put("detection", "t", {"pad": "z" * 20000}) is None
    assert "full" in (box.last_error or "")
    assert box.drops()["detection"] == 1
    assert [r.seq for r in box.after(0, 10)] == [1]


def test_payloads_validate_against_the_published_schemas(tmp_path: Path) -> None:
    """Status, telemetry, detection and event payloads match docs/schemas/*.json (nothing is sent here)."""
    link = _link(tmp_path, port=1)  # nothing listens on port 1: everything stays queued
    link.start()
    try:
        link.telemetry(SNAPSHOT, interval_s=10.0)
        link.detection("seven", 0.93, 41.0)
        link.event("bundle.activated", version="1.0.0")
        assert link._outbox is not None
        rows = link._outbox.after(0, 10)
    finally:
        link.stop()
    assert [r.kind for r in rows] == ["telemetry", "detection", "event"]
    for row in rows:
        payload = json.loads(row.payload)
        assert payload["schema"] == schema_name(row.kind)
        jsonschema.validate(payload, SCHEMAS[row.kind])
        assert row.topic == topic("f1", "d1", row.kind)
    for state in ("online", "offline"):
        jsonschema.validate(json.loads(link._status_payload(state)), SCHEMAS["status"])
    for schema in SCHEMAS.values():
        for example in schema["examples"]:
            jsonschema.validate(example, schema)


def test_retained_online_status_and_last_will_offline_when_the_process_dies(
    tmp_path: Path, broker: Any
) -> None:
    """A device publishes a retained online status; SIGKILL makes the broker publish the retained will."""
    script = Path(__file__).with_name("_device_process.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(broker.port), str(tmp_path / "q.sqlite"), "f1", "d9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", proc.stderr
        late = Listener(
            broker.port, "edgekws/v1/f1/d9/status"
        )  # subscribes after the fact: sees the retained one
        assert late.wait(lambda g: bool(g))
        _, status, retained = late.got[0]
        assert retained and status["state"] == "online"
        assert status["bundle"] == {"name": "digits", "version": "1.0.0"} and status["backend"] == "emulator"
        proc.send_signal(signal.SIGKILL)
        assert late.wait(lambda g: any(p["state"] == "offline" for _, p, _ in g))
        assert next(p for _, p, _ in late.got if p["state"] == "offline")["reason"] == "connection lost"
        late.close()
        later = Listener(broker.port, "edgekws/v1/f1/d9/status")
        assert later.wait(lambda g: bool(g))
        assert later.got[0][2] and later.got[0][1]["state"] == "offline"  # retained for late subscribers
        later.close()
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_queue_waits_for_the_broker_and_a_subscriber_then_replays_in_order(
    tmp_path: Path, broker_factory: Any
) -> None:
    """Messages made while the broker is down or nobody subscribes arrive in order; an ack removes them."""
    b = broker_factory(start=False)
    link = _link(tmp_path, b.port)
    link.start()
    try:
        for i in range(20):
            link.detection("yes", 0.9, float(i))
        assert link.queue_depth() == 20 and not link.connected.is_set()  # no broker: nothing is "connected"
        b.start()
        assert link.connected.wait(5)
        time.sleep(0.5)
        assert (
            link.queue_depth() == 20
        )  # broker up but no subscriber: still queued ("no matching subscribers")
        listener = Listener(b.port, "edgekws/v1/f1/d1/detection")
        for i in range(20, 30):
            link.detection("yes", 0.9, float(i))
        assert listener.wait(lambda g: len({p["id"] for _, p, _ in g}) >= 30)
        latencies = [p["latency_ms"] for _, p, _ in listener.got]
        unique = list(dict.fromkeys(latencies))
        assert unique == [float(i) for i in range(30)]
        time.sleep(0.2)
        assert link.queue_depth() == 30  # PUBACKed, but kept until the monitor says it stored them
        assert link._outbox is not None
        ack = {
            "schema": "edgekws.cmd/1",
            "id": "a1",
            "ts": 0,
            "type": "ack",
            "epoch": link._outbox.epoch,
            "ranges": [[1, 10], [11, 30]],
        }
        listener.client.publish(topic("f1", "d1", "cmd/ack"), json.dumps(ack), qos=1)
        assert listener.wait(lambda g: link.queue_depth() == 0, 5)
        listener.close()
    finally:
        link.stop()


def test_commands_are_validated_and_answered_on_the_event_topic(tmp_path: Path, broker: Any) -> None:
    """A ping is answered with command.done; a malformed or mismatched command is rejected with reasons."""
    link = _link(tmp_path, broker.port)
    link.start()
    listener = Listener(broker.port, "edgekws/v1/f1/d1/event")
    try:
        assert link.connected.wait(5)
        time.sleep(0.2)
        cmd = {"schema": "edgekws.cmd/1", "id": "c-1", "ts": time.time(), "type": "ping"}
        listener.client.publish(topic("f1", "d1", "cmd/ping"), json.dumps(cmd), qos=1)
        listener.client.publish(topic("f1", "d1", "cmd/ping"), json.dumps(cmd), qos=1)  # a duplicate
        bad = {"schema": "edgekws.cmd/1", "id": "c-2", "ts": 0, "type": "deploy", "bundle": {"name": "x"}}
        listener.client.publish(topic("f1", "d1", "cmd/rollback"), json.dumps(bad), qos=1)
        assert listener.wait(lambda g: len(g) >= 2)
        time.sleep(0.3)
        kinds = [(p["kind"], p["detail"].get("command_id")) for _, p, _ in listener.got]
        assert kinds == [("command.done", "c-1"), ("command.rejected", "c-2")]
        problems = listener.got[1][1]["detail"]["problems"]
        assert any("cmd/rollback" in p for p in problems) and any("bundle" in p for p in problems)
        for _, payload, _ in listener.got:
            jsonschema.validate(payload, SCHEMAS["event"])
    finally:
        listener.close()
        link.stop()


def test_parse_command_collects_every_problem() -> None:
    """An invalid command lists all its faults at once; a valid one round-trips into its model."""
    with pytest.raises(InvalidCommand) as err:
        parse_command(
            "edgekws/v1/f/d/cmd/deploy", b'{"schema": "edgekws.cmd/1", "type": "deploy", "extra": 1}'
        )
    assert len(err.value.problems) >= 4  # id, ts, bundle missing; extra forbidden
    ok = parse_command(
        "edgekws/v1/f/d/cmd/rollback",
        b'{"schema": "edgekws.cmd/1", "id": "r", "ts": 1, "type": "rollback", "to_version": "1.0.0"}',
    )
    assert ok.type == "rollback" and ok.to_version == "1.0.0"
    for example in SCHEMAS["command"]["examples"]:
        parse_command(f"edgekws/v1/f/d/cmd/{example['type']}", json.dumps(example).encode())


def test_backoff_grows_to_its_ceiling_and_resets() -> None:
    """Reconnect delays double up to the maximum (jitter in the upper half) and start over after reset."""
    b = Backoff(0.5, 4.0)
    delays = [b.next_delay() for _ in range(6)]
    for d, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert ceiling / 2 <= d <= ceiling
    b.reset()
    assert b.next_delay() <= 0.5


def test_telemetry_carries_counted_drops(tmp_path: Path) -> None:
    """Drops counted by the outbox are reported (and reset) by the next telemetry message."""
    link = _link(tmp_path, port=1)
    link.start()
    try:
        assert link._outbox is not None
        link._outbox._drops["detection"] = 3
        link.telemetry(SNAPSHOT)
        first = json.loads(link._outbox.after(0, 1)[0].payload)
        link.telemetry(SNAPSHOT)
        second = json.loads(link._outbox.after(first["seq"], 1)[0].payload)
    finally:
        link.stop()
    assert first["dropped"]["detection"] == 3 and second["dropped"]["detection"] == 0
    assert threading.active_count() >= 1

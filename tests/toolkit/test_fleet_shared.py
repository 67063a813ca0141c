"""Several fleet monitors on one MQTT 5 shared subscription and one PostgreSQL store (#19): every message
stored exactly once and taken off its device's outbox, also when a monitor is SIGKILLed mid-stream (another
adopts its broker session); device states merged from what each monitor saw; an alert fired once; SQLite
refusing a second monitor."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _devices import stream_detections
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff
from edgekws.toolkit._cli import main
from edgekws.toolkit.fleet import FleetMonitor, FleetStore
from edgekws.toolkit.fleet._broker import free_port


def _serve(
    tmp_path: Path, name: str, broker_url: str, db: str, port: int, adopt_after: float = 3
) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("edgekws")), "fleet", "serve", "--broker", broker_url]
    command += ["--db", db, "--port", str(port), "--shared", "ingest", "--client-id", name]
    command += ["--adopt-after", str(adopt_after)]
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return dict(json.loads(r.read()))


def _wait_subscribed(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    """Until `fleet serve` says it is subscribed (it starts in 2 s here, in over 30 s at load 30)."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if _get(port, "/healthz")["broker"] == "connected":
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_two_shared_monitors_store_every_message_once_when_one_is_killed(
    tmp_path: Path, broker: Any, postgres: Any
) -> None:
    """Two `fleet serve --shared` on one real mosquitto and PostgreSQL; three devices stream detections and
    telemetry through their outboxes; one monitor is SIGKILLed mid-stream. The other adopts its session:
    every message is stored exactly once, every outbox empties (cmd/ack after commit, from either monitor),
    and both monitors serve the whole fleet from the store."""
    db = postgres.new_database()
    ports = {"mon-a": free_port(), "mon-b": free_port()}
    monitors = {name: _serve(tmp_path, name, broker.url, db, port) for name, port in ports.items()}
    links: list[DeviceTelemetry] = []
    try:
        for name, port in ports.items():
            _wait_subscribed(port, monitors[name], tmp_path / f"{name}.log")
        for i in range(3):
            settings = MqttConfig(broker=broker.url, outbox=tmp_path / f"d{i}.sqlite")
            link = DeviceTelemetry(
                settings, fleet="lab", device=f"d{i}", bundle={"name": "kws", "version": "1.0.0"},
                backend="emulator", backoff=Backoff(0.05, 0.5),
            )  # fmt: skip
            link.start()
            links.append(link)
        assert all(link.connected.wait(10) for link in links)
        n = 120
        sent, producers = stream_detections(links, n, 0.01)
        time.sleep(0.5)
        monitors["mon-a"].send_signal(signal.SIGKILL)  # mid-batch: commits and acks it never made
        monitors["mon-a"].wait(10)
        for p in producers:
            p.join()
        store = FleetStore(db)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and store.count("detection") < 3 * n:
                time.sleep(0.2)
            for device, ids in sent.items():
                stored = store.message_ids("detection", "lab", device)
                assert len(stored) == len(set(stored)) == n, f"{device}: {len(stored)} stored of {n}"
                assert set(stored) == set(ids)
            log_b = tmp_path / "mon-b.log"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "from the session of mon-a" not in log_b.read_text():
                time.sleep(0.2)
            assert re.search(r"took \d+ message\(s\) from the session of mon-a", log_b.read_text()), (
                log_b.read_text()[-3000:]
            )
            assert [m["client_id"] for m in store.monitor_rows()] == ["mon-b"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(link.queue_depth() for link in links):
                time.sleep(0.2)
            assert [link.queue_depth() for link in links] == [0, 0, 0]  # every message acknowledged
            snapshot = _get(ports["mon-b"], "/api/devices")  # the whole fleet, from the store
            assert {d["device"]: d["messages"]["detection"] for d in snapshot["devices"]} == {
                "d0": n, "d1": n, "d2": n,
            }  # fmt: skip
            assert snapshot["counts"]["messages"]["detection"] == 3 * n
        finally:
            store.dispose()
        monitors["mon-b"].terminate()
        assert monitors["mon-b"].wait(20) == 0
        store = FleetStore(db)
        try:
            assert store.monitor_rows() == []  # a clean stop leaves the group
        finally:
            store.dispose()
    finally:
        for link in links:
            link.stop()
        for proc in monitors.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_cleanly_stopped_shared_monitor_leaves_its_group_with_nothing_left_behind(
    tmp_path: Path, broker: Any, postgres: Any
) -> None:
    """SIGTERM one of two `fleet serve --shared` while the broker still sends it messages (a burst it is
    behind on): it drains its session (unsubscribe, commit, acknowledge what was in flight and queued) and
    ends it, so every message published before and after is stored exactly once, without any adoption
    (--adopt-after 600). Before the fix the stopped monitor's socket was reset with messages unread, the
    broker never read its DISCONNECT, and its session stayed in the group holding a share of the messages.
    """
    db = postgres.new_database()
    ports = {"mon-a": free_port(), "mon-b": free_port()}
    monitors = {name: _serve(tmp_path, name, broker.url, db, port, 600) for name, port in ports.items()}
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=MQTTProtocolVersion.MQTTv5)
    store = FleetStore(db)
    try:
        for name, port in ports.items():
            _wait_subscribed(port, monitors[name], tmp_path / f"{name}.log")
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        n = 3000  # published as fast as the broker takes them: both monitors fall behind

        def publish(first: int, count: int) -> list[mqtt.MQTTMessageInfo]:
            return [
                publisher.publish(f"edgekws/v1/lab/d{i % 3}/detection", _detection(i), qos=1)
                for i in range(first, first + count)
            ]

        infos = publish(0, n)
        deadline = time.monotonic() + 60
        while sum(i.is_published() for i in infos) < n // 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert store.count("detection") < n // 2  # stopped with messages still coming
        monitors["mon-a"].send_signal(signal.SIGTERM)
        assert monitors["mon-a"].wait(60) == 0, (tmp_path / "mon-a.log").read_text()[-3000:]
        infos += publish(n, n // 10)  # after it left: the group is mon-b alone
        for info in infos:
            info.wait_for_publish(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and store.count("detection") < len(infos):
            time.sleep(0.2)
        log_a, log_b = (tmp_path / "mon-a.log").read_text(), (tmp_path / "mon-b.log").read_text()
        assert store.count("detection") == store.distinct_messages("detection") == len(infos), log_a[-3000:]
        assert "left the group ingest (session drained and ended)" in log_a, log_a[-3000:]
        assert "Client mon-a disconnected." in broker.log()  # its DISCONNECT was read, not a reset socket
        assert "adopting" not in log_b, log_b[-3000:]
        assert [m["client_id"] for m in store.monitor_rows()] == ["mon-b"]
    finally:
        publisher.loop_stop()
        store.dispose()
        for proc in monitors.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _status(state: str, ts: float, msg_id: str) -> bytes:
    body = {"schema": "edgekws.status/1", "id": msg_id, "ts": ts, "boot": "b", "state": state}
    body |= {"bundle": {"name": "kws", "version": "1.0.0"}, "backend": "emulator"}
    return json.dumps(body).encode()


def _queued(message: str, seq: int, **fields: Any) -> bytes:
    body = {"schema": f"edgekws.{message}/1", "id": f"e1:{seq}", "seq": seq, "ts": 100.0 + seq, "boot": "b"}
    return json.dumps(body | fields).encode()


def _detection(seq: int) -> bytes:
    return _queued("detection", seq, label="yes", confidence=0.9, latency_ms=3.0)


def _error(seq: int) -> bytes:
    return _queued("event", seq, kind="error", level="error", detail={"what": "mic"})


def test_shared_monitors_merge_states_count_once_and_fire_an_alert_once(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two monitors of a shared group on one PostgreSQL store, each seeing part of one device's messages:
    the stored state keeps the newest status whichever monitor saw it, the counts add up, a message both
    saw counts once (and once as a duplicate), an alert both raise is stored and logged once, and the
    monitor that did not raise an alert can resolve it; either monitor serves the same fleet."""
    db = postgres.new_database()
    a, b = FleetMonitor(FleetStore(db), shared=True), FleetMonitor(FleetStore(db), shared=True)
    topic = "edgekws/v1/lab/d1"
    try:
        with caplog.at_level(logging.INFO, logger="edgekws.fleet"):
            a.ingest(f"{topic}/status", _status("online", 10.0, "s1"))
            for seq in (1, 2):
                a.ingest(f"{topic}/detection", _detection(seq))
            a.ingest(f"{topic}/event", _error(4))
            for seq in (2, 3):  # 2: a re-send that landed on the other monitor
                b.ingest(f"{topic}/detection", _detection(seq))
            b.ingest(f"{topic}/status", _status("offline", 20.0, "s2"))  # the Last Will
            b.ingest(f"{topic}/event", _error(5))
            b.flush()
            a.flush()  # a's view has the older status (10.0): the stored offline (20.0) stays
        told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert ")]
        assert sorted(m.split(":")[0] for m in told) == ["alert error", "alert offline"], told
        for monitor in (a, b):
            snap = monitor.snapshot()
            (d,) = snap["devices"]
            assert d["online"] is False and d["status_ts"] == 20.0
            assert d["messages"] == {"status": 2, "telemetry": 0, "detection": 3, "event": 2}
            assert d["duplicates"] == 1
            assert sorted(x["kind"] for x in snap["alerts"]) == ["error", "offline"]
        a.ingest(f"{topic}/status", _status("online", 30.0, "s3"))  # b raised the offline alert
        a.flush()
        time.sleep(b.snapshot_max_age_s)
        snap = b.snapshot()
        assert [x["kind"] for x in snap["alerts"]] == ["error"] and snap["devices"][0]["online"] is True
        assert a.store is not None and a.store.count("detection") == 3
    finally:
        for monitor in (a, b):
            assert monitor.store is not None
            monitor.store.dispose()


def test_sqlite_holds_one_monitor(tmp_path: Path) -> None:
    """A second monitor on one SQLite store is refused, saying what to do; --shared needs PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    first, second = FleetStore(url), FleetStore(url)
    try:
        first.claim_ingest(shared=False)
        with pytest.raises(ValueError, match=r"another fleet monitor \(pid \d+\).*PostgreSQL.*--shared"):
            second.claim_ingest(shared=False)
        first.dispose()  # its lock goes with it (as it does when the process dies)
        second.claim_ingest(shared=False)
    finally:
        first.dispose()
        second.dispose()
    result = CliRunner().invoke(main, ["fleet", "serve", "--db", url, "--shared", "ingest"])
    assert result.exit_code == 1
    assert "--shared needs a store that every monitor of the group reaches: PostgreSQL" in result.output

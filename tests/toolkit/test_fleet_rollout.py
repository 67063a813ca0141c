"""The agent daemon on MQTT as the fleet monitor sees it, and over-the-air rollouts with `edgekws fleet
deploy` against a real mosquitto and real agents (a subprocess, and in-process agents with real links)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _devices as devices
import paho.mqtt.client as mqtt
import pytest
from _devices import wait_until
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._config import MqttConfig
from edgekws.agent._metrics import RuntimeMetrics
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import BrokerUrl
from edgekws.toolkit._cli import main
from edgekws.toolkit.fleet import FleetMonitor, FleetStore, MqttIngest
from edgekws.toolkit.fleet._rollout import RolloutError, run_rollout

AGENT = Path(sys.executable).parent / "edgekws-agent"


@pytest.fixture
def monitor(broker: Any, tmp_path: Path) -> Iterator[FleetMonitor]:
    """The fleet monitor with its store in tmp_path/fleet.db, subscribed to the broker (it acks what it
    stores)."""
    mon = FleetMonitor(FleetStore(f"sqlite:///{tmp_path / 'fleet.db'}"))
    ingest = MqttIngest(mon, BrokerUrl.parse(broker.url), flush_interval_s=0.1)
    ingest.start()
    assert ingest.connected.wait(5)
    yield mon
    ingest.stop()
    assert mon.store is not None
    mon.store.dispose()


def _retained_status(port: int, fleet: str, device: str) -> dict[str, Any]:
    got: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = lambda c, u, m: got.append({**json.loads(m.payload), "_retained": bool(m.retain)})
    client.connect("127.0.0.1", port)
    client.subscribe(f"edgekws/v1/{fleet}/{device}/status", qos=1)
    client.loop_start()
    try:
        wait_until(lambda: got, 5, "the retained status")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_agent_process_reports_to_the_monitor_and_leaves_offline(
    tmp_path: Path, broker: Any, monitor: FleetMonitor
) -> None:
    """`edgekws-agent run` with MQTT on: the monitor sees it online with bundle, backend, the group it
    reports, latency and energy; after SIGTERM the retained status says offline (stopped)."""
    cfg = devices.write_agent_config(tmp_path / "box", broker.port, "box-1", group="lab", delivery="monitor")
    err = tmp_path / "stderr.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen([str(AGENT), "run", "--config", str(cfg)], stderr=errf, cwd=tmp_path)
        try:
            # the agent process starts in 3 s here, in over 30 s when the shared box is busy (load 30)
            d = wait_until(lambda: monitor.devices.get(("f1", "box-1")), 120, "the device")
            wait_until(lambda: d.latency_p95_ms is not None and d.energy_mj is not None, 30, "telemetry")
            assert d.online and d.bundle_version == "1.0.0" and d.backend == "emulator"
            assert d.reported_group == "lab" and d.group is None  # claimed, not assigned
            assert d.energy_method is not None and d.energy_method.startswith(("estimated:", "measured:"))
            assert d.real_time_factor is not None and d.real_time_factor > 0
            wait_until(lambda: d.messages["detection"] > 0, 30, "a detection")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    status = _retained_status(broker.port, "f1", "box-1")
    assert status["_retained"] and status["state"] == "offline" and status["reason"] == "stopped"
    wait_until(lambda: monitor.devices[("f1", "box-1")].online is False, 5, "offline in the monitor")
    assert monitor.store is not None
    monitor.flush()
    stored = {s["device"]: s for s in monitor.store.device_states()}
    assert stored["box-1"]["reported_group"] == "lab" and stored["box-1"]["bundle_version"] == "1.0.0"


@pytest.fixture
def fleet(tmp_path: Path, broker: Any, monitor: FleetMonitor) -> Iterator[dict[str, Any]]:
    """Two in-process agents (d1 in group canary, d2 in group main) on kws-1.0.0 with real MQTT links."""
    agents = {}
    try:
        for name, group in (("d1", "canary"), ("d2", "main")):
            served = (tmp_path / "served").resolve().as_uri() + "/"
            cfg = devices.write_agent_config(
                tmp_path / name, broker.port, name, group=group, delivery="monitor", allowed_urls=(served,)
            )
            agents[name] = devices.RunningAgent(cfg)
        wait_until(lambda: len(monitor.devices) == 2, 10, "both devices in the monitor")
        yield {"agents": agents, "broker": BrokerUrl.parse(broker.url), "monitor": monitor, "tmp": tmp_path}
    finally:
        for running in agents.values():
            running.stop()


def _versions(monitor: FleetMonitor) -> dict[str, str | None]:
    """The bundle version of the two real devices as the monitor sees it."""
    return {d.device: d.bundle_version for d in monitor.devices.values() if d.device in ("d1", "d2")}


def test_rollout_to_two_devices_then_a_broken_bundle_halts_at_the_canary(fleet: dict[str, Any]) -> None:
    """A new version reaches both devices and the monitor; a bundle that fails on the canary is rolled back
    there and never sent to the other device."""
    tmp, monitor, broker = fleet["tmp"], fleet["monitor"], fleet["broker"]
    v110 = devices.make_bundle(tmp, "1.1.0")
    report = run_rollout(broker, v110, devices=["d1", "d2"], canary_percent=50, timeout_s=20)
    assert report.ok, report.to_dict()
    assert [(d.device, d.wave, d.result, d.version_before) for d in report.devices] == [
        ("d1", "canary", "deployed", "1.0.0"),
        ("d2", "rest", "deployed", "1.0.0"),
    ]
    wait_until(lambda: _versions(monitor) == {"d1": "1.1.0", "d2": "1.1.0"}, 10, "the monitor to show 1.1.0")
    broken = devices.make_bundle(tmp, "2.0.0", inputs=devices.SPEC.num_channels + 5)
    halted = run_rollout(broker, broken, devices=["d1", "d2"], canary_percent=50, timeout_s=20)
    assert halted.halted and not halted.ok and "canary" in (halted.reason or "")
    canary, rest = halted.devices
    assert canary.result == "failed" and canary.rolled_back and "2.0.0" in (canary.reason or "")
    assert rest.result == "skipped"
    for running in fleet["agents"].values():
        assert running.agent.bundle_label == "kws-1.1.0" and running.agent.store.active().version == "1.1.0"
    time.sleep(0.5)
    assert _versions(monitor) == {"d1": "1.1.0", "d2": "1.1.0"}
    assert any(a["kind"] == "error" and a["device"] == "d1" for a in monitor.snapshot()["alerts"])


def _publish(port: int, topic: str, payload: bytes, retain: bool = False, client_id: str = "") -> None:
    """One QoS 1 publish by another client (an operator, or a device that lies)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_downgrade_needs_rollback_group_targets_and_tampered_bundles_fail(fleet: dict[str, Any]) -> None:
    """A downgrade is refused before anything is sent unless --rollback; --group picks the devices the
    fleet registry assigns to the group, not a fake device that claims the group in its own status (M7);
    a bundle whose bytes differ from the announced sha256 is refused by the device."""
    tmp, monitor, broker = fleet["tmp"], fleet["monitor"], fleet["broker"]
    v090 = devices.make_bundle(tmp, "0.9.0")
    with pytest.raises(RolloutError, match=r"refusing to downgrade.*--rollback"):
        run_rollout(broker, v090, devices=["d1", "d2"])
    with pytest.raises(RolloutError, match=r"signed deploy order.*--key"):
        run_rollout(broker, v090, devices=["d1", "d2"], rollback=True)
    assert _versions(monitor) == {"d1": "1.0.0", "d2": "1.0.0"}
    db = f"sqlite:///{tmp / 'fleet.db'}"
    key = tmp / "ops.key"
    key.write_bytes(devices.KEY.to_pem())
    key.chmod(0o600)
    # a fake device whose id sorts first claims the canary group (retained, as the red team did)
    fake = {"schema": "edgekws.status/1", "id": "s", "ts": 1, "boot": "b", "state": "online"}
    fake |= {"group": "canary", "bundle": {"name": "kws", "version": "1.0.0"}, "backend": "emulator"}
    _publish(broker.port, "edgekws/v1/f1/aaa-fake/status", json.dumps(fake).encode(), retain=True)
    deploy = [
        *("fleet", "deploy", str(v090), "--group", "canary", "--rollback", "--json", "--db", db),
        *("--key", str(key)),
        *("--timeout", "20", "--broker", f"mqtt://{broker.host}:{broker.port}"),
    ]
    unassigned = CliRunner().invoke(main, deploy)
    assert unassigned.exit_code == 1 and "no device is assigned to group 'canary'" in unassigned.output
    assert "claims it, not trusted: f1/aaa-fake, f1/d1" in unassigned.output
    assigned = CliRunner().invoke(main, ["fleet", "group", "assign", "canary", "f1/d1", "--db", db])
    assert assigned.exit_code == 0, assigned.output
    listed = CliRunner().invoke(main, ["fleet", "group", "list", "--json", "--db", db])
    assert json.loads(listed.output) == {"canary": ["f1/d1"]}
    out = CliRunner().invoke(main, deploy)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["ok"] and [d["device"] for d in doc["devices"]] == ["d1"] and doc["transport"] == "inline"
    wait_until(
        lambda: monitor.devices[("f1", "d1")].group == "canary", 10, "the monitor to read the registry"
    )
    wait_until(lambda: _versions(monitor) == {"d1": "0.9.0", "d2": "1.0.0"}, 10, "d1 on 0.9.0")
    v120 = devices.make_bundle(tmp, "1.2.0")
    tampered = tmp / "served" / v120.name
    tampered.parent.mkdir()
    data = bytearray(v120.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte in transit or at rest
    tampered.write_bytes(bytes(data))
    report = run_rollout(broker, v120, devices=["d2"], url=tampered.as_uri(), timeout_s=20)
    assert report.halted and report.devices[0].result == "failed"
    assert "sha256 mismatch" in (report.devices[0].reason or "")
    assert fleet["agents"]["d2"].agent.store.active().version == "1.0.0"
    refused = CliRunner().invoke(
        main,
        [
            "fleet",
            "deploy",
            str(v120),
            "--group",
            "nobody",
            "--db",
            db,
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
        ],
    )
    assert refused.exit_code == 1 and "no device is assigned to group 'nobody'" in refused.output


def test_latency_regression_alert_after_a_rollout_from_agent_telemetry(tmp_path: Path) -> None:
    """Telemetry made by the agent's own metrics and link (p95 included) raises the monitor's latency
    regression alert when the inference p95 grows by more than 20 % after a version change."""
    link = DeviceTelemetry(
        MqttConfig(broker="mqtt://127.0.0.1:1", outbox=tmp_path / "q.sqlite"),
        fleet="f1",
        device="d1",
        bundle={"name": "kws", "version": "1.0.0"},
        backend="emulator",
    )
    link.start()
    try:
        for version, seconds in (("1.0.0", 0.010), ("1.1.0", 0.015)):
            link.set_bundle({"name": "kws", "version": version}, "emulator")
            for _ in range(4):
                metrics = RuntimeMetrics(window=20)
                for i in range(20):
                    metrics.record_backend_call(seconds * (1 + i / 100))
                snap = metrics.snapshot()
                assert snap["latency_ms"]["inference"]["p95"] is not None
                snap["energy"] = [{"mj_per_inference": 0.2, "method": "estimated:cpu-tdp", "detail": ""}]
                link.telemetry(snap, interval_s=1.0)
        assert link._outbox is not None
        rows = link._outbox.after(0, 100)
    finally:
        link.stop()
    mon = FleetMonitor()
    for row in rows:
        mon.ingest(row.topic, row.payload)
    alerts = {a["kind"]: a for a in mon.snapshot()["alerts"]}
    assert "latency_regression" in alerts and "1.0.0 -> 1.1.0" in alerts["latency_regression"]["message"]
    assert "energy_regression" not in alerts


def test_a_refused_connection_is_named_and_nothing_is_sent(tmp_path: Path, broker_factory: Any) -> None:
    """A broker that refuses the rollout tool's login makes the rollout fail with the broker's reason,
    not with an empty device list."""
    bundle = devices.make_bundle(tmp_path, "1.0.0")
    b = broker_factory("allow_anonymous false")
    with pytest.raises(
        RolloutError, match=r"broker refused the connection: Not authorized; nothing was sent"
    ):
        run_rollout(BrokerUrl.parse(b.url), bundle, devices=["d1"], fleet="f1")


def _listen(port: int, topic: str) -> tuple[mqtt.Client, list[bytes]]:
    """A client that keeps what arrives on ``topic`` (where deploy commands would land)."""
    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    time.sleep(0.3)
    return client, got


def test_inline_limit_follows_the_brokers_announced_packet_size(tmp_path: Path, broker_factory: Any) -> None:
    """A broker with max_packet_size (deploy/mosquitto) announces it at CONNACK: a bundle whose inline
    command would not fit is refused before anything is sent, naming the limit and what fits; under a larger
    limit the same bundle goes inline (M8)."""
    bundle = devices.make_bundle(tmp_path, "1.0.0")
    size = bundle.stat().st_size
    small = broker_factory(f"allow_anonymous true\nmax_packet_size {size}")  # base64 makes it 4/3 larger
    listener, got = _listen(small.port, "edgekws/v1/+/+/cmd/#")
    try:
        with pytest.raises(RolloutError, match=rf"more than the {size}-byte maximum packet size") as refused:
            run_rollout(BrokerUrl.parse(small.url), bundle, devices=["f1/d1"], timeout_s=2)
        assert "pass --url" in str(refused.value) and "nothing was sent" in str(refused.value)
        time.sleep(0.3)
        assert got == []
    finally:
        listener.disconnect()
        listener.loop_stop()
    large = broker_factory(f"allow_anonymous true\nmax_packet_size {2 * size}")
    listener, got = _listen(large.port, "edgekws/v1/+/+/cmd/#")
    try:
        report = run_rollout(BrokerUrl.parse(large.url), bundle, devices=["f1/d1"], timeout_s=1)
        assert report.transport == "inline" and report.devices[0].result == "timeout"  # no device runs here
        assert len(got) == 1 and json.loads(got[0])["bundle"]["size"] == size
    finally:
        listener.disconnect()
        listener.loop_stop()


def test_a_broker_that_drops_an_oversized_command_is_named_at_once(
    tmp_path: Path, broker_factory: Any
) -> None:
    """The red team's M8 set-up: message_size_limit, which MQTT 5 clients are not told. The broker closes the
    connection on the inline command; the report says so and why within seconds, instead of a timeout with
    no hint (M8)."""
    bundle = devices.make_bundle(tmp_path, "1.0.0")
    b = broker_factory(f"allow_anonymous true\nmessage_size_limit {bundle.stat().st_size // 2}")
    t0 = time.monotonic()
    command = [
        "fleet",
        "deploy",
        str(bundle),
        "--devices",
        "f1/d1,f1/d2",
        "--broker",
        b.url,
        "--timeout",
        "30",
    ]
    out = CliRunner().invoke(main, [*command, "--json"])
    assert out.exit_code == 1 and time.monotonic() - t0 < 20
    first, second = json.loads(out.output)["devices"]
    assert first["result"] == "failed" and "closed the connection instead of acknowledging" in first["reason"]
    assert "message_size_limit" in first["reason"] and "--url" in first["reason"]
    assert second["result"] == "failed" and second["reason"].startswith("not sent")

"""The agent daemon on MQTT as the fleet monitor sees it, and over-the-air rollouts with `edgekws fleet
deploy` against a real mosquitto and real agents (a subprocess, and in-process agents with real links)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _devices as devices
import paho.mqtt.client as mqtt
import pytest
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


def _wait(pred: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or pred}")


@pytest.fixture
def monitor(broker: Any) -> Iterator[FleetMonitor]:
    """The fleet monitor with an in-memory store, subscribed to the broker (it acks what it stores)."""
    mon = FleetMonitor(FleetStore("sqlite://"))
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
        _wait(lambda: got, 5, "the retained status")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_agent_process_reports_to_the_monitor_and_leaves_offline(
    tmp_path: Path, broker: Any, monitor: FleetMonitor
) -> None:
    """`edgekws-agent run` with MQTT on: the monitor sees it online with bundle, backend, group, latency and
    energy; after SIGTERM the retained status says offline (stopped)."""
    cfg = devices.write_agent_config(tmp_path / "box", broker.port, "box-1", group="lab", delivery="monitor")
    err = tmp_path / "stderr.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen([str(AGENT), "run", "--config", str(cfg)], stderr=errf, cwd=tmp_path)
        try:
            d = _wait(lambda: monitor.devices.get(("f1", "box-1")), 30, "the device")
            _wait(lambda: d.latency_p95_ms is not None and d.energy_mj is not None, 30, "telemetry")
            assert d.online and d.bundle_version == "1.0.0" and d.backend == "emulator" and d.group == "lab"
            assert d.energy_method is not None and d.energy_method.startswith(("estimated:", "measured:"))
            assert d.real_time_factor is not None and d.real_time_factor > 0
            _wait(lambda: d.messages["detection"] > 0, 30, "a detection")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    status = _retained_status(broker.port, "f1", "box-1")
    assert status["_retained"] and status["state"] == "offline" and status["reason"] == "stopped"
    _wait(lambda: monitor.devices[("f1", "box-1")].online is False, 5, "offline in the monitor")
    assert monitor.store is not None
    monitor.flush()
    stored = {s["device"]: s for s in monitor.store.device_states()}
    assert stored["box-1"]["group"] == "lab" and stored["box-1"]["bundle_version"] == "1.0.0"


@pytest.fixture
def fleet(tmp_path: Path, broker: Any, monitor: FleetMonitor) -> Iterator[dict[str, Any]]:
    """Two in-process agents (d1 in group canary, d2 in group main) on kws-1.0.0 with real MQTT links."""
    agents = {}
    try:
        for name, group in (("d1", "canary"), ("d2", "main")):
            cfg = devices.write_agent_config(
                tmp_path / name, broker.port, name, group=group, delivery="monitor"
            )
            agents[name] = devices.RunningAgent(cfg)
        _wait(lambda: len(monitor.devices) == 2, 10, "both devices in the monitor")
        yield {"agents": agents, "broker": BrokerUrl.parse(broker.url), "monitor": monitor, "tmp": tmp_path}
    finally:
        for running in agents.values():
            running.stop()


def _versions(monitor: FleetMonitor) -> dict[str, str | None]:
    return {d.device: d.bundle_version for d in monitor.devices.values()}


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
    _wait(lambda: _versions(monitor) == {"d1": "1.1.0", "d2": "1.1.0"}, 10, "the monitor to show 1.1.0")
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


def test_downgrade_needs_rollback_group_targets_and_tampered_bundles_fail(fleet: dict[str, Any]) -> None:
    """A downgrade is refused before anything is sent unless --rollback; --group picks the group's devices;
    a bundle whose bytes differ from the announced sha256 is refused by the device."""
    tmp, monitor, broker = fleet["tmp"], fleet["monitor"], fleet["broker"]
    v090 = devices.make_bundle(tmp, "0.9.0")
    with pytest.raises(RolloutError, match=r"refusing to downgrade.*--rollback"):
        run_rollout(broker, v090, devices=["d1", "d2"])
    assert _versions(monitor) == {"d1": "1.0.0", "d2": "1.0.0"}
    out = CliRunner().invoke(
        main,
        [
            *("fleet", "deploy", str(v090), "--group", "canary", "--rollback", "--json"),
            *("--timeout", "20", "--broker", f"mqtt://{broker.host}:{broker.port}"),
        ],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["ok"] and [d["device"] for d in doc["devices"]] == ["d1"] and doc["transport"] == "inline"
    _wait(lambda: _versions(monitor) == {"d1": "0.9.0", "d2": "1.0.0"}, 10, "d1 on 0.9.0")
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
        ["fleet", "deploy", str(v120), "--group", "nobody", "--broker", f"mqtt://127.0.0.1:{broker.port}"],
    )
    assert refused.exit_code == 1 and "no device of group 'nobody'" in refused.output


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

"""The monitor's HTTP face: Prometheus /metrics (checked with the reference parser), the JSON API, the
dashboard rendered by headless Chromium, and `edgekws fleet watch --once --json` against a real broker."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.toolkit._cli import main
from edgekws.toolkit.fleet import FleetMonitor, FleetServer
from edgekws.toolkit.fleet._server import headless_chromium

TELEMETRY = {
    "schema": "edgekws.telemetry/1",
    "id": "e1:1",
    "seq": 1,
    "ts": 0,
    "boot": "b",
    "bundle": {"name": "digits", "version": "1.2.0"},
    "backend": "lava-sim",
    "latency_ms": {"inference": {"p50": 2.0, "p95": 3.5, "p99": 4.0}},
    "energy": [
        {"mj_per_inference": 0.22, "method": "estimated:loihi2-opcount", "detail": 'quote " and \\ slash'}
    ],
    "inferences": 10,
    "detections": 1,
    "queue": {"depth": 0, "bytes": 0},
    "dropped": {"detection": 2},
}


@pytest.fixture
def server() -> Any:
    mon = FleetMonitor()
    mon.ingest("edgekws/v1/lab/box-7/telemetry", json.dumps(TELEMETRY).encode())
    status = {
        "schema": "edgekws.status/1",
        "id": "s",
        "ts": 0,
        "boot": "b",
        "state": "online",
        "bundle": {"name": "digits", "version": "1.2.0"},
        "backend": "lava-sim",
    }
    mon.ingest("edgekws/v1/lab/box-7/status", json.dumps(status).encode())
    mon.ingest("edgekws/v1/lab/box-8/status", json.dumps({**status, "id": "s2", "state": "offline"}).encode())
    srv = FleetServer(mon, port=0)
    srv.start()
    yield srv
    srv.stop()


def _get(srv: FleetServer, path: str) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=5) as r:
        return r.headers["Content-Type"], r.read().decode()


def test_metrics_is_valid_prometheus_text_with_device_values(server: FleetServer) -> None:
    """/metrics parses with prometheus_client; it has latency quantiles, energy with its method, online."""
    ctype, text = _get(server, "/metrics")
    assert ctype.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    box = (("device", "box-7"), ("fleet", "lab"))
    assert samples[("edgekws_device_inference_latency_ms", (*box, ("quantile", "0.95")))] == 3.5
    energy = (
        "edgekws_device_energy_mj_per_inference",
        (("device", "box-7"), ("fleet", "lab"), ("method", "estimated:loihi2-opcount")),
    )
    assert samples[energy] == 0.22
    assert samples[("edgekws_device_online", box)] == 1.0
    assert samples[("edgekws_device_online", (("device", "box-8"), ("fleet", "lab")))] == 0.0
    assert samples[("edgekws_fleet_alerts_active", (("kind", "offline"),))] == 1.0
    assert samples[("edgekws_device_dropped_total", (*box, ("kind", "detection")))] == 2.0
    assert samples[("edgekws_fleet_messages_total", (("kind", "telemetry"),))] == 1.0


def test_api_devices_serves_the_snapshot(server: FleetServer) -> None:
    """/api/devices returns every device with its state and the active alerts as JSON."""
    ctype, body = _get(server, "/api/devices")
    snap = json.loads(body)
    assert ctype == "application/json"
    assert [(d["device"], d["online"], d["bundle_version"]) for d in snap["devices"]] == [
        ("box-7", True, "1.2.0"),
        ("box-8", False, "1.2.0"),
    ]
    assert [a["kind"] for a in snap["alerts"]] == ["offline"]


def test_dashboard_shows_device_rows_in_headless_chromium(server: FleetServer) -> None:
    """The dashboard's script fetches /api/devices and draws one row per device (rendered by Chromium)."""
    with tempfile.TemporaryDirectory() as profile:
        command = headless_chromium(profile)
        assert command, "chromium is missing: run `make setup` (APT_PACKAGES has chromium)"
        out = subprocess.run(
            [*command, "--dump-dom", f"http://127.0.0.1:{server.port}/"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    assert 'data-device="lab/box-7"' in out and 'data-device="lab/box-8"' in out
    assert "digits 1.2.0" in out and "estimated:loihi2-opcount" in out and "went offline" in out


def test_fleet_watch_once_json_sees_a_live_device(tmp_path: Path, broker: Any) -> None:
    """`edgekws fleet watch --once --json` connects to the broker and lists a device that is online."""
    link = DeviceTelemetry(
        MqttConfig(broker=f"mqtt://127.0.0.1:{broker.port}", outbox=tmp_path / "q.sqlite"),
        fleet="lab",
        device="box-1",
        bundle={"name": "digits", "version": "1.0.0"},
        backend="emulator",
    )
    link.start()
    try:
        assert link.connected.wait(5)
        time.sleep(0.2)
        result = CliRunner().invoke(
            main, ["fleet", "watch", "--broker", broker.url, "--once", "--json", "--refresh", "0.5"]
        )
        assert result.exit_code == 0, result.output
        snap = json.loads(result.output)
        assert [(d["device"], d["online"], d["backend"]) for d in snap["devices"]] == [
            ("box-1", True, "emulator")
        ]
        bad = CliRunner().invoke(main, ["fleet", "watch", "--broker", "http://x", "--once"])
        assert bad.exit_code != 0 and "mqtt://host" in bad.output
    finally:
        link.stop()

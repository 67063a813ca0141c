"""The monitor's HTTP face: Prometheus /metrics (checked with the reference parser, and scraped by a real
Prometheus), the JSON API, the dashboard rendered by headless Chromium, `edgekws fleet watch --once --json`
against a real broker, and the access token (M9). The server fixture's monitor has been sent the red team's
NaN and "fast" telemetry (M4), so every test here also shows one device cannot break the outputs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.toolkit._cli import main
from edgekws.toolkit.fleet import FleetMonitor, FleetServer
from edgekws.toolkit.fleet._broker import free_port
from edgekws.toolkit.fleet._server import check_bind, headless_chromium

REPO = Path(__file__).resolve().parents[2]
TOKEN = "3f1c0a9e2b7d5f1c0a9e2b7d5f1c0a9e"

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
#: An always-on device's report as agents before the fix sent it: no inference counted in a short interval,
#: so energy per audio second only (the monitor shows it for every device).
ALWAYS_ON = {
    **TELEMETRY,
    "inferences": 0,
    "detection_mode": "always_on",
    "energy": [{"mj_per_inference": None, "mj_per_audio_s": 0.1066, "method": "estimated:loihi2-opcount"}],
}


@pytest.fixture
def server() -> Any:
    mon = FleetMonitor()
    mon.ingest("edgekws/v1/lab/box-7/telemetry", json.dumps(TELEMETRY).encode())
    mon.ingest("edgekws/v1/lab/box-9/telemetry", json.dumps(ALWAYS_ON).encode())
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
    for i, p50 in enumerate(("NaN", '"fast"', "{}")):  # the red team's M4 payloads, from another device
        evil = json.dumps({**TELEMETRY, "id": f"e:{i}", "latency_ms": {"inference": {"p50": 0}}})
        mon.ingest("edgekws/v1/lab/evil/telemetry", evil.replace('"p50": 0', f'"p50": {p50}').encode())
    srv = FleetServer(mon, port=0)
    srv.start()
    yield srv
    srv.stop()


def _get(srv: FleetServer, path: str) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=5) as r:
        return r.headers["Content-Type"], r.read().decode()


def _strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (what a browser's JSON.parse refuses)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_one_device_cannot_break_metrics_or_the_api(server: FleetServer) -> None:
    """After a device sent NaN, a string and an object for p50 (M4), /api/devices is strict JSON, /metrics
    parses with the reference parser, the device is not listed and its messages are counted as invalid."""
    _, body = _get(server, "/api/devices")
    snap = _strict_json(body)
    assert [d["device"] for d in snap["devices"]] == ["box-7", "box-8", "box-9"]
    assert snap["counts"]["invalid"] == 3
    _, text = _get(server, "/metrics")
    samples = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples["edgekws_fleet_invalid_total"] == 3.0


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
    per_audio_s = (
        "edgekws_device_energy_mj_per_audio_second",
        (("device", "box-9"), ("fleet", "lab"), ("method", "estimated:loihi2-opcount")),
    )
    assert samples[per_audio_s] == 0.1066  # an always-on device's energy, though it counted no inference
    assert samples[("edgekws_device_online", box)] == 1.0
    assert samples[("edgekws_device_online", (("device", "box-8"), ("fleet", "lab")))] == 0.0
    assert samples[("edgekws_fleet_alerts_active", (("kind", "offline"),))] == 1.0
    assert samples[("edgekws_device_dropped_total", (*box, ("kind", "detection")))] == 2.0
    assert samples[("edgekws_fleet_messages_total", (("kind", "telemetry"),))] == 2.0


def test_api_devices_serves_the_snapshot(server: FleetServer) -> None:
    """/api/devices returns every device with its state and the active alerts as JSON."""
    ctype, body = _get(server, "/api/devices")
    snap = json.loads(body)
    assert ctype == "application/json"
    assert [(d["device"], d["online"], d["bundle_version"]) for d in snap["devices"]] == [
        ("box-7", True, "1.2.0"),
        ("box-8", False, "1.2.0"),
        ("box-9", True, "1.2.0"),
    ]
    box9 = snap["devices"][2]
    assert (box9["energy_mj"], box9["energy_mj_per_audio_s"]) == (None, 0.1066)
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
    assert "<th>mJ/audio s</th>" in out and "<td>0.1066</td>" in out  # box-9, always-on
    assert "digits 1.2.0" in out and "estimated:loihi2-opcount" in out and "went offline" in out
    assert '<small id="meta">monitor unreachable' not in out and "3 invalid" in out


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


# ---- access (M9) ---------------------------------------------------------------------------------------
def _status(url: str, token: str | None = None, basic: bool = False) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        credentials = base64.b64encode(f"anyone:{token}".encode()).decode() if basic else token
        request.add_header("Authorization", f"{'Basic' if basic else 'Bearer'} {credentials}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            assert exc.headers["WWW-Authenticate"].startswith("Basic realm=")
        return int(exc.code)


def test_serving_beyond_localhost_needs_a_token() -> None:
    """Without a token the server refuses any address but loopback (and `fleet serve` says how to fix it);
    with one, every path but /healthz needs it as a bearer token or a Basic password (M9)."""
    with pytest.raises(ValueError, match=r"refusing to serve the fleet's data on 0\.0\.0\.0 without auth"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="at least 16 random"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)
    check_bind("localhost", None)
    refused = CliRunner().invoke(main, ["fleet", "serve", "--host", "0.0.0.0", "--port", "0"])
    assert refused.exit_code == 1 and "--token-file" in refused.output
    srv = FleetServer(FleetMonitor(), port=0, token=TOKEN)
    srv.start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        for path in ("/", "/api/devices", "/metrics"):
            assert _status(base + path) == 401 and _status(base + path, "x" * 32) == 401
            assert _status(base + path, TOKEN) == 200 and _status(base + path, TOKEN, basic=True) == 200
        assert _status(base + "/healthz") == 200
    finally:
        srv.stop()


def test_the_compose_stack_uses_the_token() -> None:
    """compose.yaml runs the monitor beyond localhost with --token-file and gives Prometheus the same secret,
    which prometheus.yml sends (the scrape itself: test_prometheus_scrapes_fleet_serve)."""
    compose = (REPO / "deploy/compose/compose.yaml").read_text()
    assert "- 0.0.0.0" in compose and "- --token-file\n      - /run/secrets/fleet_token" in compose
    assert compose.count("- fleet_token") == 2 and "file: ./fleet-token" in compose
    prometheus = (REPO / "deploy/compose/prometheus.yml").read_text()
    assert "credentials_file: /run/secrets/fleet_token" in prometheus


def _publish(port: int, messages: list[tuple[str, dict[str, Any]]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, body in messages:
            retain = topic.endswith("/status")
            client.publish(topic, json.dumps(body), qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _wait_connected(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until `fleet serve` on ``port`` says (on /healthz) that ingest runs and the broker is connected."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "fleet serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if json.loads(r.read())["broker"] == "connected":
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "fleet serve did not connect to the broker"
        time.sleep(0.1)


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.loads(r.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_prometheus_scrapes_fleet_serve(tmp_path: Path, broker: Any) -> None:
    """Debian's Prometheus, configured by deploy/compose/prometheus.yml (target and interval changed),
    scrapes `edgekws fleet serve` with its token; a device's metric comes back through Prometheus' API."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("Prometheus is not installed: `apt install prometheus` (make test installs it)")
    token_file = tmp_path / "fleet-token"
    token_file.write_text(TOKEN + "\n")
    http_port, prom_port = free_port(), free_port()
    config = (REPO / "deploy/compose/prometheus.yml").read_text()
    for old, new in (
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ('"monitor:9108"', f'"127.0.0.1:{http_port}"'),
        ("/run/secrets/fleet_token", str(token_file)),
    ):
        assert old in config, f"deploy/compose/prometheus.yml no longer has {old!r}"
        config = config.replace(old, new)
    (tmp_path / "prometheus.yml").write_text(config)
    serve = [str(Path(sys.executable).with_name("edgekws")), "fleet", "serve", "--broker", broker.url]
    serve += [
        "--db",
        f"sqlite:///{tmp_path / 'fleet.db'}",
        "--port",
        str(http_port),
        "--token-file",
        str(token_file),
    ]
    status = {"schema": "edgekws.status/1", "id": "s", "ts": 1, "boot": "b", "state": "online"}
    status |= {"bundle": {"name": "digits", "version": "1.2.0"}, "backend": "emulator"}
    with open(tmp_path / "serve.log", "w") as serve_log, open(tmp_path / "prometheus.log", "w") as prom_log:
        monitor = subprocess.Popen(serve, stderr=serve_log)
        t0 = time.monotonic()
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=prom_log, stderr=prom_log,
        )  # fmt: skip
        try:
            _wait_connected(http_port, monitor)
            box = "edgekws/v1/lab/box-1"
            _publish(broker.port, [(f"{box}/status", status), (f"{box}/telemetry", TELEMETRY)])
            deadline = time.monotonic() + 60
            online: list[dict[str, Any]] = []
            while not online:
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
                assert monitor.poll() is None and prom.poll() is None, "fleet serve or prometheus exited"
                time.sleep(0.5)
                try:
                    online = _query(prom_port, 'edgekws_device_online{fleet="lab",device="box-1"}')
                except (urllib.error.URLError, ConnectionError):
                    continue
            print(f"Prometheus: first sample after {time.monotonic() - t0:.1f} s")
            assert online[0]["value"][1] == "1"
            (up,) = _query(prom_port, 'up{job="edgekws-fleet"}')
            assert up["value"][1] == "1"
            (p95,) = _query(prom_port, 'edgekws_device_inference_latency_ms{device="box-1",quantile="0.95"}')
            assert float(p95["value"][1]) == 3.5
        finally:
            for proc in (prom, monitor):
                proc.terminate()
                proc.wait(20)

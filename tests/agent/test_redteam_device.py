"""The device-side findings of the 2026-12 red-team review (#17, shared/reference/redteam-2026-12.md), each
reproduced against real parts: `edgekws-agent run` processes, a real mosquitto, real HTTP servers, real
files, SIGHUP and kill -9. Each test names its finding (H2, H3, M1, M2, M3, M5)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _devices import (
    AGENT,
    FULL_DISK,
    KEY,
    AgentProcess,
    Operator,
    RunningAgent,
    inline,
    make_bundle,
    signed_order,
    write_agent_config,
)

from edgekws.agent._config import MqttConfig
from edgekws.agent._device_store import DeviceStore
from edgekws.agent._rollout import DeployError, UrlRule, fetch_bundle, public_text
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff, BundleRef, topic
from edgekws.packaging import SigningKey

EVENTS = ("deploy.deployed", "deploy.failed")


def _quiet(cfg: Path) -> Path:
    """No detections and rare telemetry: the agent's main thread leaves the outbox alone."""
    text = cfg.read_text().replace("ignore_labels = []", 'ignore_labels = ["_silence_", "yes", "no"]')
    cfg.write_text(text.replace("interval_s = 0.3", "interval_s = 60"))
    return cfg


@pytest.fixture
def op(broker: Any) -> Iterator[Operator]:
    operator = Operator(broker.port)
    try:
        yield operator
    finally:
        operator.close()


def _online(op: Operator, device: str, version: str | None = None, timeout: float = 30) -> None:
    def ready() -> bool:
        st = op.status.get(device, {})
        return st.get("state") == "online" and (
            version is None or (st.get("bundle") or {}).get("version") == version
        )

    op.wait(ready, timeout, f"{device} online" + (f" on {version}" if version else ""))
    for _ in range(20):  # the retained status comes just before the device subscribes to its commands
        try:
            op.result(op.send(device, "ping"), ("command.done",), 1.0)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{device} does not answer pings")


# -- H2: poison commands ----------------------------------------------------------------------------------


def test_h2_poison_commands_are_rejected_and_the_agent_keeps_serving(
    tmp_path: Path, broker: Any, op: Operator
) -> None:
    """Deep nesting, a 5000-digit number, NaN, a non-object and ack ranges >= 2^63 each get command.rejected;
    the MQTT thread survives (a ping is answered afterwards) and the process stays up."""
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1")
    agent = AgentProcess(cfg)
    try:
        _online(op, "d1")
        head = '{"schema": "edgekws.cmd/1", "ts": 1, '
        poisons = [
            ("ping", b"[" * 100_000),
            ("ping", b'{"id": "big", "n": ' + b"9" * 5000 + b"}"),
            ("ping", (head + '"id": "nan", "type": "ping", "x": NaN}').encode()),
            ("ping", (head + '"id": "inf", "type": "ping"}').replace('"ts": 1', '"ts": 1e400').encode()),
            ("ping", b'"just a string"'),
            (
                "ack",
                (
                    head + '"id": "a1", "type": "ack", "epoch": "e", "ranges": [[0, 18446744073709551616]]}'
                ).encode(),
            ),
            ("ack", (head + '"id": "a2", "type": "ack", "epoch": "e", "ranges": [[9, 3]]}').encode()),
            ("deploy", b"\xff\xfe\x00 not utf-8"),
        ]
        for kind, payload in poisons:
            op.send_raw("d1", kind, payload)
        op.wait(lambda: op.kinds().count("command.rejected") >= len(poisons), 20, "every poison rejected")
        ids = {e["detail"].get("command_id") for e in op.events if e["kind"] == "command.rejected"}
        assert {"nan", "inf", "a1", "a2"} <= ids
        ping = op.send("d1", "ping")
        assert op.result(ping, ("command.done",), 10)["detail"]["type"] == "ping"
        assert agent.alive()
        assert "RecursionError" not in agent.text() and "OverflowError" not in agent.text()
    finally:
        assert agent.stop() == 0


_KILL_THE_OUTBOX = """
import sys, threading, time
from edgekws.agent._daemon import Agent

agent = Agent(sys.argv[1])
agent.install_signal_handlers()

def fault():  # a real fault under the MQTT thread: its outbox connection is closed
    while agent.link is None or not agent.link.connected.is_set():
        time.sleep(0.02)
    time.sleep(0.5)
    agent.link._outbox._db.close()

threading.Thread(target=fault, daemon=True).start()
sys.exit(agent.run())
"""


def test_h2_a_worker_thread_that_dies_ends_the_process_with_status_70(tmp_path: Path, broker: Any) -> None:
    """An unexpected exception in the MQTT thread (here: its outbox closed under it) stops the process with
    exit status 70 so systemd restarts it, instead of a live process without its MQTT link."""
    cfg = _quiet(write_agent_config(tmp_path / "d1", broker.port, "d1"))
    script = tmp_path / "agent_with_fault.py"
    script.write_text(_KILL_THE_OUTBOX)
    agent = AgentProcess(cfg, command=[sys.executable, str(script), str(cfg)])
    try:
        code = agent.proc.wait(40)
    finally:
        if agent.alive():
            agent.proc.kill()
    assert code == 70, agent.text()[-2000:]
    logs = [json.loads(line) for line in agent.text().splitlines() if line.startswith("{")]
    died = next(r for r in logs if r["event"].startswith("a worker thread died"))
    assert died["thread"] == "edgekws-mqtt" and "ProgrammingError" in died["error"]


# -- H3: activation, kill -9, start fall-back -------------------------------------------------------------


def test_h3_current_never_points_at_an_unchecked_bundle_and_kill_9_during_the_check_is_safe(
    tmp_path: Path, broker: Any, op: Operator
) -> None:
    """While a broken bundle is deployed, `current` never points at it (watched in a tight loop; the old
    agent switched it before the check). kill -9 while the new version is being checked, then a restart:
    the agent comes up on the old version."""
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1")
    store = tmp_path / "d1" / "store"
    broken = make_bundle(tmp_path, "2.0.0", inputs=13)
    agent = AgentProcess(cfg)
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                seen.add(os.readlink(store / "current"))

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        _online(op, "d1", "1.0.0")
        watcher.start()
        failed = op.result(op.send("d1", "deploy", bundle=inline(broken)), EVENTS)
        assert failed["kind"] == "deploy.failed" and failed["detail"]["active"] == "1.0.0"
        stop.set()
        watcher.join()
        assert seen == {"versions/kws-1.0.0"}
        op.send("d1", "deploy", bundle=inline(broken))  # again, and kill -9 in the middle of its check
        deadline = time.monotonic() + 20
        while not (store / "versions" / "kws-2.0.0").exists():
            assert time.monotonic() < deadline, "the new version was never written"
        agent.kill9()
        assert os.readlink(store / "current") == "versions/kws-1.0.0"
        op.events.clear()
        agent = AgentProcess(cfg)
        op.wait(lambda: "bundle.loaded" in op.kinds(), 30, "bundle.loaded after the restart")
        loaded = next(e for e in op.events if e["kind"] == "bundle.loaded")
        assert loaded["detail"]["version"] == "1.0.0" and agent.alive()
    finally:
        stop.set()
        agent.stop()


def _store_with_a_broken_current(tmp_path: Path, broker: Any) -> Path:
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1")
    broken = make_bundle(tmp_path, "2.0.0", inputs=13)  # signed, verifies, but cannot take the front-end
    DeviceStore(tmp_path / "d1" / "store", [KEY.public_key]).install(broken)
    return cfg


def test_h3_a_current_bundle_that_cannot_load_falls_back_to_previous_at_start(
    tmp_path: Path, broker: Any, op: Operator
) -> None:
    """`current` on a signed but unloadable bundle (what kill -9 left behind before this fix): the agent
    starts on `previous`, records the fall-back in the store and reports it; it does not crash-loop."""
    cfg = _store_with_a_broken_current(tmp_path, broker)
    agent = AgentProcess(cfg)
    try:
        _online(op, "d1", "1.0.0")
        op.wait(lambda: "rollback" in op.kinds(), 10, "the fall-back reported")
        back = next(e for e in op.events if e["kind"] == "rollback")
        assert back["detail"]["automatic"] is True and back["detail"]["at"] == "start"
        assert (back["detail"]["from_version"], back["detail"]["to_version"]) == ("2.0.0", "1.0.0")
        assert "64" not in back["detail"]["reason"] or "input" in back["detail"]["reason"]
        store = DeviceStore(tmp_path / "d1" / "store", [KEY.public_key])
        assert store.active().version == "1.0.0" and store.previous().version == "2.0.0"
        assert agent.alive()
    finally:
        assert agent.stop() == 0


def test_h3_operator_installs_an_unloadable_bundle_then_sighup(
    tmp_path: Path, broker: Any, op: Operator
) -> None:
    """`edgekws-agent bundle install` of a signed but unloadable bundle, then SIGHUP: the daemon reloads,
    falls back to the previous version and reports it, and keeps running."""
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1")
    broken = make_bundle(tmp_path, "2.0.0", inputs=13)
    agent = AgentProcess(cfg)
    try:
        _online(op, "d1", "1.0.0")
        install = subprocess.run(
            [str(AGENT), "bundle", "install", str(broken), "--config", str(cfg)],
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, install.stderr
        agent.proc.send_signal(signal.SIGHUP)
        op.wait(lambda: "rollback" in op.kinds(), 30, "the fall-back after SIGHUP")
        back = next(e for e in op.events if e["kind"] == "rollback")
        assert back["detail"]["automatic"] and back["detail"]["to_version"] == "1.0.0"
        _online(op, "d1", "1.0.0")
        ping = op.send("d1", "ping")
        op.result(ping, ("command.done",), 10)
        assert agent.alive()
    finally:
        assert agent.stop() == 0


def test_h3_the_health_check_does_not_time_the_warm_up_window(tmp_path: Path) -> None:
    """In a fresh interpreter the emulator's first window includes loading the numba kernel (about a
    second); the health check warms up first and times the second window, so a 200 ms bound passes."""
    script = tmp_path / "health.py"
    script.write_text(
        f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _devices import KEY, LABELS, SPEC, make_bundle
from edgekws.agent._rollout import health_check
from edgekws.agent.backends._emulator import EmulatorBackend
from edgekws.packaging import open_bundle
tmp = Path({str(tmp_path)!r})
model = open_bundle(make_bundle(tmp, "1.0.0"), [KEY.public_key]).extract(tmp / "m")
result = health_check(lambda: EmulatorBackend(model / "model" / "netx.h5"), SPEC, list(LABELS), 200,
                      "exp_weighted_mean", 200.0)
print(json.dumps(result))
"""
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["latency_ms"] <= 200.0 and result["finite"]
    assert result["warmup_ms"] > result["latency_ms"]


# -- M1: prune after commit --------------------------------------------------------------------------------


def _on_1_1_0(tmp_path: Path, broker: Any) -> tuple[Path, Operator, RunningAgent]:
    """Device d1 running 1.1.0 (previous 1.0.0, as its config installs it), and an operator."""
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1")
    DeviceStore(tmp_path / "d1" / "store", [KEY.public_key]).install(make_bundle(tmp_path, "1.1.0"))
    return cfg, Operator(broker.port), RunningAgent(cfg)


def test_m1_a_failed_deploy_keeps_previous_and_leaves_no_broken_version(tmp_path: Path, broker: Any) -> None:
    """current 1.1.0, previous 1.0.0, keep_versions 2: a deploy of 1.3.0 that fails its check prunes
    nothing, removes 1.3.0 again, and `bundle rollback` still finds 1.0.0."""
    cfg, op, running = _on_1_1_0(tmp_path, broker)
    try:
        broken = make_bundle(tmp_path, "1.3.0", inputs=13)
        failed = op.result(op.send("d1", "deploy", bundle=inline(broken)), EVENTS)
        assert failed["kind"] == "deploy.failed" and failed["detail"]["rolled_back"] is True
        agent_store = running.agent.store
        assert (agent_store.active().version, agent_store.previous().version) == ("1.1.0", "1.0.0")
        assert [b.version for b in agent_store.installed()] == ["1.0.0", "1.1.0"]
    finally:
        running.stop()
        op.close()
    back = subprocess.run(
        [str(AGENT), "bundle", "rollback", "--config", str(cfg), "--json"], capture_output=True, text=True
    )
    assert back.returncode == 0 and json.loads(back.stdout)["version"] == "1.0.0", back.stderr


# -- M2: authorized downgrades and rollbacks, acks only for what was delivered -------------------------------


def test_m2_a_downgrade_needs_an_unused_signed_order_for_this_device(tmp_path: Path, broker: Any) -> None:
    """A replayed older bundle with "rollback": true is refused without an order, with an order signed by
    an untrusted key, for another device or bundle, or expired; a valid one works once, never twice."""
    _, op, running = _on_1_1_0(tmp_path, broker)
    try:
        old = inline(make_bundle(tmp_path, "0.9.0"))
        sha = old["sha256"]
        refusals = {
            "none": None,
            "untrusted": signed_order("deploy", "0.9.0", ["f1/d1"], sha256=sha, key=SigningKey.generate()),
            "other device": signed_order("deploy", "0.9.0", ["f1/d2"], sha256=sha),
            "other bundle": signed_order("deploy", "0.9.0", ["f1/d1"], sha256="0" * 64),
            "other version": signed_order("deploy", "0.5.0", ["f1/d1"], sha256=sha),
            "expired": signed_order("deploy", "0.9.0", ["f1/d1"], sha256=sha, valid_s=-5),
        }
        for why, order in refusals.items():
            extra = {} if order is None else {"order": order}
            res = op.result(op.send("d1", "deploy", bundle=old, rollback=True, **extra), EVENTS)
            assert res["kind"] == "deploy.failed" and res["detail"]["stage"] == "authorize", why
        assert running.agent.store.active().version == "1.1.0"
        good = signed_order("deploy", "0.9.0", ["f1/d1", "f1/d2"], sha256=sha)
        ok = op.result(op.send("d1", "deploy", bundle=old, rollback=True, order=good), EVENTS)
        assert ok["kind"] == "deploy.deployed" and running.agent.store.active().version == "0.9.0"
        up = op.result(op.send("d1", "deploy", bundle=inline(make_bundle(tmp_path, "1.2.0"))), EVENTS)
        assert up["kind"] == "deploy.deployed"  # an upgrade to a signed bundle needs no order
        replay = op.result(op.send("d1", "deploy", bundle=old, rollback=True, order=good), EVENTS)
        assert replay["kind"] == "deploy.failed" and "already used" in replay["detail"]["reason"]
        assert running.agent.store.active().version == "1.2.0"
        bare = op.result(op.send("d1", "rollback"), ("rollback", "rollback.failed"))
        assert bare["kind"] == "rollback.failed" and bare["detail"]["stage"] == "authorize"
        order = signed_order("rollback", "0.9.0", ["f1/d1"])
        back = op.result(op.send("d1", "rollback", order=order), ("rollback", "rollback.failed"))
        assert back["kind"] == "rollback" and running.agent.store.active().version == "0.9.0"
    finally:
        running.stop()
        op.close()


def test_m2_a_forged_ack_deletes_only_messages_a_subscriber_took(tmp_path: Path, broker: Any) -> None:
    """With delivery = monitor and no monitor, messages wait in the outbox; a forged ack (sniffed epoch,
    range [1, 10^12]) is refused and deletes nothing, nor does one within range for undelivered messages;
    once a subscriber took them, an ack removes them."""
    settings = MqttConfig(
        broker=f"mqtt://127.0.0.1:{broker.port}", outbox=tmp_path / "o.sqlite", delivery="monitor"
    )
    link = DeviceTelemetry(settings, fleet="f1", device="d1", backoff=Backoff(0.05, 0.3))
    link.start()
    op = Operator(broker.port)
    try:
        assert link.connected.wait(10)
        for i in range(10):
            link.detection("yes", 0.9, float(i))
        time.sleep(1.0)  # sent, but no subscriber took them (PUBACK 0x10): they stay queued
        box = link._outbox
        assert box is not None
        op.send("d1", "ack", epoch=box.epoch, ranges=[[1, 10**12]])

        def rejected() -> list[dict[str, Any]]:  # the device's answer waits in its own outbox
            rows = [json.loads(r.payload) for r in box.after(0, 1000) if r.kind == "event"]
            return [r for r in rows if r["kind"] == "command.rejected"]

        op.wait(lambda: bool(rejected()), 10, "the forged ack refused")
        assert "never sent" in rejected()[0]["detail"]["problems"][0]
        op.send("d1", "ack", epoch=box.epoch, ranges=[[1, 10]])  # within range, but nothing was delivered
        time.sleep(0.5)
        assert [r.kind for r in box.after(0, 100)].count("detection") == 10
        taker = Operator(broker.port)  # a subscriber appears: the queue is delivered (PUBACK success)
        taker.client.subscribe("edgekws/v1/f1/d1/#", qos=1)
        try:
            op.wait(lambda: len(link._delivered) >= 11, 10, "the queue delivered")
            op.send("d1", "ack", epoch=box.epoch, ranges=[[1, box.max_seq]])
            op.wait(lambda: link.queue_depth() == 0, 10, "delivered messages acked")
        finally:
            taker.close()
    finally:
        op.close()
        link.stop()


# -- M3: where a bundle may come from -----------------------------------------------------------------------


class _Counting(socketserver.ThreadingTCPServer):
    """A TCP listener that only counts connections (a probe for SSRF)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.hits = 0
        super().__init__(("127.0.0.1", 0), socketserver.BaseRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.hits += 1
        request.close()


def test_m3_urls_the_policy_does_not_allow_are_refused_unread(tmp_path: Path, broker: Any) -> None:
    """file:///etc/passwd with a dummy sha256 gives no hash and no hint of the file; an http URL to another
    port is never connected to; /dev/kmsg and /dev/zero are refused at once (the command worker stays
    free: a ping after them is answered); reasons carry no filesystem path."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "escape.ekb").symlink_to("/etc/passwd")
    probe = _Counting()
    threading.Thread(target=probe.serve_forever, daemon=True).start()
    cfg = write_agent_config(
        tmp_path / "d1", broker.port, "d1", allowed_urls=(incoming.as_uri() + "/", "file:///dev/")
    )
    op = Operator(broker.port)
    agent = AgentProcess(cfg)
    try:
        _online(op, "d1")
        dummy = {"name": "kws", "version": "9.0.0", "sha256": "0" * 64}
        urls = [
            "file:///etc/passwd",
            f"http://127.0.0.1:{probe.server_address[1]}/probe",
            (incoming / "escape.ekb").as_uri(),
            "file:///dev/kmsg",
            "file:///dev/zero",
        ]
        passwd_sha = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
        for url in urls:
            res = op.result(op.send("d1", "deploy", bundle={**dummy, "url": url}), EVENTS, timeout=15)
            assert res["kind"] == "deploy.failed" and res["detail"]["stage"] == "fetch", (url, res)
            text = json.dumps(res["detail"])
            assert passwd_sha not in text and str(tmp_path) not in text
        assert probe.hits == 0
        reasons = [e["detail"]["reason"] for e in op.events if e["kind"] == "deploy.failed"]
        assert "not a regular file" in reasons[3] and "not a regular file" in reasons[4]
        op.result(op.send("d1", "ping"), ("command.done",), 10)
        assert agent.alive()
    finally:
        agent.stop()
        op.close()
        probe.shutdown()
        probe.server_close()


class _Drip(http.server.BaseHTTPRequestHandler):
    """Sends a 200 with a large Content-Length, then one byte every 0.2 s (or, with /flood, endless data)."""

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/flood":
            self.end_headers()
            chunk = b"x" * 65536
            with __import__("contextlib").suppress(OSError):
                while True:
                    self.wfile.write(chunk)
            return
        self.send_header("Content-Length", "1000")
        self.end_headers()
        with __import__("contextlib").suppress(OSError):
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)

    def log_message(self, *args: Any) -> None:
        pass


def test_m3_the_download_deadline_is_total_and_the_size_cap_holds_while_streaming(tmp_path: Path) -> None:
    """A server dripping one byte every 0.2 s (each read well within any per-read timeout) is cut at the
    total deadline; an endless body without Content-Length stops at max_bundle_bytes; a redirect to a URL
    outside the allow-list is not followed."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    rules = [UrlRule.parse(base)]
    try:
        t0 = time.monotonic()
        with pytest.raises(DeployError, match="did not finish within"):
            fetch_bundle(
                BundleRef(name="k", version="1.0.0", sha256="0" * 64, url=base + "drip"),
                allowed=rules,
                timeout_s=1.5,
            )
        assert time.monotonic() - t0 < 3.0
        with pytest.raises(DeployError, match="larger than"):
            fetch_bundle(
                BundleRef(name="k", version="1.0.0", sha256="0" * 64, url=base + "flood"),
                allowed=rules,
                max_bytes=2 * 2**20,
            )
    finally:
        server.shutdown()
        server.server_close()

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hop = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{hop.server_port}/"
        with pytest.raises(DeployError, match="redirected"):
            fetch_bundle(
                BundleRef(name="k", version="1.0.0", sha256="0" * 64, url=base + "b.ekb"),
                allowed=[UrlRule.parse(base)],
            )
    finally:
        hop.shutdown()
        hop.server_close()


def test_m3_url_rules_match_scheme_host_port_and_path() -> None:
    """A rule allows its scheme, host and port and paths under its prefix; nothing else slips through."""
    rule = UrlRule.parse("https://bundles.example/releases/")
    assert rule.allows("https://bundles.example/releases/kws-1.0.0.ekb")
    assert rule.allows("https://BUNDLES.example:443/releases/a/b.ekb")
    for url in (
        "http://bundles.example/releases/kws.ekb",
        "https://bundles.example:8443/releases/kws.ekb",
        "https://bundles.example.evil.com/releases/kws.ekb",
        "https://bundles.example/releases/../secret",
        "https://bundles.example/releasesX/kws.ekb",
        "https://user:pw@bundles.example/releases/kws.ekb",
        "https://bundles.example/other/kws.ekb",
    ):
        assert not rule.allows(url), url
    for bad in ("ftp://x/", "https:///nohost/", "file://host/x/", "https://h/?q=1"):
        with pytest.raises(ValueError):
            UrlRule.parse(bad)
    assert (
        public_text("cannot open /var/lib/edgekws/store/.deploy.x.tmp: no")
        == "cannot open …/.deploy.x.tmp: no"
    )
    assert (
        public_text("see https://bundles.example/releases/a.ekb")
        == "see https://bundles.example/releases/a.ekb"
    )


# -- M5: every dropped message is counted --------------------------------------------------------------------


def test_m5_drop_counters_count_every_dropped_message(tmp_path: Path) -> None:
    """A full outbox (SQLite's own "database or disk is full") drops detections and the telemetry reports
    that would carry the counts; once space is back, the next report counts every one of them."""
    settings = MqttConfig(broker="mqtt://127.0.0.1:1", outbox=tmp_path / "o.sqlite")
    link = DeviceTelemetry(settings, fleet="f1", device="d1", backoff=Backoff(0.05, 0.3))
    link.start()
    snapshot: dict[str, Any] = {"energy": [], "inferences": 0, "detections": 0}
    try:
        box = link._outbox
        assert box is not None
        link.detection("yes", 0.9, 1.0)
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
        while link.detection("fill", 0.9, 1.0) is not None:  # use up the last free page
            pass
        failed = {"detection": 1, "telemetry": 0}
        for i in range(7):
            failed["detection"] += link.detection(f"w{i}", 0.9, 1.0) is None
        for _ in range(13):
            failed["telemetry"] += link.telemetry(snapshot) is None
        assert failed == {"detection": 8, "telemetry": 13}
        box._db.execute("PRAGMA max_page_count = 1073741823")  # space is back
        assert link.telemetry(snapshot) is not None
        reports = [json.loads(r.payload) for r in box.after(0, 100) if r.kind == "telemetry"]
        reported = {k: sum(r["dropped"][k] for r in reports) for k in ("telemetry", "detection", "event")}
        assert reported == {**failed, "event": 0}
        assert link.telemetry(snapshot) is not None
        last = json.loads(box.after(0, 100)[-1].payload)
        assert last["dropped"] == {"telemetry": 0, "detection": 0, "event": 0}
    finally:
        link.stop()


def test_topic_helper_is_the_one_the_device_uses() -> None:
    """(Guard for the tests above: the operator publishes where the device subscribes.)"""
    assert topic("f1", "d1", "cmd/ping") == "edgekws/v1/f1/d1/cmd/ping"
    assert socket.gethostbyname("127.0.0.1") == "127.0.0.1"


# -- Low: clear errors, no silent wrong behaviour ---------------------------------------------------------


def _agent(
    *args: str | Path, full: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(FULL_DISK if full else []), str(AGENT), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_l1_unwritable_or_full_stores_and_outboxes_give_clear_errors(tmp_path: Path) -> None:
    """`bundle install` into a store under a file, under /proc or on a full disk, and `run` with the store
    or the outbox where nothing can be written: exit 1 with a message, never a traceback."""
    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    bundle = make_bundle(tmp_path, "1.0.0")
    trust = ("--trust", tmp_path / "release.pub")
    (tmp_path / "a-file").write_text("x")
    for store in (tmp_path / "a-file" / "store", Path("/proc/edgekws-store")):
        out = _agent("bundle", "install", bundle, "--store", store, *trust)
        assert out.returncode == 1 and "cannot use" in out.stderr and "Traceback" not in out.stderr, (
            out.stderr
        )
    full = _agent("bundle", "install", bundle, "--store", tmp_path / "full", *trust, full=True)
    assert full.returncode == 1 and "cannot write kws 1.0.0" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr and not list((tmp_path / "full" / "versions").iterdir())
    cfg = write_agent_config(tmp_path / "d1", 1, "d1")
    text = cfg.read_text()
    for old, new, key in (
        ('dir = "store"', 'dir = "../a-file"', "store.dir"),
        ('outbox = "outbox.sqlite"', 'outbox = "audio"', "telemetry.mqtt.outbox"),
        ('outbox = "outbox.sqlite"', 'outbox = "/proc/x/outbox.sqlite"', "outbox"),
    ):
        cfg.write_text(text.replace(old, new))
        out = _agent("run", "--config", cfg)
        assert out.returncode == 1 and key in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_l3_bundle_list_with_a_relative_store_marks_the_active_version(tmp_path: Path) -> None:
    """`bundle list --store RELATIVE` marks the active and previous versions like an absolute path does."""
    store = DeviceStore(tmp_path / "s", [KEY.public_key])
    store.install(make_bundle(tmp_path, "1.0.0"))
    store.install(make_bundle(tmp_path, "1.1.0"))
    out = _agent("bundle", "list", "--store", "s", "--json", cwd=tmp_path)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["version"], r["active"], r["previous"]) for r in rows] == [
        ("1.0.0", False, True),
        ("1.1.0", True, False),
    ]


def test_l4_validate_config_checks_the_files_it_names(tmp_path: Path) -> None:
    """A missing trusted key, a missing WAV, a store path that is a file and interval_s = inf are all
    reported by --validate-config (each with its line), and `run` refuses to start with them."""
    cfg = write_agent_config(tmp_path / "d1", 1, "d1")
    ok = _agent("run", "--config", cfg, "--validate-config")
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "a-file").write_text("x")
    text = cfg.read_text()
    cfg.write_text(text.replace("interval_s = 0.3", "interval_s = inf"))
    inf = _agent("run", "--config", cfg, "--validate-config")
    assert inf.returncode == 1 and "telemetry.interval_s" in inf.stderr and "finite" in inf.stderr
    for old, new in (
        ('trusted_keys = ["release.pub"]', 'trusted_keys = ["nope.pub"]'),
        ('path = "audio"', 'path = "missing.wav"'),
        ('dir = "store"', 'dir = "../a-file"'),
    ):
        text = text.replace(old, new)
    cfg.write_text(text)
    bad = _agent("run", "--config", cfg, "--validate-config")
    assert bad.returncode == 1
    for key in ("store.trusted_keys[0]", "source.path", "store.dir"):
        assert key in bad.stderr, (key, bad.stderr)
    assert "3 problem(s)" in bad.stderr
    run = _agent("run", "--config", cfg)
    assert run.returncode == 1 and "store.trusted_keys[0]" in run.stderr and "Traceback" not in run.stderr


def test_l6_empty_silent_and_dc_audio_get_no_speech(tmp_path: Path) -> None:
    """A 0-frame WAV, digital silence, a DC offset, anti-phase stereo and a 1 Hz file are "no speech", not a
    keyword; a tone burst still gets a label; clipping and a long file are noted on stderr."""
    import numpy as np
    import soundfile as sf

    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    bundle = make_bundle(tmp_path, "1.0.0")
    t = np.arange(16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    files = {
        "zero.wav": (np.zeros(0), 16000),
        "silence.wav": (np.zeros(16000), 16000),
        "dc.wav": (np.full(16000, 0.5), 16000),
        "anti.wav": (np.stack([tone, -tone], 1), 16000),
        "onehz.wav": (np.array([0.5]), 1),
        "tone.wav": (tone, 16000),
        "loud.wav": (1000 * tone.astype(np.float32), 16000),
        "long.wav": (np.tile(tone, 5), 16000),
    }
    for name, (x, sr) in files.items():
        sf.write(tmp_path / name, x, sr, subtype="FLOAT" if name == "loud.wav" else "PCM_16")
    out = _agent(
        "classify",
        "--bundle",
        bundle,
        "--trust",
        tmp_path / "release.pub",
        *(tmp_path / n for n in files),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    for name in ("zero.wav", "silence.wav", "dc.wav", "anti.wav", "onehz.wav"):
        assert rows[name]["label"] is None and rows[name]["no_speech"], rows[name]
    for name in ("tone.wav", "loud.wav", "long.wav"):
        assert rows[name]["label"] is not None and "no_speech" not in rows[name]
    assert "loud.wav: note:" in out.stderr and "clipped" in out.stderr
    assert "long.wav: note: only the first 0.2 s of 5.0 s" in out.stderr


@pytest.mark.lava
def test_classify_on_lava_sim_exits_and_keeps_stdout_for_json(tmp_path: Path) -> None:
    """`classify --backend lava-sim --json` prints its result and exits (Lava's runtime used to stay up and
    the command never returned), and stdout holds only the JSON lines (lava-dl's notices go to stderr)."""
    import numpy as np
    import soundfile as sf

    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    bundle = make_bundle(tmp_path, "1.0.0")
    t = np.arange(8000) / 16000
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    args = ("classify", "--bundle", bundle, "--trust", tmp_path / "release.pub", tmp_path / "tone.wav")
    out = _agent(*args, "--backend", "lava-sim", "--json")  # a 120 s timeout: a hang fails the test
    assert out.returncode == 0, out.stderr
    (row,) = map(json.loads, out.stdout.splitlines())
    assert row["backend"] == "lava-sim" and row["label"] is not None, row
    emulator = json.loads(_agent(*args, "--json").stdout)
    assert (emulator["label"], emulator["confidence"]) == (row["label"], row["confidence"])  # bit-exact


def test_l8_same_precedence_reinstall_of_other_content_needs_rollback(tmp_path: Path) -> None:
    """1.2.0 then 1.2.0+rebuild (other bytes, same precedence) is refused without --rollback, like the
    workstation store's VersionConflict; with --rollback it is allowed on purpose."""
    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    store = ("--store", tmp_path / "s", "--trust", tmp_path / "release.pub")
    assert _agent("bundle", "install", make_bundle(tmp_path, "1.2.0"), *store).returncode == 0
    rebuild = make_bundle(tmp_path, "1.2.0+rebuild")
    refused = _agent("bundle", "install", rebuild, *store)
    assert refused.returncode == 1 and "same precedence" in refused.stderr
    assert _agent("bundle", "install", rebuild, *store, "--rollback").returncode == 0


def test_encode_accepts_a_bundle_manifest_as_spec(tmp_path: Path) -> None:
    """`encode --spec manifest.json` takes the manifest's front-end spec, as --help says."""
    import numpy as np
    import soundfile as sf

    from edgekws.packaging import check_bundle

    report = check_bundle(make_bundle(tmp_path, "1.0.0"))
    assert report.manifest_bytes is not None and report.manifest is not None
    (tmp_path / "manifest.json").write_bytes(report.manifest_bytes)
    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    out = _agent("encode", tmp_path / "a.wav", "--spec", tmp_path / "manifest.json", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"] == dict(report.manifest.frontend)

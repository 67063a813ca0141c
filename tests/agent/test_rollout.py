"""Over-the-air deploys on the device: a running Agent with a real MQTT link (real mosquitto) takes deploy
and rollback commands, checks sha256, signature and health, and rolls back by itself; the bundle CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from _devices import (
    KEY,
    LABELS,
    SCHEMAS,
    SPEC,
    Operator,
    RunningAgent,
    inline,
    make_bundle,
    signed_order,
    write_agent_config,
)
from click.testing import CliRunner

from edgekws.agent._cli import main
from edgekws.agent._rollout import DeployError, UrlRule, fetch_bundle, health_check
from edgekws.agent.mqtt import BundleRef, InvalidCommand, parse_command
from edgekws.packaging._signing import SigningKey


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static HTTP server on 127.0.0.1 serving a folder: (the folder, its base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def device(tmp_path: Path, broker: Any, www: tuple[Path, str]) -> Iterator[tuple[Any, Operator, Path]]:
    cfg = write_agent_config(tmp_path / "d1", broker.port, "d1", group="canary", allowed_urls=(www[1],))
    op = Operator(broker.port)
    running = RunningAgent(cfg)
    try:
        yield running, op, tmp_path
    finally:
        running.stop()
        op.close()


def test_deploy_inline_and_over_http_then_rollback_command(
    device: tuple[Any, Operator, Path], www: tuple[Path, str]
) -> None:
    """Inline and http deploys activate the new version (status updated); `rollback` goes back one."""
    running, op, tmp = device
    agent = running.agent
    v110, v120 = make_bundle(tmp, "1.1.0"), make_bundle(www[0], "1.2.0")
    cmd = op.send("d1", "deploy", bundle=inline(v110), rollout="r1")
    done = op.result(cmd, ("deploy.deployed", "deploy.failed"))
    assert done["kind"] == "deploy.deployed", done
    health = done["detail"]["health"]
    assert done["detail"]["previous"] == "1.0.0" and np.isfinite(health["latency_ms"])
    assert np.isfinite(health["warmup_ms"])
    assert agent.bundle_label == "kws-1.1.0" and agent.store.active().version == "1.1.0"
    ref = {**inline(v120), "data": None, "url": f"{www[1]}{v120.name}"}
    done = op.result(op.send("d1", "deploy", bundle=ref), ("deploy.deployed", "deploy.failed"))
    assert done["kind"] == "deploy.deployed", done
    deadline = time.monotonic() + 5
    while op.status.get("d1", {}).get("bundle", {}).get("version") != "1.2.0" and time.monotonic() < deadline:
        time.sleep(0.02)
    status = op.status["d1"]
    assert status["bundle"]["version"] == "1.2.0" and status["group"] == "canary"
    jsonschema.validate(status, SCHEMAS["status"])
    order = signed_order("rollback", "1.1.0", ["f1/d1"])
    back = op.result(op.send("d1", "rollback", order=order), ("rollback", "rollback.failed"))
    assert back["detail"]["version"] == "1.1.0" and agent.bundle_label == "kws-1.1.0"
    deadline = time.monotonic() + 5  # the device sends bundle.activated right after rollback
    while [e["kind"] for e in op.events].count("bundle.activated") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    kinds = [e["kind"] for e in op.events]
    assert kinds.count("bundle.activated") == 3 and "command.done" in kinds
    for e in op.events:
        jsonschema.validate(e, SCHEMAS["event"])


def test_a_bundle_failing_its_health_check_is_rolled_back(
    device: tuple[Any, Operator, Path],
) -> None:
    """A signed bundle whose network cannot take the front-end's spikes is activated, fails, and is undone."""
    running, op, tmp = device
    store = running.agent.store
    broken = make_bundle(tmp, "2.0.0", inputs=SPEC.num_channels + 5)
    failed = op.result(op.send("d1", "deploy", bundle=inline(broken)), ("deploy.deployed", "deploy.failed"))
    assert failed["kind"] == "deploy.failed" and failed["level"] == "error"
    assert failed["detail"]["rolled_back"] is True and failed["detail"]["active"] == "1.0.0"
    assert "2.0.0" in failed["detail"]["reason"]
    auto = next(e for e in op.events if e["kind"] == "rollback")
    assert auto["detail"]["automatic"] is True and auto["detail"]["to_version"] == "1.0.0"
    assert store.active().version == "1.0.0" and store.previous() is None  # the store is as it was
    assert running.agent.bundle_label == "kws-1.0.0"  # the running pipeline never changed
    assert op.status["d1"]["bundle"]["version"] == "1.0.0"


def test_tampered_and_downgraded_bundles_are_refused(device: tuple[Any, Operator, Path]) -> None:
    """A sha256 mismatch is refused before install; a lower version only with rollback = true."""
    running, op, tmp = device
    store = running.agent.store
    ref = inline(make_bundle(tmp, "1.5.0"))
    ref["sha256"] = hashlib.sha256(b"something else").hexdigest()
    bad = op.result(op.send("d1", "deploy", bundle=ref), ("deploy.deployed", "deploy.failed"))
    assert bad["kind"] == "deploy.failed" and bad["detail"]["stage"] == "verify"
    assert "sha256 mismatch" in bad["detail"]["reason"]
    assert [b.version for b in store.installed()] == ["1.0.0"]
    (tmp / "k").mkdir()
    foreign_bundle = make_bundle(tmp / "k", "1.6.0", key=SigningKey.generate())
    foreign = op.result(
        op.send("d1", "deploy", bundle=inline(foreign_bundle)), ("deploy.deployed", "deploy.failed")
    )
    assert foreign["kind"] == "deploy.failed"
    assert foreign["detail"]["stage"] == "install"  # signed by an untrusted key
    old = inline(make_bundle(tmp, "0.9.0"))
    down = op.result(op.send("d1", "deploy", bundle=old), ("deploy.deployed", "deploy.failed"))
    assert down["kind"] == "deploy.failed" and "lower than the active" in down["detail"]["reason"]
    assert store.active().version == "1.0.0"
    order = signed_order("deploy", "0.9.0", ["f1/d1"], sha256=old["sha256"])
    ok = op.result(
        op.send("d1", "deploy", bundle=old, rollback=True, order=order), ("deploy.deployed", "deploy.failed")
    )
    assert ok["kind"] == "deploy.deployed" and store.active().version == "0.9.0"


def test_fetch_bundle_reads_files_and_inline_data(tmp_path: Path) -> None:
    """A bundle comes from an allowed file:// URL or inline base64; a missing file and bad base64 are
    DeployErrors."""
    path = make_bundle(tmp_path, "1.0.0")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    allowed = [UrlRule.parse(tmp_path.resolve().as_uri())]
    by_url = BundleRef(name="kws", version="1.0.0", sha256=sha, url=path.resolve().as_uri())
    assert fetch_bundle(by_url, allowed=allowed) == data
    assert fetch_bundle(BundleRef(name="kws", version="1.0.0", sha256=sha, data=inline(path)["data"])) == data
    missing = BundleRef(name="kws", version="1", sha256=sha, url=(tmp_path / "nonexistent.ekb").as_uri())
    with pytest.raises(DeployError, match="cannot open"):
        fetch_bundle(missing, allowed=allowed)
    with pytest.raises(DeployError, match="base64"):
        fetch_bundle(BundleRef(name="kws", version="1", sha256=sha, data="@@@"))
    with pytest.raises(DeployError, match="max_bundle_bytes"):
        fetch_bundle(by_url, allowed=allowed, max_bytes=10)
    cmd = {"schema": "edgekws.cmd/1", "id": "x", "ts": 0, "type": "deploy"}
    for bundle in ({"name": "k", "version": "1", "sha256": sha}, {**inline(path), "url": "ftp://h/x"}):
        with pytest.raises(InvalidCommand):
            parse_command("edgekws/v1/f/d/cmd/deploy", json.dumps({**cmd, "bundle": bundle}).encode())


def test_health_check_enforces_the_latency_bound(tmp_path: Path) -> None:
    """The self-test passes for a sound network and fails when a window takes longer than the bound."""
    from edgekws.agent.backends._emulator import EmulatorBackend
    from edgekws.packaging._bundle import open_bundle

    bundle = open_bundle(make_bundle(tmp_path, "1.0.0"), [KEY.public_key])
    model = bundle.extract(tmp_path / "m")

    def make() -> EmulatorBackend:
        return EmulatorBackend(model / "model" / "netx.h5")

    ok = health_check(make, SPEC, list(LABELS), 200, "exp_weighted_mean", 5000.0)
    assert ok["finite"] and ok["label"] in LABELS and ok["input_spikes"] > 0
    with pytest.raises(DeployError, match="over the") as err:
        health_check(make, SPEC, list(LABELS), 200, "exp_weighted_mean", 1e-6)
    assert err.value.detail["stage"] == "health"


def test_bundle_cli_installs_lists_and_rolls_back(tmp_path: Path) -> None:
    """`bundle install` verifies and activates, refuses a downgrade without --rollback; `rollback` undoes."""
    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    v1, v2 = make_bundle(tmp_path, "1.0.0"), make_bundle(tmp_path, "1.1.0")
    store = ["--store", str(tmp_path / "store"), "--trust", str(tmp_path / "release.pub")]
    run = CliRunner().invoke
    for bundle in (v1, v2):
        assert run(main, ["bundle", "install", str(bundle), *store]).exit_code == 0
    refused = run(main, ["bundle", "install", str(v1), *store])
    assert refused.exit_code == 1 and "lower than the active" in refused.output
    rows = [json.loads(line) for line in run(main, ["bundle", "list", *store, "--json"]).output.splitlines()]
    assert [(r["version"], r["active"], r["previous"]) for r in rows] == [
        ("1.0.0", False, True),
        ("1.1.0", True, False),
    ]
    back = run(main, ["bundle", "rollback", *store, "--json"])
    assert back.exit_code == 0 and json.loads(back.output)["version"] == "1.0.0"
    again = run(main, ["bundle", "install", str(v1), *store, "--rollback", "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["active"]
    untrusted = run(main, ["bundle", "install", str(v2), "--store", str(tmp_path / "store")])
    assert untrusted.exit_code == 1 and "refusing" in untrusted.output

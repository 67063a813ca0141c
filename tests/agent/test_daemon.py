"""Tests for the agent daemon: lifecycle, signals, systemd notify, structured logs, backend choice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _devices import KEY, LABELS, make_bundle, small_network
from click.testing import CliRunner

from edgekws.agent._cli import main
from edgekws.agent._config import parse_config
from edgekws.agent._daemon import Agent, sd_notify, watchdog_interval
from edgekws.agent._device_store import DeviceStore
from edgekws.agent._pipeline import NoBackend, choose_backend
from edgekws.packaging import DetectionSpec
from edgekws.packaging._netx import write_netx
from edgekws.packaging._signing import SigningKey

AGENT = Path(sys.executable).parent / "edgekws-agent"


def _setup(
    tmp_path: Path,
    *,
    seconds: float = 2.0,
    realtime: bool = True,
    loop: bool = False,
    install: bool = True,
    extra: str = "",
    detection: DetectionSpec | None = None,
    interval_s: float = 0.2,
    mode: str = "auto",
) -> Path:
    """A store with an installed bundle, a trusted key, noise WAVs and a config; returns the config path."""
    bundle = make_bundle(tmp_path, "1.0.0", detection=detection)
    (tmp_path / "release.pub").write_bytes(KEY.public_key.to_pem())
    if install:
        DeviceStore(tmp_path / "store", [KEY.public_key]).install(bundle)
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(
            audio / name, (0.2 * rng.standard_normal(int(16000 * seconds / 2))).astype(np.float32), 16000
        )
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f"""
[device]
id = "test-box"

[store]
dir = "store"
trusted_keys = ["release.pub"]

[source]
type = "wav"
path = "audio"
realtime = {str(realtime).lower()}
loop = {str(loop).lower()}

[detection]
mode = "{mode}"
lanes = 4
threshold = 0.0001
refractory_ms = 0
min_input_rate_hz = 0
ignore_labels = []

[telemetry]
interval_s = {interval_s}
{extra}
"""
    )
    return cfg


def _logs(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_agent_runs_a_wav_folder_to_the_end(tmp_path: Path) -> None:
    """In process, the agent loads the bundle, spots on the folder as fast as possible and stops by itself."""
    agent = Agent(_setup(tmp_path, realtime=False), env={})
    assert agent.run() == 0
    assert agent.backend_name == "emulator" and agent.bundle_label == "kws-1.0.0"
    assert agent.detections, "the test network detects something in noise at a tiny threshold"
    assert {d["label"] for d in agent.detections} <= set(LABELS)
    assert agent.metrics.total_audio_s == pytest.approx(2.0)
    assert not agent.started_steps


def test_missing_runtimes_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """A backend whose model file is absent is reported and the next one in order is used."""
    model_dir = tmp_path / "m"
    (model_dir / "model").mkdir(parents=True)
    write_netx(small_network(), model_dir / "model" / "netx.h5")
    cfg = parse_config(
        {
            "device": {"id": "x"},
            "store": {"dir": "s"},
            "source": {"type": "stdin"},
            "backends": [{"type": "onnx"}, {"type": "emulator"}],
        }
    )
    name, backend, factory = choose_backend(list(cfg.backends), model_dir)
    assert name == "emulator" and backend.num_outputs == 3 and factory() is not backend
    only_onnx = parse_config(
        {
            "device": {"id": "x"},
            "store": {"dir": "s"},
            "source": {"type": "stdin"},
            "backends": [{"type": "onnx"}],
        }
    )
    with pytest.raises(NoBackend, match="onnx"):
        choose_backend(list(only_onnx.backends), model_dir)


def _wait_for(proc: subprocess.Popen, path: Path, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged; stderr:\n{path.read_text() if path.exists() else ''}")


def test_run_subprocess_stops_cleanly_on_sigterm_with_notify(tmp_path: Path) -> None:
    """`run` on a looping WAV folder: READY, watchdog pings, JSON logs; SIGTERM gives STOPPING and exit 0."""
    cfg = _setup(tmp_path, loop=True)
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
        err = tmp_path / "stderr.log"
        with open(err, "w") as errf:
            proc = subprocess.Popen(
                [str(AGENT), "run", "--config", str(cfg)], stderr=errf, env=env, cwd=tmp_path
            )
            try:
                assert sock.recv(256) == b"READY=1"
                assert sock.recv(256) == b"WATCHDOG=1"
                _wait_for(proc, err, '"event": "telemetry"')
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
        messages = []
        sock.settimeout(0.5)
        try:
            while True:
                messages.append(sock.recv(256))
        except TimeoutError:
            pass
    assert b"STOPPING=1" in messages
    logs = _logs(err.read_text())
    events = [r["event"] for r in logs]
    assert events[0] == "starting" and events[-1] == "stopped"
    assert "started" in events and "backend chosen" in events
    telemetry = next(r for r in logs if r["event"] == "telemetry")
    assert telemetry["real_time_factor"] is not None and telemetry["energy"][-1]["method"].startswith(
        "estimated:"
    )
    assert all(set(r) >= {"ts", "level", "event"} for r in logs)


def test_sighup_reloads_and_without_bundle_runs_front_end_only(tmp_path: Path) -> None:
    """With no bundle installed the agent runs the front-end only; SIGHUP reloads, SIGINT stops it."""
    cfg = _setup(tmp_path, loop=True, install=False)
    err = tmp_path / "stderr.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen([str(AGENT), "run", "--config", str(cfg)], stderr=errf, cwd=tmp_path)
        try:
            _wait_for(proc, err, '"event": "started"')
            proc.send_signal(signal.SIGHUP)
            _wait_for(proc, err, '"event": "reloading"')
            text = _wait_for(proc, err, '"event": "started"', timeout=30)
            while text.count('"event": "started"') < 2:
                text = _wait_for(proc, err, '"event": "started"')
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    logs = _logs(err.read_text())
    assert any(r["event"].startswith("no usable bundle") for r in logs)
    assert [r["event"] for r in logs].count("started") == 2 and logs[-1]["event"] == "stopped"


def test_validate_config_exit_codes(tmp_path: Path) -> None:
    """--validate-config exits 0 for a valid file and 1 with the line of each problem otherwise."""
    cfg = _setup(tmp_path)
    ok = CliRunner().invoke(main, ["run", "--config", str(cfg), "--validate-config"])
    assert ok.exit_code == 0 and "valid" in ok.output
    cfg.write_text(cfg.read_text().replace("lanes = 4", "lanes = 0\nlane = 3"))
    bad = CliRunner().invoke(main, ["run", "--config", str(cfg), "--validate-config"])
    assert bad.exit_code == 1
    assert "detection.lanes" in bad.output and "detection.lane:" in bad.output and f"{cfg}:" in bad.output


def test_sd_notify_speaks_the_datagram_protocol(tmp_path: Path) -> None:
    """sd_notify sends to NOTIFY_SOCKET (no-op without it); the watchdog interval is half WATCHDOG_USEC."""
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(64) == b"READY=1"
    assert not sd_notify("READY=1", {})
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_classify_prints_one_decision_per_file(tmp_path: Path) -> None:
    """`classify --json` gives file, label, confidence and latency per file, via the real bundle reader."""
    _setup(tmp_path, install=False)
    files = sorted(str(p) for p in (tmp_path / "audio").iterdir())
    bundle = str(tmp_path / "kws-1.0.0.ekb")
    out = CliRunner().invoke(
        main, ["classify", "--bundle", bundle, "--trust", str(tmp_path / "release.pub"), *files, "--json"]
    )
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]  # notes (clipping, cut files) on stderr
    assert [r["file"] for r in rows] == files
    assert all(r["label"] in LABELS and 0 < r["confidence"] <= 1 and r["latency_ms"] > 0 for r in rows)
    (tmp_path / "other.pub").write_bytes(SigningKey.generate().public_key.to_pem())
    refused = CliRunner().invoke(
        main, ["classify", "--bundle", bundle, "--trust", str(tmp_path / "other.pub"), files[0]]
    )
    assert refused.exit_code == 1 and "Error" in refused.output


def test_telemetry_carries_a_loihi_opcount_estimate_on_the_emulator(tmp_path: Path) -> None:
    """With the emulator backend each report adds estimated:loihi2-opcount energy per inference."""
    agent = Agent(_setup(tmp_path, realtime=False), env={})
    agent.start()
    try:
        agent.loop()
        snap = agent.report()
    finally:
        agent.stop()
    assert snap["inferences"] > 0
    by_method = {e["method"]: e for e in snap["energy"]}
    estimate = by_method["estimated:loihi2-opcount"]
    assert estimate["mj_per_inference"] > 0 and "pJ/synop" in estimate["detail"]


def test_always_on_telemetry_counts_a_second_of_network_time_as_an_inference(tmp_path: Path) -> None:
    """An always-on bundle (num_steps = its 20 s training stretch) over 3 s of audio, one report at the end:
    one inference per second of audio, so energy per inference is there for every meter, next to energy per
    audio second (before, inferences were counted per 20 s and a report of a few seconds had none)."""
    spec = DetectionSpec("always_on", smoothing_ms=20.0, threshold=0.9, refractory_ms=300.0)
    agent = Agent(_setup(tmp_path, seconds=3.0, realtime=False, detection=spec, interval_s=3600), env={})
    agent.start()
    try:
        agent.loop()
        snap = agent.report()
        assert agent.pipeline.spotter is not None and agent.pipeline.spotter.mode == "always_on"
    finally:
        agent.stop()
    assert snap["detection_mode"] == "always_on" and snap["audio_s"] >= 2.9
    assert snap["inferences"] == int(snap["audio_s"] + 1e-6)
    for reading in snap["energy"]:
        assert reading["mj_per_inference"] is not None and reading["mj_per_audio_s"] is not None, reading
    estimate = {e["method"]: e for e in snap["energy"]}["estimated:loihi2-opcount"]
    per_second = estimate["mj_per_inference"] * snap["inferences"] / snap["audio_s"]
    assert per_second == pytest.approx(estimate["mj_per_audio_s"], rel=0.05)


def test_sliding_mode_serves_the_clip_bundle_on_one_network_with_a_quarter_of_the_lanes_work(
    tmp_path: Path,
) -> None:
    """The same per-utterance bundle and audio through the daemon with [detection] mode = "lanes" and
    "sliding": the report says the mode, and the sliding network's work per audio second (the emulator's own
    counts) is that of one network, about 1/4 of 4 lanes'."""
    snaps = {}
    for mode in ("lanes", "sliding"):
        folder = tmp_path / mode
        folder.mkdir()
        agent = Agent(_setup(folder, seconds=3.0, realtime=False, interval_s=3600, mode=mode), env={})
        agent.start()
        try:
            agent.loop()
            snaps[mode] = agent.report()
        finally:
            agent.stop()
    assert [snaps[m]["detection_mode"] for m in ("lanes", "sliding")] == ["lanes", "sliding"]
    lanes, sliding = (snaps[m]["work_per_audio_s"]["neuron_updates"] for m in ("lanes", "sliding"))
    assert 0 < sliding < 0.3 * lanes, (sliding, lanes)

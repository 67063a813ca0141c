"""The demo's live stage: a device agent streams held-out speech and reports to the fleet monitor over MQTT.

One machine plays every part, each as it runs in production: mosquitto (a local one from
:class:`~edgekws.toolkit.fleet.LocalBroker`, or the broker at ``--broker``), the fleet monitor (MQTT ingest
into SQLite, the dashboard and ``/metrics`` over HTTP) and ``edgekws-agent run`` as a separate process
with its own config, bundle store and telemetry outbox, reading a labelled keyword stream
(:mod:`edgekws.toolkit.data._stream`) in real time on the emulator backend. Afterwards the agent's
detections are scored against the stream's ground truth, and what the monitor received is compared with
what the agent logged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import Progress

from edgekws.packaging import atomic_write_text
from edgekws.toolkit._progress import bar_columns

DEVICE_ID, FLEET = "demo-01", "demo"
STREAM_MINUTES = 0.75
# keywords mostly, a few other words (the demo network has no "unknown" class, so those can false-accept)
STREAM_EVENTS = {"keyword": 0.7, "distractor": 0.15, "silence": 0.15}
STREAM_SNR_DB = (20.0, 35.0)
TELEMETRY_INTERVAL_S = 2.0


@dataclass
class LiveResult:
    summary: dict[str, Any]
    plots: dict[str, Path | None]


def _agent_config(folder: Path, stream_wav: Path, trust: Path, broker_url: str) -> Path:
    """The device's agent.toml (paths relative to ``folder``), the example config's keys with demo values."""
    text = f"""# written by edgekws demo: one device on this machine (see deploy/agent.example.toml)
[device]
id = "{DEVICE_ID}"
fleet = "{FLEET}"

[store]
dir = "bundles"
trusted_keys = [{json.dumps(str(trust.resolve()))}]

[[backends]]
type = "emulator"

[source]
type = "wav"
path = {json.dumps(str(stream_wav.resolve()))}
realtime = true
loop = false

[telemetry]
interval_s = {TELEMETRY_INTERVAL_S}

[telemetry.mqtt]
enabled = true
broker = "{broker_url}"
delivery = "monitor"
outbox = "telemetry-outbox.sqlite"

[logging]
level = "info"
format = "json"
"""
    path = folder / "agent.toml"
    path.write_text(text)
    return path


def agent_exe() -> str:
    """The ``edgekws-agent`` command installed beside this Python."""
    return str(Path(sys.executable).with_name("edgekws-agent"))


def _read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _screenshot(url: str, path: Path) -> Path | None:
    """The dashboard rendered by headless Chromium, or None where Chromium is not installed."""
    from edgekws.toolkit.fleet import headless_chromium

    with tempfile.TemporaryDirectory() as profile:
        command = headless_chromium(profile)
        if command is None:
            return None
        command += ["--hide-scrollbars", "--window-size=1280,420", f"--screenshot={path}", url]
        try:
            subprocess.run(command, capture_output=True, timeout=90, check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return path if path.exists() else None


def run_live_stage(
    out: Path,
    corpus: Path,
    bundle: Path,
    trust: Path,
    seed: int,
    broker_url: str | None = None,
    minutes: float = STREAM_MINUTES,
    connect_timeout_s: float = 15.0,
) -> LiveResult:
    """Stream the corpus' held-out test speakers through a real agent process reporting to a real monitor.

    Everything goes to ``out/live``; ``broker_url`` None starts a local mosquitto there.
    """
    from edgekws.agent import DetectionConfig
    from edgekws.agent.mqtt import BrokerUrl
    from edgekws.toolkit.data import StreamDetection, build_stream, score_stream, write_stream
    from edgekws.toolkit.fleet import (
        BrokerError,
        FleetMonitor,
        FleetServer,
        FleetStore,
        LocalBroker,
        MqttIngest,
    )

    live = out / "live"
    shutil.rmtree(live, ignore_errors=True)
    for sub in ("agent", "fleet"):
        (live / sub).mkdir(parents=True)
    stream = build_stream(corpus, "test", minutes, seed, STREAM_SNR_DB, event_p=STREAM_EVENTS)
    stream_wav = live / "test-stream.wav"
    truth_path = write_stream(stream, stream_wav)
    comp = stream.composition()
    click.echo(
        f"stream {stream_wav}: {comp['duration_s']} s, {comp['keywords']} keywords by "
        f"{comp['keyword_speakers']} unseen speakers, {comp['distractors']} other words, noise at "
        f"{STREAM_SNR_DB[0]:.0f}-{STREAM_SNR_DB[1]:.0f} dB SNR"
    )

    local: LocalBroker | None = None
    if broker_url is None:
        try:
            local = LocalBroker(live / "broker").start()
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        broker_url = local.url
    try:
        url = BrokerUrl.parse(broker_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    store = FleetStore(f"sqlite:///{(live / 'fleet' / 'fleet.db').resolve()}")
    monitor = FleetMonitor(store)
    ingest = MqttIngest(monitor, url, client_id=f"edgekws-demo-monitor-{os.getpid()}")
    server = FleetServer(monitor, "127.0.0.1", 0)
    agent_proc: subprocess.Popen[bytes] | None = None
    log_path = live / "agent" / "agent.log"
    try:
        ingest.start()
        server.start()
        if not ingest.connected.wait(connect_timeout_s):
            raise click.ClickException(
                f"the fleet monitor could not connect to {broker_url}: is the broker up?"
            )
        dashboard = f"http://127.0.0.1:{server.port}/"
        click.echo(f"broker {broker_url}; fleet monitor {dashboard} (store {live / 'fleet' / 'fleet.db'})")

        config = _agent_config(live / "agent", stream_wav, trust, broker_url)
        installed = subprocess.run(
            [agent_exe(), "bundle", "install", str(bundle), "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0:
            raise click.ClickException(f"edgekws-agent bundle install failed:\n{installed.stderr}")
        click.echo(f"installed {bundle.name} into the device's store {live / 'agent' / 'bundles'}")

        with log_path.open("wb") as log_file:
            agent_proc = subprocess.Popen(
                [agent_exe(), "run", "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        started = time.monotonic()
        deadline = started + stream.duration_s + 120.0
        with Progress(*bar_columns(info=True), console=Console(stderr=True)) as bar:
            job = bar.add_task("[bold]agent streaming", total=round(stream.duration_s), info="")
            while agent_proc.poll() is None:
                if time.monotonic() > deadline:
                    agent_proc.kill()
                    raise click.ClickException(f"the agent did not finish the stream; see {log_path}")
                time.sleep(0.5)
                dev = next(iter(monitor.snapshot()["devices"]), None)
                info = "monitor: waiting for the device"
                if dev is not None:
                    p50 = dev["latency_p50_ms"]
                    info = (
                        f"monitor: {dev['device']} {'online' if dev['online'] else 'offline'}, "
                        f"{dev['messages'].get('detection', 0)} detections"
                        + (f", p50 {p50:.1f} ms" if p50 is not None else "")
                    )
                bar.update(job, completed=min(time.monotonic() - started, stream.duration_s), info=info)
            bar.update(job, completed=round(stream.duration_s))
        if agent_proc.returncode != 0:
            raise click.ClickException(
                f"edgekws-agent run exited with {agent_proc.returncode}; see {log_path}"
            )

        records = _read_log(log_path)
        logged = [r for r in records if r.get("event") == "detection"]
        wait_until = time.monotonic() + 15.0  # the outbox drains at stop; the monitor commits in batches
        while time.monotonic() < wait_until:
            if store.count("detection", FLEET, DEVICE_ID) >= len(logged):
                break
            time.sleep(0.25)
        snapshot = monitor.snapshot()
        shot = _screenshot(dashboard, live / "fleet" / "dashboard.png")
    except BaseException:
        store.dispose()
        raise
    finally:
        if agent_proc is not None and agent_proc.poll() is None:
            agent_proc.kill()
        server.stop()
        ingest.stop()
        if local is not None:
            local.stop()
    received = {kind: store.count(kind, FLEET, DEVICE_ID) for kind in ("telemetry", "detection", "event")}
    store.dispose()
    atomic_write_text(live / "fleet" / "devices.json", json.dumps(snapshot, indent=2, default=str) + "\n")

    score = score_stream(
        stream.truth(),
        [StreamDetection(r["label"], float(r["audio_time_s"])) for r in logged],
        stream.duration_s,
    )
    atomic_write_text(live / "score.json", json.dumps(score.to_dict(with_detections=True), indent=2) + "\n")
    latencies = np.array([float(r["latency_ms"]) for r in logged])
    telemetry = [r for r in records if r.get("event") == "telemetry"]
    per_method: dict[str, list[float]] = {}
    for report in telemetry:
        for reading in report.get("energy") or []:
            if isinstance(reading.get("mj_per_inference"), int | float):
                per_method.setdefault(reading["method"], []).append(float(reading["mj_per_inference"]))
    device = next((d for d in snapshot["devices"] if d["device"] == DEVICE_ID), None)
    summary: dict[str, Any] = {
        "stream": {"wav": str(stream_wav), "truth": str(truth_path), **comp},
        "broker": broker_url if local is None else f"{broker_url} (local mosquitto)",
        "detection_settings": DetectionConfig().model_dump(exclude={"ignore_labels"}),  # the agent's defaults
        "score": {
            k: v
            for k, v in score.to_dict().items()
            if k
            in (
                "keywords",
                "hits",
                "misses",
                "recall",
                "false_accepts",
                "wrong_label",
                "spurious",
                "latency_ms",
            )
        },
        "agent": {
            "detections_logged": len(logged),
            "telemetry_reports": len(telemetry),
            "energy_mj_per_inference": {m: round(float(np.mean(v)), 6) for m, v in per_method.items()},
            "detection_latency_ms_p50": round(float(np.median(latencies)), 2) if latencies.size else None,
            "detection_latency_ms_p95": round(float(np.percentile(latencies, 95)), 2)
            if latencies.size
            else None,
        },
        "monitor": {
            "received": received,
            "all_detections_received": received["detection"] == len(logged),
            "device": None
            if device is None
            else {
                k: device[k]
                for k in (
                    "online",
                    "bundle_version",
                    "backend",
                    "latency_p50_ms",
                    "latency_p95_ms",
                    "energy_mj",
                    "energy_method",
                    "real_time_factor",
                    "queue_depth",
                )
            },
            "alerts": [a.get("message") for a in snapshot["alerts"]],
            "dashboard_png": None if shot is None else str(shot),
        },
    }
    click.echo(
        f"stream: {score.hits}/{score.keywords} keywords detected, {score.false_accepts} false accepts; "
        f"monitor received {received['detection']}/{len(logged)} detections and "
        f"{received['telemetry']} telemetry reports"
    )
    if device is not None:
        click.echo(
            f"monitor: {DEVICE_ID} backend {device['backend']}, latency p50 {device['latency_p50_ms']} ms, "
            f"energy {device['energy_mj']} mJ/inference ({device['energy_method']})"
        )
    plots: dict[str, Path | None] = {
        "stream timeline": _timeline(stream, score, live / "timeline.png"),
        "fleet dashboard": shot,
    }
    return LiveResult(summary, plots)


def _timeline(stream: Any, score: Any, path: Path) -> Path:
    """The stream's waveform, its keywords (truth) and the agent's detections coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(12, 4), sharex=True, height_ratios=(1, 1.2))
    step = max(1, stream.audio.size // 6000)
    t = np.arange(0, stream.audio.size, step) / stream.rate
    ax0.plot(t, stream.audio[::step], lw=0.4, color="0.3")
    ax0.set_ylabel("audio")
    for seg in stream.segments:
        if seg.kind == "keyword":
            ax1.axvspan(seg.start_s, seg.end_s, ymin=0.55, ymax=0.95, color="tab:blue", alpha=0.3)
            ax1.text(seg.start_s, 0.8, seg.label, fontsize=7, rotation=30)
        elif seg.kind == "distractor":
            ax1.axvspan(seg.start_s, seg.end_s, ymin=0.55, ymax=0.95, color="0.7", alpha=0.4)
            ax1.text(seg.start_s, 0.8, seg.label, fontsize=7, rotation=30, color="0.4")
    colors = {"hit": "tab:green", "repeat": "0.5", "wrong_label": "tab:red", "spurious": "tab:orange"}
    for outcome, color in colors.items():
        det = [d for d in score.detections if d.outcome == outcome]
        if det:
            ax1.scatter([d.time_s for d in det], [0.25] * len(det), color=color, label=outcome, marker="v")
            for d in det:
                ax1.text(d.time_s, 0.05, d.label, fontsize=6, color=color, rotation=30)
    ax1.set_ylim(0, 1.2)
    ax1.set_yticks([0.25, 0.8], ["detections", "spoken"])
    ax1.set_xlabel("stream time (s)")
    if any(d.outcome in colors for d in score.detections):
        ax1.legend(loc="upper right", fontsize=7, ncols=4)
    ax0.set_title(
        f"live stream: {score.hits}/{score.keywords} keywords hit, {score.false_accepts} false accepts"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

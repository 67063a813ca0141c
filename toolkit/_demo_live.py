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

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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


def _agent_config(folder: Path, stream_wav: Path, trust: Path, broker_url: str, mode: str = "auto") -> Path:
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

[detection]
mode = "{mode}"

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
    mode: str = "auto",
    compare: Sequence[tuple[Path, str]] = (),
) -> LiveResult:
    """Stream the corpus' held-out test speakers through a real agent process reporting to a real monitor.

    Everything goes to ``out/live``; ``broker_url`` None starts a local mosquitto there. The agent serves
    ``bundle`` with ``[detection] mode`` = ``mode`` (``auto``: the mode its model was trained for;
    ``sliding``: a per-utterance model on one never-reset network). ``compare`` lists ``(bundle, mode)``
    pairs that the agent's pipeline runs over the same stream offline, as fast as it can; all are scored
    alike (the summary's ``score`` and ``compare``, a list).
    """
    from edgekws.toolkit.data import StreamDetection, score_stream
    from edgekws.toolkit.fleet import FleetStore

    live = out / "live"
    shutil.rmtree(live, ignore_errors=True)
    for sub in ("agent", "fleet"):
        (live / sub).mkdir(parents=True)
    stream, stream_wav, truth_path = _stream(corpus, live, seed, minutes)
    store = FleetStore(f"sqlite:///{(live / 'fleet' / 'fleet.db').resolve()}")
    with contextlib.ExitStack() as stored:
        stored.callback(store.dispose)
        with contextlib.ExitStack() as running:  # broker, monitor, agent: stopped in reverse order
            fleet = _start_fleet(running, live, broker_url, store, connect_timeout_s)
            log_path = _run_agent(running, live, stream, stream_wav, bundle, trust, fleet, mode)
            records = _read_log(log_path)
            logged = [r for r in records if r.get("event") == "detection"]
            _await_delivery(store, len(logged))
            snapshot = fleet.monitor.snapshot()
            shot = _screenshot(fleet.dashboard, live / "fleet" / "dashboard.png")
        received = {kind: store.count(kind, FLEET, DEVICE_ID) for kind in ("telemetry", "detection", "event")}
    atomic_write_text(live / "fleet" / "devices.json", json.dumps(snapshot, indent=2, default=str) + "\n")
    score = score_stream(
        stream.truth(),
        [StreamDetection(r["label"], float(r["audio_time_s"])) for r in logged],
        stream.duration_s,
    )
    atomic_write_text(live / "score.json", json.dumps(score.to_dict(with_detections=True), indent=2) + "\n")
    broker = fleet.broker_url if not fleet.local else f"{fleet.broker_url} (local mosquitto)"
    stream_info = {"wav": str(stream_wav), "truth": str(truth_path), **stream.composition()}
    summary = _summary(stream_info, broker, score, records, received, snapshot, shot)
    others = []
    for other_bundle, other_mode in compare:
        other = _offline(other_bundle, trust, stream, other_mode)
        others.append(other)
        atomic_write_text(
            live / f"score_compare_{other['mode']}.json",
            json.dumps(other["scored"].to_dict(with_detections=True), indent=2),
        )
        click.echo(
            f"same stream, {other['mode']} ({other['bundle']}, offline): {other['score']['hits']}/"
            f"{other['score']['keywords']} keywords, {other['score']['false_accepts']} false accepts"
        )
    if others:
        summary["compare"] = [{k: v for k, v in o.items() if k != "scored"} for o in others]
    plots: dict[str, Path | None] = {
        "stream timeline": _timeline(stream, score, live / "timeline.png", others),
        "fleet dashboard": shot,
    }
    return LiveResult(summary, plots)


def _offline(bundle_path: Path, trust: Path, stream: Any, mode: str = "auto") -> dict[str, Any]:
    """A bundle through the agent's pipeline (emulator, agent defaults, ``[detection] mode``) over the
    stream in 20 ms chunks as fast as it runs: its score, mode, and backend work and energy estimate per
    audio second."""
    from edgekws.agent import AudioChunk, DetectionConfig, Pipeline, loihi_opcount_joules, opcounts_of
    from edgekws.agent.backends import EmulatorBackend
    from edgekws.packaging import open_bundle
    from edgekws.toolkit.data import StreamDetection, score_stream

    bundle = open_bundle(bundle_path, [str(trust)])
    pipeline = Pipeline.open(bundle, [EmulatorBackend.Config(type="emulator")], DetectionConfig(mode=mode))
    try:
        spotter = pipeline.spotter
        assert spotter is not None
        before = dict(spotter.backend.event_counts())
        n = stream.rate // 50
        found = []
        t0 = time.perf_counter()
        for i in range(0, stream.audio.size, n):
            chunk = AudioChunk(stream.audio[i : i + n], stream.rate, i / stream.rate, time.monotonic())
            found += [StreamDetection(d.label, d.audio_time_s) for d in spotter.process(chunk)]
        wall = time.perf_counter() - t0
        after = spotter.backend.event_counts()
        ops = opcounts_of({k: after[k] - before[k] for k in after}, stream.duration_s)
        scored = score_stream(stream.truth(), found, stream.duration_s)
        return {
            "bundle": pipeline.label,
            "mode": spotter.mode,
            "score": {k: v for k, v in scored.to_dict().items() if k in SCORE_KEYS},
            "real_time_factor": round(wall / stream.duration_s, 4),
            "work_per_audio_s": {
                "synops": round(ops.synops),
                "neuron_updates": round(ops.neuron_updates),
                "spikes": round(ops.spikes),
            },
            "loihi2_opcount_mj_per_audio_s": round(1e3 * loihi_opcount_joules(ops), 5),
            "scored": scored,
        }
    finally:
        pipeline.close()


def _stream(corpus: Path, live: Path, seed: int, minutes: float) -> tuple[Any, Path, Path]:
    """The labelled test stream (unseen speakers) as ``live/test-stream.wav`` and its ground truth."""
    from edgekws.toolkit.data import build_stream, write_stream

    stream = build_stream(corpus, "test", minutes, seed, STREAM_SNR_DB, event_p=STREAM_EVENTS)
    stream_wav = live / "test-stream.wav"
    truth_path = write_stream(stream, stream_wav)
    comp = stream.composition()
    click.echo(
        f"stream {stream_wav}: {comp['duration_s']} s, {comp['keywords']} keywords by "
        f"{comp['keyword_speakers']} unseen speakers, {comp['distractors']} other words, noise at "
        f"{STREAM_SNR_DB[0]:.0f}-{STREAM_SNR_DB[1]:.0f} dB SNR"
    )
    return stream, stream_wav, truth_path


@dataclass
class _Fleet:
    broker_url: str
    local: bool  # a mosquitto started here
    monitor: Any
    dashboard: str


def _start_fleet(
    running: contextlib.ExitStack, live: Path, broker_url: str | None, store: Any, connect_timeout_s: float
) -> _Fleet:
    """A broker (local unless ``broker_url``), the fleet monitor on it and its dashboard; each is stopped
    when ``running`` closes."""
    from edgekws.agent.mqtt import BrokerUrl
    from edgekws.toolkit.fleet import BrokerError, FleetMonitor, FleetServer, LocalBroker, MqttIngest

    local = broker_url is None
    if broker_url is None:
        try:
            broker = LocalBroker(live / "broker").start()
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        running.callback(broker.stop)
        broker_url = broker.url
    try:
        url = BrokerUrl.parse(broker_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    monitor = FleetMonitor(store)
    ingest = MqttIngest(monitor, url, client_id=f"edgekws-demo-monitor-{os.getpid()}")
    server = FleetServer(monitor, "127.0.0.1", 0)
    ingest.start()
    running.callback(ingest.stop)
    server.start()
    running.callback(server.stop)
    if not ingest.connected.wait(connect_timeout_s):
        raise click.ClickException(f"the fleet monitor could not connect to {broker_url}: is the broker up?")
    dashboard = f"http://127.0.0.1:{server.port}/"
    click.echo(f"broker {broker_url}; fleet monitor {dashboard} (store {live / 'fleet' / 'fleet.db'})")
    return _Fleet(broker_url, local, monitor, dashboard)


def _run_agent(
    running: contextlib.ExitStack,
    live: Path,
    stream: Any,
    stream_wav: Path,
    bundle: Path,
    trust: Path,
    fleet: _Fleet,
    mode: str = "auto",
) -> Path:
    """Install the bundle into a fresh device store and run ``edgekws-agent run`` (``[detection] mode``) over
    the stream in real time, with a progress bar of what the monitor sees; returns the agent's log."""
    config = _agent_config(live / "agent", stream_wav, trust, fleet.broker_url, mode)
    installed = subprocess.run(
        [agent_exe(), "bundle", "install", str(bundle), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.returncode != 0:
        raise click.ClickException(f"edgekws-agent bundle install failed:\n{installed.stderr}")
    click.echo(f"installed {bundle.name} into the device's store {live / 'agent' / 'bundles'}")
    log_path = live / "agent" / "agent.log"
    with log_path.open("wb") as log_file:
        agent = subprocess.Popen(
            [agent_exe(), "run", "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    running.callback(_kill_if_running, agent)
    started = time.monotonic()
    deadline = started + stream.duration_s + 120.0
    with Progress(*bar_columns(info=True), console=Console(stderr=True)) as bar:
        job = bar.add_task("[bold]agent streaming", total=round(stream.duration_s), info="")
        while agent.poll() is None:
            if time.monotonic() > deadline:
                agent.kill()
                raise click.ClickException(f"the agent did not finish the stream; see {log_path}")
            time.sleep(0.5)
            info = _monitor_line(next(iter(fleet.monitor.snapshot()["devices"]), None))
            bar.update(job, completed=min(time.monotonic() - started, stream.duration_s), info=info)
        bar.update(job, completed=round(stream.duration_s))
    if agent.returncode != 0:
        raise click.ClickException(f"edgekws-agent run exited with {agent.returncode}; see {log_path}")
    return log_path


def _kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()


def _monitor_line(dev: dict[str, Any] | None) -> str:
    """What the monitor knows about the device, for the progress bar."""
    if dev is None:
        return "monitor: waiting for the device"
    p50 = dev["latency_p50_ms"]
    return (
        f"monitor: {dev['device']} {'online' if dev['online'] else 'offline'}, "
        f"{dev['messages'].get('detection', 0)} detections"
        + (f", p50 {p50:.1f} ms" if p50 is not None else "")
    )


def _await_delivery(store: Any, detections: int, timeout_s: float = 15.0) -> None:
    """Wait until the store holds every detection the agent logged (the outbox drains at stop; the monitor
    commits in batches), or ``timeout_s``."""
    wait_until = time.monotonic() + timeout_s
    while time.monotonic() < wait_until and store.count("detection", FLEET, DEVICE_ID) < detections:
        time.sleep(0.25)


def _summary(
    stream_info: dict[str, Any],
    broker: str,
    score: Any,
    records: list[dict[str, Any]],
    received: dict[str, int],
    snapshot: dict[str, Any],
    shot: Path | None,
) -> dict[str, Any]:
    """The stage's summary (what the demo report shows), and its lines on the terminal."""
    from edgekws.agent import DetectionConfig

    logged = [r for r in records if r.get("event") == "detection"]
    latencies = np.array([float(r["latency_ms"]) for r in logged])
    telemetry = [r for r in records if r.get("event") == "telemetry"]
    per_method: dict[str, list[float]] = {}
    per_second: dict[str, list[float]] = {}
    work: dict[str, list[float]] = {}
    for report in telemetry:
        for reading in report.get("energy") or []:
            if isinstance(reading.get("mj_per_inference"), int | float):
                per_method.setdefault(reading["method"], []).append(float(reading["mj_per_inference"]))
            if isinstance(reading.get("mj_per_audio_s"), int | float):
                per_second.setdefault(reading["method"], []).append(float(reading["mj_per_audio_s"]))
        for key, value in (report.get("work_per_audio_s") or {}).items():
            work.setdefault(key, []).append(float(value))
    modes = {r.get("detection_mode") for r in telemetry} - {None}
    device = next((d for d in snapshot["devices"] if d["device"] == DEVICE_ID), None)
    summary: dict[str, Any] = {
        "stream": stream_info,
        "broker": broker,
        "detection_settings": DetectionConfig().model_dump(exclude={"ignore_labels"}),  # the agent's defaults
        "score": {k: v for k, v in score.to_dict().items() if k in SCORE_KEYS},
        "agent": {
            "detections_logged": len(logged),
            "telemetry_reports": len(telemetry),
            "detection_mode": next(iter(modes)) if len(modes) == 1 else None,
            "energy_mj_per_inference": {m: round(float(np.mean(v)), 6) for m, v in per_method.items()},
            "energy_mj_per_audio_s": {m: round(float(np.mean(v)), 6) for m, v in per_second.items()},
            "work_per_audio_s": {k: round(float(np.mean(v))) for k, v in work.items()},
            "detection_latency_ms_p50": round(float(np.median(latencies)), 2) if latencies.size else None,
            "detection_latency_ms_p95": round(float(np.percentile(latencies, 95)), 2)
            if latencies.size
            else None,
        },
        "monitor": {
            "received": received,
            "all_detections_received": received["detection"] == len(logged),
            "device": None if device is None else {k: device[k] for k in DEVICE_KEYS},
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
    return summary


SCORE_KEYS = (
    "keywords",
    "hits",
    "misses",
    "recall",
    "false_accepts",
    "wrong_label",
    "spurious",
    "latency_ms",
)
DEVICE_KEYS = (
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


def _timeline(stream: Any, score: Any, path: Path, others: Sequence[dict[str, Any]] = ()) -> Path:
    """The stream's waveform, its keywords (truth) and the agent's detections coloured by outcome (and the
    other modes' below them)."""
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
    rows = [(score, 0.45, "agent")]
    for i, other in enumerate(others):
        rows.append((other["scored"], 0.45 - 0.3 * (i + 1) / len(others), other["mode"]))
    for scored, y, _ in rows:
        for outcome, color in colors.items():
            det = [d for d in scored.detections if d.outcome == outcome]
            if det:
                label = outcome if y == rows[0][1] else None
                ax1.scatter([d.time_s for d in det], [y] * len(det), color=color, label=label, marker="v")
                for d in det:
                    ax1.text(d.time_s, y - 0.12, d.label, fontsize=6, color=color, rotation=30)
    ax1.set_ylim(0, 1.2)
    ticks = [r[1] for r in rows] + [0.8]
    ax1.set_yticks(ticks, [f"detections ({r[2]})" for r in rows] + ["spoken"])
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

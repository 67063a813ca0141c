"""The edge agent daemon: config in, audio through the spotter, detections and telemetry out.

It reads top to bottom. :meth:`Agent.start` lists the steps, registering how to undo each on an
``ExitStack``; :meth:`Agent.stop` closes it (reverse order, every step runs, failures logged); signal
handlers only set events (SIGTERM/SIGINT: stop, SIGHUP: reload,
which is a stop followed by a start, so a newly installed bundle or an edited config takes effect).

systemd integration (``Type=notify``, ``WatchdogSec=``) speaks the ``NOTIFY_SOCKET`` datagram protocol
directly: ``READY=1`` once audio flows, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the main loop
(so a stuck loop gets the unit restarted), ``RELOADING=1`` and ``STOPPING=1`` around those phases.

Logs are one JSON object per line on standard error (``{"ts", "level", "event", ...fields}``).

With ``[telemetry.mqtt] enabled = true`` the agent also keeps a :class:`DeviceTelemetry` link to the
fleet's broker: retained status (bundle, backend, group; ``offline`` as the Last Will), each periodic
:meth:`Agent.report` on ``telemetry``, each detection on ``detection``, lifecycle events on ``event``,
and the ``deploy``/``rollback`` commands, which run on the link's command thread (:class:`Deployer`):
the new pipeline (:class:`~edgekws.agent._pipeline.Pipeline`, the same one ``classify`` uses) is built
and health-checked next to the running one and swapped in between two chunks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from edgekws.agent._config import AgentConfig, ConfigError, ConfigProblem, load_config
from edgekws.agent._device_store import DeviceStore
from edgekws.agent._energy import EnergyMonitor, OpCountEstimator, detect_meters
from edgekws.agent._frontend import FrontendSpec
from edgekws.agent._metrics import RuntimeMetrics
from edgekws.agent._pipeline import Pipeline
from edgekws.agent._rollout import Deployer, DeployError, policy_from_config
from edgekws.agent._sources import AudioSource, make_source
from edgekws.agent._spotter import Spotter
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.packaging import Bundle

log = logging.getLogger("edgekws.agent")
#: The exit status when a worker thread died of an unexpected exception (BSD's EX_SOFTWARE): systemd's
#: ``Restart=on-failure`` starts a fresh process instead of leaving one alive without its MQTT link.
EXIT_THREAD_DIED = 70
THREAD_DEATH_GRACE_S = 10.0  # a clean stop after a thread died gets this long, then the process exits anyway


# -- systemd notify ----------------------------------------------------------------------------------


def sd_notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd's ``NOTIFY_SOCKET``; False when not under systemd."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed", extra={"fields": {"state": state, "error": str(exc)}})
            return False
    return True


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when no watchdog is set."""
    e = env if env is not None else os.environ
    usec = e.get("WATCHDOG_USEC")
    pid = e.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


# -- logging -----------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, event (the message) and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{record.levelname.lower():7s} {record.getMessage()}" + (f" {extra}" if extra else "")


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


def _info(event: str, **fields: Any) -> None:
    log.info(event, extra={"fields": fields})


# -- the agent ---------------------------------------------------------------------------------------


class Agent:
    """The device daemon. ``run()`` = ``start()``, the loop, ``stop()``; signals only set events."""

    def __init__(self, config_path: str | os.PathLike[str], *, env: dict[str, str] | None = None) -> None:
        self.config_path = Path(config_path)
        self.env = env if env is not None else dict(os.environ)
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.interrupt = threading.Event()  # ends the source iterator for either of the above
        self.detections: list[dict[str, Any]] = []
        self.link: DeviceTelemetry | None = None
        self._started = contextlib.ExitStack()  # what start() did, undone by stop() in reverse order
        self.started_steps: list[str] = []  # the names of those steps, for logs and tests
        self._reportable = False  # metrics and energy meters are up (a last report is possible)
        self._lock = threading.Lock()  # the loop holds it per chunk; a deploy holds it to swap pipelines
        self.exit_code = 0

    # signals only set events
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stop_requested.set()
        self.interrupt.set()

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.reload_requested.set()
        self.interrupt.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads; and a thread that dies of an exception ends the process
        (:meth:`thread_died`). For the process that runs the agent (``edgekws-agent run``)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        threading.excepthook = self.thread_died

    def thread_died(self, args: threading.ExceptHookArgs) -> None:
        """A worker thread (MQTT link, command worker, energy meter …) died of an unexpected exception:
        never keep running without it. Log it, stop cleanly with :data:`EXIT_THREAD_DIED`, and end the
        process with that status after :data:`THREAD_DEATH_GRACE_S` if the stop hangs."""
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        log.critical(
            "a worker thread died; stopping so that the service manager restarts the agent",
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
            extra={"fields": {"thread": name, "error": f"{args.exc_type.__name__}: {args.exc_value}"}},
        )
        self.exit_code = EXIT_THREAD_DIED
        self.request_stop()
        timer = threading.Timer(THREAD_DEATH_GRACE_S, os._exit, (EXIT_THREAD_DIED,))
        timer.daemon = True
        timer.start()

    # what the rest of the program reads
    @property
    def backend_name(self) -> str | None:
        return self.pipeline.backend_name

    @property
    def bundle_label(self) -> str | None:
        return self.pipeline.label

    @property
    def spotter(self) -> Spotter | None:
        return self.pipeline.spotter

    @property
    def frontend_spec(self) -> FrontendSpec:
        return self.pipeline.frontend_spec

    def start(self) -> None:
        """Load config, open the store, load the bundle, choose a backend, start metrics, MQTT, the source."""
        self.config: AgentConfig = load_config(self.config_path, check_files=True)
        setup_logging(self.config.logging.level, self.config.logging.format)
        _info(
            "starting",
            config=str(self.config_path),
            device=self.config.device.id,
            fleet=self.config.device.fleet,
        )
        self.store = DeviceStore(
            self.config.store.dir,
            self.config.store.trusted_keys,
            keep_versions=self.config.store.keep_versions,
        )
        device = self.config.device
        self.deployer = Deployer(
            self.store,
            policy_from_config(self.config.rollout, device.fleet, device.id, self.config.store.trusted_keys),
            open_pipeline=self._open_pipeline,
            swap=self._swap,
            event=self._event,
        )
        pipeline, pending = self.deployer.open_at_start()  # falls back to `previous` if current cannot load
        if pipeline is None:
            log.warning("no usable bundle; running the front-end only", extra={"fields": {}})
            pipeline = Pipeline(FrontendSpec())
        self.pipeline = pipeline
        self._on_stop("pipeline", lambda: self.pipeline.close())
        self.metrics = RuntimeMetrics(self.config.telemetry.window)
        meters, absent = detect_meters()
        for method, reason in absent.items():
            _info("energy meter absent", method=method, reason=reason)
        self.energy = EnergyMonitor(meters)
        self.opcounts = OpCountEstimator()
        self.energy.start()
        self._on_stop("energy", self.energy.stop)
        self._reportable = True
        if self.config.telemetry.mqtt.enabled:
            self.link = self._start_link()
            self._on_stop("mqtt", self._stop_link)
        for kind, level, detail in pending:  # what open_at_start found, now that the link is up
            self._event(kind, level, **detail)
        self.source: AudioSource = make_source(self.config.source, self.frontend_spec.sample_rate)
        self.source.open()
        self._on_stop("source", self.source.close)
        _info(
            "started",
            source=self.source.description,
            backend=self.backend_name,
            bundle=self.bundle_label,
            lanes=self.config.detection.lanes,
            mqtt=self.config.telemetry.mqtt.broker if self.link is not None else None,
        )
        sd_notify("READY=1", self.env)

    def _open_pipeline(self, bundle: Bundle) -> Pipeline:
        """A verified bundle with the configured backends and the spotter (:meth:`Pipeline.open`)."""
        return Pipeline.open(bundle, self.config.backends, self.config.detection)

    # -- MQTT ----------------------------------------------------------------------------------------

    def _start_link(self) -> DeviceTelemetry:
        """Create and start the device's MQTT link with the active bundle and backend."""
        mq = self.config.telemetry.mqtt
        password = None
        if mq.password_file is not None:
            try:
                password = mq.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    [
                        ConfigProblem(
                            str(self.config_path),
                            None,
                            "telemetry.mqtt.password_file",
                            f"cannot read a password from {mq.password_file} ({exc})",
                            "point it at a readable file whose first line is the password",
                        )
                    ]
                ) from exc
        link = DeviceTelemetry(
            mq,
            password=password,
            fleet=self.config.device.fleet,
            device=self.config.device.id,
            group=self.config.device.group,
            bundle=self.pipeline.bundle_ref,
            backend=self.backend_name,
            on_command=self.handle_command,
        )
        link.start()
        _info("mqtt link started", broker=mq.broker, outbox=str(mq.outbox))
        return link

    def _stop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.stop()

    def _event(self, kind: str, level: Literal["info", "warning", "error"] = "info", **detail: Any) -> None:
        """A lifecycle event: logged, and published on ``event`` when MQTT is on."""
        log.log(logging.getLevelName(level.upper()), kind, extra={"fields": detail})
        if self.link is not None:
            self.link.event(kind, level, **detail)

    # -- commands (on the MQTT link's command thread) ---------------------------------------------------

    def handle_command(self, command: Any) -> dict[str, Any] | None:
        """Run a ``deploy`` or ``rollback`` command (:class:`~edgekws.agent._rollout.Deployer`); the result
        goes into ``command.done``."""
        if command.type == "deploy":
            return self.deployer.deploy(command)
        if command.type == "rollback":
            return self.deployer.rollback(command.to_version, command_id=command.id, order=command.order)
        raise DeployError(
            f"{command.type!r} commands are not supported by this agent; edit agent.toml and send SIGHUP",
            stage="command",
        )

    def _swap(self, pipeline: Pipeline) -> None:
        """Make ``pipeline`` the running one (between two chunks) and tell the fleet."""
        with self._lock:
            old, self.pipeline = self.pipeline, pipeline
        old.close()
        if self.link is not None:
            self.link.set_bundle(pipeline.bundle_ref, pipeline.backend_name)
        if pipeline.frontend_spec.sample_rate != old.frontend_spec.sample_rate:
            self.request_reload()  # the source was opened at the old rate

    # -- the loop ------------------------------------------------------------------------------------

    def loop(self) -> None:
        """Audio chunks through the spotter until the source ends or a stop/reload is requested."""
        interval = self.config.telemetry.interval_s
        dog = watchdog_interval(self.env)
        next_report = time.monotonic() + interval
        next_dog = time.monotonic()
        windows_before = 0
        last: Spotter | None = None
        for chunk in self.source.chunks(self.interrupt):
            t0 = time.perf_counter()
            with self._lock:
                pipeline = self.pipeline
                spotter = pipeline.spotter
                if spotter is not last:
                    windows_before, last = 0, spotter
                if spotter is not None:
                    backend_before = spotter.backend_seconds
                    for det in spotter.process(chunk):
                        self.metrics.record_detection(det.latency_s)
                        doc = det.to_dict()
                        self.detections.append(doc)
                        _info("detection", **doc)
                        if self.link is not None:
                            self.link.detection(det.label, det.confidence, doc["latency_ms"])
                    self.metrics.record_backend_call(spotter.backend_seconds - backend_before)
                    self.metrics.record_inferences(spotter.inferences - windows_before)
                    windows_before = spotter.inferences
                else:
                    pipeline.frontend.process(chunk.samples)
            self.metrics.record_chunk(chunk.duration_s, time.perf_counter() - t0)
            now = time.monotonic()
            if dog is not None and now >= next_dog:
                sd_notify("WATCHDOG=1", self.env)
                next_dog = now + dog
            if now >= next_report:
                self.report()
                next_report = now + interval
        if not self.interrupt.is_set():
            _info("source ended")
            self.stop_requested.set()

    def report(self) -> dict[str, Any]:
        """One telemetry aggregate: logged, and published on ``telemetry`` when MQTT is on."""
        snap = self.metrics.snapshot()
        audio_s = snap["audio_s"] or 0.0
        readings = self.energy.report(snap["inferences"], audio_s)
        spotter = self.pipeline.spotter
        estimate = None
        if spotter is not None:
            estimate = self.opcounts.report(spotter.backend, snap["inferences"], audio_s)
        snap["energy"] = [r.to_dict() for r in (*readings, *([estimate] if estimate is not None else []))]
        snap["work_per_audio_s"] = self.opcounts.work_per_audio_s if estimate is not None else None
        snap["detection_mode"] = spotter.mode if spotter is not None else None
        snap["backend"] = self.backend_name
        snap["bundle"] = self.bundle_label
        _info("telemetry", **snap)
        if self.link is not None:
            self.link.telemetry(snap, interval_s=self.config.telemetry.interval_s)
        return snap

    def stop(self) -> None:
        """Undo what start() did, in reverse order; every step runs even if an earlier one fails."""
        sd_notify("STOPPING=1", self.env)
        started, self._started = self._started, contextlib.ExitStack()
        self._reportable = False
        self.started_steps = []
        started.close()

    def _on_stop(self, step: str, undo: Callable[[], None]) -> None:
        """Register how stop() undoes a start() step; a failing undo is logged and the others still run."""

        def logged() -> None:
            try:
                undo()
            except Exception:
                log.exception("stop step failed", extra={"fields": {"step": step}})

        self._started.callback(logged)
        self.started_steps.append(step)

    def run(self) -> int:
        """Start, loop until stopped (reloading on SIGHUP), stop. Returns the process exit status."""
        while True:
            try:
                self.start()
                self.loop()
            finally:
                if self._reportable:
                    try:
                        self.report()
                    except Exception:  # the last report is best effort; stopping is not
                        log.exception("the final telemetry report failed", extra={"fields": {}})
                self.stop()
            if self.reload_requested.is_set() and not self.stop_requested.is_set():
                self.reload_requested.clear()
                self.interrupt.clear()
                sd_notify("RELOADING=1", self.env)
                _info("reloading")
                continue
            _info("stopped", exit_code=self.exit_code)
            return self.exit_code

"""The edge agent daemon: config in, audio through the spotter, detections and telemetry out.

It reads top to bottom. :meth:`Agent.start` lists the steps; :meth:`Agent.stop` undoes them in
reverse under ``try/finally``; signal handlers only set events (SIGTERM/SIGINT: stop, SIGHUP: reload,
which is a stop followed by a start, so a newly installed bundle or an edited config takes effect).

systemd integration (``Type=notify``, ``WatchdogSec=``) speaks the ``NOTIFY_SOCKET`` datagram protocol
directly: ``READY=1`` once audio flows, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the main loop
(so a stuck loop gets the unit restarted), ``RELOADING=1`` and ``STOPPING=1`` around those phases.

Logs are one JSON object per line on standard error (``{"ts", "level", "event", ...fields}``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from edgekws.agent._config import AgentConfig, BackendConfig, load_config
from edgekws.agent._device_store import DeviceStore, StoreError
from edgekws.agent._energy import EnergyMonitor, detect_meters
from edgekws.agent._frontend import Frontend, FrontendSpec
from edgekws.agent._metrics import RuntimeMetrics
from edgekws.agent._sources import AudioSource, make_source
from edgekws.agent._spotter import Spotter, SpotterConfig

log = logging.getLogger("edgekws.agent")


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


# -- backends ----------------------------------------------------------------------------------------


class NoBackend(RuntimeError):
    """No configured backend can run the active bundle here; the message lists why for each."""


def _unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ImportError, FileNotFoundError]
    try:
        from edgekws.agent.backends import _base

        types.append(_base.BackendUnavailable)
    except ImportError:  # pragma: no cover - backends package under construction
        pass
    try:
        from edgekws.agent.backends import _onnx

        types.append(_onnx.BackendUnavailable)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _model_file(model_dir: Path, name: str, backend: str) -> Path:
    path = model_dir / "model" / name
    if not path.is_file():
        raise FileNotFoundError(f"the bundle has no model/{name}, which backend {backend!r} needs")
    return path


def build_backend(cfg: BackendConfig, model_dir: Path) -> tuple[Any, Callable[[], Any]]:
    """A backend of ``cfg.type`` for the bundle extracted in ``model_dir``, and a factory for more of it."""
    if cfg.type == "emulator":
        from edgekws.agent.backends._emulator import EmulatorBackend
        from edgekws.packaging._netx import read_netx

        net = read_netx(_model_file(model_dir, "netx.h5", cfg.type))
        return EmulatorBackend(net), lambda: EmulatorBackend(net)
    if cfg.type in ("lava-sim", "loihi2"):
        from edgekws.agent.backends import _lava

        netx = _model_file(model_dir, "netx.h5", cfg.type)
        cls = _lava.Loihi2Backend if cfg.type == "loihi2" else _lava.LavaBackend
        return cls(netx), lambda: cls(netx)
    if cfg.type == "onnx":
        from edgekws.agent.backends._onnx import OnnxBackend

        model = _model_file(model_dir, "model.onnx", cfg.type).read_bytes()

        def make() -> Any:
            return OnnxBackend(model, providers=cfg.providers, threads=cfg.threads)

        backend = make()
        if not backend.streaming:
            raise FileNotFoundError(
                "the bundle's model.onnx is the whole-sequence variant; streaming needs state"
            )
        return backend, make
    raise NoBackend(f"unknown backend type {cfg.type!r}")  # pragma: no cover - the config rejects it


def choose_backend(configs: list[BackendConfig], model_dir: Path) -> tuple[str, Any, Callable[[], Any]]:
    """The first configured backend that loads; each one skipped is logged with its reason."""
    reasons = []
    for cfg in configs:
        try:
            backend, factory = build_backend(cfg, model_dir)
        except _unavailable_types() as exc:
            reasons.append(f"{cfg.type}: {exc}")
            log.warning("backend unavailable", extra={"fields": {"backend": cfg.type, "reason": str(exc)}})
            continue
        return cfg.type, backend, factory
    raise NoBackend("no configured backend can run here:\n  " + "\n  ".join(reasons))


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
        self._undo: list[tuple[str, Callable[[], None]]] = []

    # signals only set events
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stop_requested.set()
        self.interrupt.set()

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.reload_requested.set()
        self.interrupt.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def start(self) -> None:
        """Load config, open the store, load the bundle, choose a backend, start metrics and the source."""
        self.config: AgentConfig = load_config(self.config_path)
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
        self._load_bundle()
        self._build_pipeline()
        self.metrics = RuntimeMetrics(self.config.telemetry.window)
        meters, absent = detect_meters()
        for method, reason in absent.items():
            _info("energy meter absent", method=method, reason=reason)
        self.energy = EnergyMonitor(meters)
        self.energy.start()
        self._undo.append(("energy", self.energy.stop))
        self.source: AudioSource = make_source(self.config.source, self.frontend_spec.sample_rate)
        self.source.open()
        self._undo.append(("source", self.source.close))
        _info(
            "started",
            source=self.source.description,
            backend=self.backend_name,
            bundle=self.bundle_label,
            lanes=self.config.detection.lanes,
        )
        sd_notify("READY=1", self.env)

    def _load_bundle(self) -> None:
        self.model_dir: Path | None = None
        try:
            bundle = self.store.open_active()
        except StoreError as exc:
            self.bundle = None
            self.bundle_label = None
            log.warning(
                "no usable bundle; running the front-end only", extra={"fields": {"reason": str(exc)}}
            )
            return
        self.bundle = bundle
        self.bundle_label = f"{bundle.manifest.name}-{bundle.manifest.version}"
        tmp = Path(tempfile.mkdtemp(prefix="edgekws-model-"))
        self.model_dir = bundle.extract(tmp / "model")
        self._undo.append(("model files", lambda: shutil.rmtree(tmp, ignore_errors=True)))
        _info("bundle loaded", bundle=self.bundle_label, sha256=bundle.sha256, keys=list(bundle.key_ids))

    def _build_pipeline(self) -> None:
        self.spotter: Spotter | None = None
        self.backend_name: str | None = None
        if self.bundle is None or self.model_dir is None:
            self.frontend_spec = FrontendSpec()
            self.frontend_only = Frontend(self.frontend_spec)
            return
        manifest = self.bundle.manifest
        self.frontend_spec = FrontendSpec.from_dict(dict(manifest.frontend))
        net = manifest.network_spec()
        self.backend_name, backend, factory = choose_backend(list(self.config.backends), self.model_dir)
        self.spotter = Spotter(
            self.frontend_spec,
            backend,
            list(manifest.labels),
            window_steps=net.num_steps if net else 1000,
            rule=net.readout if net else "exp_weighted_mean",
            config=SpotterConfig.from_config(self.config.detection),
            backend_factory=factory,
        )
        _info("backend chosen", backend=self.backend_name)

    def loop(self) -> None:
        """Audio chunks through the spotter until the source ends or a stop/reload is requested."""
        interval = self.config.telemetry.interval_s
        dog = watchdog_interval(self.env)
        next_report = time.monotonic() + interval
        next_dog = time.monotonic()
        windows_before = 0
        for chunk in self.source.chunks(self.interrupt):
            t0 = time.perf_counter()
            if self.spotter is not None:
                backend_before = self.spotter.backend_seconds
                for det in self.spotter.process(chunk):
                    self.metrics.record_detection(det.latency_s)
                    doc = det.to_dict()
                    self.detections.append(doc)
                    _info("detection", **doc)
                self.metrics.record_backend_call(self.spotter.backend_seconds - backend_before)
                self.metrics.record_inferences(self.spotter.windows_scored - windows_before)
                windows_before = self.spotter.windows_scored
            else:
                self.frontend_only.process(chunk.samples)
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
        """Log one telemetry aggregate (MQTT publishing comes in the next issue)."""
        snap = self.metrics.snapshot()
        snap["energy"] = [r.to_dict() for r in self.energy.report(snap["inferences"])]
        snap["backend"] = self.backend_name
        snap["bundle"] = self.bundle_label
        _info("telemetry", **snap)
        return snap

    def stop(self) -> None:
        """Undo what start() did, in reverse order; every step runs even if an earlier one fails."""
        sd_notify("STOPPING=1", self.env)
        undo, self._undo = self._undo, []
        self._run_undo(undo)

    def _run_undo(self, undo: list[tuple[str, Callable[[], None]]]) -> None:
        if not undo:
            return
        name, fn = undo.pop()
        try:
            fn()
        except Exception:
            log.exception("stop step failed", extra={"fields": {"step": name}})
        finally:
            self._run_undo(undo)

    def run(self) -> int:
        """Start, loop until stopped (reloading on SIGHUP), stop. Returns the process exit status."""
        while True:
            try:
                self.start()
                self.loop()
            finally:
                if hasattr(self, "metrics") and hasattr(self, "energy"):
                    self.report()
                self.stop()
            if self.reload_requested.is_set() and not self.stop_requested.is_set():
                self.reload_requested.clear()
                self.interrupt.clear()
                sd_notify("RELOADING=1", self.env)
                _info("reloading")
                continue
            _info("stopped")
            return 0

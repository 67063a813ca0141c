"""HTTP face of the fleet monitor (standard library ``http.server``): Prometheus ``/metrics``, a JSON API
(``/api/devices``) and a small self-refreshing dashboard (``/``); plus the rich terminal table of
``edgekws fleet watch``.

The exposition format is written by hand (text format 0.0.4): a few gauges and counters with
``fleet``/``device`` labels, label values escaped as the format requires; a sample whose value is not a
finite number is left out, so one device can never make the scrape fail.

Authentication: with a token, every path but ``/healthz`` needs ``Authorization: Bearer TOKEN`` (Prometheus'
``authorization``) or HTTP Basic with the token as password (any user name: what a browser prompts for).
:func:`check_bind` refuses to listen beyond the loopback interface without one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import math
import shutil
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekws.toolkit.fleet._dashboard import DASHBOARD
from edgekws.toolkit.fleet._monitor import FleetMonitor

log = logging.getLogger("edgekws.fleet")
#: What /healthz reports: (healthy, the state of each part).
Health = Callable[[], tuple[bool, dict[str, str]]]
TOKEN_MIN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_bind(host: str, token: str | None) -> None:
    """Refuse (ValueError saying how to fix it) to serve beyond localhost without a token, or a weak token."""
    if token is not None and len(token) < TOKEN_MIN_CHARS:
        raise ValueError(
            f"the access token has {len(token)} characters; use at least {TOKEN_MIN_CHARS} random ones "
            "(e.g. `openssl rand -hex 32`)"
        )
    if token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to serve the fleet's data on {host} without authentication: give a token with "
            "--token-file FILE or the environment variable EDGEKWS_FLEET_TOKEN (clients then send "
            "'Authorization: Bearer TOKEN'), or listen on 127.0.0.1 behind your own proxy"
        )


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: Any) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items() if v is not None)
    return "{" + inner + "}" if inner else ""


def prometheus_text(snapshot: dict[str, Any]) -> str:
    """The Prometheus text exposition of a :meth:`FleetMonitor.snapshot`."""
    lines: list[str] = []

    def family(
        name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], float | int | None]]
    ) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = _finite(value)
            if number is not None:
                lines.append(f"{name}{_labels(**labels)} {number!r}")

    counts = snapshot["counts"]
    family(
        "edgekws_fleet_messages_total",
        "counter",
        "MQTT messages ingested after de-duplication, by kind.",
        [({"kind": k}, v) for k, v in counts["messages"].items()],
    )
    family(
        "edgekws_fleet_duplicates_total",
        "counter",
        "Messages dropped as duplicates (same message id).",
        [({}, counts["duplicates"])],
    )
    family(
        "edgekws_fleet_invalid_total", "counter", "Messages ignored as invalid.", [({}, counts["invalid"])]
    )
    devices = snapshot["devices"]
    ids = [{"fleet": d["fleet"], "device": d["device"]} for d in devices]
    family(
        "edgekws_device_info",
        "gauge",
        "Bundle and backend of each device (value 1).",
        [
            (
                {
                    **i,
                    "bundle": (d["bundle"] or {}).get("name"),
                    "bundle_version": d["bundle_version"],
                    "backend": d["backend"],
                },
                1,
            )
            for i, d in zip(ids, devices, strict=True)
        ],
    )
    family(
        "edgekws_device_online",
        "gauge",
        "1 while the device's retained status is online.",
        [(i, None if d["online"] is None else int(d["online"])) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_last_seen_timestamp_seconds",
        "gauge",
        "Unix time of the device's last message.",
        [(i, d["last_seen"]) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_inference_latency_ms",
        "gauge",
        "Inference latency percentiles over the device's window (milliseconds).",
        [
            ({**i, "quantile": q}, d[f"latency_p{p}_ms"])
            for i, d in zip(ids, devices, strict=True)
            for p, q in (("50", "0.5"), ("95", "0.95"), ("99", "0.99"))
        ],
    )
    family(
        "edgekws_device_energy_mj_per_inference",
        "gauge",
        "Energy per inference in millijoules; `method` says measured:<meter> or estimated:<model>.",
        [({**i, "method": d["energy_method"]}, d["energy_mj"]) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_energy_mj_per_audio_second",
        "gauge",
        "Energy per second of audio listened to in millijoules (the cost of listening, comparable between "
        "lanes and always-on devices); `method` as above.",
        [
            ({**i, "method": d["energy_method"]}, d["energy_mj_per_audio_s"])
            for i, d in zip(ids, devices, strict=True)
        ],
    )
    family(
        "edgekws_device_detections_per_minute",
        "gauge",
        "Keyword detections in the last 60 s.",
        [(i, d["detections_per_minute"]) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_real_time_factor",
        "gauge",
        "Processing time over audio time (lower is faster).",
        [(i, d["real_time_factor"]) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_queue_depth",
        "gauge",
        "Messages waiting in the device's outbox at its last report.",
        [(i, d["queue_depth"]) for i, d in zip(ids, devices, strict=True)],
    )
    family(
        "edgekws_device_dropped_total",
        "counter",
        "Messages the device reported it had to drop, by kind.",
        [({**i, "kind": k}, n) for i, d in zip(ids, devices, strict=True) for k, n in d["dropped"].items()],
    )
    family(
        "edgekws_device_messages_total",
        "counter",
        "Messages ingested from the device, by kind.",
        [({**i, "kind": k}, n) for i, d in zip(ids, devices, strict=True) for k, n in d["messages"].items()],
    )
    active: dict[str, int] = {}
    for a in snapshot["alerts"]:
        active[a["kind"]] = active.get(a["kind"], 0) + 1
    family(
        "edgekws_fleet_alerts_active",
        "gauge",
        "Active alerts by kind.",
        [({"kind": k}, n) for k, n in sorted(active.items())],
    )
    return "\n".join(lines) + "\n"


class FleetServer:
    """``/`` dashboard, ``/api/devices`` JSON, ``/metrics`` Prometheus text, ``/healthz``.

    ``token``: required from clients (module docstring); without one the server listens on loopback only
    (:func:`check_bind`). ``health``: what ``/healthz`` reports (e.g. :meth:`MqttIngest.health`).
    """

    def __init__(
        self,
        monitor: FleetMonitor,
        host: str = "127.0.0.1",
        port: int = 9108,
        *,
        token: str | None = None,
        health: Health | None = None,
    ) -> None:
        check_bind(host, token)
        self.monitor = monitor
        handler = _handler(monitor, token, health or (lambda: (True, {})))
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="edgekws-fleet-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _authorized(header: str | None, token: str) -> bool:
    """``Bearer TOKEN``, or ``Basic`` with TOKEN as the password (compared in constant time)."""
    scheme, _, value = (header or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.encode(), token.encode())


def _handler(monitor: FleetMonitor, token: str | None, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/healthz":  # open (probes), and says nothing about the fleet
                    ok, parts = health()
                    self._send(200 if ok else 503, json.dumps({"ok": ok, **parts}), "application/json")
                elif token is not None and not _authorized(self.headers.get("Authorization"), token):
                    self._send(
                        401,
                        "authentication required: send 'Authorization: Bearer TOKEN'\n",
                        "text/plain",
                        {"WWW-Authenticate": 'Basic realm="edgekws fleet", charset="UTF-8"'},
                    )
                elif path == "/metrics":
                    text = prometheus_text(monitor.snapshot())
                    self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/api/devices":
                    _, parts = health()
                    body = json.dumps({**monitor.snapshot(), "health": parts}, allow_nan=False)
                    self._send(200, body, "application/json")
                elif path in ("/", "/index.html"):
                    self._send(200, DASHBOARD, "text/html; charset=utf-8")
                else:
                    self._send(404, "not found: try /, /api/devices or /metrics\n", "text/plain")
            except Exception:  # a bug: answer 500 rather than drop the connection, and say so in the log
                log.exception("the fleet monitor's HTTP server failed on %s", path)
                self._send(500, "internal error: see the monitor's log\n", "text/plain")

        def _send(self, code: int, body: str, ctype: str, headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet; the monitor logs what matters
            return

    return Handler


def device_table(snapshot: dict[str, Any]) -> Table:
    """The rich table ``edgekws fleet watch`` redraws."""
    now = snapshot["time"]
    table = Table(title=f"edgekws fleet · {len(snapshot['devices'])} devices · {time.strftime('%H:%M:%S')}")
    for col in (
        "fleet",
        "device",
        "status",
        "bundle",
        "backend",
        "det/min",
        "p50 ms",
        "p95 ms",
        "mJ/inf",
        "mJ/audio s",
        "method",
        "queue",
        "seen",
    ):
        numeric = col in ("det/min", "p50 ms", "p95 ms", "mJ/inf", "mJ/audio s", "queue")
        table.add_column(col, justify="right" if numeric else "left")

    def fmt(v: Any, digits: int = 3) -> str:
        return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    for d in snapshot["devices"]:
        status = "[green]online[/]" if d["online"] else ("[red]offline[/]" if d["online"] is False else "?")
        bundle = f"{d['bundle'].get('name')} {d['bundle'].get('version')}" if d["bundle"] else "–"
        seen = f"{now - d['last_seen']:.0f} s" if d["last_seen"] else "–"
        table.add_row(
            d["fleet"],
            d["device"],
            status,
            bundle,
            d["backend"] or "–",
            str(d["detections_per_minute"]),
            fmt(d["latency_p50_ms"]),
            fmt(d["latency_p95_ms"]),
            fmt(d["energy_mj"], 4),
            fmt(d["energy_mj_per_audio_s"], 4),
            d["energy_method"] or "–",
            fmt(d["queue_depth"]),
            seen,
        )
    for a in snapshot["alerts"]:
        table.caption = (table.caption + "\n" if table.caption else "") + f"[red]alert[/] {a['message']}"
    return table


def headless_chromium(profile: str | Path) -> list[str] | None:
    """The command line that renders a page in headless Chromium (add ``--dump-dom`` or ``--screenshot=…``
    and the URL), or None where Chromium is not installed. ``profile`` is an empty folder for its state."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
    ]

"""HTTP face of the fleet monitor (standard library ``http.server``): Prometheus ``/metrics``, a JSON API
(``/api/devices``) and a small self-refreshing dashboard (``/``); plus the rich terminal table of
``edgekws fleet watch``.

The exposition format is written by hand (text format 0.0.4): a few gauges and counters with
``fleet``/``device`` labels, label values escaped as the format requires.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekws.toolkit.fleet._dashboard import DASHBOARD
from edgekws.toolkit.fleet._monitor import FleetMonitor


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
            if value is not None:
                lines.append(f"{name}{_labels(**labels)} {float(value)!r}")

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
    """``/`` dashboard, ``/api/devices`` JSON, ``/metrics`` Prometheus text, ``/healthz``."""

    def __init__(self, monitor: FleetMonitor, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.monitor = monitor
        handler = _handler(monitor)
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


def _handler(monitor: FleetMonitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(
                    200, prometheus_text(monitor.snapshot()), "text/plain; version=0.0.4; charset=utf-8"
                )
            elif path == "/api/devices":
                self._send(200, json.dumps(monitor.snapshot()), "application/json")
            elif path in ("/", "/index.html"):
                self._send(200, DASHBOARD, "text/html; charset=utf-8")
            elif path == "/healthz":
                self._send(200, "ok\n", "text/plain")
            else:
                self._send(404, "not found: try /, /api/devices or /metrics\n", "text/plain")

        def _send(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
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
        "method",
        "queue",
        "seen",
    ):
        table.add_column(
            col, justify="right" if col in ("det/min", "p50 ms", "p95 ms", "mJ/inf", "queue") else "left"
        )

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

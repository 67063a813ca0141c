"""The fleet monitor: subscribes to ``edgekws/v1/+/+/#``, de-duplicates by message id, keeps each device's
state and writes what it saw to the store.

:class:`FleetMonitor` is the logic (``ingest(topic, payload)``, no network); :class:`MqttIngest` is the
MQTT 5 connection around it, an explicit reconnect loop like the device's. The monitor's identity comes
from the topic (which the broker's ACL binds to the device's login), never from the payload.

With a store, the monitor acknowledges a message only after the batch that holds it is committed: the
PUBACK to the broker (with a persistent session -- fixed client id, session expiry -- so a monitor
restart loses nothing: the broker re-delivers what was not acknowledged) and a ``cmd/ack`` to the device,
which only then deletes it from its outbox (so a broker crash loses nothing either: the device re-sends).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields
from typing import Any

from edgekws.agent.mqtt import (
    KINDS,
    MONITOR_SESSION_EXPIRY_S,
    QUEUED_KINDS,
    AckCommand,
    Backoff,
    BrokerUrl,
    ClientOptions,
    MqttSession,
    SubscribeRefused,
    TlsFiles,
    command_topic,
    device_subscription,
    keep_connected,
    parse_topic,
    schema_name,
)
from edgekws.toolkit.fleet._alerts import AlertBook, AlertRules, regression
from edgekws.toolkit.fleet._store import FleetStore, payload_text

log = logging.getLogger("edgekws.fleet")


# ---- device state ----------------------------------------------------------------------------------------
@dataclass
class DeviceState:
    """What the monitor knows about one device."""

    fleet: str
    device: str
    online: bool | None = None
    group: str | None = None  # rollout group, from the device's status
    bundle: dict[str, Any] | None = None
    backend: str | None = None
    boot: str | None = None
    last_seen: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    energy_mj: float | None = None
    energy_method: str | None = None
    real_time_factor: float | None = None
    queue_depth: int | None = None
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    dropped: dict[str, int] = field(default_factory=dict)  # what the device reported it had to drop
    duplicates: int = 0
    out_of_order: int = 0
    detections_recent: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    history: deque[tuple[str | None, float | None, float | None, str | None]] = field(
        default_factory=lambda: deque(maxlen=200)
    )  # (bundle version, latency key value, energy mJ, energy method) per telemetry report

    @property
    def bundle_version(self) -> str | None:
        return None if self.bundle is None else self.bundle.get("version")

    def detections_per_minute(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(1 for t in self.detections_recent if now - 60.0 < t <= now + 5.0)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("detections_recent", "history")
        }
        out["messages"], out["dropped"] = dict(self.messages), dict(self.dropped)
        out["bundle"] = None if self.bundle is None else dict(self.bundle)
        out["bundle_version"] = self.bundle_version
        out["detections_per_minute"] = self.detections_per_minute(now)
        return out


def _latency_key(lat: dict[str, Any]) -> float | None:
    for key in ("p95", "p99", "p50"):
        if isinstance(lat.get(key), int | float):
            return float(lat[key])
    return None


def _pick_energy(readings: list[Any]) -> tuple[float | None, str | None]:
    """A measured figure if there is one, else the first estimate."""
    valid = [
        r for r in readings if isinstance(r, dict) and isinstance(r.get("mj_per_inference"), int | float)
    ]
    valid.sort(key=lambda r: not str(r.get("method", "")).startswith("measured:"))
    if not valid:
        return None, None
    return float(valid[0]["mj_per_inference"]), str(valid[0].get("method"))


class FleetMonitor:
    """Device states from a stream of (topic, payload); thread-safe."""

    def __init__(
        self,
        store: FleetStore | None = None,
        rules: AlertRules | None = None,
        dedup_window: int = 4096,
    ) -> None:
        self.store = store
        self.rules = rules or AlertRules()
        self.alerts = AlertBook(on_change=lambda a: log.warning("alert %s: %s", a.kind, a.message))
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.messages_total = dict.fromkeys(KINDS, 0)  # after de-duplication
        self.duplicates_total = 0
        self.invalid_total = 0
        self._dedup_window = dedup_window
        self._seen: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._last_seq: dict[tuple[str, str], tuple[str, int]] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in QUEUED_KINDS}
        self._dirty: set[tuple[str, str]] = set()
        self._acks: dict[tuple[str, str, str], list[int]] = {}  # (fleet, device, epoch) -> seqs to ack
        self._lock = threading.Lock()
        self._handlers = {
            "status": self._on_status,
            "telemetry": self._on_telemetry,
            "detection": self._on_detection,
            "event": self._on_event,
        }
        if store is not None:
            for state in store.device_states():
                d = self._device(state["fleet"], state["device"])
                for key in (
                    "online",
                    "group",
                    "bundle",
                    "backend",
                    "boot",
                    "last_seen",
                    "latency_p50_ms",
                    "latency_p95_ms",
                    "latency_p99_ms",
                    "energy_mj",
                    "energy_method",
                ):
                    setattr(d, key, state.get(key))

    def _device(self, fleet: str, device: str) -> DeviceState:
        key = (fleet, device)
        if key not in self.devices:
            self.devices[key] = DeviceState(fleet, device)
        return self.devices[key]

    def ingest(self, topic: str, payload: bytes | bytearray, now: float | None = None) -> bool:
        """Apply one MQTT message; False when it is a duplicate or invalid (it is then counted only)."""
        now = time.time() if now is None else now
        where = parse_topic(topic)
        if where is None:
            self.invalid_total += 1
            return False
        fleet, device, kind = where.fleet, where.device, where.kind
        if kind == "cmd":
            return False  # commands to devices (ours or an operator's): not device output
        try:
            msg = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            msg = None
        if kind not in KINDS or not isinstance(msg, dict) or msg.get("schema") != schema_name(kind):
            with self._lock:
                self.invalid_total += 1
            log.warning("ignored an invalid message on %s", topic)
            return False
        with self._lock:
            key = (fleet, device)
            d = self._device(fleet, device)
            msg_id = str(msg.get("id", ""))
            seen = self._seen.setdefault(key, OrderedDict())
            self._note_ack(fleet, device, msg_id)  # duplicates too: the device may have missed our ack
            if msg_id in seen:
                d.duplicates += 1
                self.duplicates_total += 1
                return False
            seen[msg_id] = None
            if len(seen) > self._dedup_window:
                seen.popitem(last=False)
            self._check_order(key, d, msg_id)
            d.messages[kind] += 1
            self.messages_total[kind] += 1
            d.last_seen = now
            handler = self._handlers.get(kind)
            if handler is not None:  # a kind the monitor does not act on is counted only
                handler(d, msg, now)
            self._dirty.add(key)
            return True

    def _note_ack(self, fleet: str, device: str, msg_id: str) -> None:
        if self.store is None:
            return  # an in-memory monitor (fleet watch) only watches; it never takes messages off devices
        epoch, _, seq = msg_id.partition(":")
        if seq.isdigit():
            self._acks.setdefault((fleet, device, epoch), []).append(int(seq))

    def take_acks(self) -> list[tuple[str, str, str, list[tuple[int, int]]]]:
        """(fleet, device, epoch, seq ranges) of messages stored since the last call; call after flush()."""
        with self._lock:
            acks, self._acks = self._acks, {}
        out = []
        for (fleet, device, epoch), seqs in acks.items():
            ranges: list[tuple[int, int]] = []
            for seq in sorted(set(seqs)):
                if ranges and seq == ranges[-1][1] + 1:
                    ranges[-1] = (ranges[-1][0], seq)
                else:
                    ranges.append((seq, seq))
            out.append((fleet, device, epoch, ranges))
        return out

    def _check_order(self, key: tuple[str, str], d: DeviceState, msg_id: str) -> None:
        epoch, _, seq = msg_id.partition(":")
        if not seq.isdigit():
            return
        last = self._last_seq.get(key)
        if last is not None and last[0] == epoch and int(seq) < last[1]:
            d.out_of_order += 1
        else:
            self._last_seq[key] = (epoch, int(seq))

    def _on_status(self, d: DeviceState, msg: dict[str, Any], now: float) -> None:
        d.online = msg.get("state") == "online"
        d.group = msg.get("group", d.group)
        d.boot = msg.get("boot", d.boot)
        d.backend = msg.get("backend", d.backend)
        self._set_bundle(d, msg.get("bundle"))
        if d.online:
            self.alerts.resolve(d.fleet, d.device, "offline")
        else:
            why = msg.get("reason") or "offline"
            self.alerts.raise_(d.fleet, d.device, "offline", f"{d.fleet}/{d.device} went offline ({why})")

    def _set_bundle(self, d: DeviceState, bundle: Any) -> None:
        if isinstance(bundle, dict) and bundle != d.bundle:
            if d.bundle is not None:
                log.info("%s/%s: bundle %s -> %s", d.fleet, d.device, d.bundle_version, bundle.get("version"))
            d.bundle = bundle

    def _on_telemetry(self, d: DeviceState, msg: dict[str, Any], now: float) -> None:
        self._set_bundle(d, msg.get("bundle"))
        d.backend = msg.get("backend", d.backend)
        if d.online is None:
            d.online = True
        lat = (msg.get("latency_ms") or {}).get("inference") or {}
        d.latency_p50_ms, d.latency_p95_ms, d.latency_p99_ms = lat.get("p50"), lat.get("p95"), lat.get("p99")
        d.energy_mj, d.energy_method = _pick_energy(msg.get("energy") or [])
        d.real_time_factor = msg.get("real_time_factor")
        d.queue_depth = (msg.get("queue") or {}).get("depth")
        for kind, n in (msg.get("dropped") or {}).items():
            d.dropped[kind] = d.dropped.get(kind, 0) + int(n)
        d.history.append((d.bundle_version, _latency_key(lat), d.energy_mj, d.energy_method))
        self._check_regressions(d)
        self._rows["telemetry"].append(
            {
                **self._row(d, msg, now),
                "bundle_version": d.bundle_version,
                "backend": d.backend,
                "latency_p50_ms": d.latency_p50_ms,
                "latency_p95_ms": d.latency_p95_ms,
                "energy_mj": d.energy_mj,
                "energy_method": d.energy_method,
            }
        )

    def _check_regressions(self, d: DeviceState) -> None:
        version, h = d.bundle_version, list(d.history)
        i = len(h)
        while i > 0 and h[i - 1][0] == version:
            i -= 1
        if i == 0:
            return  # no earlier version in the window
        if len(h) - i == 1:  # first report of a new rollout: judge it afresh
            for kind in ("latency_regression", "energy_regression"):
                self.alerts.resolve(d.fleet, d.device, kind)
        previous = h[i - 1][0]
        j = i
        while j > 0 and h[j - 1][0] == previous:
            j -= 1
        before, after = h[j:i], h[i:]
        lat = regression(
            [h[1] for h in before if h[1] is not None], [h[1] for h in after if h[1] is not None], self.rules
        )
        if lat is not None:
            self.alerts.raise_(
                d.fleet,
                d.device,
                "latency_regression",
                f"{d.fleet}/{d.device}: inference latency {lat.before:.3g} -> {lat.after:.3g} ms "
                f"(+{100 * lat.change:.0f} %) after rollout {previous} -> {version}",
            )
        method = after[-1][3]
        e_before = [h[2] for h in before if h[2] is not None and h[3] == method]
        e_after = [h[2] for h in after if h[2] is not None and h[3] == method]
        en = regression(e_before, e_after, self.rules)
        if en is not None:
            self.alerts.raise_(
                d.fleet,
                d.device,
                "energy_regression",
                f"{d.fleet}/{d.device}: energy {en.before:.3g} -> {en.after:.3g} mJ/inference "
                f"({method}, +{100 * en.change:.0f} %) after rollout {previous} -> {version}",
            )

    def _on_detection(self, d: DeviceState, msg: dict[str, Any], now: float) -> None:
        ts = msg.get("ts")
        d.detections_recent.append(float(ts) if isinstance(ts, int | float) else now)
        self._rows["detection"].append(
            {**self._row(d, msg, now), "label": str(msg.get("label")), "confidence": msg.get("confidence")}
        )

    def _on_event(self, d: DeviceState, msg: dict[str, Any], now: float) -> None:
        kind, level = str(msg.get("kind")), msg.get("level")
        if level == "error":
            detail = json.dumps(msg.get("detail", {}))[:200]
            self.alerts.raise_(d.fleet, d.device, "error", f"{d.fleet}/{d.device}: {kind} {detail}")
        if kind == "bundle.activated":
            self.alerts.resolve(d.fleet, d.device, "error")
        self._rows["event"].append({**self._row(d, msg, now), "kind": kind, "level": level})

    @staticmethod
    def _row(d: DeviceState, msg: dict[str, Any], now: float) -> dict[str, Any]:
        ts = msg.get("ts")
        return {
            "fleet": d.fleet,
            "device": d.device,
            "msg_id": str(msg.get("id")),
            "ts": float(ts) if isinstance(ts, int | float) else now,
            "payload": payload_text(msg),
        }

    def flush(self) -> None:
        """Write what was ingested since the last flush to the store (one transaction)."""
        with self._lock:
            rows, self._rows = self._rows, {kind: [] for kind in QUEUED_KINDS}
            states = [self.devices[k].to_dict() for k in self._dirty]
            self._dirty = set()
            changed, self.alerts.pending = self.alerts.pending, []
        if self.store is not None:
            self.store.write(rows, states, [a.to_dict() for a in changed])

    def snapshot(self) -> dict[str, Any]:
        """Every device's state, the active alerts and the counters (what /api/devices serves)."""
        now = time.time()
        with self._lock:
            return {
                "time": now,
                "devices": [
                    d.to_dict(now) for d in sorted(self.devices.values(), key=lambda d: (d.fleet, d.device))
                ],
                "alerts": [a.to_dict() for a in self.alerts.active.values()],
                "counts": {
                    "messages": dict(self.messages_total),
                    "duplicates": self.duplicates_total,
                    "invalid": self.invalid_total,
                },
            }


# ---- the MQTT side ---------------------------------------------------------------------------------------
class MqttIngest:
    """Keeps a subscription to every device's messages alive and feeds a :class:`FleetMonitor`."""

    def __init__(
        self,
        monitor: FleetMonitor,
        broker: BrokerUrl,
        *,
        client_id: str = "edgekws-fleet-monitor",
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        flush_interval_s: float = 0.25,
        session_expiry_s: int = MONITOR_SESSION_EXPIRY_S,
        backoff: Backoff | None = None,
    ) -> None:
        self.monitor, self.broker = monitor, broker
        self.options = ClientOptions(
            broker=broker,
            client_id=client_id,
            tls=TlsFiles(ca_file, cert_file, key_file),
            clean_start=False,
            session_expiry_s=session_expiry_s,
            manual_ack=monitor.store is not None,
        )
        self.flush_interval_s = flush_interval_s
        self.connected = threading.Event()  # set only after a successful CONNACK and SUBACK
        self._backoff = backoff or Backoff(0.2, 10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unacked: list[tuple[int, int]] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgekws-fleet-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        """connect -> CONNACK -> subscribe -> I/O + batched commit-then-PUBACK until it drops; back off."""
        keep_connected(lambda: self.options, self._session, self._stop, self._backoff, log, self._attach)
        self.monitor.flush()

    def _attach(self, session: MqttSession) -> None:
        session.client.on_message = self._on_message

    def _session(self, session: MqttSession) -> None:
        filters = device_subscription()
        try:
            try:
                session.subscribe(filters)
            except SubscribeRefused as exc:  # the monitor's login lacks read access: retry, loudly
                log.error("fleet monitor: %s; check the broker's ACL for %s", exc, self.options.client_id)
                self._stop.wait(self._backoff.next_delay())
                return
            self.connected.set()
            log.info("fleet monitor subscribed to %s on %s", ", ".join(filters), session.where)
            next_flush = time.monotonic() + self.flush_interval_s
            while not self._stop.is_set():
                alive = session.loop(0.05)
                if time.monotonic() >= next_flush or not alive:
                    self._commit(session)
                    next_flush = time.monotonic() + self.flush_interval_s
                if not alive:
                    log.warning("fleet monitor lost the broker %s; reconnecting", session.where)
                    return
            self._commit(session)
        finally:
            self.connected.clear()
            self._unacked = []  # not acknowledged: the broker re-delivers them (persistent session)

    def _commit(self, session: MqttSession) -> None:
        """Write the batch, then acknowledge its messages (so nothing acknowledged is unwritten): PUBACK to
        the broker, and ``cmd/ack`` to each device so it can delete them from its outbox."""
        self.monitor.flush()
        for mid, qos in self._unacked:
            session.client.ack(mid, qos)
        self._unacked = []
        for fleet, device, epoch, ranges in self.monitor.take_acks():
            ack = AckCommand(
                schema="edgekws.cmd/1",
                id=f"ack-{uuid.uuid4().hex[:12]}",
                ts=round(time.time(), 3),
                type="ack",
                epoch=epoch,
                ranges=ranges,
            )
            session.publish(
                command_topic(fleet, device, "ack"), json.dumps(ack.payload(), separators=(",", ":"))
            )

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.monitor.ingest(msg.topic, msg.payload)
        if self.monitor.store is not None and msg.qos > 0:
            self._unacked.append((msg.mid, msg.qos))

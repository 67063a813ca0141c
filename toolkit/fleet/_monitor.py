"""The fleet monitor: subscribes to ``edgekws/v1/+/+/#``, validates every message, de-duplicates by message
id, keeps each device's state and writes what it saw to the store.

:class:`FleetMonitor` is the logic (``ingest(topic, payload)``, no network); :class:`MqttIngest` is the
MQTT 5 connection around it, an explicit reconnect loop like the device's. The monitor's identity comes
from the topic (which the broker's ACL binds to the device's login), never from the payload.

Every message is checked against its model before it touches any state (``parse_device_message``: the
topic's ids, size, nesting, strict types, finite numbers). A message that fails -- or that a handler fails
on -- is counted, logged with its device and topic, parked in the store's ``dead_letters`` table and
acknowledged like any other, so one bad message never stops ingest and is never re-delivered forever.
A device's rollout group is the fleet registry's (``device_groups``, set by the operator), never the group
its own status claims (shown as ``reported_group``).

With a store, the monitor acknowledges a message only after the batch that holds it is committed: the
PUBACK to the broker (with a persistent session -- fixed client id, session expiry -- so a monitor
restart loses nothing: the broker re-delivers what was not acknowledged) and a ``cmd/ack`` to the device,
which only then deletes it from its outbox (so a broker crash loses nothing either: the device re-sends).

Several monitors share the ingest through an MQTT 5 shared subscription (``MqttIngest(shared_group=)``,
``FleetMonitor(shared=True)``, one PostgreSQL store): each writes what it learnt and the store merges it
(:func:`merge_state`), counts a message once whichever monitor stored it, keeps one active alert per key, and
serves the whole fleet to every monitor (:meth:`FleetMonitor.snapshot`); a monitor that dies is noticed by
its silence in the store's ``monitors`` table and its broker session adopted by another
(:meth:`MqttIngest._adopt`). docs/mqtt.md, "Several monitors".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import typing
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from edgekws.agent.mqtt import (
    ID_MAX,
    ID_PATTERN,
    INT_MAX,
    KINDS,
    MONITOR_SESSION_EXPIRY_S,
    QUEUED_KINDS,
    AckCommand,
    ActiveBundle,
    Backoff,
    BrokerUrl,
    ClientOptions,
    ConnectFailed,
    DetectionMessage,
    EventMessage,
    InvalidMessage,
    MqttSession,
    StatusMessage,
    SubscribeRefused,
    TelemetryMessage,
    TlsFiles,
    command_topic,
    device_subscription,
    keep_connected,
    parse_device_message,
    parse_topic,
)
from edgekws.toolkit.fleet._alerts import Alert, AlertBook, AlertRules, regression
from edgekws.toolkit.fleet._store import FleetStore, StoreError, dead_letter

log = logging.getLogger("edgekws.fleet")


# ---- device state ----------------------------------------------------------------------------------------
@dataclass
class DeviceState:
    """What the monitor knows about one device."""

    fleet: str
    device: str
    online: bool | None = None
    group: str | None = None  # rollout group, from the fleet registry (the operator's assignment)
    reported_group: str | None = None  # the group the device's own status names (shown, never trusted)
    bundle: dict[str, Any] | None = None
    backend: str | None = None
    boot: str | None = None
    last_seen: float | None = None
    status_ts: float | None = None  # device time of the status that set online/reported_group/boot
    status_reason: str | None = None  # why it went offline, as that status says
    telemetry_ts: float | None = None  # … of the telemetry report that set the latency/energy/queue fields
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    energy_mj: float | None = None  # per inference (a window of one network's work)
    energy_mj_per_audio_s: float | None = None  # per second of audio listened to: the cost of listening
    energy_method: str | None = None  # of both figures (one reading)
    real_time_factor: float | None = None
    queue_depth: int | None = None
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    dropped: dict[str, int] = field(default_factory=dict)  # what the device reported it had to drop
    duplicates: int = 0
    out_of_order: int = 0
    invalid: int = 0  # messages refused (dead letters)
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


def _latency_key(p50: float | None, p95: float | None, p99: float | None) -> float | None:
    return next((v for v in (p95, p99, p50) if v is not None), None)


def _pick_energy(readings: list[Any]) -> tuple[float | None, float | None, str | None]:
    """(mJ per inference, mJ per audio second, method) of one reading: a measured one if there is one, else
    the first estimate; a reading with both figures before one with either."""
    valid = sorted(
        (r for r in readings if r.mj_per_inference is not None or r.mj_per_audio_s is not None),
        key=lambda r: (
            not r.method.startswith("measured:"),
            r.mj_per_inference is None or r.mj_per_audio_s is None,
        ),
    )
    if not valid:
        return None, None, None
    r = valid[0]
    per_audio_s = None if r.mj_per_audio_s is None else float(r.mj_per_audio_s)
    return None if r.mj_per_inference is None else float(r.mj_per_inference), per_audio_s, r.method


#: What a restarted monitor takes over from the store's device states.
_RESTORED = (
    "online",
    "reported_group",
    "bundle",
    "backend",
    "boot",
    "last_seen",
    "status_ts",
    "status_reason",
    "telemetry_ts",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "energy_mj",
    "energy_mj_per_audio_s",
    "energy_method",
)


def _restorers() -> dict[str, TypeAdapter[Any]]:
    """A validator per restored field, of its DeviceState type (a bundle as the contract's ActiveBundle):
    a stored value of another type or a non-finite number (an older monitor wrote them) is refused."""
    hints = typing.get_type_hints(DeviceState)
    strict = ConfigDict(allow_inf_nan=False)
    return {
        key: TypeAdapter(ActiveBundle | None) if key == "bundle" else TypeAdapter(hints[key], config=strict)
        for key in _RESTORED
    }


_RESTORE = _restorers()


class _Throttle:
    """At most one log line per key every ``every_s`` seconds (a device sending garbage at line rate must
    not flood the log); says how many were held back."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[Any, tuple[float, int]] = {}

    def allow(self, key: Any, now: float) -> int | None:
        """None: stay quiet; else how many lines were held back since the last one."""
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self.every_s:
            self._last[key] = (last, held + 1)
            return None
        if len(self._last) > 10000:
            self._last.clear()
        self._last[key] = (now, 0)
        return held


def _seq_of(msg_id: str) -> tuple[str, int] | None:
    """(epoch, seq) of a queued message id ``<epoch>:<seq>`` with seq in 64 bits; None for other ids."""
    epoch, _, seq = msg_id.partition(":")
    if seq.isascii() and seq.isdigit() and len(seq) <= 19 and int(seq) <= INT_MAX:
        return epoch, int(seq)
    return None


def _log_alert(alert: Alert) -> None:
    if alert.resolved is None:
        log.warning("alert %s: %s", alert.kind, alert.message)
    else:
        log.info("alert %s resolved: %s/%s", alert.kind, alert.fleet, alert.device)


#: The counters of a device state that several monitors add up (each sends what it gained).
_SUMMED = ("duplicates", "out_of_order", "invalid")
_SUMMED_MAPS = ("messages", "dropped")
#: Fields that come with a status message, and those that come with a telemetry report (newest wins).
_STATUS_FIELDS = ("online", "reported_group", "boot", "status_ts", "status_reason")
_TELEMETRY_FIELDS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "energy_mj",
    "energy_mj_per_audio_s",
    "energy_method",
    "real_time_factor",
    "queue_depth",
    "telemetry_ts",
)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT_MAX else 0


def _count_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: _count(v) for k, v in value.items() if isinstance(k, str) and len(k) <= 64}


def _counters(d: DeviceState) -> dict[str, Any]:
    return {
        **{k: getattr(d, k) for k in _SUMMED},
        "messages": dict(d.messages),
        "dropped": dict(d.dropped),
    }


def _subtract(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """What the counters gained since ``before``."""
    before = before or {}
    out: dict[str, Any] = {k: now[k] - before.get(k, 0) for k in _SUMMED}
    for key in _SUMMED_MAPS:
        old = before.get(key, {})
        out[key] = {k: v - old.get(k, 0) for k, v in now[key].items() if v != old.get(k, 0)}
    return out


def _clean_state(stored: Any) -> dict[str, Any] | None:
    """A stored device state as /api/devices may serve it: ids of the documented pattern, each restored field
    of its type (else None), counters as non-negative 64-bit integers; None when it cannot be a device."""
    if not isinstance(stored, dict):
        return None
    fleet, device = stored.get("fleet"), stored.get("device")
    if not all(isinstance(v, str) and re.match(ID_PATTERN, v) and len(v) <= ID_MAX for v in (fleet, device)):
        return None
    out = DeviceState(str(fleet), str(device)).to_dict()
    for key, adapter in _RESTORE.items():
        try:
            value = adapter.validate_python(stored.get(key))
        except ValidationError:
            value = None
        out[key] = value.model_dump() if isinstance(value, BaseModel) else value
    group = stored.get("group")
    out["group"] = group if isinstance(group, str) and re.match(ID_PATTERN, group) else None
    out["bundle_version"] = None if out["bundle"] is None else out["bundle"].get("version")
    for key in _SUMMED:
        out[key] = _count(stored.get(key))
    out["messages"] = {**dict.fromkeys(KINDS, 0), **_count_map(stored.get("messages"))}
    out["dropped"] = _count_map(stored.get("dropped"))
    return out


def _newest(ts: Any) -> float:
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else float("-inf")


def merge_state(stored: Any, sent: dict[str, Any], inserted: dict[str, int]) -> dict[str, Any]:
    """The device state to store, from the stored one (None: a new device) and one monitor's ``sent`` view
    (``DeviceState.to_dict()`` plus ``delta``, what its counters gained since its last write, and ``batch``,
    its queued messages per kind in this write), given how many of those the store ``inserted`` as new.

    Several monitors each see part of a device's messages: the status fields come from the newest status,
    the telemetry fields from the newest report, the bundle from the newer of the two, ``last_seen`` is the
    latest; counters add up, queued messages counted by what the store inserted (the rest are duplicates).
    When the view carried a status, ``alerts`` raises or resolves the device's offline alert by the newest
    status (in the same transaction, the device's row locked: monitors cannot undo each other's)."""
    base = _clean_state(stored) if stored else None
    view = {k: v for k, v in sent.items() if k not in ("delta", "batch", "detections_per_minute")}
    if base is None:
        base = {**view, **dict.fromkeys(_SUMMED, 0), "messages": dict.fromkeys(KINDS, 0), "dropped": {}}
    out = dict(view)
    if _newest(base.get("status_ts")) > _newest(view.get("status_ts")):
        out.update({k: base.get(k) for k in _STATUS_FIELDS})
    if _newest(base.get("telemetry_ts")) > _newest(view.get("telemetry_ts")):
        out.update({k: base.get(k) for k in _TELEMETRY_FIELDS})

    def newest(state: dict[str, Any]) -> float:
        return max(_newest(state.get("status_ts")), _newest(state.get("telemetry_ts")))

    if newest(base) > newest(view) or view.get("bundle") is None:
        out["bundle"], out["backend"] = base.get("bundle"), base.get("backend") or view.get("backend")
    out["bundle_version"] = None if out.get("bundle") is None else out["bundle"].get("version")
    out["last_seen"] = max(_newest(base.get("last_seen")), _newest(view.get("last_seen")))
    if out["last_seen"] == float("-inf"):
        out["last_seen"] = None
    delta, batch = sent.get("delta", {}), sent.get("batch", {})
    repeats = sum(n - inserted.get(kind, 0) for kind, n in batch.items())
    for key in _SUMMED:
        out[key] = min(
            INT_MAX, base.get(key, 0) + delta.get(key, 0) + (repeats if key == "duplicates" else 0)
        )
    messages = dict(base.get("messages", {}))
    for kind in KINDS:
        gained = inserted.get(kind, 0) if kind in QUEUED_KINDS else delta.get("messages", {}).get(kind, 0)
        messages[kind] = min(INT_MAX, messages.get(kind, 0) + gained)
    out["messages"] = messages
    dropped = dict(base.get("dropped", {}))
    for kind, n in delta.get("dropped", {}).items():
        dropped[kind] = min(INT_MAX, dropped.get(kind, 0) + n)
    out["dropped"] = dropped
    if delta.get("messages", {}).get("status"):  # a status came: the offline alert follows the newest one
        who = f"{out['fleet']}/{out['device']}"
        if out.get("online") is False:
            why = out.get("status_reason") or "offline"
            out["alerts"] = [Alert(out["fleet"], out["device"], "offline", f"{who} went offline ({why})")]
        elif out.get("online") is True:
            out["alerts"] = [Alert(out["fleet"], out["device"], "offline", "", resolved=time.time())]
    return out


class FleetMonitor:
    """Device states from a stream of (topic, payload); thread-safe."""

    def __init__(
        self,
        store: FleetStore | None = None,
        rules: AlertRules | None = None,
        dedup_window: int = 4096,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.rules = rules or AlertRules()
        self.shared = shared and store is not None
        # with a store, an alert is told (logged) once the store took it: once, however many monitors raise it
        self.alerts = AlertBook(on_change=None if store is not None else _log_alert, shared=self.shared)
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.messages_total = dict.fromkeys(KINDS, 0)  # after de-duplication
        self.duplicates_total = 0
        self.invalid_total = 0  # refused messages (dead letters), whatever their topic
        self._dedup_window = dedup_window
        self._seen: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._last_seq: dict[tuple[str, str], tuple[str, int]] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in QUEUED_KINDS}
        self._dead: list[dict[str, Any]] = []  # dead letters not yet written
        self._dirty: set[tuple[str, str]] = set()
        self._acks: dict[tuple[str, str, str], list[int]] = {}  # (fleet, device, epoch) -> seqs to ack
        self._committed_acks: dict[tuple[str, str, str], list[int]] = {}  # … of messages now in the store
        self._flushed: dict[tuple[str, str], dict[str, Any]] = {}  # counters as last sent to the store
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()  # one flush at a time (ingest and an adopted session's drain)
        self._store_snapshot: tuple[float, dict[str, Any]] | None = None  # (monotonic time, snapshot)
        self.snapshot_max_age_s = 1.0
        self._quiet = _Throttle()
        self._groups_read = float("-inf")
        self.registry_refresh_s = 5.0
        self._handlers = {
            "status": self._on_status,
            "telemetry": self._on_telemetry,
            "detection": self._on_detection,
            "event": self._on_event,
        }
        if store is not None:
            for state in store.device_states():
                self._restore(state)
            self._read_groups(time.monotonic())

    def _restore(self, stored: dict[str, Any]) -> None:
        """One device's state as the store holds it (ids of the documented pattern only, values checked)."""
        state = _clean_state(stored)
        if state is None:
            fleet, device = stored.get("fleet"), stored.get("device")
            log.warning(
                "ignored a stored device state with invalid ids %s/%s", ascii(fleet)[:60], ascii(device)[:60]
            )
            return
        d = self._device(state["fleet"], state["device"])
        for key in _RESTORED:  # what /api/devices could not serve (NaN, a string for a number, …) is None
            setattr(d, key, state[key])

    def _read_groups(self, now: float) -> None:
        """The fleet registry's groups onto the device states (registered devices show even before their first
        message); read again every ``registry_refresh_s`` (another monitor or the operator may change it)."""
        if self.store is None or now - self._groups_read < self.registry_refresh_s:
            return
        self._groups_read = now
        try:
            groups = self.store.group_assignments()
        except Exception as exc:  # the store is down: keep what we had, try again later
            log.warning("cannot read the fleet registry: %s", exc)
            return
        with self._lock:
            for key, d in self.devices.items():
                d.group = groups.get(key)
            for (fleet, device), group in groups.items():
                self._device(fleet, device).group = group

    def _device(self, fleet: str, device: str) -> DeviceState:
        key = (fleet, device)
        if key not in self.devices:
            self.devices[key] = DeviceState(fleet, device)
        return self.devices[key]

    def ingest(self, topic: str, payload: bytes | bytearray, now: float | None = None) -> bool:
        """Apply one MQTT message; False when it is a duplicate (counted) or was refused (counted, logged and
        parked as a dead letter). Never raises because of what a message holds."""
        now = time.time() if now is None else now
        parsed = parse_topic(topic)
        if parsed is not None and parsed.kind == "cmd":
            return False  # commands to devices (ours or an operator's): not device output
        try:
            where, msg = parse_device_message(topic, bytes(payload))
        except InvalidMessage as exc:
            self._refuse(topic, bytes(payload), exc, now)
            return False
        with self._lock:
            try:
                return self._apply(where.fleet, where.device, where.kind, msg, now)
            except Exception as exc:  # a bug of ours: park the message and go on with the next
                log.exception(
                    "the monitor failed on a message from %s/%s on %s", where.fleet, where.device, topic
                )
                self._refuse(
                    topic,
                    bytes(payload),
                    InvalidMessage([f"the monitor failed on it: {exc!r}"], where, msg.id),
                    now,
                )
                return False

    def _apply(self, fleet: str, device: str, kind: str, msg: Any, now: float) -> bool:
        key = (fleet, device)
        d = self._device(fleet, device)
        msg_id = msg.id
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

    def _refuse(self, topic: str, payload: bytes, exc: InvalidMessage, now: float) -> None:
        """Count, log (throttled per device) and park a refused message; acknowledge it like any other."""
        where = exc.topic
        with self._lock:
            self.invalid_total += 1
            if where is not None and (where.fleet, where.device) in self.devices:
                self.devices[(where.fleet, where.device)].invalid += 1
            if self.store is not None:
                self._dead.append(
                    dead_letter(
                        topic,
                        payload,
                        str(exc),
                        fleet=None if where is None else where.fleet,
                        device=None if where is None else where.device,
                        kind=None if where is None else where.kind,
                        received=now,
                    )
                )
                if where is not None and exc.message_id is not None:  # off the device's outbox too
                    self._note_ack(where.fleet, where.device, exc.message_id)
        source = (where.fleet, where.device) if where is not None else "topic"
        held = self._quiet.allow(source, now)
        if held is not None:
            log.warning(
                "refused a message from %s on %s (%d bytes): %s%s%s",
                "an invalid topic" if where is None else f"{where.fleet}/{where.device}",
                ascii(topic)[1:-1][:200],
                len(payload),
                str(exc)[:500],
                "; parked as a dead letter" if self.store is not None else "",
                f" ({held} more from it not logged)" if held else "",
            )

    def _note_ack(self, fleet: str, device: str, msg_id: str) -> None:
        if self.store is None:
            return  # an in-memory monitor (fleet watch) only watches; it never takes messages off devices
        seq = _seq_of(msg_id)
        if seq is not None:
            self._acks.setdefault((fleet, device, seq[0]), []).append(seq[1])

    def take_acks(self) -> list[tuple[str, str, str, list[tuple[int, int]]]]:
        """(fleet, device, epoch, seq ranges) of the messages that flush() committed since the last call."""
        with self._lock:
            acks, self._committed_acks = self._committed_acks, {}
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
        parsed = _seq_of(msg_id)
        if parsed is None:
            return
        last = self._last_seq.get(key)
        if last is not None and last[0] == parsed[0] and parsed[1] < last[1]:
            d.out_of_order += 1
        else:
            self._last_seq[key] = parsed

    def _on_status(self, d: DeviceState, msg: StatusMessage, now: float) -> None:
        d.status_ts = msg.ts
        d.online = msg.state == "online"
        d.status_reason = msg.reason
        d.reported_group = msg.group
        d.boot = msg.boot
        d.backend = msg.backend
        self._set_bundle(d, msg.bundle)
        if self.shared:
            return  # the offline alert follows the newest status of any monitor: merge_state decides
        if d.online:
            self.alerts.resolve(d.fleet, d.device, "offline")
        else:
            why = msg.reason or "offline"
            self.alerts.raise_(d.fleet, d.device, "offline", f"{d.fleet}/{d.device} went offline ({why})")

    def _set_bundle(self, d: DeviceState, bundle: ActiveBundle | None) -> None:
        if bundle is None:
            return
        new = bundle.model_dump()
        if new != d.bundle:
            if d.bundle is not None:
                log.info("%s/%s: bundle %s -> %s", d.fleet, d.device, d.bundle_version, bundle.version)
            d.bundle = new

    def _on_telemetry(self, d: DeviceState, msg: TelemetryMessage, now: float) -> None:
        self._set_bundle(d, msg.bundle)
        d.backend = msg.backend
        d.telemetry_ts = msg.ts
        if d.online is None:
            d.online = True
        lat = msg.latency_ms.get("inference")
        d.latency_p50_ms, d.latency_p95_ms, d.latency_p99_ms = (
            (lat.p50, lat.p95, lat.p99) if lat is not None else (None, None, None)
        )
        d.energy_mj, d.energy_mj_per_audio_s, d.energy_method = _pick_energy(msg.energy)
        d.real_time_factor = msg.real_time_factor
        d.queue_depth = msg.queue.depth
        for kind, n in msg.dropped.items():
            d.dropped[kind] = min(INT_MAX, d.dropped.get(kind, 0) + n)
        latency = _latency_key(d.latency_p50_ms, d.latency_p95_ms, d.latency_p99_ms)
        d.history.append((d.bundle_version, latency, d.energy_mj, d.energy_method))
        self._check_regressions(d)
        self._rows["telemetry"].append(
            {
                **self._row(d, msg),
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

    def _on_detection(self, d: DeviceState, msg: DetectionMessage, now: float) -> None:
        d.detections_recent.append(msg.ts)
        self._rows["detection"].append(
            {**self._row(d, msg), "label": msg.label, "confidence": msg.confidence}
        )

    def _on_event(self, d: DeviceState, msg: EventMessage, now: float) -> None:
        if msg.level == "error":
            detail = json.dumps(msg.detail)[:200]
            self.alerts.raise_(d.fleet, d.device, "error", f"{d.fleet}/{d.device}: {msg.kind_} {detail}")
        if msg.kind_ == "bundle.activated":
            self.alerts.resolve(d.fleet, d.device, "error")
        self._rows["event"].append({**self._row(d, msg), "kind": msg.kind_, "level": msg.level})

    @staticmethod
    def _row(d: DeviceState, msg: Any) -> dict[str, Any]:
        return {
            "fleet": d.fleet,
            "device": d.device,
            "msg_id": msg.id,
            "ts": msg.ts,
            "payload": msg.model_dump_json(by_alias=True, exclude_unset=True),  # validated: finite, no NUL
        }

    def flush(self) -> None:
        """Write what was ingested since the last flush to the store (one transaction). When the store cannot
        be written (:class:`StoreError`) the batch is kept for the next flush and the error raised.

        Device states go as this monitor's view plus what its counters gained since the last flush, merged
        into the stored state (:func:`merge_state`); a queued message the store already held (another
        monitor, or this one before a restart, stored it) is counted as a duplicate, not a message."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, {kind: [] for kind in QUEUED_KINDS}
            dead, self._dead = self._dead, []
            dirty, self._dirty = self._dirty, set()
            acks, self._acks = self._acks, {}
            counters = {k: _counters(self.devices[k]) for k in dirty}
            batch: dict[tuple[str, str], dict[str, int]] = {}
            for kind, kind_rows in rows.items():
                for r in kind_rows:
                    per_kind = batch.setdefault((r["fleet"], r["device"]), {})
                    per_kind[kind] = per_kind.get(kind, 0) + 1
            states = [
                {
                    **self.devices[k].to_dict(),
                    "delta": _subtract(counters[k], self._flushed.get(k)),
                    "batch": batch.get(k, {}),
                }
                for k in dirty
            ]
            changed, self.alerts.pending = self.alerts.pending, []
        if self.store is None:
            return
        try:
            result = self.store.write(rows, states, [a.to_dict() for a in changed], dead, merge_state)
        except StoreError:
            with self._lock:  # keep the batch, in order, ahead of what arrived meanwhile
                for kind, kind_rows in rows.items():
                    self._rows[kind][:0] = kind_rows
                self._dead[:0] = dead
                self._dirty |= dirty
                for ack_key, seqs in acks.items():
                    self._acks.setdefault(ack_key, [])[:0] = seqs
                self.alerts.pending[:0] = changed
            raise
        with self._lock:
            self.invalid_total += result.parked
            for ack_key, seqs in acks.items():
                self._committed_acks.setdefault(ack_key, []).extend(seqs)
            for key in dirty:
                new = result.inserted.get(key, {})
                d = self.devices[key]
                for kind, n in batch.get(key, {}).items():
                    repeats = n - new.get(kind, 0)  # already in the store: duplicates after all
                    d.messages[kind] -= repeats
                    self.messages_total[kind] -= repeats
                    d.duplicates += repeats
                    self.duplicates_total += repeats
                self._flushed[key] = _counters(d)
        for a in result.raised + result.resolved:
            _log_alert(Alert(**a))
        self._read_groups(time.monotonic())

    def _snapshot_of_store(self, now: float) -> dict[str, Any]:
        """The whole fleet as the shared store holds it (what every monitor of a shared group serves)."""
        assert self.store is not None
        cached = self._store_snapshot
        if cached is not None and time.monotonic() - cached[0] < self.snapshot_max_age_s:
            return cached[1]
        recent = self.store.detections_since(now - 60.0, now + 5.0)
        devices = []
        for stored in self.store.device_states():
            state = _clean_state(stored)
            if state is not None:
                state["detections_per_minute"] = recent.get((state["fleet"], state["device"]), 0)
                devices.append(state)
        devices.sort(key=lambda d: (d["fleet"], d["device"]))
        messages = dict.fromkeys(KINDS, 0)
        for d in devices:
            for kind in KINDS:
                messages[kind] += d["messages"].get(kind, 0)
        snap = {
            "time": now,
            "devices": devices,
            "alerts": self.store.active_alerts(),
            "counts": {
                "messages": messages,
                "duplicates": sum(d["duplicates"] for d in devices),
                "invalid": sum(d["invalid"] for d in devices),
            },
        }
        self._store_snapshot = (time.monotonic(), snap)
        return snap

    def snapshot(self) -> dict[str, Any]:
        """Every device's state, the active alerts and the counters (what /api/devices serves): this
        monitor's view, or in a shared group the store's (the whole fleet, whichever monitor saw what)."""
        now = time.time()
        if self.shared:
            return self._snapshot_of_store(now)
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
#: How long the store may fail to be written before /healthz fails (ingest waits and retries meanwhile).
STORE_GRACE_S = 60.0
#: Monitors of a shared group beat (a row in the store) every BEAT_S; one silent for SILENT_S is taken for
#: dead, and the first monitor to notice adopts its broker session: it connects with that client id, takes
#: what the broker held for it (sent but unacknowledged, and queued), commits and acknowledges it, and ends
#: the session so the broker stops routing messages to it (mosquitto keeps them for an offline session).
BEAT_S = 2.0
SILENT_S = 15.0
ADOPT_CHECK_S = 5.0
ADOPT_MAX_S = 120.0
#: A session leaving its group (a clean stop, an adoption) is drained (:func:`_drain`): it is empty when
#: nothing came for DRAIN_QUIET_S after its UNSUBACK. A clean stop drains for LEAVE_MAX_S at most; what is
#: left then stays in the session, which another monitor adopts.
DRAIN_QUIET_S = 2.0
LEAVE_MAX_S = 30.0


def _message_topic(msg: Any) -> str:
    try:
        return str(msg.topic)
    except UnicodeDecodeError:  # MQTT requires UTF-8 topics; a broker that let one through: park it
        return str(msg._topic.decode("utf-8", "backslashreplace"))


def _end_session(session: MqttSession) -> None:
    """DISCONNECT with session expiry 0: the broker drops the session (and its shared subscription).

    Only for a drained session (:func:`_drain`): paho closes the socket right after writing the DISCONNECT,
    and a socket closed with unread data in it (a PUBLISH the broker is still sending) is reset, not closed:
    the broker then drops the DISCONNECT unread and keeps the session."""
    props = Properties(PacketTypes.DISCONNECT)
    props.SessionExpiryInterval = 0
    with contextlib.suppress(Exception):
        session.client.disconnect(properties=props)
        session.loop(0.1)


def shared_filters(group: str) -> list[str]:
    """The monitor's topic filters as an MQTT 5 shared subscription of ``group``."""
    return [f"$share/{group}/{f}" for f in device_subscription()]


def _drain(
    session: MqttSession,
    group: str,
    last_message: Callable[[], float],
    commit: Callable[[], bool],
    deadline: float,
    cancelled: threading.Event,
) -> bool:
    """Take a session out of the shared ``group`` and empty it, so that it can be ended without losing
    anything: UNSUBSCRIBE, confirmed by the UNSUBACK (the broker routes nothing new to the session), then
    ingest, ``commit`` and acknowledge what the broker still sends -- in flight, and queued for the session --
    until nothing came (``last_message()``, a time.monotonic()) for DRAIN_QUIET_S. ``commit`` returns False
    while the store cannot be written (retried every second). False when cut short (``deadline``,
    ``cancelled``, the connection gone): the session then keeps what is left, and is adopted later."""
    try:
        session.unsubscribe(shared_filters(group))
    except ConnectFailed as exc:
        log.warning("cannot leave the shared group %s: %s", group, exc)
        return False
    quiet_from = time.monotonic()
    while time.monotonic() < deadline and not cancelled.is_set():
        alive = session.loop(0.05)
        if not commit():
            cancelled.wait(1.0)
            continue
        if not alive:
            return False
        if time.monotonic() - max(quiet_from, last_message()) > DRAIN_QUIET_S:
            return True
    return False


class MqttIngest:
    """Keeps a subscription to every device's messages alive and feeds a :class:`FleetMonitor`.

    :meth:`health` says whether ingest really works: the thread runs (it records why it ended if it ever
    does), the broker connection, and whether the store has been failing for longer than ``STORE_GRACE_S``.

    ``shared_group``: subscribe as one of several monitors (``$share/GROUP/edgekws/v1/+/+/#``), each with
    its own ``client_id``, on one shared store; the broker splits the messages among them. They beat in the
    store's ``monitors`` table every ``BEAT_S`` and adopt the session of one silent for ``silent_s``; a
    clean stop commits, acknowledges, drains (:func:`_drain`) and ends its own session, which can take
    DRAIN_QUIET_S and up to LEAVE_MAX_S (:meth:`stop` waits for it).
    """

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
        commit_batch: int = 20,
        session_expiry_s: int = MONITOR_SESSION_EXPIRY_S,
        backoff: Backoff | None = None,
        shared_group: str | None = None,
        silent_s: float = SILENT_S,
    ) -> None:
        if shared_group is not None and (monitor.store is None or not monitor.shared):
            raise ValueError("a monitor of a shared subscription needs FleetMonitor(store, shared=True)")
        self.monitor, self.broker = monitor, broker
        self.shared_group, self.silent_s = shared_group, silent_s
        self.options = ClientOptions(
            broker=broker,
            client_id=client_id,
            tls=TlsFiles(ca_file, cert_file, key_file),
            clean_start=False,
            session_expiry_s=session_expiry_s,
            manual_ack=monitor.store is not None,
        )
        self.flush_interval_s = flush_interval_s
        # The broker sends at most its max_inflight_messages (mosquitto: 20) unacknowledged messages to a
        # client: commit as soon as that many wait, or ingest stalls until the next flush_interval_s.
        self.commit_batch = commit_batch
        self.connected = threading.Event()  # set only after a successful CONNACK and SUBACK
        self._backoff = backoff or Backoff(0.2, 10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unacked: list[tuple[int, int]] = []
        self._last_message = 0.0  # time.monotonic() of the last message received
        self.failure: str | None = None  # why the ingest thread ended, if it did other than by stop()
        self.store_failing_since: float | None = None  # time.monotonic() of the first failed write
        self.store_error: str | None = None
        self.adopted: dict[str, int] = {}  # client id of an adopted session -> messages taken from it
        self._adopting: dict[str, threading.Thread] = {}
        self._next_beat = self._next_adopt_check = 0.0

    @property
    def client_id(self) -> str:
        return self.options.client_id

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgekws-fleet-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = LEAVE_MAX_S + 10.0) -> None:
        """Stop ingest: commit and acknowledge what was taken; with a shared group, leave it (drain and end
        this session, at most LEAVE_MAX_S). Waits ``timeout`` seconds at most for that."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The ingest thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> tuple[bool, dict[str, str]]:
        """(healthy, what each part says): healthy while the thread runs and the store has not been failing
        for more than STORE_GRACE_S; a broker outage alone is not unhealthy (ingest reconnects by itself)."""
        failing = self.store_failing_since
        store_ok = failing is None or time.monotonic() - failing <= STORE_GRACE_S
        parts = {
            "ingest": "running" if self.alive else "stopped",
            "broker": "connected" if self.connected.is_set() else "disconnected",
            "store": "ok" if failing is None else ("retrying" if store_ok else "failing"),
        }
        return self.alive and store_ok, parts

    def _run(self) -> None:
        """connect -> CONNACK -> subscribe -> I/O + batched commit-then-PUBACK until it drops; back off.
        An unexpected error ends the thread: it is logged and kept in ``failure`` (and fails /healthz)."""
        try:
            keep_connected(lambda: self.options, self._session, self._stop, self._backoff, log, self._attach)
            with contextlib.suppress(StoreError):
                self.monitor.flush()
        except BaseException as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.critical("the fleet monitor's ingest thread stopped: %s", self.failure, exc_info=True)

    def _attach(self, session: MqttSession) -> None:
        session.client.on_message = self._on_message

    def _session(self, session: MqttSession) -> None:
        filters = device_subscription() if self.shared_group is None else shared_filters(self.shared_group)
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
                window_full = len(self._unacked) >= self.commit_batch and self.store_failing_since is None
                if time.monotonic() >= next_flush or window_full or not alive:
                    written = self._commit(session)
                    next_flush = time.monotonic() + (self.flush_interval_s if written else 1.0)
                    self._keep_group()
                if not alive:
                    log.warning("fleet monitor lost the broker %s; reconnecting", session.where)
                    return
            if self._commit(session) and self.shared_group is not None:
                self._leave_group(session)
        finally:
            self.connected.clear()
            self._unacked = []  # not acknowledged: the broker re-delivers them (persistent session)

    def _commit(self, session: MqttSession) -> bool:
        """Write the batch, then acknowledge its messages (so nothing acknowledged is unwritten): PUBACK to
        the broker, and ``cmd/ack`` to each device so it can delete them from its outbox. When the store
        cannot be written, nothing is acknowledged (the batch waits in memory, the broker holds back more than
        its in-flight window) and False is returned; the next commit tries again."""
        try:
            self.monitor.flush()
        except StoreError as exc:
            if self.store_failing_since is None:
                self.store_failing_since = time.monotonic()
                log.error("%s; holding %d message(s) unacknowledged and retrying", exc, len(self._unacked))
            self.store_error = str(exc)
            return False
        if self.store_failing_since is not None:
            log.info("the fleet store is writable again")
            self.store_failing_since = self.store_error = None
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
        return True

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.monitor.ingest(_message_topic(msg), msg.payload)  # never raises for what a message holds
        self._last_message = time.monotonic()
        if self.monitor.store is not None and msg.qos > 0:
            self._unacked.append((msg.mid, msg.qos))

    # ---- monitors of a shared subscription -------------------------------------------------------------
    def _keep_group(self) -> None:
        """Beat, and adopt the sessions of monitors of the group that went silent (every few seconds)."""
        store, group = self.monitor.store, self.shared_group
        if store is None or group is None:
            return
        now = time.monotonic()
        try:
            self._beat()
            if now >= self._next_adopt_check:
                self._next_adopt_check = now + min(ADOPT_CHECK_S, self.silent_s / 3)
                for client_id in store.adopt_silent(group, self.client_id, self.silent_s):
                    thread = self._adopting.get(client_id)
                    if thread is None or not thread.is_alive():
                        thread = threading.Thread(
                            target=self._adopt, args=(client_id,), name=f"edgekws-fleet-adopt-{client_id}"
                        )
                        self._adopting[client_id] = thread
                        thread.start()
        except Exception as exc:  # the store is down: ingest holds its batch; beat and adopt later
            log.warning("fleet monitor %s: cannot reach the monitors table: %s", self.client_id, exc)

    def _beat(self) -> None:
        """This monitor's heartbeat in the store's monitors table, every BEAT_S."""
        now = time.monotonic()
        if now >= self._next_beat and self.monitor.store is not None and self.shared_group is not None:
            self._next_beat = now + BEAT_S
            self.monitor.store.beat(self.client_id, self.shared_group, socket.gethostname(), os.getpid())

    def _leave_group(self, session: MqttSession) -> None:
        """A clean stop with everything committed and acknowledged: drain this session (:func:`_drain`), end
        it at the broker and leave the monitors table. Ended undrained, the broker would drop what it had in
        flight or queued for the session; left in the group, it would keep routing a share of every device's
        messages to it. When draining is cut short, the session and the monitors row stay: another monitor
        adopts the session once the row is silent for ``silent_s``."""
        assert self.monitor.store is not None and self.shared_group is not None
        group, store = self.shared_group, self.monitor.store

        def commit() -> bool:
            with contextlib.suppress(Exception):  # a store that fails here fails the commit as well
                self._beat()  # still alive: nobody adopts this session while it drains
            return not self._unacked or self._commit(session)

        deadline = time.monotonic() + LEAVE_MAX_S
        if not _drain(session, group, lambda: self._last_message, commit, deadline, threading.Event()):
            log.warning(
                "fleet monitor %s: stopped before its session was drained; another monitor of %s adopts it",
                self.client_id,
                group,
            )
            return
        _end_session(session)
        with contextlib.suppress(Exception):
            store.forget_monitor(self.client_id)
        log.info("fleet monitor %s: left the group %s (session drained and ended)", self.client_id, group)

    def _adopt(self, client_id: str) -> None:
        """Drain the broker session of the silent monitor ``client_id`` into this monitor's store, then end
        it: connect with its client id (resuming its session, so the broker re-sends what it had sent without
        a PUBACK and what it queued), drain it (:func:`_drain`: unsubscribe, commit and acknowledge until
        nothing came for DRAIN_QUIET_S), and only then DISCONNECT with session expiry 0. Cut short (stopped,
        the store or the broker gone), the session stays as it was and is adopted again later."""
        session = MqttSession(dataclasses.replace(self.options, client_id=client_id))
        unacked: list[tuple[int, int]] = []
        taken = [0.0, time.monotonic()]  # messages, time of the last one

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            self.monitor.ingest(_message_topic(msg), msg.payload)
            unacked.append((msg.mid, msg.qos))
            taken[0], taken[1] = taken[0] + 1, time.monotonic()

        session.client.on_message = on_message
        store = self.monitor.store
        assert store is not None and self.shared_group is not None

        def commit() -> bool:
            if unacked:
                try:
                    self.monitor.flush()
                except StoreError:
                    return False
                for mid, qos in unacked:
                    session.client.ack(mid, qos)
                unacked.clear()
            return True

        log.warning(
            "fleet monitor %s: monitor %s went silent; adopting its session", self.client_id, client_id
        )
        try:
            session.connect()
            taken[1] = time.monotonic()  # quiet counts from now (connecting may take long on a busy box)
            deadline = time.monotonic() + ADOPT_MAX_S
            if not _drain(session, self.shared_group, lambda: taken[1], commit, deadline, self._stop):
                # its owner came back (same client id), the broker or the store went, or we stop
                log.warning("fleet monitor %s: adopting %s was cut short", self.client_id, client_id)
                return
            if not store.adopted_by(client_id, self.client_id):  # its owner beat again: alive, give it back
                log.warning(
                    "fleet monitor %s: monitor %s is back; its session stays", self.client_id, client_id
                )
                return  # (a plain DISCONNECT keeps the session; the owner re-subscribes when it reconnects)
            _end_session(session)
            store.forget_monitor(client_id, adopted_by=self.client_id)
            self.adopted[client_id] = int(taken[0])
            log.warning(
                "fleet monitor %s: took %d message(s) from the session of %s and ended it",
                self.client_id,
                int(taken[0]),
                client_id,
            )
        except (ConnectFailed, StoreError) as exc:
            log.warning("fleet monitor %s: adopting %s failed: %s", self.client_id, client_id, exc)
        finally:
            session.close()

"""Device-side MQTT 5 telemetry (paho-mqtt 2.x): status, telemetry, detections, events and commands.

Topics (docs/mqtt.md): ``edgekws/v1/{fleet}/{device}/status|telemetry|detection|event|cmd/{type}``.

- ``status`` is retained: ``online`` with the bundle and backend right after every successful CONNACK,
  ``offline`` as the Last Will (retained, so a late subscriber still learns that the device died) and
  ``offline`` published by a clean :meth:`DeviceTelemetry.stop`.
- telemetry, detections and events go through the on-disk :class:`~edgekws.agent._outbox.Outbox` first
  and leave it only when the fleet monitor acknowledges (``cmd/ack``, sent after its store committed
  them) -- or, with ``delivery = "broker"``, at a PUBACK saying a subscriber took them. QoS 1 throughout;
  a broker crash between its PUBACK and the forwarding to the monitor therefore loses nothing.
- commands arrive on ``cmd/#`` (QoS 1), are validated with pydantic (:mod:`edgekws.agent._commands`) and
  answered on ``event``.

One thread owns the MQTT connection and runs an explicit loop (:meth:`DeviceTelemetry._run`)::

    while not stopping:
        connect, wait for CONNACK (only then "connected")   -- on failure: sleep backoff, retry
        publish retained online status, subscribe to cmd/#
        until the connection drops: network I/O, send queued messages, count PUBACKs

Every connection is a fresh paho client: the outbox, not paho's in-memory session, is the record of what
is still owed, so after a reconnect the queue is replayed in order from its oldest message. A message
may then reach the broker twice (sent, delivered, PUBACK lost); the monitor de-duplicates on the id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field

from edgekws.agent._commands import InvalidCommand, parse_command
from edgekws.agent._outbox import Outbox

log = logging.getLogger("edgekws.agent.telemetry")

TOPIC_ROOT = "edgekws/v1"
SCHEMAS = {
    "status": "edgekws.status/1",
    "telemetry": "edgekws.telemetry/1",
    "detection": "edgekws.detection/1",
    "event": "edgekws.event/1",
}
RC_SUCCESS = 0
RC_NO_MATCHING_SUBSCRIBERS = 16
# PUBACK reason codes after which re-sending the same message cannot succeed: it is dropped and counted.
PERMANENT_FAILURES = {0x87: "not authorized", 0x90: "topic name invalid", 0x99: "payload format invalid"}


def topic(fleet: str, device: str, kind: str) -> str:
    """``edgekws/v1/{fleet}/{device}/{kind}`` (kind: status, telemetry, detection, event, cmd/...)."""
    return f"{TOPIC_ROOT}/{fleet}/{device}/{kind}"


class TlsSettings(BaseModel):
    """TLS to the broker: the CA that signed its certificate and, optionally, this device's certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path = Field(description="PEM file of the CA that signed the broker's certificate.")
    cert_file: Path | None = Field(default=None, description="This device's client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="The client certificate's private key (PEM).")


class MqttSettings(BaseModel):
    """Where and how a device publishes (the ``[telemetry.mqtt]`` table of agent.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="localhost", description="Broker host.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS by convention).")
    username: str | None = Field(
        default=None, description="Broker user; the deploy/mosquitto ACL expects '<fleet>/<device>'."
    )
    password: str | None = Field(default=None, description="Broker password.")
    tls: TlsSettings | None = Field(default=None, description="TLS settings; None: plain TCP.")
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keep-alive; the Last Will fires after 1.5x.")
    queue_path: Path = Field(
        default=Path("telemetry-outbox.sqlite"), description="The on-disk outbox (SQLite, WAL mode)."
    )
    queue_max_bytes: int = Field(
        default=32 * 2**20, gt=0, description="Soft limit: above it the oldest telemetry is dropped."
    )
    queue_hard_max_bytes: int = Field(
        default=64 * 2**20, gt=0, description="Hard limit: telemetry, then events, then detections go."
    )
    max_inflight: int = Field(default=16, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK.")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Longest reconnect delay.")
    require_subscriber: bool = Field(
        default=True,
        description="Keep a message queued while the broker answers 'no matching subscribers' (the fleet "
        "monitor is down); false: any PUBACK removes it.",
    )
    delivery: Literal["monitor", "broker"] = Field(
        default="monitor",
        description="When a queued message may leave the outbox: 'monitor' = when the fleet monitor's ack "
        "(cmd/ack, sent after its store committed) names it, so even a broker crash loses nothing; "
        "'broker' = at the broker's PUBACK (use it when no edgekws monitor runs).",
    )
    session_expiry_s: int = Field(
        default=86400, ge=0, description="How long the broker keeps commands for this device while offline."
    )


class Backoff:
    """Exponential reconnect delays with full jitter: ``uniform(0, min(max, first * 2**n))``."""

    def __init__(self, first_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.first_s * 2.0**self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class ConnectFailed(ConnectionError):
    """The broker could not be reached, or refused the connection (the message has its reason)."""


def _temperature_c() -> float | None:
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class DeviceTelemetry:
    """The device's MQTT link: :meth:`start`, then :meth:`telemetry` / :meth:`detection` / :meth:`event`."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        fleet: str,
        device: str,
        bundle: dict[str, str] | None = None,
        backend: str | None = None,
        on_command: Callable[[Any], dict[str, Any] | None] | None = None,
        group: str | None = None,
    ) -> None:
        self.settings = settings
        self.fleet, self.device, self.group = fleet, device, group
        self.bundle, self.backend = bundle, backend
        self.on_command = on_command
        self.boot = uuid.uuid4().hex[:12]
        self.connected = threading.Event()  # set only after a successful CONNACK
        self.connects = 0  # successful connections so far
        self.rejected = 0  # messages the broker refused for good (e.g. ACL)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: Outbox | None = None
        self._lost_unqueued: dict[str, int] = {}
        self._commands: queue.Queue[Any] = queue.Queue()
        self._seen_commands: OrderedDict[str, None] = OrderedDict()
        self._client: mqtt.Client | None = None
        # per-connection state, reset in _session
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        self._probing = True
        self._retry_at = 0.0
        self._no_sub_backoff = Backoff(0.2, 5.0)
        self._rewind = False
        self._dropped = False
        self._connack: Any = None
        self._drain_until = 0.0

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the outbox and start the connection thread (returns at once; see :attr:`connected`)."""
        s = self.settings
        self._outbox = Outbox(
            s.queue_path, max_bytes=s.queue_max_bytes, hard_max_bytes=s.queue_hard_max_bytes
        )
        self._thread = threading.Thread(target=self._run, name="edgekws-mqtt", daemon=True)
        self._thread.start()
        if self.on_command is not None:
            threading.Thread(target=self._command_worker, name="edgekws-mqtt-cmd", daemon=True).start()

    def stop(self, timeout: float = 5.0, drain_s: float = 1.0) -> None:
        """Send what is queued (for up to ``drain_s`` while connected), publish a retained ``offline``,
        disconnect, close the outbox. What is not sent stays in the outbox for the next start."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._commands.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._outbox is not None:
            self._outbox.close()

    # ---- what the agent reports ------------------------------------------------------------------------
    def telemetry(self, snapshot: dict[str, Any], interval_s: float | None = None) -> str | None:
        """Queue one telemetry report built from the daemon's metrics snapshot (+ ``energy`` list)."""
        outbox = self._require_outbox()
        dropped = outbox.take_drops()
        for kind, n in self._lost_unqueued.items():
            dropped[kind] = dropped.get(kind, 0) + n
        self._lost_unqueued = {}
        payload = {
            **self._header("telemetry"),
            "interval_s": interval_s,
            "bundle": self.bundle,
            "backend": self.backend,
            "latency_ms": snapshot.get("latency_ms", {}),
            "real_time_factor": snapshot.get("real_time_factor"),
            "audio_s": snapshot.get("audio_s"),
            "inferences": int(snapshot.get("inferences", 0)),
            "detections": int(snapshot.get("detections", 0)),
            "energy": list(snapshot.get("energy", [])),
            "cpu_percent": snapshot.get("cpu_percent"),
            "rss_mb": snapshot.get("rss_mb"),
            "temperature_c": _temperature_c(),
            "queue": {"depth": outbox.depth(), "bytes": outbox.bytes},
            "dropped": dropped,
        }
        return self._queue("telemetry", payload)

    def detection(
        self, label: str, confidence: float, latency_ms: float | None, ts: float | None = None
    ) -> str | None:
        """Queue one keyword detection."""
        payload = {
            **self._header("detection"),
            "label": label,
            "confidence": float(confidence),
            "latency_ms": latency_ms,
            "bundle": self.bundle,
        }
        if ts is not None:
            payload["ts"] = ts
        return self._queue("detection", payload)

    def event(
        self, kind: str, level: Literal["info", "warning", "error"] = "info", **detail: Any
    ) -> str | None:
        """Queue a lifecycle event (``bundle.activated``, ``rollback``, ``error``, ``command.done`` …)."""
        return self._queue("event", {**self._header("event"), "kind": kind, "level": level, "detail": detail})

    def set_bundle(self, bundle: dict[str, str] | None, backend: str | None) -> None:
        """A new bundle or backend is active: the next status and reports carry it."""
        self.bundle, self.backend = bundle, backend
        client = self._client
        if client is not None and self.connected.is_set():
            self._publish_status(client, "online")

    def queue_depth(self) -> int:
        return self._require_outbox().depth()

    def _header(self, kind: str) -> dict[str, Any]:
        return {"schema": SCHEMAS[kind], "ts": round(time.time(), 3), "boot": self.boot}

    def _queue(self, kind: str, payload: dict[str, Any]) -> str | None:
        outbox = self._require_outbox()
        msg_id = outbox.put(kind, topic(self.fleet, self.device, kind), payload)
        if msg_id is None:
            log.error("telemetry message dropped: %s", outbox.last_error)
            self._report_storage_error(kind, outbox.last_error or "")
        return msg_id

    def _report_storage_error(self, kind: str, why: str) -> None:
        """The outbox refused a message: tell the fleet directly (best effort, not queued)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return
        body = {
            **self._header("event"),
            "id": f"{self.boot}:e{time.monotonic_ns()}",
            "seq": 0,
            "kind": "error",
            "level": "error",
            "detail": {"error": "outbox", "message": why, "dropped_kind": kind},
        }
        client.publish(topic(self.fleet, self.device, "event"), json.dumps(body), qos=1, properties=_props())

    def _require_outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("DeviceTelemetry is not started; call start() first")
        return self._outbox

    # ---- the connection loop -------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        while not self._stop.is_set():
            client = self._new_client()
            try:
                self._connect(client)
            except ConnectFailed as exc:
                delay = backoff.next_delay()
                log.warning("MQTT connect failed (%s); retrying in %.1f s", exc, delay)
                self._close(client)
                self._stop.wait(delay)
                continue
            backoff.reset()
            try:
                self._session(client)
            finally:
                self.connected.clear()
                self._client = None
                self._close(client)

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgekws-{self.fleet}-{self.device}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set(
                ca_certs=str(s.tls.ca_file),
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        will = self._status_payload("offline", reason="connection lost")
        client.will_set(
            topic(self.fleet, self.device, "status"), will, qos=1, retain=True, properties=_props(True)
        )
        client.max_inflight_messages_set(s.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect(self, client: mqtt.Client) -> None:
        """TCP (+TLS) connect and CONNECT; returns only after a successful CONNACK."""
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        self._connack = None
        try:
            client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot reach {s.host}:{s.port}: {exc}") from exc
        deadline = time.monotonic() + 10.0
        while self._connack is None:
            rc = client.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS and self._connack is None:
                raise ConnectFailed(
                    f"connection to {s.host}:{s.port} closed before CONNACK ({mqtt.error_string(rc)})"
                )
            if time.monotonic() > deadline:
                raise ConnectFailed(f"no CONNACK from {s.host}:{s.port} within 10 s")
        if self._connack.is_failure:
            raise ConnectFailed(f"broker refused the connection: {self._connack}")

    def _session(self, client: mqtt.Client) -> None:
        """One connection: status, subscription, then I/O and sending until it drops or stop() is called."""
        self._inflight, self._cursor, self._probing, self._rewind, self._dropped = {}, 0, True, False, False
        self._retry_at = 0.0
        self._client = client
        self.connects += 1
        self.connected.set()
        log.info("MQTT connected to %s:%s", self.settings.host, self.settings.port)
        self._publish_status(client, "online")
        client.subscribe(topic(self.fleet, self.device, "cmd/#"), qos=1)
        while not self._stop.is_set():
            rc = client.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS or self._dropped:
                log.warning("MQTT connection lost (%s); reconnecting", mqtt.error_string(rc))
                return
            self._pump(client)
        self._drain(client)
        self._goodbye(client)

    def _drain(self, client: mqtt.Client) -> None:
        """On stop: keep sending until every queued message is out and acknowledged, or time is up."""
        assert self._outbox is not None
        while time.monotonic() < self._drain_until and not self._dropped:
            if not self._inflight and not self._rewind and not self._outbox.after(self._cursor, 1):
                return
            if client.loop(timeout=0.02) != mqtt.MQTT_ERR_SUCCESS:
                return
            self._pump(client)

    def _goodbye(self, client: mqtt.Client) -> None:
        """Clean stop: retained offline status (waits briefly for its PUBACK), then DISCONNECT."""
        info = self._publish_status(client, "offline", reason="stopped")
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()

    def _pump(self, client: mqtt.Client) -> None:
        """Send queued messages in order, at most ``max_inflight`` (1 while probing) awaiting PUBACK."""
        if self._rewind:  # a message was not taken: wait for outstanding PUBACKs, then start over
            if self._inflight or time.monotonic() < self._retry_at:
                return
            self._rewind, self._cursor, self._probing = False, 0, True
        window = 1 if self._probing else self.settings.max_inflight
        room = window - len(self._inflight)
        if room <= 0:
            return
        assert self._outbox is not None
        for msg in self._outbox.after(self._cursor, room):
            info = client.publish(msg.topic, msg.payload, qos=1, properties=_props())
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self._inflight[info.mid] = msg.seq
            self._cursor = msg.seq

    # ---- paho callbacks (run inside client.loop() on this thread) ------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        self._connack = reason_code

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        self._dropped = True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None or self._outbox is None:
            return  # status or a direct error event
        rc = int(reason_code.value)
        if rc == RC_SUCCESS or (rc == RC_NO_MATCHING_SUBSCRIBERS and not self.settings.require_subscriber):
            if self.settings.delivery == "broker":
                self._outbox.ack(seq)  # else it stays until the monitor's cmd/ack (re-sent after a reconnect)
            self._probing = False
            self._no_sub_backoff.reset()
        elif rc in PERMANENT_FAILURES:
            self._outbox.ack(seq)
            self.rejected += 1
            log.error("broker refused message %s for good: %s", seq, PERMANENT_FAILURES[rc])
        else:  # no subscriber yet (monitor down), quota, server busy …: keep it and retry in order
            if not self._rewind:
                self._retry_at = time.monotonic() + self._no_sub_backoff.next_delay()
            self._rewind = True

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            command = parse_command(msg.topic, msg.payload)
        except InvalidCommand as exc:
            self.event("command.rejected", "warning", command_id=exc.command_id, problems=exc.problems)
            return
        if command.type == "ack":
            if self._outbox is not None and command.epoch == self._outbox.epoch:
                self._outbox.ack_ranges(command.ranges)
            return
        if command.id in self._seen_commands:
            return  # QoS 1 re-delivery
        self._seen_commands[command.id] = None
        while len(self._seen_commands) > 1000:
            self._seen_commands.popitem(last=False)
        if command.type == "ping":
            self.event("command.done", command_id=command.id, type="ping")
        elif self.on_command is None:
            self.event(
                "command.rejected",
                "warning",
                command_id=command.id,
                problems=[f"this agent has no handler for {command.type!r} commands"],
            )
        else:
            self.event("command.accepted", command_id=command.id, type=command.type)
            self._commands.put(command)

    def _command_worker(self) -> None:
        """Runs command handlers off the MQTT thread (a deploy may take minutes)."""
        while (command := self._commands.get()) is not None:
            assert self.on_command is not None
            try:
                result = self.on_command(command) or {}
            except Exception as exc:  # the handler's failure is reported, not fatal
                detail = getattr(exc, "detail", None)
                detail = detail if isinstance(detail, dict) else {}
                ids = {"command_id": command.id, "type": command.type, "error": str(exc)}
                self.event("command.failed", "error", **{**detail, **ids})
            else:
                self.event("command.done", **{**result, "command_id": command.id, "type": command.type})

    # ---- helpers -------------------------------------------------------------------------------------
    def _status_payload(self, state: str, reason: str | None = None) -> bytes:
        body = {
            **self._header("status"),
            "id": f"{self.boot}:s{time.monotonic_ns()}",
            "state": state,
            "group": self.group,
            "bundle": self.bundle,
            "backend": self.backend,
            "reason": reason,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_status(
        self, client: mqtt.Client, state: str, reason: str | None = None
    ) -> mqtt.MQTTMessageInfo:
        return client.publish(
            topic(self.fleet, self.device, "status"),
            self._status_payload(state, reason),
            qos=1,
            retain=True,
            properties=_props(),
        )

    @staticmethod
    def _close(client: mqtt.Client) -> None:
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _props(will: bool = False) -> Properties:
    props = Properties(PacketTypes.WILLMESSAGE if will else PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    return props

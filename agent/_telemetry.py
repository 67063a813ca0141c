"""Device-side MQTT 5 telemetry: status, telemetry, detections, events and commands.

Topics, payload models and limits come from :mod:`edgekws.agent.mqtt` (docs/mqtt.md); the connection is
its :class:`~edgekws.agent.mqtt.MqttSession`, kept up by :func:`~edgekws.agent.mqtt.keep_connected`.

- ``status`` is retained: ``online`` with the bundle and backend right after every successful CONNACK,
  ``offline`` as the Last Will (retained, so a late subscriber still learns that the device died) and
  ``offline`` published by a clean :meth:`DeviceTelemetry.stop`.
- telemetry, detections and events go through the on-disk :class:`~edgekws.agent._outbox.Outbox` first
  and leave it only when the fleet monitor acknowledges (``cmd/ack``, sent after its store committed
  them) -- or, with ``delivery = "broker"``, at a PUBACK saying a subscriber took them. QoS 1 throughout;
  a broker crash between its PUBACK and the forwarding to the monitor therefore loses nothing.
- commands arrive on ``cmd/#`` (QoS 1), are validated with the command models and answered on ``event``.

One thread owns the MQTT connection; per connection (:meth:`DeviceTelemetry._session`)::

    publish retained online status, subscribe to cmd/# (confirmed by the SUBACK)
    until the connection drops: network I/O, send queued messages, count PUBACKs

Every connection is a fresh paho client: the outbox, not paho's in-memory session, is the record of what
is still owed, so after a reconnect the queue is replayed in order from its oldest message. A message
may then reach the broker twice (sent, delivered, PUBACK lost); the monitor de-duplicates on the id.
"""

from __future__ import annotations

import bisect
import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from edgekws.agent._config import MqttConfig
from edgekws.agent._outbox import Outbox
from edgekws.agent.mqtt import (
    DEVICE_SESSION_EXPIRY_S,
    MAX_INFLIGHT,
    PERMANENT_FAILURES,
    QUEUED_MESSAGES,
    RC_NO_MATCHING_SUBSCRIBERS,
    RC_SUCCESS,
    Backoff,
    BrokerUrl,
    ClientOptions,
    InvalidCommand,
    MqttSession,
    StatusMessage,
    SubscribeRefused,
    TlsFiles,
    Will,
    keep_connected,
    parse_command,
    schema_name,
    topic,
)

log = logging.getLogger("edgekws.agent.telemetry")


def _temperature_c() -> float | None:
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class DeviceTelemetry:
    """The device's MQTT link: :meth:`start`, then :meth:`telemetry` / :meth:`detection` / :meth:`event`.

    ``config`` is the agent's ``[telemetry.mqtt]`` table; ``password`` the broker password (read from its
    ``password_file`` by the daemon); ``backoff`` the reconnect delays (default 0.5 s … 30 s).
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        fleet: str,
        device: str,
        bundle: dict[str, str] | None = None,
        backend: str | None = None,
        on_command: Callable[[Any], dict[str, Any] | None] | None = None,
        group: str | None = None,
        password: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.broker = BrokerUrl.parse(config.broker).with_login(config.username, password)
        self.fleet, self.device, self.group = fleet, device, group
        self.bundle, self.backend = bundle, backend
        self.on_command = on_command
        self.boot = uuid.uuid4().hex[:12]
        self.connected = threading.Event()  # set only after a successful CONNACK
        self.connects = 0  # successful connections so far
        self.rejected = 0  # messages the broker refused for good (e.g. ACL)
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: Outbox | None = None
        self._delivered: set[int] = set()  # seqs a subscriber took (PUBACK success), not yet acked
        self._commands: queue.Queue[Any] = queue.Queue()
        self._seen_commands: OrderedDict[str, None] = OrderedDict()
        self._session_now: MqttSession | None = None
        # per-connection state, reset in _session
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        self._probing = True
        self._retry_at = 0.0
        self._no_sub_backoff = Backoff(0.2, 5.0)
        self._rewind = False
        self._drain_until = 0.0

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the outbox and start the connection thread (returns at once; see :attr:`connected`)."""
        c = self.config
        self._outbox = Outbox(c.outbox, max_bytes=c.outbox_max_bytes, hard_max_bytes=c.outbox_hard_max_bytes)
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
        dropped = outbox.drops()
        msg_id = self.send(
            "telemetry",
            interval_s=interval_s,
            bundle=self.bundle,
            backend=self.backend,
            latency_ms=snapshot.get("latency_ms", {}),
            real_time_factor=snapshot.get("real_time_factor"),
            audio_s=snapshot.get("audio_s"),
            inferences=int(snapshot.get("inferences", 0)),
            detections=int(snapshot.get("detections", 0)),
            energy=list(snapshot.get("energy", [])),
            cpu_percent=snapshot.get("cpu_percent"),
            rss_mb=snapshot.get("rss_mb"),
            temperature_c=_temperature_c(),
            queue={"depth": outbox.depth(), "bytes": outbox.bytes},
            dropped=dropped,
        )
        if msg_id is not None:  # the counts travel with this report; else they wait for the next one
            outbox.forget_drops(dropped)
        return msg_id

    def detection(
        self, label: str, confidence: float, latency_ms: float | None, ts: float | None = None
    ) -> str | None:
        """Queue one keyword detection."""
        extra = {} if ts is None else {"ts": ts}
        return self.send(
            "detection",
            label=label,
            confidence=float(confidence),
            latency_ms=latency_ms,
            bundle=self.bundle,
            **extra,
        )

    def event(
        self, kind: str, level: Literal["info", "warning", "error"] = "info", **detail: Any
    ) -> str | None:
        """Queue a lifecycle event (``bundle.activated``, ``rollback``, ``error``, ``command.done`` …)."""
        return self.send("event", kind=kind, level=level, detail=detail)

    def set_bundle(self, bundle: dict[str, str] | None, backend: str | None) -> None:
        """A new bundle or backend is active: the next status and reports carry it."""
        self.bundle, self.backend = bundle, backend
        session = self._session_now
        if session is not None and self.connected.is_set():
            self._publish_status(session, "online")

    def queue_depth(self) -> int:
        return self._require_outbox().depth()

    def _header(self, kind: str) -> dict[str, Any]:
        return {"schema": schema_name(kind), "ts": round(time.time(), 3), "boot": self.boot}

    def send(self, kind: str, /, **fields: Any) -> str | None:
        """Queue a message of any queued ``kind`` (agent/mqtt): validated against its model, stored in the
        outbox (which adds ``id`` and ``seq``), sent in order; its message id, or None if it was dropped."""
        outbox = self._require_outbox()
        try:
            payload = QUEUED_MESSAGES[kind].draft(**{**self._header(kind), **fields})
        except ValidationError as exc:  # a bug, not bad luck: say so, count it, keep running
            log.error("a %s message does not match its schema and was dropped: %s", kind, exc)
            outbox.count_drop(kind, f"a {kind} message did not match its schema")
            return None
        msg_id = outbox.put(kind, topic(self.fleet, self.device, kind), payload)
        if msg_id is None:
            log.error("telemetry message dropped: %s", outbox.last_error)
            self._report_storage_error(kind, outbox.last_error or "")
        return msg_id

    def _report_storage_error(self, kind: str, why: str) -> None:
        """The outbox refused a message: tell the fleet directly (best effort, not queued)."""
        session = self._session_now
        if session is None or not self.connected.is_set():
            return
        body = {
            **self._header("event"),
            "id": f"{self.boot}:e{time.monotonic_ns()}",
            "seq": 0,
            "kind": "error",
            "level": "error",
            "detail": {"error": "outbox", "message": why, "dropped_kind": kind},
        }
        session.publish(topic(self.fleet, self.device, "event"), json.dumps(body))

    def _require_outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("DeviceTelemetry is not started; call start() first")
        return self._outbox

    # ---- the connection --------------------------------------------------------------------------------
    def _run(self) -> None:
        keep_connected(self._options, self._session, self._stop, self._backoff, log, on_session=self._attach)

    def _options(self) -> ClientOptions:
        c = self.config
        tls = c.tls
        return ClientOptions(
            broker=self.broker,
            client_id=f"edgekws-{self.fleet}-{self.device}",
            tls=None if tls is None else TlsFiles(str(tls.ca_file), _opt(tls.cert_file), _opt(tls.key_file)),
            keepalive_s=c.keepalive_s,
            clean_start=False,
            session_expiry_s=DEVICE_SESSION_EXPIRY_S,
            will=Will(
                topic(self.fleet, self.device, "status"), self._status_payload("offline", "connection lost")
            ),
            max_inflight=MAX_INFLIGHT,
        )

    def _attach(self, session: MqttSession) -> None:
        session.client.on_publish = self._on_publish
        session.client.on_message = self._on_message

    def _session(self, session: MqttSession) -> None:
        """One connection: status, subscription, then I/O and sending until it drops or stop() is called."""
        self._inflight, self._cursor, self._probing, self._rewind = {}, 0, True, False
        self._retry_at = 0.0
        self._session_now = session
        self.connects += 1
        self.connected.set()
        log.info("MQTT connected to %s", session.where)
        try:
            self._publish_status(session, "online")
            try:
                session.subscribe([topic(self.fleet, self.device, "cmd/#")])
            except SubscribeRefused as exc:  # an ACL: commands cannot arrive, telemetry still flows
                log.error("%s; this device will receive no commands (check the broker's ACL)", exc)
            while not self._stop.is_set():
                if not session.loop(0.02):
                    log.warning("MQTT connection to %s lost; reconnecting", session.where)
                    return
                self._pump(session)
            self._drain(session)
            self._goodbye(session)
        finally:
            self.connected.clear()
            self._session_now = None

    def _drain(self, session: MqttSession) -> None:
        """On stop: keep sending until every queued message is out and acknowledged, or time is up."""
        assert self._outbox is not None
        while time.monotonic() < self._drain_until:
            if not self._inflight and not self._rewind and not self._outbox.after(self._cursor, 1):
                return
            if not session.loop(0.02):
                return
            self._pump(session)

    def _goodbye(self, session: MqttSession) -> None:
        """Clean stop: retained offline status (waits briefly for its PUBACK), then DISCONNECT."""
        info = self._publish_status(session, "offline", reason="stopped")
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline:
            if not session.loop(0.05):
                break
        session.client.disconnect()

    def _pump(self, session: MqttSession) -> None:
        """Send queued messages in order, at most ``MAX_INFLIGHT`` (1 while probing) awaiting PUBACK."""
        if self._rewind:  # a message was not taken: wait for outstanding PUBACKs, then start over
            if self._inflight or time.monotonic() < self._retry_at:
                return
            self._rewind, self._cursor, self._probing = False, 0, True
        window = 1 if self._probing else MAX_INFLIGHT
        room = window - len(self._inflight)
        if room <= 0:
            return
        assert self._outbox is not None
        for msg in self._outbox.after(self._cursor, room):
            info = session.publish(msg.topic, msg.payload)
            if info.rc != 0:
                return
            self._inflight[info.mid] = msg.seq
            self._cursor = msg.seq

    # ---- paho callbacks (run inside session.loop() on this thread) -----------------------------------
    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None or self._outbox is None:
            return  # status or a direct error event
        rc = int(reason_code.value)
        broker_delivery = self.config.delivery == "broker"
        if rc == RC_SUCCESS or (rc == RC_NO_MATCHING_SUBSCRIBERS and broker_delivery):
            if broker_delivery:
                self._outbox.ack(seq)
            else:  # it stays until the monitor's cmd/ack (re-sent after a reconnect); only this may be acked
                self._delivered.add(seq)
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

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            command = parse_command(msg.topic, msg.payload)
        except InvalidCommand as exc:
            self.event("command.rejected", "warning", command_id=exc.command_id, problems=exc.problems)
            return
        if command.type == "ack":
            self._ack(command)
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

    def _ack(self, command: Any) -> None:
        """The monitor stored these messages: remove those this device sent and a subscriber took.

        An ack can only delete what was delivered in this process (PUBACK success): a forged or stale one
        naming other sequence numbers deletes nothing of them (they are re-sent and acked again). Ranges
        beyond any sequence number this outbox ever gave out are refused with ``command.rejected``.
        """
        outbox = self._outbox
        if outbox is None or command.epoch != outbox.epoch:
            return  # another outbox's messages (e.g. before a re-image): nothing of ours
        beyond = [[lo, hi] for lo, hi in command.ranges if hi > outbox.max_seq]
        if beyond:
            self.event(
                "command.rejected",
                "warning",
                command_id=command.id,
                problems=[
                    f"ack names sequence numbers this device never sent (highest {outbox.max_seq}): "
                    f"{beyond[:3]}; nothing was removed"
                ],
            )
            return
        delivered = sorted(self._delivered)
        take: list[int] = []
        for lo, hi in command.ranges:
            take += delivered[bisect.bisect_left(delivered, lo) : bisect.bisect_right(delivered, hi)]
        if take:
            outbox.ack_many(take)
            self._delivered.difference_update(take)
        if len(self._delivered) > 4 * MAX_INFLIGHT + outbox.depth():  # dropped by the full-outbox policy
            self._delivered.intersection_update(outbox.queued_seqs())

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
        message = StatusMessage(
            **self._header("status"),
            id=f"{self.boot}:s{time.monotonic_ns()}",
            state=state,
            group=self.group,
            bundle=self.bundle,
            backend=self.backend,
            reason=reason,
        )
        return json.dumps(message.payload(), separators=(",", ":")).encode()

    def _publish_status(self, session: MqttSession, state: str, reason: str | None = None) -> Any:
        return session.publish(
            topic(self.fleet, self.device, "status"), self._status_payload(state, reason), retain=True
        )


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)

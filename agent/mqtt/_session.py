"""The one paho-mqtt wrapper: every edgekws client (device link, fleet monitor, rollout tool) connects here.

aiomqtt's lesson: wrap paho once. :class:`MqttSession` is one connection of one fresh paho client (MQTT 5):

- made from :class:`ClientOptions` (client id, login, TLS files, Last Will, session expiry, manual acks);
- :meth:`MqttSession.connect` returns only after a successful CONNACK; a broker that cannot be reached, or
  that closes the connection or stays silent, raises :class:`ConnectFailed`; a CONNACK with a failure
  reason code raises :class:`BrokerRefused` ("broker refused the connection: Not authorized");
- :meth:`MqttSession.subscribe` returns only after the SUBACK, and raises :class:`SubscribeRefused` when
  the broker refused a filter (an ACL, say) -- a refused subscription is never taken for a working one;
  :meth:`MqttSession.unsubscribe` returns only after the UNSUBACK;
- network I/O runs in the caller's thread (:meth:`MqttSession.loop`) or in paho's (:meth:`start_loop`).

:func:`keep_connected` is the reconnect loop of the long-lived clients, explicit and testable::

    while not stop:
        session = connect()                 -- ConnectFailed: sleep backoff.next_delay(), retry
        backoff.reset(); run(session)       -- until the connection drops or stop is set
        session.close()

:class:`Backoff`: exponential with equal jitter, ``uniform(c/2, c)``, ``c = min(max, first * 2**attempt)``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgekws.agent.mqtt._topics import QOS, BrokerUrl

CONNECT_TIMEOUT_S = 10.0


class ConnectFailed(ConnectionError):
    """The broker could not be reached, or the connection ended before a successful CONNACK."""


class BrokerRefused(ConnectFailed):
    """The broker answered CONNECT with a failure reason (bad login, not authorized, …)."""


class SubscribeRefused(ConnectionError):
    """The broker refused a subscription (its SUBACK carries a failure reason code for the filter)."""


class Backoff:
    """Exponential reconnect delays with equal jitter: ``uniform(c/2, c)``, ``c = min(max, first * 2**n)``."""

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


@dataclass(frozen=True)
class TlsFiles:
    """The CA that signed the broker's certificate and, optionally, this client's certificate and key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Will:
    """A Last Will: published by the broker when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True)
class ClientOptions:
    """How a client connects: where, as whom, and with which session."""

    broker: BrokerUrl
    client_id: str
    tls: TlsFiles | None = None  # used when the broker URL is mqtts://
    keepalive_s: int = 30
    clean_start: bool = True
    session_expiry_s: int | None = None  # MQTT 5 session expiry; None: the session ends with the connection
    will: Will | None = None
    manual_ack: bool = False  # PUBACK only when the caller calls ack() (after committing the message)
    max_inflight: int | None = None


def publish_packet_size(topic: str, payload: bytes) -> int:
    """Bytes of the MQTT 5 PUBLISH packet (QoS 1, :func:`json_properties`) that carries ``payload``."""
    remaining = 2 + len(topic.encode()) + 2 + len(json_properties().pack()) + len(payload)
    varint = 1 + (remaining >= 128) + (remaining >= 16384) + (remaining >= 2097152)
    return 1 + varint + remaining


def json_properties(will: bool = False) -> Properties:
    """MQTT 5 properties of every edgekws payload: UTF-8 JSON (payload format 1, application/json)."""
    props = Properties(PacketTypes.WILLMESSAGE if will else PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    return props


class MqttSession:
    """One connection of one fresh paho client; see the module docstring."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=options.manual_ack,
        )
        broker = options.broker
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            files = options.tls or TlsFiles()
            self.client.tls_set(
                ca_certs=files.ca_file,
                certfile=files.cert_file,
                keyfile=files.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if options.will is not None:
            w = options.will
            self.client.will_set(
                w.topic, w.payload, qos=QOS, retain=w.retain, properties=json_properties(True)
            )
        if options.max_inflight is not None:
            self.client.max_inflight_messages_set(options.max_inflight)
        self.connack: Any = None
        self.connack_properties: Any = None  # MQTT 5 CONNACK properties (MaximumPacketSize, …)
        self.dropped = False  # set when the connection is lost (or closed) after it was made
        self.disconnect_reason: Any = None  # why, when the broker said (a DISCONNECT reason code)
        self._threaded = False
        self._changed = threading.Condition()
        self._subacks: dict[int, list[Any]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_subscribe  # the same bookkeeping: reason codes per mid

    @property
    def where(self) -> str:
        return f"{self.options.broker.host}:{self.options.broker.port}"

    # -- paho callbacks (paho's thread in start_loop() mode, else the caller's) -------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        with self._changed:
            self.connack, self.connack_properties = reason_code, props
            self._changed.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        with self._changed:
            self.dropped, self.disconnect_reason = True, reason_code
            self._changed.notify_all()

    @property
    def max_packet_size(self) -> int | None:
        """The largest packet the broker accepts as its CONNACK announced it (mosquitto: ``max_packet_size``);
        None when it announced no limit."""
        size = getattr(self.connack_properties, "MaximumPacketSize", None)
        return int(size) if isinstance(size, int) else None

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, props: Any) -> None:
        with self._changed:
            self._subacks[mid] = list(reason_codes)
            self._changed.notify_all()

    # -- connection ---------------------------------------------------------------------------------------
    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """TCP (+TLS) connect and CONNECT; returns only after a successful CONNACK."""
        o = self.options
        props = Properties(PacketTypes.CONNECT)
        if o.session_expiry_s is not None:
            props.SessionExpiryInterval = o.session_expiry_s
        try:
            self.client.connect(
                o.broker.host,
                o.broker.port,
                keepalive=o.keepalive_s,
                clean_start=o.clean_start,
                properties=props,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot reach the broker {self.where}: {exc}") from exc
        self._wait(lambda: self.connack is not None, timeout_s, "CONNACK")
        if self.connack.is_failure:
            raise BrokerRefused(f"broker refused the connection: {self.connack}")

    def subscribe(self, filters: list[str], timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Subscribe to ``filters`` (QoS 1) and wait for the SUBACK; :class:`SubscribeRefused` names every
        filter the broker refused."""
        rc, mid = self.client.subscribe([(f, QOS) for f in filters])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectFailed(f"cannot subscribe on {self.where}: {mqtt.error_string(rc)}")
        self._wait(lambda: mid in self._subacks, timeout_s, "SUBACK")
        codes = self._subacks.pop(mid)
        refused = [f"{f} ({code})" for f, code in zip(filters, codes, strict=False) if code.is_failure]
        if refused:
            raise SubscribeRefused(f"broker refused the subscription to {', '.join(refused)}")

    def unsubscribe(self, filters: list[str], timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Unsubscribe from ``filters`` and wait for the UNSUBACK: from then on the broker routes nothing new
        to this session (what it already sent or queued for it still comes)."""
        rc, mid = self.client.unsubscribe(filters)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectFailed(f"cannot unsubscribe on {self.where}: {mqtt.error_string(rc)}")
        self._wait(lambda: mid in self._subacks, timeout_s, "UNSUBACK")
        del self._subacks[mid]

    def _wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.dropped:
                raise ConnectFailed(f"the connection to {self.where} closed before the {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectFailed(f"no {what} from {self.where} within {timeout_s:g} s")
            if self._threaded:
                with self._changed:
                    self._changed.wait(min(left, 0.1))
            elif not self.loop(min(left, 0.1)) and not done():
                raise ConnectFailed(f"the connection to {self.where} closed before the {what}")

    # -- I/O ----------------------------------------------------------------------------------------------
    def loop(self, timeout_s: float) -> bool:
        """One round of network I/O in this thread; False once the connection is gone."""
        rc = self.client.loop(timeout=timeout_s)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self.dropped = True
        return not self.dropped

    def start_loop(self) -> None:
        """Run network I/O in paho's own thread from now on (callbacks then run there)."""
        self._threaded = True
        self.client.loop_start()

    def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, timeout_s: float | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Publish a JSON payload at QoS 1; with ``timeout_s`` (threaded mode) wait for its PUBACK."""
        info = self.client.publish(topic, payload, qos=QOS, retain=retain, properties=json_properties())
        if timeout_s is not None:
            info.wait_for_publish(timeout_s)
        return info

    def close(self) -> None:
        """DISCONNECT when connected, stop paho's thread if it runs, and close the socket."""
        with contextlib.suppress(Exception):  # a dead connection: nothing to say goodbye on
            if self.connack is not None and not self.dropped:
                self.client.disconnect()
        if self._threaded:
            self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def keep_connected(
    options: Callable[[], ClientOptions],
    run: Callable[[MqttSession], None],
    stop: threading.Event,
    backoff: Backoff,
    log: logging.Logger,
    on_session: Callable[[MqttSession], Any] | None = None,
) -> None:
    """The reconnect loop (module docstring): a fresh session per connection until ``stop`` is set.

    ``options()`` is called per attempt (a Last Will may carry the current state); ``on_session`` sets the
    caller's paho callbacks before connecting; ``run(session)`` owns the connection until it drops.
    """
    while not stop.is_set():
        session = MqttSession(options())
        if on_session is not None:
            on_session(session)
        try:
            session.connect()
        except ConnectFailed as exc:
            delay = backoff.next_delay()
            log.warning("MQTT connect to %s failed (%s); retrying in %.1f s", session.where, exc, delay)
            session.close()
            stop.wait(delay)
            continue
        backoff.reset()
        try:
            run(session)
        finally:
            session.close()

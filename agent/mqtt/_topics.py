"""Topics, schema names and limits of the MQTT contract (docs/mqtt.md), and the one broker-URL rule.

::

    edgekws/v1/{fleet}/{device}/status|telemetry|detection|event     device -> fleet
    edgekws/v1/{fleet}/{device}/cmd/{type}                           fleet -> device
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import Field

TOPIC_ROOT = "edgekws/v1"
SCHEMA_VERSION = 1
COMMAND_LEVEL = "cmd"
ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
ID_MAX = 128
#: A fleet, device or group id: one topic level.
TopicLevel = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]

# Limits shared by the sides of the contract.
INLINE_MAX_BYTES = 4 * 2**20  # a bundle sent inside a deploy command (base64) may be at most this large
COMMAND_ID_MAX = 128
#: A command payload larger than this is refused unread (the inline bundle in base64, plus room for the rest).
COMMAND_MAX_BYTES = (INLINE_MAX_BYTES * 4) // 3 + 64 * 1024
MESSAGE_ID_MAX = 160
# A device message (status, telemetry, detection, event) the monitor accepts: at most this many payload bytes,
# free-form JSON (an event's detail) nested at most this deep, integers that fit a signed 64-bit column.
MESSAGE_MAX_BYTES = 64 * 1024
MESSAGE_MAX_DEPTH = 8
INT_MAX = 2**63 - 1
#: The largest outbox sequence number a ``cmd/ack`` may name (SQLite's INTEGER is a signed 64-bit value).
SEQ_MAX = INT_MAX
QOS = 1  # every message: telemetry, detections, events, statuses and commands
MAX_INFLIGHT = 16  # a device's QoS 1 messages awaiting PUBACK
DEVICE_SESSION_EXPIRY_S = 86400  # the broker keeps a device's commands this long while it is away
MONITOR_SESSION_EXPIRY_S = 3600  # ... and the monitor's device messages
# PUBACK reason codes after which re-sending the same message cannot succeed: it is dropped and counted.
PERMANENT_FAILURES = {0x87: "not authorized", 0x90: "topic name invalid", 0x99: "payload format invalid"}
RC_SUCCESS = 0
RC_NO_MATCHING_SUBSCRIBERS = 16


def schema_name(kind: str) -> str:
    """The ``schema`` tag of a payload: ``edgekws.{kind}/{version}`` (``cmd`` for commands)."""
    return f"edgekws.{kind}/{SCHEMA_VERSION}"


def topic(fleet: str, device: str, kind: str) -> str:
    """``edgekws/v1/{fleet}/{device}/{kind}`` (kind: status, telemetry, detection, event, cmd/{type})."""
    return f"{TOPIC_ROOT}/{fleet}/{device}/{kind}"


def command_topic(fleet: str, device: str, command_type: str) -> str:
    """``edgekws/v1/{fleet}/{device}/cmd/{type}``."""
    return topic(fleet, device, f"{COMMAND_LEVEL}/{command_type}")


def device_subscription(kinds: tuple[str, ...] | None = None) -> list[str]:
    """Topic filters of every device's messages: ``edgekws/v1/+/+/#`` (all), or one filter per kind."""
    if kinds is None:
        return [f"{TOPIC_ROOT}/+/+/#"]
    return [f"{TOPIC_ROOT}/+/+/{k}" for k in kinds]


@dataclass(frozen=True)
class DeviceTopic:
    """A topic of the contract, parsed: whose it is and what it carries."""

    fleet: str
    device: str
    kind: str  # status | telemetry | detection | event | cmd
    command: str | None = None  # the cmd/{type} level


def parse_topic(name: str) -> DeviceTopic | None:
    """The parts of a contract topic, or None for a topic outside ``edgekws/v1/{fleet}/{device}/...``."""
    parts = name.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        return None
    command = "/".join(parts[5:]) if parts[4] == COMMAND_LEVEL and len(parts) > 5 else None
    return DeviceTopic(parts[2], parts[3], parts[4], command)


@dataclass(frozen=True)
class BrokerUrl:
    """A broker address: ``mqtt://[user[:password]@]host[:port]`` (plain, 1883 by default) or ``mqtts://…``
    (TLS, 8883); ``tcp://`` and ``ssl://`` are the same two, and a bare ``host[:port]`` means ``mqtt://``.

    One rule for every client: the agent's ``[telemetry.mqtt] broker``, ``edgekws fleet --broker``, the demo.
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        problem = f"broker URL must look like mqtt://host:1883 or mqtts://host:8883, got {url!r}"
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        try:
            port = parts.port
        except ValueError as exc:  # not a number, or outside 0..65535
            raise ValueError(f"{problem} (bad port)") from exc
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname or port == 0:
            raise ValueError(problem)
        if parts.path not in ("", "/") or parts.query or parts.fragment or re.search(r"\s", url):
            raise ValueError(f"{problem} (nothing may follow the port)")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def with_login(self, username: str | None, password: str | None) -> BrokerUrl:
        """This address with the login replaced where ``username`` / ``password`` are given."""
        return BrokerUrl(self.host, self.port, self.tls, username or self.username, password or self.password)

    def __str__(self) -> str:  # never shows the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

"""The messages of the MQTT contract: pydantic models of every payload, with their schema tags and
examples. docs/schemas/*.schema.json are generated from them (:func:`json_schemas`, ``make schemas``;
tests/agent/test_mqtt.py fails when the files drift).

Device -> fleet: :class:`StatusMessage` (retained), :class:`TelemetryMessage`, :class:`DetectionMessage`,
:class:`EventMessage` (the last three go through the outbox, which fills in ``id`` and ``seq``).
Fleet -> device: the :data:`Command` union, tagged by ``type``; :func:`parse_command` checks a payload and
that the topic's last level names the same type, collecting every problem into one :class:`InvalidCommand`
(and never raises anything else, whatever the bytes: size, nesting, huge numbers, NaN). A downgrade or a
rollback carries a :class:`SignedOrder` (docs/mqtt.md, "Authorization"). Every model rejects unknown keys and
non-finite numbers.

The monitor reads device messages with :func:`parse_device_message`: the topic's ids, then the payload
strictly (bounded size and nesting, no type coercion, finite numbers, integers within 64 bits, no control
characters in what lands in a column); every problem goes into one :class:`InvalidMessage`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from edgekws.agent.mqtt._topics import (
    COMMAND_ID_MAX,
    COMMAND_MAX_BYTES,
    ID_MAX,
    ID_PATTERN,
    INLINE_MAX_BYTES,
    INT_MAX,
    MESSAGE_ID_MAX,
    MESSAGE_MAX_BYTES,
    MESSAGE_MAX_DEPTH,
    SEQ_MAX,
    TOPIC_ROOT,
    DeviceTopic,
    TopicLevel,
    schema_name,
)
from edgekws.packaging import ORDER_CONTEXT, SigningKey, canonical_json, sign_detached

COMMAND_SCHEMA = schema_name("cmd")
_SCHEMA_DOC = "Payload schema and its version."

# ------------------------------------------------------------------------------------------- device -> fleet


class _Part(BaseModel):
    """Every model of the contract: unknown keys and NaN/Infinity are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


def _bounded_json(value: Any, depth: int = 1) -> Any:
    """Free-form JSON (an event's ``detail``): nested at most MESSAGE_MAX_DEPTH deep, finite numbers, integers
    within 64 bits, no NUL in strings (what a SQL column or a JSON parser elsewhere would choke on)."""
    if depth > MESSAGE_MAX_DEPTH:
        raise ValueError(f"nested deeper than {MESSAGE_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _bounded_json(k, depth)
            _bounded_json(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _bounded_json(v, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
        raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, str) and "\x00" in value:
        raise ValueError("strings must not contain NUL characters")
    return value


#: Free-form JSON object, bounded (:func:`_bounded_json`).
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]
#: A count: a non-negative integer that fits a signed 64-bit column.
Count = Annotated[int, Field(ge=0, le=INT_MAX)]
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int, min_length: int = 0, **field: Any) -> Any:
    """A string without control characters, at most ``max_length`` long (it lands in a column or a label)."""
    return Field(min_length=min_length, max_length=max_length, pattern=_NO_CONTROL, **field)


class _Message(_Part):
    """The header every device message carries."""

    KIND: ClassVar[str]

    schema_: str = Field(alias="schema", description=_SCHEMA_DOC)
    id: str = Field(
        min_length=1,
        max_length=MESSAGE_ID_MAX,
        pattern=r"^[!-~]+$",
        description="Message id, unique per device: '<outbox epoch>:<seq>' for queued messages; the monitor "
        "de-duplicates on it.",
    )
    ts: float = Field(ge=0, description="When the message was made (Unix seconds).")
    boot: str = Field(
        min_length=1, max_length=64, pattern=r"^[!-~]+$", description="Random id of the agent process."
    )

    def payload(self) -> dict[str, Any]:
        """The JSON object as sent (``schema`` under its wire name)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class _Queued(_Message):
    """A message that goes through the device's outbox; when the outbox is full, kinds with a lower
    ``DROP_RANK`` are dropped first (docs/mqtt.md, "Bounds and the policy when full")."""

    DROP_RANK: ClassVar[int]
    seq: Count = Field(description="Outbox sequence number: grows per device for the life of its outbox.")

    @classmethod
    def draft(cls, **fields: Any) -> dict[str, Any]:
        """A validated payload without ``id`` and ``seq``, which the outbox fills in."""
        return cls(id="-", seq=0, **fields).model_dump(
            by_alias=True, exclude_unset=True, exclude={"id", "seq"}
        )


class ActiveBundle(BaseModel):
    """The active bundle (null: none loaded)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    name: str = _text(64, 1)
    version: str = _text(64, 1)

    @model_validator(mode="after")
    def _bounded_extras(self) -> ActiveBundle:
        _bounded_json(self.__pydantic_extra__ or {}, 2)
        return self


_BUNDLE_DOC = "The active bundle (null: none loaded)."
_BUNDLE = {"name": "digits", "version": "1.2.0"}  # of the examples


def _example(kind: str, seq: int | None, ts: float, /, **fields: Any) -> dict[str, Any]:
    """An example payload for the schema: the header (``seq`` for queued messages), then its fields."""
    boot, epoch = "5f1c0a9e2b7d", "a41f09c3d2e1"
    head = {"schema": schema_name(kind), "id": f"{boot}:s1" if seq is None else f"{epoch}:{seq}", "ts": ts}
    return {**head, **({} if seq is None else {"seq": seq}), "boot": boot, **fields}


_EXAMPLES: dict[str, dict[str, Any]] = {
    "status": _example(
        "status",
        None,
        1767225600.0,
        state="online",
        group="lab",
        bundle=_BUNDLE,
        backend="emulator",
        reason=None,
    ),
    "telemetry": _example(
        "telemetry",
        17,
        1767225610.0,
        interval_s=10.0,
        bundle=_BUNDLE,
        backend="emulator",
        latency_ms={"inference": {"p50": 0.41, "p90": 0.52, "p99": 0.9, "max": 1.3, "n": 500}},
        real_time_factor=0.05,
        audio_s=10.0,
        inferences=100,
        detections=2,
        energy=[
            {
                "mj_per_inference": 0.22,
                "mj_per_audio_s": 0.22,
                "method": "estimated:loihi2-opcount",
                "detail": "Davies et al. 2018",
            }
        ],
        work_per_audio_s={"synops": 2.6e6, "neuron_updates": 2.8e5, "spikes": 1.0e4},
        detection_mode="always_on",
        cpu_percent=12.5,
        rss_mb=80.2,
        temperature_c=None,
        queue={"depth": 0, "bytes": 0},
        dropped={"telemetry": 0, "detection": 0, "event": 0},
    ),
    "detection": _example(
        "detection", 18, 1767225611.2, label="seven", confidence=0.93, latency_ms=41.0, bundle=_BUNDLE
    ),
    "event": _example(
        "event",
        19,
        1767225612.0,
        kind="command.done",
        level="info",
        detail={"command_id": "c-1", "type": "ping"},
    ),
}


def _schema_config(title: str, kind: str) -> ConfigDict:
    """A message model's config: its JSON Schema title and example."""
    return ConfigDict(title=title, json_schema_extra={"examples": [_EXAMPLES[kind]]})


class StatusMessage(_Message):
    KIND: ClassVar[str] = "status"
    model_config = _schema_config("Device status (retained; the Last Will says offline)", "status")

    schema_: Literal["edgekws.status/1"] = Field(alias="schema", description=_SCHEMA_DOC)
    state: Literal["online", "offline"]
    group: TopicLevel | None = Field(
        default=None,
        description="The group the device's config names ([device] group): shown, never trusted; rollouts "
        "use the monitor's group assignments.",
    )
    bundle: ActiveBundle | None = Field(description=_BUNDLE_DOC)
    backend: str | None = _text(64)
    reason: str | None = _text(
        200, default=None, description="Why offline: 'connection lost' (Last Will) or 'stopped'."
    )


class LatencyStats(_Part):
    """Percentiles in milliseconds over the device's latency window (null when empty)."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    n: Count = 0


class EnergyFigure(_Part):
    """Energy per inference and per second of audio with how it was obtained (design.md §6)."""

    mj_per_inference: float | None
    mj_per_audio_s: float | None = Field(
        default=None, description="Energy per second of audio listened to (the cost of always listening)."
    )
    method: str = Field(
        max_length=64,
        pattern=r"^(measured|estimated):[a-z0-9][a-z0-9._-]*$",
        description="measured:<meter> or estimated:<model> (design.md §6).",
    )
    detail: str = _text(500, default="")


class WorkRate(_Part):
    """What the network computed per second of audio: synaptic events, neuron updates, spikes sent."""

    synops: float = Field(ge=0)
    neuron_updates: float = Field(ge=0)
    spikes: float = Field(ge=0)


class QueueState(_Part):
    """The device's outbox."""

    depth: Count
    bytes: Count


class TelemetryMessage(_Queued):
    KIND: ClassVar[str] = "telemetry"
    DROP_RANK: ClassVar[int] = 0
    model_config = _schema_config("Periodic telemetry aggregate", "telemetry")

    schema_: Literal["edgekws.telemetry/1"] = Field(alias="schema", description=_SCHEMA_DOC)
    interval_s: float | None = None
    bundle: ActiveBundle | None = Field(description=_BUNDLE_DOC)
    backend: str | None = _text(64)
    latency_ms: dict[Annotated[str, _text(32, 1)], LatencyStats] = Field(
        max_length=16, description="Per kind: inference (backend call), chunk, decision."
    )
    real_time_factor: float | None = None
    audio_s: float | None = None
    inferences: Count
    detections: Count
    energy: list[EnergyFigure] = Field(max_length=16)
    work_per_audio_s: WorkRate | None = Field(
        default=None,
        description="Backend work per second of audio (backends that count their operations).",
    )
    detection_mode: Literal["lanes", "always_on"] | None = Field(
        default=None, description="How the network listens: staggered lanes or one always-on network."
    )
    cpu_percent: float | None = None
    rss_mb: float | None = None
    temperature_c: float | None = None
    queue: QueueState
    dropped: dict[str, Count] = Field(
        description="Messages dropped since the last report (outbox full or disk failing).",
        json_schema_extra=lambda schema: schema.update(propertyNames={"enum": list(QUEUED_KINDS)}),
    )

    @field_validator("dropped")
    @classmethod
    def _queued_kinds_only(cls, dropped: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(dropped) - set(QUEUED_KINDS))
        if unknown:
            raise ValueError(f"dropped counts only {', '.join(QUEUED_KINDS)}, got {unknown}")
        return dropped


class DetectionMessage(_Queued):
    KIND: ClassVar[str] = "detection"
    DROP_RANK: ClassVar[int] = 2
    model_config = _schema_config("One keyword detection", "detection")

    schema_: Literal["edgekws.detection/1"] = Field(alias="schema", description=_SCHEMA_DOC)
    label: str = _text(64, 1)
    confidence: float = Field(ge=0, le=1)
    latency_ms: float | None
    bundle: ActiveBundle | None = Field(default=None, description=_BUNDLE_DOC)


class EventMessage(_Queued):
    KIND: ClassVar[str] = "event"
    DROP_RANK: ClassVar[int] = 1
    model_config = _schema_config("Lifecycle event or command response", "event")

    schema_: Literal["edgekws.event/1"] = Field(alias="schema", description=_SCHEMA_DOC)
    kind_: str = Field(
        alias="kind",
        max_length=64,
        pattern=r"^[a-z][a-z0-9_.-]*$",
        description="bundle.activated, rollback, error, command.accepted|rejected|done|failed, …",
    )
    level: Literal["info", "warning", "error"]
    detail: JsonObject = Field(description=f"Free-form, nested at most {MESSAGE_MAX_DEPTH} levels.")


#: The model of each device message kind (its topic level), and of those that go through the outbox.
QUEUED_MESSAGES: dict[str, type[_Queued]] = {
    m.KIND: m for m in (TelemetryMessage, DetectionMessage, EventMessage)
}
DEVICE_MESSAGES: dict[str, type[_Message]] = {"status": StatusMessage, **QUEUED_MESSAGES}
KINDS: tuple[str, ...] = tuple(DEVICE_MESSAGES)
QUEUED_KINDS: tuple[str, ...] = tuple(QUEUED_MESSAGES)
#: The outbox's drop order when full: the first listed is dropped first.
DROP_ORDER: tuple[str, ...] = tuple(sorted(QUEUED_MESSAGES, key=lambda k: QUEUED_MESSAGES[k].DROP_RANK))


class InvalidMessage(ValueError):
    """A device message the monitor must not use: ``problems`` lists every fault found; ``topic`` is the
    parsed topic when its ids were valid (else None), ``message_id`` the id in the payload, if readable."""

    def __init__(
        self, problems: list[str], topic: DeviceTopic | None = None, message_id: str | None = None
    ) -> None:
        self.problems, self.topic, self.message_id = problems, topic, message_id
        super().__init__("; ".join(problems))


_ID = re.compile(ID_PATTERN)


def device_topic(name: str) -> DeviceTopic:
    """The parts of a device message's topic, ``edgekws/v1/{fleet}/{device}/{kind}``, checked: ids of the
    documented pattern, a known kind, no extra levels; else :class:`InvalidMessage` saying what is wrong."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise InvalidMessage([f"topic is not {TOPIC_ROOT}/{{fleet}}/{{device}}/{{kind}}"])
    fleet, device, kind = parts[2:]
    problems = [
        f"{what} id must match {ID_PATTERN} and be at most {ID_MAX} characters"
        for what, value in (("fleet", fleet), ("device", device))
        if not _ID.match(value) or len(value) > ID_MAX
    ]
    if kind not in DEVICE_MESSAGES:
        problems.append(f"unknown message kind (the last topic level must be one of {', '.join(KINDS)})")
    if problems:
        raise InvalidMessage(problems)
    return DeviceTopic(fleet, device, kind)


class _IdOnly(BaseModel):
    id: str = Field(max_length=MESSAGE_ID_MAX, pattern=r"^[!-~]+$")


def parse_device_message(topic: str, payload: bytes) -> tuple[DeviceTopic, _Message]:
    """Check a device message received on ``topic`` and return its topic and model, or raise
    :class:`InvalidMessage` listing every problem (and never anything else, whatever the bytes).

    The topic's ids and kind (:func:`device_topic`); then the payload: at most ``MESSAGE_MAX_BYTES``, JSON
    parsed by pydantic's Rust parser (bounded nesting and number sizes), validated in strict mode (no string
    for a number, no number for a string), finite numbers, counts within 64 bits, free-form ``detail`` at most
    ``MESSAGE_MAX_DEPTH`` deep, no control characters in what becomes a column or a label.
    """
    where = device_topic(topic)
    if len(payload) > MESSAGE_MAX_BYTES:
        raise InvalidMessage(
            [f"payload is {len(payload)} bytes, over the {MESSAGE_MAX_BYTES}-byte limit"], where
        )
    try:
        return where, DEVICE_MESSAGES[where.kind].model_validate_json(payload, strict=True)
    except ValidationError as exc:
        problems = validation_problems(exc)
    except (
        Exception
    ) as exc:  # pragma: no cover - pydantic raises ValidationError; never let a message kill us
        problems = [f"cannot validate the payload ({type(exc).__name__})"]
    try:
        message_id: str | None = _IdOnly.model_validate_json(payload).id
    except Exception:
        message_id = None
    raise InvalidMessage(problems, where, message_id)


def validation_problems(exc: ValidationError, limit: int = 10) -> list[str]:
    """``where: what`` of each of the first ``limit`` errors, with the input's own text escaped and cut (dict
    keys from a payload are part of an error's location)."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(_plain(p) for p in err["loc"])
        problems.append(f"{where or 'payload'}: {err['msg']}")
    if exc.error_count() > limit:
        problems.append(f"and {exc.error_count() - limit} more")
    return problems


def _plain(part: str | int) -> str:
    """A location part as is when it is short printable ASCII, else escaped and cut."""
    text = str(part)
    return text if text.isascii() and text.isprintable() and len(text) <= 40 else ascii(text)[:40]


# ------------------------------------------------------------------------------------------- fleet -> device


class _Command(_Part):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    schema_: Literal["edgekws.cmd/1"] = Field(alias="schema", description=_SCHEMA_DOC)
    id: str = Field(min_length=1, max_length=COMMAND_ID_MAX, description="Command id; responses carry it.")
    ts: float = Field(description="When the command was issued (Unix seconds).")

    def payload(self) -> dict[str, Any]:
        """The JSON object as sent (``schema`` under its wire name)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class BundleRef(_Part):
    """Which bundle, where the device gets it (``url`` or inline ``data``), and what it must hash to."""

    name: str = Field(min_length=1, description="Bundle name.")
    version: str = Field(min_length=1, description="Semver version.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the .ekb file.")
    size: int | None = Field(default=None, ge=0, description="Size of the .ekb file in bytes.")
    url: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^(file|https?)://",
        description="Where the device reads the .ekb file: file:///path, http://… or https://….",
    )
    data: str | None = Field(
        default=None,
        min_length=1,
        max_length=(INLINE_MAX_BYTES * 4) // 3 + 4,
        description="The .ekb file itself, base64 (small bundles only: at most 4 MiB).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> BundleRef:
        if (self.url is None) == (self.data is None):
            raise ValueError("give exactly one of bundle.url and bundle.data")
        return self


class DeployOrder(_Part):
    """What a fleet operator authorizes, signed (:class:`SignedOrder`): one bundle version on named devices
    until a deadline. Required for a downgrade (``deploy`` with ``rollback``) and for ``rollback``."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Deploy order")

    type: Literal["edgekws.deploy-order/1"] = Field(description="Order format and version.")
    id: str = Field(
        min_length=1, max_length=COMMAND_ID_MAX, description="Unique id; a device runs an order at most once."
    )
    action: Literal["deploy", "rollback"] = Field(
        description="deploy: install this bundle (a downgrade allowed); rollback: reactivate this installed "
        "version."
    )
    name: str = Field(min_length=1, max_length=64, description="Bundle name.")
    version: str = Field(min_length=1, max_length=64, description="The version the devices go to.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the .ekb file (deploy: required; rollback: optional).",
    )
    targets: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]] = Field(
        min_length=1, max_length=100000, description="The devices it is for, as 'fleet/device'."
    )
    not_after: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        description="UTC time after which devices refuse it (YYYY-MM-DDTHH:MM:SSZ).",
    )

    def body(self) -> bytes:
        """The bytes that are signed: the order's canonical JSON (sorted keys, no whitespace)."""
        return canonical_json(self.model_dump(by_alias=True))

    def sign(self, keys: list[SigningKey]) -> SignedOrder:
        """This order with a signature by each of ``keys`` (context ``ORDER_CONTEXT``)."""
        signatures = sign_detached(self.body(), keys, ORDER_CONTEXT)
        return SignedOrder(order=self, signatures=[OrderSignature(**s) for s in signatures])


class OrderSignature(_Part):
    """One Ed25519 signature of the canonical JSON of the order (context ``edgekws-deploy-order-v1``)."""

    algorithm: Literal["ed25519"]
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="First 16 hex digits of sha256(public key).")
    signature: str = Field(min_length=1, max_length=128, description="The 64 signature bytes, base64.")


class SignedOrder(_Part):
    """A deploy order and its signatures by keys the devices trust (``[rollout] order_keys``)."""

    order: DeployOrder
    signatures: list[OrderSignature] = Field(min_length=1, max_length=8)


class DeployCommand(_Command):
    """Fetch, verify, install and activate a bundle, check its health, roll back if it fails."""

    type: Literal["deploy"] = Field(description="Command kind.")
    bundle: BundleRef = Field(description="The bundle to install.")
    rollback: bool = Field(
        default=False,
        description="Allow a version lower than the active one (an explicit rollback); needs `order`.",
    )
    rollout: str | None = Field(
        default=None, max_length=COMMAND_ID_MAX, description="Id of the rollout this deploy belongs to."
    )
    order: SignedOrder | None = Field(
        default=None, description="Signed deploy order; required when `rollback` is true."
    )


class RollbackCommand(_Command):
    """Activate the previous (or a named) installed version; needs a signed order naming that version."""

    type: Literal["rollback"] = Field(description="Command kind.")
    to_version: str | None = Field(default=None, description="Version to go back to; None: the previous.")
    order: SignedOrder | None = Field(
        default=None, description="Signed deploy order (action rollback) naming the version gone back to."
    )


class ConfigCommand(_Command):
    """Change run-time settings (keys as in agent.toml, dotted)."""

    type: Literal["config"] = Field(description="Command kind.")
    set: dict[str, Any] = Field(min_length=1, description="Dotted key -> new value.")


class PingCommand(_Command):
    """Ask the device to answer with a ``command.done`` event (a liveness and round-trip check)."""

    type: Literal["ping"] = Field(description="Command kind.")


_Seq = Annotated[int, Field(ge=0, le=SEQ_MAX)]


class AckCommand(_Command):
    """The fleet monitor has stored these queued messages: the device may delete them from its outbox.

    Sent on ``cmd/ack`` after the monitor's store committed them (end-to-end delivery, docs/mqtt.md).
    """

    type: Literal["ack"] = Field(description="Command kind.")
    epoch: str = Field(min_length=1, description="The outbox epoch of the message ids ('<epoch>:<seq>').")
    ranges: list[tuple[_Seq, _Seq]] = Field(
        min_length=1, max_length=100000, description="Inclusive [first, last] sequence-number ranges."
    )

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        bad = [list(r) for r in ranges if r[0] > r[1]]
        if bad:
            raise ValueError(f"each range is [first, last] with first <= last, got {bad[:3]}")
        return ranges


Command = Annotated[
    DeployCommand | RollbackCommand | ConfigCommand | PingCommand | AckCommand, Field(discriminator="type")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Command)


class InvalidCommand(ValueError):
    """A command payload that cannot be run; ``problems`` lists every fault and ``command_id`` its id."""

    def __init__(self, problems: list[str], command_id: str | None = None) -> None:
        self.problems = problems
        self.command_id = command_id
        super().__init__("invalid command: " + "; ".join(problems))


def parse_command(
    topic: str, payload: bytes
) -> DeployCommand | RollbackCommand | ConfigCommand | PingCommand | AckCommand:
    """Validate a command received on ``topic``; raise :class:`InvalidCommand` listing every problem.

    Defensive: whatever the bytes (too large, nested too deeply, numbers beyond any range, NaN, not UTF-8),
    the only exception is :class:`InvalidCommand`. JSON is parsed by pydantic's Rust parser (bounded
    nesting and number sizes), NaN and Infinity are refused, the payload is at most ``COMMAND_MAX_BYTES``.
    """
    if len(payload) > COMMAND_MAX_BYTES:
        raise InvalidCommand(
            [f"payload is {len(payload)} bytes, over the {COMMAND_MAX_BYTES}-byte command limit"]
        )
    try:
        data = pydantic_core.from_json(payload)
    except Exception as exc:  # ValueError (syntax, nesting, number range), UnicodeDecodeError, ...
        raise InvalidCommand([f"payload is not a JSON command ({_short(exc)}); send a JSON object"]) from exc
    command_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    if command_id is not None and len(command_id) > COMMAND_ID_MAX:
        command_id = None
    problems: list[str] = []
    if not _finite(data):
        raise InvalidCommand(["payload holds NaN or Infinity, which JSON does not allow"], command_id)
    suffix = topic.rsplit("/cmd/", 1)[-1] if "/cmd/" in topic else ""
    if not isinstance(data, dict):
        problems.append(f"payload must be a JSON object, got {type(data).__name__}")
    elif suffix != data.get("type"):
        problems.append(
            f"topic ends in cmd/{suffix} but the payload's type is {_short(data.get('type'))}; "
            "make them equal"
        )
    try:
        command = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False)[:20]:
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidCommand(problems, command_id) from exc
    except Exception as exc:  # pragma: no cover - pydantic raises ValidationError; never die of a command
        raise InvalidCommand([*problems, f"cannot validate the command ({_short(exc)})"], command_id) from exc
    if problems:
        raise InvalidCommand(problems, command_id)
    return command


def _finite(value: Any) -> bool:
    """No NaN or infinite number anywhere in a parsed JSON value (its nesting is bounded by the parser)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _short(value: Any, limit: int = 120) -> str:
    """``repr`` of a value or the text of an exception, cut to ``limit`` characters (for event details)."""
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------- JSON Schema

#: docs/schemas: one file per device message kind, and one for the command union.
_SCHEMA_FILES: dict[str, Any] = {
    **{f"{kind}.schema.json": model for kind, model in DEVICE_MESSAGES.items()},
    "command.schema.json": Command,
}
_COMMAND_EXTRA = {
    "title": "Command to a device (on edgekws/v1/{fleet}/{device}/cmd/{type}; the topic's last level "
    "equals type)",
    "examples": [
        {"schema": "edgekws.cmd/1", "id": "c-1", "ts": 1767225600.0, "type": "ping"},
        {
            "schema": "edgekws.cmd/1",
            "id": "ack-1",
            "ts": 1767225600.0,
            "type": "ack",
            "epoch": "a41f09c3d2e1",
            "ranges": [[1, 17], [19, 19]],
        },
        {
            "schema": "edgekws.cmd/1",
            "id": "r-5f1c-d1",
            "ts": 1767225600.0,
            "type": "deploy",
            "rollout": "r-5f1c",
            "rollback": False,
            "bundle": {
                "name": "digits",
                "version": "1.3.0",
                "sha256": "0" * 64,
                "size": 1730000,
                "url": "https://bundles.example/digits-1.3.0.ekb",
            },
        },
        {
            "schema": "edgekws.cmd/1",
            "id": "rb-7",
            "ts": 1767225600.0,
            "type": "rollback",
            "to_version": "1.2.0",
            "order": {
                "order": {
                    "type": "edgekws.deploy-order/1",
                    "id": "rb-7",
                    "action": "rollback",
                    "name": "digits",
                    "version": "1.2.0",
                    "sha256": None,
                    "targets": ["lab/box-1"],
                    "not_after": "2026-01-01T01:00:00Z",
                },
                "signatures": [
                    {"algorithm": "ed25519", "key_id": "0123456789abcdef", "signature": "A" * 86 + "=="}
                ],
            },
        },
    ],
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (2020-12) of every message, generated from the models above."""
    out: dict[str, dict[str, Any]] = {}
    for filename, model in _SCHEMA_FILES.items():
        adapter: TypeAdapter[Any] = TypeAdapter(model)
        generated = adapter.json_schema(by_alias=True, mode="serialization")
        head: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://edgekws.dev/schemas/{filename}",
        }
        if model is Command:
            head.update(_COMMAND_EXTRA)
        out[filename] = {**head, **generated}
    return out


def schema_text(schema: dict[str, Any]) -> str:
    """The file text of a schema: indented JSON, non-ASCII kept, one trailing newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: str | Path) -> list[Path]:
    """Write every message's JSON Schema into ``folder`` (docs/schemas); returns the files written."""
    from edgekws.packaging import atomic_write_text

    written = []
    for filename, schema in json_schemas().items():
        path = Path(folder) / filename
        atomic_write_text(path, schema_text(schema))
        written.append(path)
    return written

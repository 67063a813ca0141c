"""Commands the fleet sends to a device on ``edgekws/v1/{fleet}/{device}/cmd/{type}``, validated at runtime.

Pydantic models that reject unknown keys, a tagged union on ``type`` (the JSON Schema twin is
``docs/schemas/command.schema.json``). :func:`parse_command` checks the payload and that the topic's last
level names the same type; every problem is collected into one :class:`InvalidCommand`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

COMMAND_SCHEMA = "edgekws.cmd/1"


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["edgekws.cmd/1"] = Field(alias="schema", description="Payload schema and its version.")
    id: str = Field(min_length=1, max_length=128, description="Command id; responses carry it.")
    ts: float = Field(description="When the command was issued (Unix seconds).")


INLINE_MAX_BYTES = 4 * 2**20  # a bundle sent inside the command (base64) may be at most this large


class BundleRef(BaseModel):
    """Which bundle, where the device gets it (``url`` or inline ``data``), and what it must hash to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class DeployCommand(_Command):
    """Fetch, verify, install and activate a bundle, check its health, roll back if it fails."""

    type: Literal["deploy"] = Field(description="Command kind.")
    bundle: BundleRef = Field(description="The bundle to install.")
    rollback: bool = Field(
        default=False, description="Allow a version lower than the active one (an explicit rollback)."
    )
    rollout: str | None = Field(
        default=None, max_length=128, description="Id of the rollout this deploy belongs to."
    )


class RollbackCommand(_Command):
    """Activate the previous (or a named) installed version."""

    type: Literal["rollback"] = Field(description="Command kind.")
    to_version: str | None = Field(default=None, description="Version to go back to; None: the previous.")


class ConfigCommand(_Command):
    """Change run-time settings (keys as in agent.toml, dotted)."""

    type: Literal["config"] = Field(description="Command kind.")
    set: dict[str, Any] = Field(min_length=1, description="Dotted key -> new value.")


class PingCommand(_Command):
    """Ask the device to answer with a ``command.done`` event (a liveness and round-trip check)."""

    type: Literal["ping"] = Field(description="Command kind.")


class AckCommand(_Command):
    """The fleet monitor has stored these queued messages: the device may delete them from its outbox.

    Sent on ``cmd/ack`` after the monitor's store committed them (end-to-end delivery, docs/mqtt.md).
    """

    type: Literal["ack"] = Field(description="Command kind.")
    epoch: str = Field(min_length=1, description="The outbox epoch of the message ids ('<epoch>:<seq>').")
    ranges: list[tuple[int, int]] = Field(
        min_length=1, max_length=100000, description="Inclusive [first, last] sequence-number ranges."
    )


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
) -> DeployCommand | RollbackCommand | ConfigCommand | PingCommand:
    """Validate a command received on ``topic``; raise :class:`InvalidCommand` listing every problem."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCommand([f"payload is not JSON ({exc}); send a JSON object"]) from exc
    command_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    problems: list[str] = []
    suffix = topic.rsplit("/cmd/", 1)[-1] if "/cmd/" in topic else ""
    if isinstance(data, dict) and suffix != data.get("type"):
        problems.append(
            f"topic ends in cmd/{suffix} but the payload's type is {data.get('type')!r}; make them equal"
        )
    try:
        command = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidCommand(problems, command_id) from exc
    if problems:
        raise InvalidCommand(problems, command_id)
    return command

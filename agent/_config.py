"""The agent's configuration: one TOML file, validated at the edge of the program.

Pydantic v2 models that reject unknown keys and describe every field (frigate's ``config/base.py``
style). Backends and audio sources are tagged unions on ``type``. :func:`load_config` turns every
problem of a file into a :class:`ConfigError` whose message names the file, the line and the fix::

    agent.toml:14: source.realtime: Input should be a valid boolean; fix: write true or false

Relative paths in the file are resolved against the file's folder.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from edgekws.agent.backends import BackendConfig as BackendConfigBase
from edgekws.agent.backends import backend_classes
from edgekws.agent.mqtt import BrokerUrl, TopicLevel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (the Lava environment)
    import tomli as tomllib


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = path.expanduser()
    return path if path.is_absolute() or base is None else Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_resolve)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DeviceConfig(_Model):
    """Who this box is: the ids in MQTT topics and logs."""

    id: TopicLevel = Field(description="Device id, unique in its fleet (MQTT topic level).")
    fleet: TopicLevel = Field(default="default", description="Fleet this device belongs to.")
    group: TopicLevel | None = Field(
        default=None,
        description="Rollout group (e.g. 'canary', 'lab') reported in the status: a hint the monitor shows; "
        "`edgekws fleet deploy --group` uses the operator's assignments (`edgekws fleet group assign`).",
    )


class StoreConfig(_Model):
    """The on-device bundle store."""

    dir: ConfigPath = Field(
        description="Folder of installed bundles and the `current` symlink (created if absent)."
    )
    trusted_keys: list[ConfigPath] = Field(
        default_factory=list,
        description="Ed25519 public key files whose signatures are trusted; "
        "a bundle signed by another key is refused.",
    )
    keep_versions: int = Field(
        default=2, ge=2, description="Installed versions kept on disk (at least active + previous)."
    )


def _backend_union() -> Any:
    """The tagged union of every registered backend's ``Config`` (agent/backends: one module each)."""
    configs = tuple(cls.Config for cls in backend_classes().values())
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007 - built at run time


if TYPE_CHECKING:
    BackendConfig: TypeAlias = BackendConfigBase
else:
    BackendConfig = _backend_union()


class WavSourceConfig(_Model):
    """Replay a WAV (or any libsndfile format) file, or every audio file of a folder in name order."""

    type: Literal["wav"] = Field(description="Source kind.")
    path: ConfigPath = Field(
        description="An audio file, or a folder whose *.wav/*.flac files are played in order."
    )
    realtime: bool = Field(
        default=True, description="Pace chunks at the audio's rate; false: as fast as possible."
    )
    loop: bool = Field(default=False, description="Start again from the first file after the last one.")
    chunk_ms: float = Field(default=20.0, gt=0, le=1000, description="Audio per chunk in milliseconds.")


class MicrophoneSourceConfig(_Model):
    """Capture from a microphone through PortAudio (the `sounddevice` package)."""

    type: Literal["microphone"] = Field(description="Source kind.")
    device: str | int | None = Field(
        default=None, description="PortAudio device name or index; None: the default."
    )
    sample_rate: int = Field(
        default=16000, gt=0, description="Capture rate in Hz (resampled to the front-end's)."
    )
    chunk_ms: float = Field(default=20.0, gt=0, le=1000, description="Audio per chunk in milliseconds.")


class StdinSourceConfig(_Model):
    """Raw mono PCM on standard input (e.g. `arecord -t raw -f S16_LE -r 16000 | edgekws-agent run`)."""

    type: Literal["stdin"] = Field(description="Source kind.")
    sample_rate: int = Field(default=16000, gt=0, description="Rate of the incoming samples in Hz.")
    format: Literal["s16le", "f32le"] = Field(default="s16le", description="Sample format: s16le or f32le.")
    chunk_ms: float = Field(default=20.0, gt=0, le=1000, description="Audio per chunk in milliseconds.")


SourceConfig = Annotated[
    WavSourceConfig | MicrophoneSourceConfig | StdinSourceConfig, Field(discriminator="type")
]


class DetectionConfig(_Model):
    """The streaming keyword spotter (see docs/agent.md for both schemes).

    ``mode`` chooses the scheme; ``auto`` takes the one the bundle's model was trained for. A per-utterance
    model runs in staggered ``lanes`` with the settings below; an ``always_on`` model runs one never-reset
    network and decides with the bundle's decision settings, of which ``threshold``, ``min_margin``,
    ``refractory_ms`` and ``smoothing_ms`` override those set here (the others are lanes-only).
    """

    mode: Literal["auto", "lanes", "always_on", "sliding"] = Field(
        default="auto",
        description="auto: the mode the bundle's model was trained for (its manifest's detection.mode); "
        "lanes or always_on: require that mode (a bundle trained for the other one is refused); sliding: a "
        "per-utterance model served by one never-reset network whose readout is scored over the last window "
        "every window/lanes, with the lanes' settings (1/lanes of the lanes' work).",
    )
    smoothing_ms: float | None = Field(
        default=None,
        ge=0,
        description="Always-on only: average the per-step class probabilities over this long (unset: the "
        "bundle's value).",
    )
    lanes: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Staggered network instances; a window ends every window/lanes (more lanes: "
        "lower latency, proportionally more compute).",
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Minimum smoothed confidence (softmax probability) to emit a detection (always-on: "
        "overrides the bundle's value when set).",
    )
    smoothing: int = Field(
        default=2, ge=1, description="Average the class probabilities of this many consecutive lane windows."
    )
    refractory_ms: float = Field(
        default=1000.0,
        ge=0,
        description="After a detection, no detection of the same label for this long (always-on: of any "
        "label; overrides the bundle's value when set).",
    )
    min_input_rate_hz: float = Field(
        default=1.0,
        ge=0,
        description="Silence guard: a window whose mean input spike rate (spikes per channel per second) "
        "is below this is not scored.",
    )
    min_margin: float = Field(
        default=0.0,
        ge=0,
        description="Unknown guard: minimum probability gap between the best and second class (always-on: "
        "overrides the bundle's value when set).",
    )
    ignore_labels: list[str] = Field(
        default_factory=lambda: ["_silence_", "_unknown_", "silence", "unknown"],
        description="Class names never reported as detections (silence / unknown classes of the model).",
    )


def _check_broker(url: str) -> str:
    """The one broker-URL rule (:class:`edgekws.agent.mqtt.BrokerUrl`), without a login in the URL."""
    fix = "(no user or password: use `username` and `password_file`)"
    try:
        parsed = BrokerUrl.parse(url)
    except ValueError as exc:
        raise ValueError(f"{exc} {fix}") from exc
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(f"broker must not hold a login {fix}, got {url!r}")
    return url


class MqttTlsConfig(_Model):
    """TLS to the broker (needed for an `mqtts://` broker)."""

    ca_file: ConfigPath = Field(description="PEM file of the CA that signed the broker's certificate.")
    cert_file: ConfigPath | None = Field(
        default=None, description="This device's client certificate (PEM; deploy/mosquitto requires one)."
    )
    key_file: ConfigPath | None = Field(default=None, description="The client certificate's private key.")


class MqttConfig(_Model):
    """MQTT 5 link to the fleet (docs/mqtt.md): status, telemetry, detections, events; commands in.

    The topic's fleet and device levels are ``[device] fleet`` and ``[device] id``.
    """

    enabled: bool = Field(default=False, description="Connect to the broker and publish; false: logs only.")
    broker: Annotated[str, AfterValidator(_check_broker)] = Field(
        default="mqtt://localhost:1883",
        description="Broker URL: mqtt://host[:port] (plain, 1883) or mqtts://host[:port] (TLS, 8883).",
    )
    tls: MqttTlsConfig | None = Field(
        default=None, description="CA and client certificate files; required for an mqtts:// broker."
    )
    username: str | None = Field(
        default=None, description="Broker login; the deploy/mosquitto ACL expects '<fleet>/<device>'."
    )
    password_file: ConfigPath | None = Field(
        default=None, description="File holding the broker password (first line), kept out of this file."
    )
    delivery: Literal["monitor", "broker"] = Field(
        default="monitor",
        description="When a queued message leaves the outbox: 'monitor' = at the fleet monitor's ack "
        "(nothing lost even if the broker crashes; kept while no monitor subscribes), "
        "'broker' = at any PUBACK (for set-ups without an edgekws monitor).",
    )
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keep-alive; the Last Will fires after 1.5x.")
    outbox: ConfigPath = Field(
        default=Path("telemetry-outbox.sqlite"),
        description="The on-disk outbox (SQLite) of messages not yet delivered.",
    )
    outbox_max_bytes: int = Field(
        default=32 * 2**20, gt=0, description="Soft outbox limit: above it the oldest telemetry is dropped."
    )
    outbox_hard_max_bytes: int = Field(
        default=64 * 2**20, gt=0, description="Hard outbox limit: telemetry, then events, then detections go."
    )

    @model_validator(mode="after")
    def _tls_matches_scheme(self) -> MqttConfig:
        if self.enabled and BrokerUrl.parse(self.broker).tls and self.tls is None:
            raise ValueError("an mqtts:// broker needs [telemetry.mqtt.tls] with at least ca_file")
        if self.outbox_hard_max_bytes < self.outbox_max_bytes:
            raise ValueError("outbox_hard_max_bytes must be at least outbox_max_bytes")
        return self


def _check_allowed_url(text: str, info: ValidationInfo) -> str:
    """A valid allow-list entry; a ``file:`` entry with a relative path (``file:../dist/``) is taken
    relative to the config file's folder, like every other path in the config, and stored absolute."""
    from urllib.parse import unquote, urlsplit

    from edgekws.agent._rollout import UrlRule

    parts = urlsplit(text)
    if parts.scheme.lower() == "file" and not parts.netloc and not parts.path.startswith("/"):
        folder = _resolve(Path(unquote(parts.path) or "."), info).resolve()
        text = folder.as_uri().rstrip("/") + "/"
    UrlRule.parse(text)
    return text


class RolloutConfig(_Model):
    """Over-the-air deploys (the `deploy` and `rollback` commands, docs/mqtt.md)."""

    allowed_urls: list[Annotated[str, AfterValidator(_check_allowed_url)]] = Field(
        default_factory=list,
        description="URL prefixes a deploy may fetch from, e.g. 'https://bundles.example/releases/' (that "
        "scheme, host and port, paths under it) or 'file:///var/lib/edgekws/incoming/' (regular files in "
        "that folder; 'file:../dist/' is relative to this file's folder); empty: inline bundles only.",
    )
    order_keys: list[ConfigPath] = Field(
        default_factory=list,
        description="Ed25519 public keys whose signed deploy orders authorize downgrades and rollbacks; "
        "empty: the [store] trusted_keys.",
    )
    download_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Give up fetching a bundle (http/https/file URL) after this long in all.",
    )
    max_bundle_bytes: int = Field(
        default=256 * 2**20,
        gt=0,
        description="Refuse a bundle larger than this (checked while it streams in).",
    )
    health_max_latency_ms: float = Field(
        default=2000.0,
        gt=0,
        description="Health check before activation: after one warm-up window, one window of the built-in "
        "test audio must run within this time (and give finite readouts), else the deploy is refused.",
    )


class TelemetryConfig(_Model):
    """Periodic aggregates: latency percentiles, real-time factor, energy, CPU and memory."""

    interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between telemetry reports (logged, and published on MQTT)."
    )
    window: int = Field(
        default=1000, ge=10, description="Latency percentiles are over this many recent samples."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT link to the fleet.")


class LoggingConfig(_Model):
    """Structured logs on standard error."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    format: Literal["json", "text"] = Field(
        default="json", description="One JSON object per line, or plain text."
    )


def _default_backends() -> list[BackendConfig]:
    return [backend_classes()["emulator"].Config(type="emulator")]


class AgentConfig(_Model):
    """The whole `agent.toml`."""

    device: DeviceConfig = Field(description="Device identity.")
    store: StoreConfig = Field(description="Bundle store.")
    backends: list[BackendConfig] = Field(
        default_factory=_default_backends,
        min_length=1,
        description="Backends in order of preference; the first one whose runtime is present and that the "
        "bundle supports is used.",
    )
    source: SourceConfig = Field(description="Audio source.")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Keyword spotting rule.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="Telemetry.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Over-the-air deploys.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")


@dataclass(frozen=True)
class ConfigProblem:
    """One fault of a config file: where it is and how to fix it."""

    file: str
    line: int | None
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}; fix: {self.fix}"


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` lists every fault found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        n = len(problems)
        head = f"{n} problem(s) in the agent config:" if n > 1 else "invalid agent config:"
        super().__init__(head + "\n  " + "\n  ".join(str(p) for p in problems))


def load_config(path: str | os.PathLike[str], *, check_files: bool = False) -> AgentConfig:
    """Read and validate an agent config file; raise :class:`ConfigError` listing every problem.

    With ``check_files`` the files it names are checked too (:func:`file_problems`): what
    ``--validate-config`` and the daemon's start do.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(name, None, "", f"cannot read the file ({exc})", "check the path")]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        problem = ConfigProblem(
            name, int(m.group(1)) if m else None, "", f"not valid TOML ({exc})", "fix the syntax"
        )
        raise ConfigError([problem]) from exc
    cfg = parse_config(data, file=name, text=text, base_dir=Path(name).resolve().parent)
    if check_files:
        problems = file_problems(cfg, file=name, text=text)
        if problems:
            raise ConfigError(problems)
    return cfg


def file_problems(cfg: AgentConfig, *, file: str = "<config>", text: str = "") -> list[ConfigProblem]:
    """Every file the config names that is missing or unusable: trusted and order keys that do not load,
    a store or outbox that cannot be written, a WAV source that cannot be read, MQTT password and TLS
    files that cannot be read."""
    from edgekws.packaging import KeyFileError, as_trust_store

    lines = text.splitlines()
    problems: list[ConfigProblem] = []

    def add(path: tuple[Any, ...], message: str, fix: str) -> None:
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        problems.append(ConfigProblem(file, _find_line(lines, path), key, message, fix))

    for section, keys in (("store", cfg.store.trusted_keys), ("rollout", cfg.rollout.order_keys)):
        field = "trusted_keys" if section == "store" else "order_keys"
        for i, key_path in enumerate(keys):
            try:
                as_trust_store([key_path])
            except (KeyFileError, OSError) as exc:
                add((section, field, i), str(exc), "point it at an Ed25519 public key file (NAME.pub)")
    _writable_folder(cfg.store.dir, ("store", "dir"), add)
    source = cfg.source
    if isinstance(source, WavSourceConfig):
        _readable_audio(source.path, add)
    mq = cfg.telemetry.mqtt
    if mq.enabled:
        if mq.outbox.is_dir():
            add(("telemetry", "mqtt", "outbox"), f"{mq.outbox} is a folder", "name a file (outbox.sqlite)")
        else:
            _writable_folder(mq.outbox.parent, ("telemetry", "mqtt", "outbox"), add, creates=mq.outbox.name)
        files: list[tuple[tuple[str, ...], Path | None]] = [
            (("telemetry", "mqtt", "password_file"), mq.password_file)
        ]
        if mq.tls is not None:
            tls_keys = ("ca_file", "cert_file", "key_file")
            files += [(("telemetry", "mqtt", "tls", k), getattr(mq.tls, k)) for k in tls_keys]
        for where, path in files:
            if path is not None and not os.access(path, os.R_OK):
                add(where, f"cannot read {path}", "point it at an existing, readable file")
    return problems


def _writable_folder(folder: Path, where: tuple[Any, ...], add: Any, creates: str | None = None) -> None:
    """``folder`` is (or can be created as) a folder this process may write in."""
    what = f"the folder of {creates}" if creates else "the folder"
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        add(where, f"{what} {folder} cannot be made: {probe} is not a folder", "point it at a folder")
    elif not os.access(probe, os.W_OK | os.X_OK):
        add(where, f"{what} {folder} is not writable by this user", "make it writable or point elsewhere")


def _readable_audio(path: Path, add: Any) -> None:
    from edgekws.agent._sources import AUDIO_SUFFIXES

    where = ("source", "path")
    if path.is_dir():
        if not [p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES]:
            add(where, f"the folder {path} holds no audio files", f"add {'/'.join(AUDIO_SUFFIXES)} files")
        return
    try:
        import soundfile as sf

        sf.info(str(path))
    except Exception as exc:  # missing, unreadable or not audio: libsndfile's reason
        add(where, f"cannot read audio from {path} ({exc})", "point it at an audio file or a folder of them")


def parse_config(
    data: dict[str, Any], *, file: str = "<config>", text: str = "", base_dir: Path | None = None
) -> AgentConfig:
    """Validate a config mapping (the parsed TOML); ``text`` lets errors point at lines."""
    try:
        return AgentConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = text.splitlines()
        problems = [_problem(err, file, lines) for err in exc.errors(include_url=False)]
        raise ConfigError(problems) from exc


def _problem(err: Any, file: str, lines: list[str]) -> ConfigProblem:
    loc = tuple(err["loc"])
    kind = err["type"]
    # Tagged unions insert the tag value into loc ('source', 'wav', 'path'): drop it for the key path.
    path = _key_path(loc)
    key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
    line = _find_line(lines, path)
    message = str(err["msg"])
    description = _description(path)
    if kind == "extra_forbidden":
        known = _known_keys(path[:-1])
        fix = f"remove it or correct its spelling (known keys here: {', '.join(known)})"
        message = "unknown key"
    elif kind == "missing":
        fix = f"add `{path[-1]} = …` ({description})" if description else f"add `{path[-1]}`"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = err.get("ctx", {}).get("expected_tags", "")
        fix = f"set `type` to one of {expected}"
    else:
        fix = f"give a valid value ({description})" if description else "see deploy/agent.example.toml"
        if kind == "literal_error":
            expected = str(err.get("ctx", {}).get("expected", "an allowed value"))
            expected = expected.replace("False", "false").replace("True", "true")
            fix = f"use {expected}" + (f" ({description})" if description else "")
    return ConfigProblem(file, line, key, message, fix)


_HEADER = re.compile(r"^\s*\[")


def _key_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        tags = (
            _tags(SourceConfig) if prev == "source" else _tags(BackendConfig) if isinstance(prev, int) else ()
        )
        if isinstance(part, str) and part in tags:
            continue
        out.append(part)
    return tuple(out)


def _tags(union: Any) -> set[str]:
    """The ``type`` tags of a tagged union of config models."""
    return {str(get_args(m.model_fields["type"].annotation)[0]) for m in _models_in(union)}


def _model_at(path: tuple[Any, ...]) -> list[type[BaseModel]]:
    """The model classes a (tag-free) key path may point into (several for unions)."""
    models: list[type[BaseModel]] = [AgentConfig]
    for part in path:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            f = m.model_fields.get(part)
            if f is None:
                continue
            nxt += _models_in(f.annotation)
        models = nxt
    return models


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    if hasattr(annotation, "__origin__") and getattr(annotation, "__metadata__", None):
        found += _models_in(annotation.__origin__)
    return found


def _known_keys(path: tuple[Any, ...]) -> list[str]:
    keys: list[str] = []
    for m in _model_at(path):
        keys += [k for k in m.model_fields if k not in keys]
    return keys


def _description(path: tuple[Any, ...]) -> str:
    for m in _model_at(path[:-1]):
        f = m.model_fields.get(path[-1]) if path and isinstance(path[-1], str) else None
        if f is not None and f.description:
            return f.description
    return ""


def _find_line(lines: list[str], path: tuple[Any, ...]) -> int | None:
    """1-based line of a key path in the TOML text, by a small search (tables, arrays of tables, keys)."""
    pos, found = 0, None
    table: list[str] = []
    for i, part in enumerate(path):
        if isinstance(part, int):
            header = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(table)) + r"\s*\]\]")
            hits = [n for n in range(max(pos - 1, 0), len(lines)) if header.match(lines[n])]
            if part < len(hits):
                pos = found = hits[part]
                pos += 1
            continue
        table.append(part)
        dotted = re.escape(".".join(table))
        header = re.compile(r"^\s*\[\[?\s*" + dotted + r"\s*\]\]?\s*(#.*)?$")
        key = re.compile(r"^\s*" + re.escape(part) + r"\s*=")
        last = i == len(path) - 1
        for n in range(pos, len(lines)):
            if header.match(lines[n]) or key.match(lines[n]):
                pos, found = n + 1, n
                break
            if last and i > 0 and _HEADER.match(lines[n]):
                break  # the key is not in its table: point at the table's header
    return None if found is None else found + 1

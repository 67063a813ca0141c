"""The bundle manifest: what a bundle holds, where it came from, and the hash of every model file.

The manifest is what gets signed, so it has exactly one byte form (:func:`canonical_json`): keys sorted,
no insignificant whitespace, UTF-8 (not ``\\u`` escapes), no NaN/Infinity, one trailing newline. A reader
re-serializes what it parsed and refuses a manifest whose bytes differ, so the bytes that were signed are
the bytes that were interpreted (no duplicate keys, no ignored fields, no second spelling).

Versions are Semantic Versioning 2.0.0 (https://semver.org) and are ordered by semver *precedence*:
``1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta.2 < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0``;
build metadata (``+…``) does not take part in precedence.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from edgekws.packaging._detection import DetectionSpec
from edgekws.packaging._errors import ManifestError, RollbackRefused
from edgekws.packaging._network import NetworkSpec, SpecError

# --------------------------------------------------------------------------------------------------------
# Canonical JSON


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON document: sorted keys, compact separators, UTF-8, trailing newline."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_strict(data: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys and NaN/Infinity; raises ``ValueError`` with the reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


# --------------------------------------------------------------------------------------------------------
# Semantic versions

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
MAX_VERSION_LENGTH = 64


@dataclass(frozen=True)
class SemVer:
    """A Semantic Versioning 2.0.0 version, ordered by semver precedence (build metadata ignored).

    ``==`` compares every field (``1.0.0+a != 1.0.0+b``) while ``<``/``>`` compare precedence, under which
    those two are neither lower nor higher: use :meth:`same_precedence` to ask for that.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        if not isinstance(text, str) or len(text) > MAX_VERSION_LENGTH:
            raise ValueError(
                f"version must be a semver string of at most {MAX_VERSION_LENGTH} characters, got {text!r}"
            )
        m = _SEMVER.fullmatch(text)
        if m is None:
            raise ValueError(
                f"version must be semantic (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.2.0 or "
                f"1.2.0-rc.1), got {text!r}"
            )
        major, minor, patch, pre, build = m.groups()
        return cls(
            int(major),
            int(minor),
            int(patch),
            tuple(pre.split(".")) if pre else (),
            tuple(build.split(".")) if build else (),
        )

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def precedence_key(self) -> tuple[Any, ...]:
        """A sort key implementing semver §11: a release outranks its pre-releases; numeric identifiers
        compare numerically and rank below alphanumeric ones; a longer identifier list wins a tie."""
        if not self.prerelease:
            pre: tuple[Any, ...] = (1,)
        else:
            pre = (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease))
        return (self.major, self.minor, self.patch, pre)

    def same_precedence(self, other: SemVer) -> bool:
        return self.precedence_key() == other.precedence_key()

    def __lt__(self, other: SemVer) -> bool:
        return self.precedence_key() < other.precedence_key()

    def __le__(self, other: SemVer) -> bool:
        return self.precedence_key() <= other.precedence_key()

    def __gt__(self, other: SemVer) -> bool:
        return self.precedence_key() > other.precedence_key()

    def __ge__(self, other: SemVer) -> bool:
        return self.precedence_key() >= other.precedence_key()


# --------------------------------------------------------------------------------------------------------
# Times


def format_created(when: datetime) -> str:
    """``when`` as the manifest's ``created`` string: UTC, whole seconds, ``YYYY-MM-DDTHH:MM:SSZ``."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("created must be a timezone-aware datetime (naive times are ambiguous); use UTC")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """The current time as a ``created`` string."""
    return format_created(datetime.now(timezone.utc))


def parse_created(text: str) -> datetime:
    """Parse a ``created`` string (``YYYY-MM-DDTHH:MM:SSZ``) into an aware UTC datetime."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", text, re.ASCII):
        raise ValueError(f"created must be UTC ISO 8601 like 2026-05-09T07:35:25Z, got {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------------------
# Manifest parts

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A bundle path: model/ then one or more components of safe characters, none of them "." or "..".
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"
MODEL_PATH_PATTERN = re.compile(rf"model(?:/{_COMPONENT}){{1,8}}")
_BACKEND_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_PATH_LENGTH = 200


def check_model_path(path: object) -> str | None:
    """Why ``path`` is not an acceptable bundle model-file path, or None if it is."""
    if not isinstance(path, str):
        return f"file path must be a string, got {path!r}"
    if len(path) > MAX_PATH_LENGTH or not MODEL_PATH_PATTERN.fullmatch(path):
        return (
            f"file path {path!r} must be 'model/' followed by 1-8 '/'-separated names of letters, digits, "
            "'.', '_' and '-' (not starting with '.' or '-'), at most 200 characters in all"
        )
    return None


@dataclass(frozen=True)
class FileEntry:
    """The sha256 (lowercase hex) and size in bytes of one model file."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Lineage:
    """Where a model came from: the version it was derived from, the training run and the data set."""

    parent_version: str | None = None  # the same-name version this one replaces or was fine-tuned from
    training_run_id: str | None = None  # the trainer's run id (e.g. the run folder name)
    dataset_fingerprint: str | None = None  # a digest of the training data set (e.g. "sha256:…")

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_version": self.parent_version,
            "training_run_id": self.training_run_id,
            "dataset_fingerprint": self.dataset_fingerprint,
        }


@dataclass(frozen=True)
class Metrics:
    """Evaluation results: of the float model, of the fixed-point model, and as run by each backend.

    Each is a mapping of metric name (e.g. ``accuracy``, ``latency_ms_p50``) to a finite number.
    """

    float: Mapping[str, float] = field(default_factory=dict)
    fixed_point: Mapping[str, builtins.float] = field(default_factory=dict)
    backends: Mapping[str, Mapping[str, builtins.float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "float": dict(self.float),
            "fixed_point": dict(self.fixed_point),
            "backends": {k: dict(v) for k, v in self.backends.items()},
        }


# --------------------------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class Manifest:
    """Everything a device needs to know about a bundle before loading it, and the hash of every file.

    ``frontend``, ``network`` and ``quantization`` are spec dictionaries (``to_dict()`` of FrontendSpec,
    NetworkSpec and the quantizer's spec), each tagged with ``type`` and ``format_version`` so a reader
    can dispatch on them; packaging validates the network spec itself and leaves the other two to the
    code that owns them. ``detection`` is :class:`DetectionSpec`'s dictionary (the streaming mode the model
    was trained for and its decision settings) or None; a manifest with it is format 2, without it format 1
    (which the agent serves as a per-utterance model). ``files`` maps every bundle path under ``model/`` to
    its sha256 and size. Construction validates every field and raises one :class:`ManifestError` listing
    all problems.
    """

    TYPE: ClassVar[str] = "edgekws.manifest"
    FORMAT_VERSION: ClassVar[int] = 2  # the newest this code writes and reads; 1 has no "detection"
    FORMAT_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)

    name: str  # lowercase model name, safe as a file name: [a-z0-9][a-z0-9._-]{0,63}
    version: str  # semantic version (semver 2.0.0)
    created: str  # UTC ISO 8601, whole seconds: 2026-05-09T07:35:25Z
    producer_version: str  # version of the edgekws that wrote the bundle
    labels: tuple[str, ...]  # class names, in readout order
    frontend: Mapping[str, Any]  # FrontendSpec.to_dict()
    network: Mapping[str, Any]  # NetworkSpec.to_dict()
    quantization: Mapping[str, Any] | None = None  # the quantizer's spec; None for float-only bundles
    backends: tuple[
        str, ...
    ] = ()  # backends this bundle was validated on, e.g. ("lava_fixed_pt", "onnx_cpu")
    metrics: Metrics = field(default_factory=Metrics)
    lineage: Lineage = field(default_factory=Lineage)
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    detection: Mapping[str, Any] | None = None  # DetectionSpec.to_dict(); None: format 1 (per-utterance)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if isinstance(self.detection, DetectionSpec):
            object.__setattr__(self, "detection", self.detection.to_dict())
        # own a copy: later edits by the caller must not change the bytes this manifest signs
        for key in ("frontend", "network", "quantization", "detection"):
            if isinstance(getattr(self, key), Mapping):
                object.__setattr__(self, key, _plain(getattr(self, key)))
        object.__setattr__(self, "backends", tuple(self.backends))
        problems = _validate(self)
        if problems:
            raise ManifestError(problems)

    @property
    def semver(self) -> SemVer:
        return SemVer.parse(self.version)

    @property
    def bundle_filename(self) -> str:
        """The bundle's file name, ``NAME-VERSION.ekb``."""
        return f"{self.name}-{self.version}.ekb"

    def network_spec(self) -> NetworkSpec | None:
        """The embedded network as a NetworkSpec, or None if it is of another type."""
        if self.network.get("type") != NetworkSpec.TYPE:
            return None
        return NetworkSpec.from_dict(dict(self.network))

    @property
    def format_version(self) -> int:
        """2 with a ``detection`` spec, 1 without (the bytes of older bundles are unchanged)."""
        return 1 if self.detection is None else 2

    def detection_spec(self) -> DetectionSpec:
        """The streaming mode and decision settings; a format-1 manifest's model is per-utterance (lanes)."""
        if self.detection is None:
            return DetectionSpec(mode="lanes")
        return DetectionSpec.from_dict(dict(self.detection))

    def with_files(self, files: Mapping[str, FileEntry]) -> Manifest:
        return replace(self, files=dict(files))

    def to_dict(self) -> dict[str, Any]:
        detection = {} if self.detection is None else {"detection": _plain(self.detection)}
        return {
            **detection,
            "type": self.TYPE,
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "producer_version": self.producer_version,
            "lineage": self.lineage.to_dict(),
            "labels": list(self.labels),
            "frontend": _plain(self.frontend),
            "network": _plain(self.network),
            "quantization": None if self.quantization is None else _plain(self.quantization),
            "metrics": self.metrics.to_dict(),
            "backends": list(self.backends),
            "files": {path: entry.to_dict() for path, entry in sorted(self.files.items())},
        }

    def canonical_bytes(self) -> bytes:
        """The exact bytes stored as ``manifest.json`` and signed."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Rebuild a manifest from its dictionary form; every problem is reported in one ManifestError."""
        if not isinstance(data, dict):
            raise ManifestError([f"manifest must be a JSON object, got {type(data).__name__}"])
        problems: list[str] = []
        if data.get("type") != cls.TYPE:
            problems.append(f"type must be {cls.TYPE!r}, got {data.get('type')!r}")
        version = data.get("format_version")
        if version not in cls.FORMAT_VERSIONS:
            newer = isinstance(version, int) and version > cls.FORMAT_VERSION
            hint = "; upgrade edgekws to read it" if newer else ""
            problems.append(f"format_version must be 1 or 2, got {version!r}{hint}")
        known = {
            "type", "format_version", "name", "version", "created", "producer_version", "lineage", "labels",
            "frontend", "network", "quantization", "metrics", "backends", "files",
        }  # fmt: skip
        if version == 2:
            known.add("detection")  # format 2 = format 1 + the detection spec
        unknown = sorted(set(data) - known)
        if unknown:
            problems.append(f"unknown fields {unknown}; this reader knows {sorted(known)}")
        missing = sorted(known - set(data))
        if missing:
            problems.append(f"missing fields {missing}")
        if problems:
            raise ManifestError(problems)

        lineage = data["lineage"]
        if not isinstance(lineage, dict) or set(lineage) != set(Lineage().to_dict()):
            problems.append(
                "lineage must be an object with exactly parent_version, training_run_id, dataset_fingerprint"
            )
            lineage = {}
        metrics = data["metrics"]
        if not isinstance(metrics, dict) or set(metrics) != {"float", "fixed_point", "backends"}:
            problems.append("metrics must be an object with exactly float, fixed_point, backends")
            metrics = {}
        files = data["files"]
        entries: dict[str, FileEntry] = {}
        if not isinstance(files, dict):
            problems.append("files must be an object mapping paths to {sha256, size}")
        else:
            for path, entry in files.items():
                if not isinstance(entry, dict) or set(entry) != {"sha256", "size"}:
                    problems.append(f"files[{path!r}] must be an object with exactly sha256 and size")
                    continue
                entries[path] = FileEntry(entry["sha256"], entry["size"])
        for key in ("labels", "backends"):
            if not isinstance(data[key], list):
                problems.append(f"{key} must be a list of strings")
        if problems:
            raise ManifestError(problems)
        return cls(
            name=data["name"],
            version=data["version"],
            created=data["created"],
            producer_version=data["producer_version"],
            labels=tuple(data["labels"]),
            frontend=data["frontend"],
            network=data["network"],
            quantization=data["quantization"],
            backends=tuple(data["backends"]),
            metrics=Metrics(**metrics),
            lineage=Lineage(**lineage),
            files=entries,
            detection=data.get("detection"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json`` bytes, requiring them to be in canonical form."""
        try:
            obj = parse_json_strict(data)
        except ValueError as exc:
            raise ManifestError([f"manifest.json is {exc}"]) from exc
        manifest = cls.from_dict(obj)
        if manifest.canonical_bytes() != data:
            raise ManifestError(
                [
                    "manifest.json is not in canonical form (sorted keys, no extra whitespace, UTF-8, "
                    "one trailing newline); it was edited by hand or by another tool: rebuild the bundle"
                ]
            )
        return manifest


def _plain(obj: Any) -> Any:
    """A deep copy of a JSON-like structure with tuples turned into lists (JSON has only arrays)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _json_problem(value: Any, where: str) -> str | None:
    """Why ``value`` cannot be stored in canonical JSON, or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} must be finite, got {value}"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} has a non-string key {k!r}"
            problem = _json_problem(v, f"{where}.{k}")
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _json_problem(v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return f"{where} holds a {type(value).__name__}, which JSON cannot store"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate_spec(spec: Any, key: str, problems: list[str]) -> bool:
    if not isinstance(spec, Mapping):
        problems.append(f"{key} must be a spec object (to_dict() of the spec), got {type(spec).__name__}")
        return False
    if not isinstance(spec.get("type"), str) or not isinstance(spec.get("format_version"), int):
        problems.append(f"{key} must carry a string 'type' and an integer 'format_version' (use to_dict())")
        return False
    problem = _json_problem(spec, key)
    if problem:
        problems.append(problem)
        return False
    return True


def _validate(m: Manifest) -> list[str]:
    problems: list[str] = []
    if not isinstance(m.name, str) or not NAME_PATTERN.fullmatch(m.name):
        problems.append(
            f"name must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, got {m.name!r}"
        )
    version: SemVer | None = None
    try:
        version = SemVer.parse(m.version)
    except ValueError as exc:
        problems.append(str(exc))
    try:
        parse_created(m.created)
    except ValueError as exc:
        problems.append(str(exc))
    if not isinstance(m.producer_version, str) or not 0 < len(m.producer_version) <= 64:
        problems.append(f"producer_version must be a non-empty string, got {m.producer_version!r}")

    lin = m.lineage
    if lin.parent_version is not None:
        try:
            parent = SemVer.parse(lin.parent_version)
            if version is not None and not parent < version:
                problems.append(
                    f"lineage.parent_version {lin.parent_version} must be lower than version {m.version}; "
                    "bump the version"
                )
        except ValueError as exc:
            problems.append(f"lineage.parent_version: {exc}")
    for key in ("training_run_id", "dataset_fingerprint"):
        value = getattr(lin, key)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
            problems.append(f"lineage.{key} must be a non-empty string of at most 256 characters or null")

    labels_ok = True
    if not m.labels or not all(isinstance(x, str) and x for x in m.labels):
        problems.append(f"labels must list at least one non-empty class name, got {list(m.labels)!r}")
        labels_ok = False
    elif len(set(m.labels)) != len(m.labels):
        dupes = sorted({x for x in m.labels if m.labels.count(x) > 1})
        problems.append(f"labels must be unique, {dupes} repeat")

    _validate_spec(m.frontend, "frontend", problems)
    if _validate_spec(m.network, "network", problems) and m.network.get("type") == NetworkSpec.TYPE:
        try:
            net = NetworkSpec.from_dict(dict(m.network))
        except Exception as exc:  # untrusted input into another module's parser: report, never crash
            problems.append(
                f"network: {exc if isinstance(exc, SpecError) else f'invalid network spec: {exc}'}"
            )
        else:
            if labels_ok and len(m.labels) != net.num_outputs:
                problems.append(
                    f"labels name {len(m.labels)} classes but the network has {net.num_outputs} outputs"
                )
            if net.class_names and labels_ok and tuple(m.labels) != net.class_names:
                problems.append("labels must equal network.class_names (same names, same order)")
            fe_dt = m.frontend.get("dt_ms") if isinstance(m.frontend, Mapping) else None
            if _is_number(fe_dt) and fe_dt != net.dt_ms:
                problems.append(f"frontend.dt_ms ({fe_dt}) and network.dt_ms ({net.dt_ms}) must be equal")
    if m.quantization is not None:
        _validate_spec(m.quantization, "quantization", problems)
    if m.detection is not None and _validate_spec(m.detection, "detection", problems):
        try:
            spec = DetectionSpec.from_dict(dict(m.detection))
        except Exception as exc:  # untrusted input into the spec's parser: report, never crash
            problems.append(f"detection: {exc}")
        else:
            if spec.mode == "always_on" and labels_ok and spec.background_label not in m.labels:
                problems.append(
                    f"detection.background_label {spec.background_label!r} must be one of the labels"
                )

    if not all(isinstance(b, str) and _BACKEND_PATTERN.fullmatch(b) for b in m.backends) or len(
        set(m.backends)
    ) != len(m.backends):
        problems.append(
            f"backends must be unique lowercase names ([a-z0-9][a-z0-9_.-]*), got {list(m.backends)!r}"
        )

    met = m.metrics
    groups = {"float": met.float, "fixed_point": met.fixed_point}
    if not isinstance(met.backends, Mapping):
        problems.append("metrics.backends must map backend names to metrics")
    else:
        groups.update({f"backends.{k}": v for k, v in met.backends.items()})
    for where, values in groups.items():
        if not isinstance(values, Mapping):
            problems.append(f"metrics.{where} must map metric names to numbers")
            continue
        for k, v in values.items():
            if not isinstance(k, str) or not k or not _is_number(v):
                problems.append(f"metrics.{where}[{k!r}] must be a finite number under a non-empty name")

    if not isinstance(m.files, Mapping):
        problems.append("files must map bundle paths to FileEntry")
    else:
        for path, entry in m.files.items():
            reason = check_model_path(path)
            if reason:
                problems.append(reason)
            if not isinstance(entry, FileEntry):
                problems.append(f"files[{path!r}] must be a FileEntry")
                continue
            if not isinstance(entry.sha256, str) or not _SHA256_PATTERN.fullmatch(entry.sha256):
                problems.append(f"files[{path!r}].sha256 must be 64 lowercase hex digits")
            if not isinstance(entry.size, int) or isinstance(entry.size, bool) or entry.size < 0:
                problems.append(f"files[{path!r}].size must be a non-negative integer")
    if not problems:
        try:
            m.canonical_bytes()
        except (UnicodeEncodeError, ValueError, TypeError) as exc:
            problems.append(f"manifest cannot be written as canonical JSON: {exc}")
    return problems


# --------------------------------------------------------------------------------------------------------
# Versioning rule for activation

Activation = Literal["install", "upgrade", "reinstall", "rollback"]


def check_activation(
    active: Manifest | None, candidate: Manifest, *, allow_rollback: bool = False, allow_rename: bool = False
) -> Activation:
    """Decide whether ``candidate`` may replace the ``active`` bundle, by semver precedence.

    Returns ``"install"`` (nothing active), ``"upgrade"`` (higher version), ``"reinstall"`` (same precedence)
    or ``"rollback"`` (lower version, only with ``allow_rollback``). Raises :class:`RollbackRefused` for a
    lower version without ``allow_rollback``, and for another model name without ``allow_rename``.
    """
    if active is None:
        return "install"
    if active.name != candidate.name and not allow_rename:
        raise RollbackRefused(
            f"bundle {candidate.name} {candidate.version} is not a version of the active model "
            f"{active.name}; deploy it explicitly as a model change (allow_rename=True)"
        )
    new, old = candidate.semver, active.semver
    if new > old or active.name != candidate.name:
        return "upgrade"
    if new.same_precedence(old):
        return "reinstall"
    if not allow_rollback:
        raise RollbackRefused(
            f"{candidate.name} {candidate.version} is lower than the active {active.version}; refusing to "
            "roll back unless told to (--rollback / allow_rollback=True)"
        )
    return "rollback"

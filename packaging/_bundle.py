"""Writing and reading bundles: ``NAME-VERSION.ekb``, a signed, immutable USTAR archive.

Layout (in this order): ``manifest.json`` (canonical JSON), ``signature`` (canonical JSON of Ed25519
signatures over the manifest bytes), then the model files ``model/…`` sorted by path. See docs/bundle.md.

Reading never extracts by name and never trusts a byte before everything is checked: :func:`open_bundle`
reads the archive into memory (bounded by :class:`Limits`), checks the container, the member names and
types, the manifest schema, the signature against the trusted keys, and the size and sha256 of every file,
then either returns a :class:`Bundle` or raises one :class:`InvalidBundle` listing every problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgekws.packaging._durable import atomic_write_bytes
from edgekws.packaging._errors import InvalidBundle, ManifestError, Problem
from edgekws.packaging._manifest import (
    FileEntry,
    Lineage,
    Manifest,
    Metrics,
    check_model_path,
    parse_created,
    parse_json_strict,
    utc_now,
)
from edgekws.packaging._signing import (
    Signature,
    SigningKey,
    TrustLike,
    as_trust_store,
    parse_signature_file,
    sign_manifest,
)
from edgekws.packaging._tar import TarMember, read_tar, write_tar

MANIFEST = "manifest.json"
SIGNATURE = "signature"
MODEL_DIR = "model"
SUFFIX = ".ekb"
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Size limits a reader enforces before reading anything (defaults suit KWS models with room to spare)."""

    max_total_bytes: int = 512 * MiB  # the whole bundle file
    max_member_bytes: int = 256 * MiB  # any one member
    max_manifest_bytes: int = 1 * MiB
    max_signature_bytes: int = 64 * 1024
    max_members: int = 64


# --------------------------------------------------------------------------------------------------------
# Writing


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_files(files: Mapping[str, bytes | Path]) -> dict[str, bytes]:
    problems: list[str] = []
    out: dict[str, bytes] = {}
    for path, content in files.items():
        reason = check_model_path(path)
        if reason:
            problems.append(reason)
            continue
        if isinstance(content, (bytes, bytearray, memoryview)):
            out[path] = bytes(content)
        else:
            try:
                out[path] = Path(content).read_bytes()
            except OSError as exc:
                problems.append(f"cannot read {content} for {path}: {exc.strerror}")
    if not files:
        problems.append("a bundle needs at least one model file (e.g. model/netx.h5)")
    if problems:
        raise ManifestError(problems)
    return out


def bundle_bytes(
    manifest: Manifest,
    files: Mapping[str, bytes | Path],
    private_key: SigningKey | Sequence[SigningKey],
    limits: Limits | None = None,
) -> tuple[bytes, Manifest]:
    """The bundle's bytes and its final manifest (``files`` filled in from the given model files).

    If ``manifest.files`` is already set it must agree with ``files`` exactly.
    """
    limits = limits or Limits()
    contents = _load_files(files)
    entries = {p: FileEntry(sha256_hex(b), len(b)) for p, b in sorted(contents.items())}
    if manifest.files and dict(manifest.files) != entries:
        raise ManifestError(["manifest.files disagrees with the files given; leave it empty to fill it in"])
    manifest = manifest.with_files(entries)
    keys = [private_key] if isinstance(private_key, SigningKey) else list(private_key)
    if not keys:
        raise ValueError("a bundle must be signed by at least one key")
    manifest_bytes = manifest.canonical_bytes()
    members = [(MANIFEST, manifest_bytes), (SIGNATURE, sign_manifest(manifest_bytes, keys))]
    members += sorted(contents.items())
    too_big = [p for p, b in members if len(b) > limits.max_member_bytes]
    if too_big:
        raise ValueError(f"{too_big} exceed the {limits.max_member_bytes}-byte member limit readers enforce")
    data = write_tar(members, mtime=int(parse_created(manifest.created).timestamp()))
    if len(data) > limits.max_total_bytes:
        raise ValueError(f"the bundle would be {len(data)} bytes, over the {limits.max_total_bytes} limit")
    return data, manifest


def write_bundle(
    out_path: Path | str,
    manifest: Manifest,
    files: Mapping[str, bytes | Path],
    private_key: SigningKey | Sequence[SigningKey],
    limits: Limits | None = None,
) -> Path:
    """Write a signed bundle; ``out_path`` is a file path or a directory (then ``NAME-VERSION.ekb`` in it).

    Identical inputs give identical bytes (Ed25519 signatures are deterministic). The file appears
    atomically: it is written to a temp file in the same directory, fsynced and renamed.
    """
    data, final = bundle_bytes(manifest, files, private_key, limits)
    out = Path(out_path)
    dest = out / final.bundle_filename if out.is_dir() else out
    atomic_write_bytes(dest, data)
    return dest


def build_bundle(
    out_path: Path | str,
    *,
    name: str,
    version: str,
    labels: Sequence[str],
    frontend: Mapping[str, Any],
    network: Mapping[str, Any],
    files: Mapping[str, bytes | Path],
    private_key: SigningKey | Sequence[SigningKey],
    quantization: Mapping[str, Any] | None = None,
    metrics: Metrics | None = None,
    backends: Sequence[str] = (),
    lineage: Lineage | None = None,
    created: str | None = None,
    producer_version: str | None = None,
    detection: Mapping[str, Any] | None = None,
) -> Path:
    """Assemble the manifest from its pieces, hash the model files, sign and write the bundle.

    This is what ``edgekws bundle RUN --name N --version V --key KEY --out FILE`` calls once the model
    has been quantized and exported. ``files`` maps bundle paths (``model/netx.h5``, …) to bytes or paths;
    ``detection`` is a :class:`~edgekws.packaging.DetectionSpec` dictionary (a format-2 manifest) or None.
    """
    if producer_version is None:
        from edgekws.packaging import __version__

        producer_version = __version__
    manifest = Manifest(
        name=name,
        version=version,
        created=created or utc_now(),
        producer_version=producer_version,
        labels=tuple(labels),
        frontend=frontend,
        network=network,
        quantization=quantization,
        backends=tuple(backends),
        metrics=metrics or Metrics(),
        lineage=lineage or Lineage(),
        detection=detection,
    )
    return write_bundle(out_path, manifest, files, private_key)


# --------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Report:
    """Everything a check of a bundle found. ``manifest`` is set when it parsed; trust it only if ``ok``."""

    source: str
    size: int
    sha256: str
    problems: list[Problem]
    members: list[tuple[str, str, int]]  # (name, type, size) as listed in the archive
    manifest: Manifest | None = None
    manifest_bytes: bytes | None = None
    manifest_raw: Any = None  # the parsed JSON, even when the manifest is invalid (for inspect)
    signatures: list[Signature] = field(default_factory=list)
    verified_key_ids: list[str] = field(default_factory=list)
    signature_checked: bool = False
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.signature_checked


@dataclass(frozen=True)
class Bundle:
    """A verified bundle held in memory: its manifest, the keys that vouched for it, and its files."""

    manifest: Manifest
    manifest_bytes: bytes
    key_ids: tuple[str, ...]  # trusted keys whose signatures verified
    files: Mapping[str, bytes]  # bundle path -> content, every one checked against the manifest
    sha256: str  # of the whole bundle file
    size: int
    source: str

    def read(self, path: str) -> bytes:
        return self.files[path]

    def extract(self, dest: Path | str) -> Path:
        """Write the model files under a new directory ``dest`` (which must not exist), atomically.

        Names were validated when the bundle was opened (``model/`` + safe components), files are created
        exclusively inside a temp directory next to ``dest`` that is then renamed into place.
        """
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise FileExistsError(f"{dest} already exists; extract into a new directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
        try:
            root = tmp.resolve()
            for path, data in self.files.items():
                target = (tmp / path).resolve()
                if root not in target.parents:  # cannot happen for a validated bundle; never write outside
                    raise ValueError(f"refusing to write {path!r} outside {dest}")
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                with os.fdopen(os.open(target, flags, 0o644), "wb") as f:
                    f.write(data)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


def _read_source(source: Path | str | bytes, limits: Limits) -> tuple[str, bytes | None, list[Problem]]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_total_bytes:
            return "<bytes>", None, [_over_total(len(data), limits)]
        return "<bytes>", data, []
    path = Path(source)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_total_bytes:
                return str(path), None, [_over_total(size, limits)]
            data = f.read(limits.max_total_bytes + 1)
    except OSError as exc:
        return str(path), None, [Problem("unreadable", "", f"cannot read the bundle: {exc.strerror}")]
    if len(data) > limits.max_total_bytes:  # it grew while we read it
        return str(path), None, [_over_total(len(data), limits)]
    return str(path), data, []


def _over_total(size: int, limits: Limits) -> Problem:
    return Problem(
        "size-limit", "", f"the bundle is {size} bytes, over the {limits.max_total_bytes}-byte limit; raise "
        "Limits.max_total_bytes if this model really is that large",
    )  # fmt: skip


def _name_problem(member: TarMember) -> Problem | None:
    name = member.name
    where = repr(name)
    if member.is_directory:
        name = name.rstrip("/")
    if name in (MANIFEST, SIGNATURE):
        return None
    if not name:
        return Problem("member-name", f"member #{member.index + 1}", "empty member name")
    if name.startswith("/"):
        return Problem("member-name", where, "absolute path; bundle members are relative (manifest.json, …)")
    parts = name.split("/")
    if ".." in parts:
        return Problem("member-name", where, "'..' in the path (path traversal); this bundle is malicious")
    if "\\" in name or any(ord(c) < 32 for c in name):
        return Problem("member-name", where, "backslash or control character in the member name")
    if "" in parts or "." in parts:
        return Problem("member-name", where, "empty or '.' path component; members are plain relative paths")
    if member.is_directory and name == MODEL_DIR:
        return None
    reason = check_model_path(name)
    if reason:
        return Problem(
            "layout", where, "unexpected member: a bundle holds only manifest.json, signature and model/…"
        )
    return None


def check_bundle(
    source: Path | str | bytes,
    trusted: TrustLike | None = None,
    limits: Limits | None = None,
    *,
    check_model: bool = False,
) -> Report:
    """Check a bundle and report every problem; never raises for what the bundle contains.

    With ``trusted=None`` the signature is parsed but not checked (for ``inspect``): such a report is
    never ``ok``. The checks, in order: the container and member names (:func:`_regular_members`), the
    manifest, the signature, and every model file against the manifest; with ``check_model`` also the
    manifest's network spec against ``model/netx.h5`` (:func:`model_problems`: what devices and
    ``edgekws bundle verify`` ask for).
    """
    limits = limits or Limits()
    name, data, problems = _read_source(source, limits)
    if data is None:
        return Report(name, 0, "", problems, [])
    members, tar_problems = read_tar(
        data, max_member_bytes=limits.max_member_bytes, max_members=limits.max_members
    )
    problems += tar_problems
    counts: dict[str, int] = {}
    for m in members:
        counts[m.name] = counts.get(m.name, 0) + 1
    regular = _regular_members(members, counts, problems)
    manifest, manifest_bytes, manifest_raw = _check_manifest(regular, counts, limits, problems)
    signatures = _parse_signatures(regular, counts, limits, problems)
    verified = [] if trusted is None else _verify_signatures(trusted, signatures, manifest_bytes, problems)
    files = {} if manifest is None else _check_files(manifest, regular, counts, problems)
    if check_model and manifest is not None and not problems:
        problems += model_problems(manifest, files)
    return Report(
        source=name,
        size=len(data),
        sha256=sha256_hex(data),
        problems=problems,
        members=[(m.name, m.type_name, m.size) for m in members],
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_raw=manifest_raw,
        signatures=signatures,
        verified_key_ids=verified,
        signature_checked=trusted is not None,
        files=files,
    )


def _regular_members(
    members: list[TarMember], counts: dict[str, int], problems: list[Problem]
) -> dict[str, bytes]:
    """Member names, types and duplicates: only well-named, unique regular files are candidates."""
    regular: dict[str, bytes] = {}
    for m in members:
        problem = _name_problem(m)
        if problem:
            problems.append(problem)
            continue
        if counts[m.name] > 1:
            if m.index == min(x.index for x in members if x.name == m.name):
                problems.append(
                    Problem(
                        "duplicate", repr(m.name), f"appears {counts[m.name]} times; members must be unique"
                    )
                )
            continue
        if m.is_directory:
            dir_name = m.name.rstrip("/")
            if m.size or not any(x.name.startswith(dir_name + "/") for x in members if x.is_regular):
                problems.append(Problem("member-type", repr(m.name), "unexpected directory member"))
            continue
        if not m.is_regular:
            target = f" -> {m.linkname!r}" if m.linkname else ""
            problems.append(
                Problem(
                    "member-type",
                    repr(m.name),
                    f"is a {m.type_name}{target}; bundles hold regular files only",
                )
            )
            continue
        if m.data is not None:
            regular[m.name] = m.data
    return regular


def _check_manifest(
    regular: dict[str, bytes], counts: dict[str, int], limits: Limits, problems: list[Problem]
) -> tuple[Manifest | None, bytes | None, Any]:
    """The manifest, its bytes and its raw JSON (for inspect, even when invalid)."""
    manifest: Manifest | None = None
    manifest_bytes = regular.get(MANIFEST)
    manifest_raw: Any = None
    if manifest_bytes is None:
        if counts.get(MANIFEST, 0) == 0:
            problems.append(Problem("missing-manifest", MANIFEST, "the bundle has no manifest.json"))
    elif len(manifest_bytes) > limits.max_manifest_bytes:
        problems.append(Problem("size-limit", MANIFEST, f"over the {limits.max_manifest_bytes}-byte limit"))
        manifest_bytes = None
    else:
        with contextlib.suppress(ValueError):
            manifest_raw = parse_json_strict(manifest_bytes)
        try:
            manifest = Manifest.from_bytes(manifest_bytes)
        except ManifestError as exc:
            problems += [Problem("manifest", MANIFEST, p) for p in exc.problems]
    return manifest, manifest_bytes, manifest_raw


def _parse_signatures(
    regular: dict[str, bytes], counts: dict[str, int], limits: Limits, problems: list[Problem]
) -> list[Signature]:
    sig_bytes = regular.get(SIGNATURE)
    if sig_bytes is None:
        if counts.get(SIGNATURE, 0) == 0:
            problems.append(
                Problem(
                    "unsigned", SIGNATURE, "the bundle is not signed; sign it with `edgekws bundle … --key`"
                )
            )
        return []
    if len(sig_bytes) > limits.max_signature_bytes:
        problems.append(Problem("size-limit", SIGNATURE, f"over the {limits.max_signature_bytes}-byte limit"))
        return []
    try:
        return parse_signature_file(sig_bytes)
    except ValueError as exc:
        problems.append(Problem("signature", SIGNATURE, f"malformed signature file: {exc}"))
        return []


def _verify_signatures(
    trusted: TrustLike, signatures: list[Signature], manifest_bytes: bytes | None, problems: list[Problem]
) -> list[str]:
    """The trusted key ids whose signatures verify the manifest bytes."""
    store = as_trust_store(trusted)
    if not store:
        problems.append(Problem("untrusted", SIGNATURE, "no trusted public keys given; pass --trust KEY.pub"))
        return []
    if not signatures or manifest_bytes is None:
        return []
    verified: list[str] = []
    for sig in signatures:
        if sig.key_id not in store:
            continue
        if store[sig.key_id].verify(sig.signature, manifest_bytes):
            verified.append(sig.key_id)
        else:
            problems.append(
                Problem(
                    "bad-signature",
                    SIGNATURE,
                    f"the signature by trusted key {sig.key_id} does not match manifest.json: the "
                    "manifest was altered after signing",
                )
            )
    if not verified and not any(p.code == "bad-signature" for p in problems):
        problems.append(
            Problem(
                "untrusted",
                SIGNATURE,
                f"signed by key(s) {[s.key_id for s in signatures]}, none of them trusted "
                f"(trusted: {sorted(store)}); pass the signer's public key with --trust",
            )
        )
    return verified


def _check_files(
    manifest: Manifest, regular: dict[str, bytes], counts: dict[str, int], problems: list[Problem]
) -> dict[str, bytes]:
    """The model files whose size and sha256 match the manifest; every other member is a problem."""
    files: dict[str, bytes] = {}
    if not manifest.files:
        problems.append(Problem("no-model-files", "files", "the manifest lists no model files"))
    for path, entry in sorted(manifest.files.items()):
        content = regular.get(path)
        if content is None:
            if counts.get(path, 0) == 0:
                problems.append(Problem("missing-file", path, "listed in the manifest but not in the bundle"))
            continue
        if len(content) != entry.size:
            problems.append(
                Problem("file-size", path, f"is {len(content)} bytes, the manifest says {entry.size}")
            )
        elif sha256_hex(content) != entry.sha256:
            problems.append(
                Problem("file-hash", path, "sha256 differs from the manifest: the file was altered")
            )
        else:
            files[path] = content
    for path in sorted(set(regular) - set(manifest.files) - {MANIFEST, SIGNATURE}):
        problems.append(Problem("extra-file", path, "in the bundle but not listed in the manifest"))
    return files


def model_problems(manifest: Manifest, files: Mapping[str, bytes]) -> list[Problem]:
    """The manifest's network spec against the fixed-point model it ships (``model/netx.h5``): layer sizes
    and recurrence must agree, so that no number in a signed manifest can ask a device for more than the
    model holds. Skipped where h5py is not installed (the agent and the toolkit always have it)."""
    spec = manifest.network_spec()
    netx = files.get("model/netx.h5")
    if spec is None or netx is None:
        return []
    try:
        import h5py  # noqa: F401 - only to know whether the check can run
    except ImportError:  # pragma: no cover - packaging alone, without the agent's dependencies
        return []
    from edgekws.packaging._netx import NetxError, read_netx

    try:
        net = read_netx(netx)
    except NetxError as exc:
        return [Problem("model", "model/netx.h5", str(exc))]
    hidden = tuple(layer.size for layer in net.layers[:-1])
    recurrent = tuple(layer.weight_rec is not None for layer in net.layers[:-1])
    found: dict[str, object] = {
        "num_inputs": net.num_inputs,
        "hidden": hidden,
        "recurrent": recurrent,
        "num_outputs": net.num_outputs,
    }
    said: dict[str, object] = {
        "num_inputs": spec.num_inputs,
        "hidden": spec.hidden,
        "recurrent": spec.recurrent,
        "num_outputs": spec.num_outputs,
    }
    return [
        Problem(
            "model-mismatch",
            f"network.{key}",
            f"the manifest says {said[key]!r}, model/netx.h5 has {found[key]!r}; rebuild the bundle",
        )
        for key in said
        if said[key] != found[key]
    ]


def verify_bundle(
    source: Path | str | bytes, trusted: TrustLike, limits: Limits | None = None, *, check_model: bool = False
) -> list[Problem]:
    """Every problem with a bundle (an empty list means it is valid and signed by a trusted key)."""
    return check_bundle(source, trusted, limits, check_model=check_model).problems


def open_bundle(
    source: Path | str | bytes,
    trusted_keys: TrustLike,
    limits: Limits | None = None,
    *,
    check_model: bool = False,
) -> Bundle:
    """Verify a bundle completely and return it, or raise one :class:`InvalidBundle` with every problem
    (``check_model``: also the network spec against the model file, :func:`model_problems`)."""
    if trusted_keys is None:
        raise TypeError("open_bundle needs trusted keys; use check_bundle(source) to inspect without trust")
    report = check_bundle(source, trusted_keys, limits, check_model=check_model)
    if report.problems or report.manifest is None or report.manifest_bytes is None:
        raise InvalidBundle(report.source, report.problems)
    return Bundle(
        manifest=report.manifest,
        manifest_bytes=report.manifest_bytes,
        key_ids=tuple(report.verified_key_ids),
        files=MappingProxyType(dict(report.files)),
        sha256=report.sha256,
        size=report.size,
        source=report.source,
    )

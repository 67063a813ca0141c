"""A versioned bundle store: verified, immutable bundles under ``root/NAME/VERSION.ekb`` plus an index.

``root/index.json`` (canonical JSON, replaced atomically under ``root/.lock``) lists every stored bundle
with its sha256, so ``list`` reads one file and ``pull`` detects a bundle file altered on disk. Nothing
outside ``root`` is ever written by ``push``; the only path built from a bundle is ``root/NAME/VERSION.ekb``
from a manifest whose name and version were validated, and it is checked to stay inside ``root``.

:class:`Store` is the protocol a remote store (an OCI registry through ORAS, say) implements as well.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgekws.packaging._bundle import Bundle, Limits, open_bundle, sha256_hex
from edgekws.packaging._durable import atomic_write_bytes
from edgekws.packaging._errors import NotInStore, StoreError, VersionConflict
from edgekws.packaging._manifest import NAME_PATTERN, SemVer, canonical_json, parse_json_strict, utc_now
from edgekws.packaging._paths import artifact_path
from edgekws.packaging._signing import TrustLike, as_trust_store

INDEX = "index.json"
LOCK = ".lock"
INDEX_TYPE = "edgekws.store-index"
INDEX_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoreEntry:
    """One stored bundle version."""

    name: str
    version: str
    sha256: str  # of the bundle file
    size: int
    created: str  # from the manifest
    pushed: str  # when it entered the store (UTC)
    key_ids: tuple[str, ...]  # trusted keys that verified it at push time

    @property
    def semver(self) -> SemVer:
        return SemVer.parse(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "created": self.created,
            "pushed": self.pushed,
            "key_ids": list(self.key_ids),
        }

    @classmethod
    def from_dict(cls, d: Any) -> StoreEntry:
        try:
            entry = cls(
                d["name"],
                d["version"],
                d["sha256"],
                d["size"],
                d["created"],
                d["pushed"],
                tuple(d["key_ids"]),
            )
            SemVer.parse(entry.version)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"store index entry {d!r} is malformed ({exc}); rebuild the index") from exc
        if not isinstance(entry.name, str) or not NAME_PATTERN.fullmatch(entry.name):
            raise StoreError(f"store index names an invalid model {entry.name!r}; rebuild the index")
        return entry


@runtime_checkable
class Store(Protocol):
    """What any bundle store offers: a local directory (:class:`BundleStore`) or, later, an OCI registry."""

    def push(self, bundle_path: Path | str) -> StoreEntry: ...

    def list(self, name: str | None = None) -> list[StoreEntry]: ...

    def resolve(self, name: str, version: str = "latest") -> StoreEntry: ...

    def pull(self, name: str, version: str, dest: Path | str) -> Path: ...


class BundleStore:
    """A store in a local directory; ``trusted`` keys are required to push and re-checked on pull."""

    def __init__(
        self, root: Path | str, trusted: TrustLike | None = None, limits: Limits | None = None
    ) -> None:
        self.root = Path(root)
        self.trusted = None if trusted is None else as_trust_store(trusted)
        self.limits = limits or Limits()

    # -- helpers ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with _writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_index(self) -> list[StoreEntry]:
        path = self.root / INDEX
        if not path.exists():
            return []
        try:
            obj = parse_json_strict(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the store index {path}: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("type") != INDEX_TYPE:
            raise StoreError(f"{path} is not an edgekws store index")
        if obj.get("format_version") != INDEX_FORMAT_VERSION:
            raise StoreError(f"{path} has format_version {obj.get('format_version')!r}; upgrade edgekws")
        bundles = obj.get("bundles")
        if not isinstance(bundles, list):
            raise StoreError(f"{path} is malformed: bundles must be a list")
        return [StoreEntry.from_dict(d) for d in bundles]

    def _write_index(self, entries: list[StoreEntry]) -> None:
        entries = sorted(entries, key=lambda e: (e.name, e.semver.precedence_key(), e.version))
        data = canonical_json(
            {
                "type": INDEX_TYPE,
                "format_version": INDEX_FORMAT_VERSION,
                "bundles": [e.to_dict() for e in entries],
            }
        )
        atomic_write_bytes(self.root / INDEX, data)

    def _path(self, name: str, version: str) -> Path:
        """``root/NAME/VERSION.ekb``, refusing anything that would leave the root or pass a symlink."""
        if not NAME_PATTERN.fullmatch(name):
            raise StoreError(f"invalid model name {name!r}")
        SemVer.parse(version)
        model_dir = self.root / name
        if model_dir.is_symlink() or (model_dir.exists() and not model_dir.is_dir()):
            raise StoreError(f"{model_dir} is not a plain directory; the store will not write through it")
        path = model_dir / f"{version}.ekb"
        if path.is_symlink():
            raise StoreError(f"{path} is a symbolic link; the store will not follow it")
        root = self.root.resolve()
        if root not in path.resolve().parents:
            raise StoreError(f"{path} is outside the store root {root}")
        return path

    # -- the Store protocol ----------------------------------------------------------------------------

    def push(self, bundle_path: Path | str) -> StoreEntry:
        """Verify a bundle and add it; pushing identical bytes again is a no-op, different bytes refused."""
        if self.trusted is None or not self.trusted:
            raise StoreError("the store only accepts verified bundles: give it trusted public keys (--trust)")
        path = Path(bundle_path)
        try:
            size = path.stat().st_size
            if size > self.limits.max_total_bytes:
                raise StoreError(
                    f"{path} is {size} bytes, over the store's {self.limits.max_total_bytes} limit"
                )
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        # Verify the very bytes that will be stored (no window for the file to change in between).
        bundle: Bundle = open_bundle(data, self.trusted, self.limits)
        m = bundle.manifest
        with self._locked():
            entries = self._read_index()
            for e in entries:
                if e.name != m.name:
                    continue
                if e.version == m.version:
                    if e.sha256 == bundle.sha256:
                        return e
                    raise VersionConflict(
                        f"{m.name} {m.version} is already in the store with different content "
                        f"(sha256 {e.sha256[:12]}…, this one {bundle.sha256[:12]}…); versions are immutable: "
                        "bump the version"
                    )
                if e.semver.same_precedence(m.semver):
                    raise VersionConflict(
                        f"{m.name} {m.version} has the same precedence as stored {e.version} (they differ "
                        "only in build metadata); bump the version"
                    )
            dest = self._path(m.name, m.version)
            if dest.exists():
                if sha256_hex(dest.read_bytes()) != bundle.sha256:
                    raise VersionConflict(
                        f"{dest} exists with different content but is not indexed; inspect it, then remove "
                        "it or bump the version"
                    )
            else:
                with _writing(self.root):
                    dest.parent.mkdir(exist_ok=True)
                    atomic_write_bytes(dest, data)
            entry = StoreEntry(
                m.name, m.version, bundle.sha256, bundle.size, m.created, utc_now(), bundle.key_ids
            )
            with _writing(self.root):
                self._write_index([*entries, entry])
        return entry

    def list(self, name: str | None = None) -> list[StoreEntry]:
        """Stored bundles (of one model if ``name`` is given), by name then version precedence."""
        entries = self._read_index()
        if name is not None:
            entries = [e for e in entries if e.name == name]
        return sorted(entries, key=lambda e: (e.name, e.semver.precedence_key(), e.version))

    def resolve(self, name: str, version: str = "latest") -> StoreEntry:
        """The entry for ``name`` at ``version``; ``latest`` is the highest release (no pre-releases)."""
        entries = self.list(name)
        if not entries:
            known = sorted({e.name for e in self.list()})
            raise NotInStore(f"no model {name!r} in the store; it holds {known or 'nothing'}")
        if version == "latest":
            releases = [e for e in entries if not e.semver.is_prerelease]
            if not releases:
                raise NotInStore(
                    f"{name} has only pre-releases {[e.version for e in entries]}; ask for one by version"
                )
            return max(releases, key=lambda e: e.semver.precedence_key())
        for e in entries:
            if e.version == version:
                return e
        raise NotInStore(f"{name} has no version {version!r}; stored: {[e.version for e in entries]}")

    def pull(self, name: str, version: str, dest: Path | str) -> Path:
        """Copy a stored bundle to ``dest``: a file, or a folder (ending in ``/``, or existing) for
        ``NAME-VERSION.ekb`` (see :func:`artifact_path`); returns the path written.

        The bytes are checked against the index's sha256 and, if the store has trusted keys, verified again.
        """
        entry = self.resolve(name, version)
        path = self._path(entry.name, entry.version)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(
                f"{path} is indexed but unreadable ({exc.strerror}); the store is damaged"
            ) from exc
        if sha256_hex(data) != entry.sha256:
            raise StoreError(f"{path} no longer matches the sha256 in the index: it was altered on disk")
        if self.trusted:
            open_bundle(data, self.trusted, self.limits)
        try:
            target = artifact_path(dest, f"{entry.name}-{entry.version}.ekb")
            atomic_write_bytes(target, data)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        except OSError as exc:
            raise StoreError(f"cannot write {dest}: {exc.strerror or exc}; choose a writable --out") from exc
        return target


@contextlib.contextmanager
def _writing(root: Path) -> Iterator[None]:
    """An OS error while writing into the store (read-only, full, not a folder) as a :class:`StoreError`."""
    try:
        yield
    except OSError as exc:
        raise StoreError(
            f"cannot write to the store {root}: {exc.strerror or exc}; check that it is a writable folder "
            "with free space"
        ) from exc

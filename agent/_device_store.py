"""The bundle store on the device: verified installs, atomic activation, one-step rollback.

Layout under the store folder::

    versions/NAME-VERSION/bundle.ekb   the verified bundle file, byte for byte as signed
    versions/NAME-VERSION/installed.json  its name, version and sha256
    current  -> versions/NAME-VERSION  the active version (a relative symlink)
    previous -> versions/NAME-VERSION  the version active before it (the rollback target)

Every change is a sequence of steps that are each atomic on POSIX: a version folder is written under a
temporary name and renamed into place; a symlink is switched by creating a temporary symlink and
``os.replace``-ing it over the old one. So a crash (power cut, kill -9) at any moment leaves ``current``
pointing at the old or the new version, never at nothing or at a half-written folder; leftovers of an
interrupted install are removed when the store is next opened.

Nothing on disk is trusted: :meth:`DeviceStore.open_active` verifies the signature and every hash again
through :func:`edgekws.packaging.open_bundle` before the agent loads a model.

Over-the-air deploys install with ``activate=False``, check the new model, and only then call
:meth:`DeviceStore.activate` (the commit: the links move, then old versions are pruned), so neither a
failed check nor a crash during it ever leaves ``current`` on an unchecked version (docs/mqtt.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekws.packaging import (
    Bundle,
    InvalidBundle,
    KeyFileError,
    RollbackRefused,
    SemVer,
    check_activation,
    fsync_dir,
    open_bundle,
)

BUNDLE_FILE = "bundle.ekb"
META_FILE = "installed.json"  # name, version, sha256 of the bundle file
CURRENT = "current"
PREVIOUS = "previous"
VERSIONS = "versions"


class StoreError(ValueError):
    """An install, activation or rollback the store refuses; the message says why and what to do."""


@dataclass(frozen=True)
class InstalledBundle:
    """A version present in the store."""

    name: str
    version: str
    path: Path  # versions/NAME-VERSION
    sha256: str = ""
    fresh: bool = False  # written by the install that returned it (absent before)

    @property
    def bundle_file(self) -> Path:
        return self.path / BUNDLE_FILE

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


class DeviceStore:
    """Install, activate and roll back signed bundles in ``root``, trusting only ``trusted_keys``."""

    def __init__(self, root: str | os.PathLike[str], trusted_keys: Any, *, keep_versions: int = 2) -> None:
        self.root = Path(root).absolute()  # links resolve to absolute paths: compare like with like
        self.trusted_keys = trusted_keys
        self.keep_versions = max(2, keep_versions)
        self.versions_dir = self.root / VERSIONS
        try:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            self._recover()
        except OSError as exc:
            raise StoreError(
                f"cannot use {self.root} as the bundle store ({exc.strerror or exc}); point [store] dir "
                "(or --store) at a writable folder"
            ) from exc

    # -- reading --------------------------------------------------------------------------------

    def active(self) -> InstalledBundle | None:
        """The version ``current`` points at, or None on a fresh store."""
        return self._resolve(CURRENT)

    def previous(self) -> InstalledBundle | None:
        """The rollback target, or None."""
        return self._resolve(PREVIOUS)

    def installed(self) -> list[InstalledBundle]:
        """Every installed version, oldest first by semantic version."""
        found = [
            self._info(d)
            for d in self.versions_dir.iterdir()
            if not d.name.startswith(".") and (d / META_FILE).is_file()
        ]
        return sorted(found, key=lambda b: (b.name, SemVer.parse(b.version).precedence_key()))

    def open_active(self) -> Bundle:
        """The active bundle, verified again (signature and every hash), or StoreError if there is none."""
        active = self.active()
        if active is None:
            raise StoreError(
                f"no active bundle in {self.root}; install one with `edgekws-agent bundle install FILE`"
            )
        try:
            return open_bundle(active.bundle_file.read_bytes(), self.trusted_keys, check_model=True)
        except (InvalidBundle, KeyFileError, OSError) as exc:
            raise StoreError(
                f"the active bundle {active.label} no longer verifies ({exc}); roll back or reinstall it"
            ) from exc

    # -- changing -------------------------------------------------------------------------------

    def install(
        self,
        bundle_path: str | os.PathLike[str],
        *,
        activate: bool = True,
        rollback: bool = False,
        allow_rename: bool = False,
        source: str | None = None,
    ) -> InstalledBundle:
        """Verify a bundle file, copy it into the store and (by default) make it the active version.

        Refuses a bundle that does not verify against the trusted keys, a version lower than the active
        one unless ``rollback`` is true, a version of the active one's precedence with other content
        (``1.2.0`` then ``1.2.0+rebuild``) unless ``rollback`` is true, and another model name unless
        ``allow_rename`` is true (:func:`edgekws.packaging._manifest.check_activation`). ``source`` names
        the bundle in messages (default: ``bundle_path``).
        """
        name_in_messages = source or str(bundle_path)
        try:
            data = Path(bundle_path).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {name_in_messages}: {exc.strerror or exc}") from exc
        try:
            bundle = open_bundle(data, self.trusted_keys, check_model=True)
        except (InvalidBundle, KeyFileError) as exc:
            raise StoreError(f"refusing to install {name_in_messages}: {exc}") from exc
        name, version = bundle.manifest.name, bundle.manifest.version
        active = self.active()
        active_manifest = self.open_bundle_of(active).manifest if active is not None else None
        try:  # the one policy, packaging's: upgrade, reinstall, or rollback only when asked
            kind = check_activation(
                active_manifest, bundle.manifest, allow_rollback=rollback, allow_rename=allow_rename
            )
        except RollbackRefused as exc:
            raise StoreError(f"refusing to install {name_in_messages}: {exc}") from exc
        dest = self.versions_dir / f"{name}-{version}"
        fresh = not dest.exists()
        if not fresh:
            existing = self._info(dest)
            if existing.sha256 and existing.sha256 != bundle.sha256:
                raise StoreError(
                    f"{name} {version} is already installed with different content (sha256 "
                    f"{existing.sha256[:12]}… vs {bundle.sha256[:12]}…); a version is immutable: "
                    "publish a new version number"
                )
        if kind == "reinstall" and active is not None and active.sha256 != bundle.sha256 and not rollback:
            raise StoreError(
                f"refusing to install {name_in_messages}: {name} {version} has the same precedence as the "
                f"active {active.version} but other content; publish a higher version, or pass --rollback "
                "(rollback=True) to replace it on purpose"
            )
        if fresh:
            try:
                self._write_version(dest, data, {"name": name, "version": version, "sha256": bundle.sha256})
            except OSError as exc:
                raise StoreError(
                    f"cannot write {name} {version} into the store {self.root} ({exc.strerror or exc}); "
                    "free space or point [store] dir at a writable folder"
                ) from exc
        self._checkpoint("written")
        installed = replace(self._info(dest), fresh=fresh)
        if activate:
            self.activate(installed)
        return installed

    def rollback(self) -> InstalledBundle:
        """Make the previous version active again (the current one becomes the previous)."""
        prev, cur = self.previous(), self.active()
        if prev is None:
            raise StoreError("nothing to roll back to: no previous version is recorded")
        self.open_bundle_of(prev)  # never activate something that no longer verifies
        self._swap_link(CURRENT, prev.path)
        self._checkpoint("current-swapped")
        if cur is not None:
            self._swap_link(PREVIOUS, cur.path)
        return prev

    def activate(self, target: InstalledBundle) -> None:
        """Make an installed version the active one (the commit): ``previous`` <- ``current`` <- ``target``,
        each switched atomically, then versions beyond ``keep_versions`` are pruned."""
        current = self.active()
        if current is not None and current.path.name == target.path.name:
            return
        if current is not None:
            self._swap_link(PREVIOUS, current.path)  # step 1: remember the rollback target
        self._checkpoint("previous-swapped")
        self._swap_link(CURRENT, target.path)  # step 2: the switch itself, one atomic rename
        self._checkpoint("current-swapped")
        self.prune()

    def remove(self, installed: InstalledBundle) -> None:
        """Delete an installed version neither ``current`` nor ``previous`` points at (a failed deploy's)."""
        linked = {b.path.name for b in (self.active(), self.previous()) if b is not None}
        if installed.path.name in linked:
            raise StoreError(f"{installed.label} is active or the rollback target; it stays")
        shutil.rmtree(installed.path, ignore_errors=True)
        fsync_dir(self.versions_dir)

    def open_bundle_of(self, installed: InstalledBundle) -> Bundle:
        try:
            return open_bundle(installed.bundle_file.read_bytes(), self.trusted_keys, check_model=True)
        except (InvalidBundle, KeyFileError, OSError) as exc:
            raise StoreError(f"{installed.label} does not verify ({exc})") from exc

    def prune(self) -> list[InstalledBundle]:
        """Remove the oldest versions beyond ``keep_versions``, never the active or previous one."""
        keep = {b.path.name for b in (self.active(), self.previous()) if b is not None}
        removed = []
        candidates = [b for b in self.installed() if b.path.name not in keep]
        excess = len(self.installed()) - self.keep_versions
        for b in candidates[: max(0, excess)]:
            shutil.rmtree(b.path)
            removed.append(b)
        return removed

    # -- steps ----------------------------------------------------------------------------------

    def _write_version(self, dest: Path, data: bytes, meta: dict[str, str]) -> None:
        tmp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".{dest.name}.", suffix=".tmp"))
        try:
            for name, content in ((BUNDLE_FILE, data), (META_FILE, _meta_bytes(meta))):
                with open(tmp / name, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_dir(tmp)
            self._checkpoint("temp-written")
            os.replace(tmp, dest)
            fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _swap_link(self, link: str, target: Path) -> None:
        rel = os.path.relpath(target, self.root)
        tmp = self.root / f".{link}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(rel, tmp)
        self._checkpoint(f"{link}-temp-link")
        os.replace(tmp, self.root / link)
        fsync_dir(self.root)

    def _checkpoint(self, step: str) -> None:
        """A point between two atomic steps (tests inject crashes here)."""

    def _recover(self) -> None:
        """Remove what an interrupted install left behind (temp folders and temp links)."""
        for p in self.versions_dir.glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".*.tmp"):
            if p.is_symlink() or p.is_file():
                p.unlink()

    def _resolve(self, link: str) -> InstalledBundle | None:
        p = self.root / link
        if not p.is_symlink():
            return None
        target = (self.root / os.readlink(p)).resolve()
        if not (target / META_FILE).is_file():
            return None
        return self._info(target)

    @staticmethod
    def _info(path: Path) -> InstalledBundle:
        meta = json.loads((path / META_FILE).read_text())
        return InstalledBundle(name=meta["name"], version=meta["version"], path=path, sha256=meta["sha256"])


def _meta_bytes(meta: dict[str, str]) -> bytes:
    return (json.dumps(meta, sort_keys=True) + "\n").encode()

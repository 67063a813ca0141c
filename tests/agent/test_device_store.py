"""Tests for the on-device bundle store: verified installs, atomic activation, rollback, crash safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekws.agent._device_store import DeviceStore, StoreError
from edgekws.agent._frontend import FrontendSpec
from edgekws.packaging import NetworkSpec
from edgekws.packaging._bundle import build_bundle
from edgekws.packaging._signing import SigningKey

KEY = SigningKey.generate()
OTHER_KEY = SigningKey.generate()


def _bundle(tmp_path: Path, version: str, key: SigningKey = KEY, payload: bytes = b"weights") -> Path:
    spec = NetworkSpec(num_inputs=8, hidden=(4,), num_outputs=2, class_names=("yes", "no"))
    out = tmp_path / "dist"
    out.mkdir(exist_ok=True)
    return build_bundle(
        out / f"kws-{version}-{payload.hex()[:6]}.ekb",
        name="kws",
        version=version,
        labels=("yes", "no"),
        frontend=FrontendSpec().to_dict(),
        network=spec.to_dict(),
        files={"model/float.npz": payload},
        private_key=key,
        created="2026-01-01T00:00:00Z",  # the same bytes for the same inputs, however slow the machine
    )


def _store(tmp_path: Path, cls: type[DeviceStore] = DeviceStore) -> DeviceStore:
    return cls(tmp_path / "store", [KEY.public_key])


def test_install_activates_and_keeps_previous(tmp_path: Path) -> None:
    """Installing 1.0.0 then 1.1.0 activates each in turn and records 1.0.0 as the rollback target."""
    store = _store(tmp_path)
    assert store.active() is None
    store.install(_bundle(tmp_path, "1.0.0"))
    store.install(_bundle(tmp_path, "1.1.0"))
    active, prev = store.active(), store.previous()
    assert active is not None and prev is not None
    assert (active.version, prev.version) == ("1.1.0", "1.0.0")
    assert os.readlink(store.root / "current") == "versions/kws-1.1.0"  # relative link inside the store
    assert store.open_active().manifest.version == "1.1.0"


def test_downgrade_is_refused_unless_rollback(tmp_path: Path) -> None:
    """A lower version is refused by default and accepted with rollback=True."""
    store = _store(tmp_path)
    store.install(_bundle(tmp_path, "2.0.0"))
    old = _bundle(tmp_path, "1.0.0")
    with pytest.raises(StoreError, match="rollback"):
        store.install(old)
    assert store.active() is not None and store.active().version == "2.0.0"
    store.install(old, rollback=True)
    assert store.active().version == "1.0.0"


def test_untrusted_or_tampered_bundles_are_refused(tmp_path: Path) -> None:
    """A bundle signed by an untrusted key, or with a modified byte, is never installed."""
    store = _store(tmp_path)
    with pytest.raises(StoreError, match="refusing to install"):
        store.install(_bundle(tmp_path, "1.0.0", key=OTHER_KEY))
    good = _bundle(tmp_path, "1.0.1")
    data = bytearray(good.read_bytes())
    i = data.find(b"weights")
    data[i] ^= 1
    bad = tmp_path / "bad.ekb"
    bad.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        store.install(bad)
    assert store.active() is None and store.installed() == []


def test_same_version_with_other_content_is_refused(tmp_path: Path) -> None:
    """A version is immutable: reinstalling 1.0.0 with different bytes is refused."""
    store = _store(tmp_path)
    store.install(_bundle(tmp_path, "1.0.0"))
    store.install(_bundle(tmp_path, "1.0.0"))  # identical: fine
    with pytest.raises(StoreError, match="immutable"):
        store.install(_bundle(tmp_path, "1.0.0", payload=b"other weights"))


def test_rollback_swaps_current_and_previous(tmp_path: Path) -> None:
    """rollback() makes the previous version active and remembers the one it replaced."""
    store = _store(tmp_path)
    store.install(_bundle(tmp_path, "1.0.0"))
    store.install(_bundle(tmp_path, "1.1.0"))
    assert store.rollback().version == "1.0.0"
    assert store.active().version == "1.0.0" and store.previous().version == "1.1.0"


def test_old_versions_are_pruned(tmp_path: Path) -> None:
    """Beyond keep_versions, the oldest versions that are neither active nor previous are removed."""
    store = _store(tmp_path)
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        store.install(_bundle(tmp_path, v))
    assert [b.version for b in store.installed()] == ["1.2.0", "1.3.0"]


class _Crash(BaseException):
    pass


STEPS = [
    "temp-written",
    "written",
    "previous-temp-link",
    "previous-swapped",
    "current-temp-link",
    "current-swapped",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_old_or_new_active(tmp_path: Path, step: str) -> None:
    """Killing an upgrade between any two steps leaves a verifiable old or new version active."""

    class Crashing(DeviceStore):
        crash_at: str | None = None

        def _checkpoint(self, name: str) -> None:
            if name == self.crash_at:
                raise _Crash(name)

    store = _store(tmp_path, Crashing)
    store.install(_bundle(tmp_path, "1.0.0"))
    new = _bundle(tmp_path, "1.1.0")
    store.crash_at = step
    with pytest.raises(_Crash):
        store.install(new)
    reopened = _store(tmp_path)  # what the agent sees after the restart
    active = reopened.active()
    assert active is not None and active.version in ("1.0.0", "1.1.0")
    assert reopened.open_active().manifest.version == active.version
    assert not list(reopened.root.glob(".*.tmp")) and not list(reopened.versions_dir.glob(".*.tmp"))
    if STEPS.index(step) < STEPS.index("current-swapped"):
        assert active.version == "1.0.0"
    reopened.install(new)  # the interrupted upgrade can simply be retried
    assert reopened.active().version == "1.1.0"


def test_missing_trusted_key_file_is_a_store_error(tmp_path: Path) -> None:
    """A trusted key path that does not exist makes install refuse with a StoreError, not a traceback."""
    store = DeviceStore(tmp_path / "store", [tmp_path / "missing.pub"])
    with pytest.raises(StoreError, match="refusing to install"):
        store.install(_bundle(tmp_path, "1.0.0"))

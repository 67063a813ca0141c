"""Tests for the versioned bundle store: push, list, pull, immutability, containment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgekws.packaging import (
    BundleStore,
    InvalidBundle,
    Lineage,
    Manifest,
    NotInStore,
    SigningKey,
    Store,
    StoreError,
    VersionConflict,
    write_bundle,
)

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
NETWORK = {
    "type": "edgekws.network", "format_version": 1, "num_inputs": 4, "hidden": [3], "recurrent": [False],
    "num_outputs": 2, "class_names": [],
}  # fmt: skip
FRONTEND = {"type": "edgekws.frontend", "format_version": 1}


def make(
    tmp: Path, version: str, payload: bytes = b"weights", name: str = "kws", key: SigningKey = KEY
) -> Path:
    m = Manifest(
        name=name, version=version, created="2026-05-09T07:35:25Z", producer_version="0.1.0",
        labels=("on", "off"), frontend=FRONTEND, network=NETWORK, lineage=Lineage(),
    )  # fmt: skip
    out = tmp / f"{name}-{version}-{payload.hex()[:8]}-{key.key_id}.ekb"
    return write_bundle(out, m, {"model/netx.h5": payload}, key)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bundle_store_implements_the_store_protocol(tmp_path: Path) -> None:
    """BundleStore satisfies the Store protocol that a registry-backed store will implement too."""
    assert isinstance(BundleStore(tmp_path, [KEY.public_key]), Store)


def test_push_list_pull(tmp_path: Path) -> None:
    """Pushed bundles land in root/NAME/VERSION.ekb, are listed by precedence and pulled back intact."""
    src = tmp_path / "src"
    src.mkdir()
    store = BundleStore(tmp_path / "store", [KEY.public_key])
    paths = {v: make(src, v, v.encode()) for v in ["1.10.0", "1.2.0", "1.2.0-rc.1", "2.0.0-beta"]}
    for p in paths.values():
        store.push(p)
    assert (tmp_path / "store" / "kws" / "1.10.0.ekb").read_bytes() == paths["1.10.0"].read_bytes()
    assert [e.version for e in store.list()] == ["1.2.0-rc.1", "1.2.0", "1.10.0", "2.0.0-beta"]
    assert store.resolve("kws").version == "1.10.0"  # latest skips pre-releases
    out = store.pull("kws", "latest", src)
    assert out == src / "kws-1.10.0.ekb" and out.read_bytes() == paths["1.10.0"].read_bytes()
    exact = store.pull("kws", "2.0.0-beta", tmp_path / "b.ekb")
    assert exact.read_bytes() == paths["2.0.0-beta"].read_bytes()
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert index["type"] == "edgekws.store-index" and len(index["bundles"]) == 4


def test_versions_are_immutable(tmp_path: Path) -> None:
    """Re-pushing identical bytes is a no-op; other bytes under a stored version are refused."""
    store = BundleStore(tmp_path / "store", [KEY.public_key])
    first = store.push(make(tmp_path, "1.0.0", b"a"))
    assert store.push(make(tmp_path, "1.0.0", b"a")) == first
    before = tree(tmp_path / "store")
    with pytest.raises(VersionConflict, match="bump the version"):
        store.push(make(tmp_path, "1.0.0", b"b"))
    with pytest.raises(VersionConflict, match="same precedence"):
        store.push(make(tmp_path, "1.0.0+build.7", b"c"))
    assert tree(tmp_path / "store") == before


def test_push_refuses_untrusted_and_invalid_bundles(tmp_path: Path) -> None:
    """A bundle by an untrusted key is refused, leaving the store untouched; so is a keyless store."""
    store_dir = tmp_path / "store"
    store = BundleStore(store_dir, [KEY.public_key])
    store.push(make(tmp_path, "1.0.0"))
    before = tree(store_dir)
    with pytest.raises(InvalidBundle, match="untrusted"):
        store.push(make(tmp_path, "1.1.0", key=OTHER))
    assert tree(store_dir) == before
    with pytest.raises(StoreError, match="trusted public keys"):
        BundleStore(store_dir).push(make(tmp_path, "1.2.0"))


def test_pull_detects_a_bundle_altered_on_disk(tmp_path: Path) -> None:
    """If a stored file no longer matches the index sha256, pull refuses it."""
    store = BundleStore(tmp_path / "store", [KEY.public_key])
    store.push(make(tmp_path, "1.0.0"))
    stored = tmp_path / "store" / "kws" / "1.0.0.ekb"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x01")
    with pytest.raises(StoreError, match="altered on disk"):
        store.pull("kws", "1.0.0", tmp_path / "out.ekb")
    assert not (tmp_path / "out.ekb").exists()


def test_missing_names_and_versions_are_explained(tmp_path: Path) -> None:
    """Unknown models, versions and pre-release-only latest raise NotInStore saying what exists."""
    store = BundleStore(tmp_path / "store", [KEY.public_key])
    store.push(make(tmp_path, "1.0.0-rc.1"))
    with pytest.raises(NotInStore, match="only pre-releases"):
        store.resolve("kws")
    with pytest.raises(NotInStore, match=r"stored: \['1.0.0-rc.1'\]"):
        store.resolve("kws", "9.9.9")
    with pytest.raises(NotInStore, match="no model 'other'"):
        store.pull("other", "latest", tmp_path)
    with pytest.raises(LookupError):
        store.resolve("../etc", "1.0.0")


def test_store_never_writes_through_a_symlinked_model_directory(tmp_path: Path) -> None:
    """If root/NAME is a symlink to elsewhere, push refuses instead of writing outside the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    root.mkdir()
    (root / "kws").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="not a plain directory"):
        BundleStore(root, [KEY.public_key]).push(make(tmp_path, "1.0.0"))
    assert list(outside.iterdir()) == []


def test_corrupt_index_is_reported(tmp_path: Path) -> None:
    """A damaged index.json gives a StoreError rather than a crash."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "index.json").write_text('{"type": "edgekws.store-index", "format_version": 1, "bundles": [{}]}')
    with pytest.raises(StoreError, match="malformed"):
        BundleStore(root).list()
    (root / "index.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot read the store index"):
        BundleStore(root).list()


def _entries(store: BundleStore) -> list[Any]:
    return [e.to_dict() for e in store.list()]


def test_list_by_name(tmp_path: Path) -> None:
    """list(name) returns only that model's versions."""
    store = BundleStore(tmp_path / "store", [KEY.public_key])
    store.push(make(tmp_path, "1.0.0", name="kws"))
    store.push(make(tmp_path, "0.1.0", name="wake"))
    assert [e["name"] for e in _entries(store)] == ["kws", "wake"]
    assert [e.version for e in store.list("wake")] == ["0.1.0"]

"""Atomic, durable writes: the destination is the old file or the whole new one, and no temporary remains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekws.packaging import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A finished write holds the new bytes with the requested mode; nothing else is left in the folder."""
    dest = tmp_path / "result.json"
    dest.write_text("old")
    atomic_write_text(dest, '{"new": true}\n', mode=0o600)
    assert dest.read_text() == '{"new": true}\n'
    assert dest.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    """An exception inside the block leaves the destination untouched and removes the temporary file."""
    dest = tmp_path / "best.npz"
    atomic_write_bytes(dest, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("disk on fire")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]


def test_the_temporary_path_keeps_the_suffix(tmp_path: Path) -> None:
    """Writers that pick the format from the extension (np.savez appends .npz otherwise) write that file."""
    dest = tmp_path / "arrays.npz"
    with atomic_path(dest) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        np.savez(tmp, x=np.arange(3))
    with np.load(dest) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz"]

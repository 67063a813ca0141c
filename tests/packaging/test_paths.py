"""`--out` has one meaning in every command: a folder (ending in / or existing) gets the canonical name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekws.packaging import artifact_path


def test_a_path_ending_in_a_slash_is_a_folder_made_when_missing(tmp_path: Path) -> None:
    """`dist/` (not there yet) -> dist/NAME, and dist is created; the same without creating it."""
    assert (
        artifact_path(f"{tmp_path}/a/dist/", "m-1.0.0.ekb", create=False) == tmp_path / "a/dist/m-1.0.0.ekb"
    )
    assert not (tmp_path / "a").exists()
    assert artifact_path(f"{tmp_path}/a/dist{os.sep}", "m-1.0.0.ekb") == tmp_path / "a/dist/m-1.0.0.ekb"
    assert (tmp_path / "a/dist").is_dir()


def test_an_existing_folder_gets_the_canonical_name_and_anything_else_is_the_file(tmp_path: Path) -> None:
    """An existing folder without the slash is still a folder; other paths are the file, parents made."""
    assert artifact_path(tmp_path, "x.png") == tmp_path / "x.png"
    assert artifact_path(tmp_path / "new/dist", "m-1.0.0.ekb") == tmp_path / "new/dist"
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new/dist").exists()
    assert artifact_path("plain.npz", "other.npz", create=False) == Path("plain.npz")


def test_a_file_where_a_folder_must_be_is_a_clear_error(tmp_path: Path) -> None:
    """`dist/` naming a file, or a file standing where a parent folder would go, is refused by name."""
    (tmp_path / "dist").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        artifact_path(f"{tmp_path}/dist/", "m.ekb")
    with pytest.raises(ValueError, match="is a file"):
        artifact_path(tmp_path / "dist/sub/m.ekb", "m.ekb")
    assert (tmp_path / "dist").read_bytes() == b"x"
    with pytest.raises(ValueError, match="--out is empty"):
        artifact_path("", "m.ekb")
    with pytest.raises(ValueError, match="not a plain file name"):
        artifact_path(tmp_path, "../m.ekb")

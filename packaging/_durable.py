"""Durable, atomic file writes: the one helper every result file of edgekws goes through.

A reader sees either the old file or the complete new one, never a torn one, and a finished write
survives a power cut: the data go to a temporary file in the destination's folder, which is fsynced,
renamed over the destination with ``os.replace`` (atomic on POSIX), and then the folder itself is
fsynced so the rename is on disk too. A failed write leaves the destination untouched and removes the
temporary file.

:func:`atomic_path` serves writers that want a path (h5py, matplotlib, soundfile, ``np.savez``): the
temporary name ends with the destination's suffix, so format detection by extension keeps working.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be
    opened (not every platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; when the block ends without an exception, the file written
    there is fsynced, given ``mode`` and renamed over ``dest``, and the folder is fsynced.

    Example::

        with atomic_path(run_dir / "best.npz") as tmp:
            np.savez(tmp, **arrays)
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``dest`` atomically and durably (see the module docstring)."""
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically and durably."""
    atomic_write_bytes(dest, text.encode("utf-8"), mode)

"""Writing a data-set folder whole or not at all, and its manifest (`data synth`, `data import`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekws.packaging import fsync_dir
from edgekws.toolkit._interrupt import pid_alive
from edgekws.toolkit.data._spikes import DatasetError


def check_out(out: Path, force: bool, error: type[Exception] = DatasetError) -> None:
    """Refuse (``error``) a non-empty ``out`` unless ``force``: call it before long work, too."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise error(f"{out} exists and is not empty; choose another --out or pass --force to replace it")


@contextmanager
def folder_in_place(out: Path, force: bool, error: type[Exception] = DatasetError) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``, renamed to ``out`` when the block ends, removed when
    it raises (an interrupted run leaves nothing); :func:`check_out` first."""
    check_out(out, force, error)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise error(f"cannot write {out}: {exc.strerror or exc}; choose a writable --out") from exc
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
        fsync_dir(out.parent)  # the rename survives a power cut (packaging's durable-write rule)
    except OSError as exc:  # full or failing disk while writing: nothing is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise error(f"cannot write {out}: {exc.strerror or exc}; free space or choose another --out") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_partials(out: Path) -> None:
    """Remove ``.OUT.partial-PID`` folders that a killed run (SIGKILL, power cut) left behind."""
    for old in out.parent.glob(f".{out.name}.partial-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def manifest_text(manifest: dict[str, Any], rows: str) -> str:
    """Indented JSON with one entry of ``manifest[rows]`` per line (a manifest of thousands of utterances
    or recordings stays readable and small)."""
    head = {k: v for k, v in manifest.items() if k != rows}
    text = json.dumps(head, indent=1, ensure_ascii=False)
    body = ",\n".join("  " + json.dumps(u, ensure_ascii=False) for u in manifest[rows])
    return text[:-2] + f',\n "{rows}": [\n' + body + "\n ]\n}\n"

"""Where ``--out`` puts the file a command writes: one rule for every `edgekws` and `edgekws-agent` command.

A path that ends in ``/`` or names an existing folder is a folder (created if missing) and the artifact gets
its canonical name inside it; anything else is the file's own name (its folder is created if missing).
``--out dist/`` for a bundle therefore writes ``dist/NAME-VERSION.ekb`` whether or not ``dist`` exists yet.
Commands whose output is inherently a folder (a corpus, a training run, a key pair) take their ``--out`` as
that folder and do not use this rule. docs/architecture.md lists both kinds.
"""

from __future__ import annotations

import os
from pathlib import Path


def artifact_path(out: str | os.PathLike[str], name: str, *, create: bool = True) -> Path:
    """The file an ``--out`` of ``out`` means for an artifact whose canonical file name is ``name``.

    With ``create`` (the default) the folder the file goes in is made when missing; ``create=False`` only
    resolves the path (to check it before any work is done). Raises ValueError when the folder part of the
    path is an existing file.
    """
    text = os.fspath(out)
    if not text:
        raise ValueError("--out is empty: give a file name, or a folder ending in /")
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a plain file name")
    given = Path(text)
    as_folder = text.endswith(("/", os.sep)) or given.is_dir()
    folder, path = (given, given / name) if as_folder else (given.parent, given)
    if as_folder and given.exists() and not given.is_dir():
        raise ValueError(f"--out {text}: {given} is a file, not a folder; name another folder or a file")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
            raise ValueError(f"--out {text}: {blocker} is a file, so no folder {folder} can be made") from exc
        except OSError as exc:
            raise ValueError(f"--out {text}: cannot create the folder {folder} ({exc.strerror})") from exc
    return path

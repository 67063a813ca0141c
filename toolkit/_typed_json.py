"""The typed JSON descriptions edgekws keeps in its folders (a run's run.json, a sweep's sweep.json): one
reader that says which file is unreadable or of the wrong type, and what the folder was expected to be."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_typed_json(
    path: str | os.PathLike[str], kind: str, error: type[Exception], what: str, hint: str
) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``type`` is ``kind``; else ``error`` naming the file, ``what`` it
    should be (e.g. "run description") and the ``hint`` (e.g. "is RUN a training run?")."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not a readable {what} ({exc}); {hint}") from exc
    if not isinstance(info, dict):
        raise error(f"{path}: not a {what}: a JSON {type(info).__name__} instead of an object; {hint}")
    if info.get("type") != kind:
        raise error(f"{path}: type must be {kind!r}, got {info.get('type')!r}")
    return info

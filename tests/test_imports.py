"""The import rules of docs/architecture.md, checked on the source (lazy imports inside functions included).

1. Imports point one way, toolkit -> agent -> packaging; the agent never imports the toolkit or JAX, and
   packaging imports neither (the contracts in pyproject.toml's ``[tool.importlinter]``).
2. A package is used through its face: a ``_``-prefixed module is imported only from inside its own package
   (siblings and subpackages); everyone else imports the names its ``__init__`` exports (equinox's rule).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"toolkit": "edgekws.toolkit", "agent": "edgekws.agent", "packaging": "edgekws.packaging"}


def test_dependency_contracts_hold(tmp_path: Path) -> None:
    """Every import-linter contract in pyproject.toml is kept (lint-imports exits 0).

    Run as a subprocess outside the repository: lint-imports puts its working folder on sys.path, and the
    repository's `packaging` folder must never shadow PyPA's packaging in this process."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[parts[0]], *parts[1:]])


def _targets(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every edgekws module an import names, private names imported from packages too."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("edgekws.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgekws."):
            out.append((node.lineno, node.module))
            out += [
                (node.lineno, f"{node.module}.{a.name}")
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return out


def _owner(target: str) -> str | None:
    """The package that owns ``target`` if it is (inside) a private module, else None."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return None


def face_violations() -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            importer = _module(path)
            for line, target in _targets(ast.parse(path.read_text(), str(path))):
                owner = _owner(target)
                if owner is not None and not (importer + ".").startswith(owner + "."):
                    found.append(f"{path.relative_to(REPO)}:{line}: {target} (import it from {owner})")
    return found


def test_packages_are_used_through_their_faces() -> None:
    """No module imports a private module of another package; the message names each import and its fix."""
    problems = face_violations()
    assert not problems, "private modules imported from outside their package:\n  " + "\n  ".join(problems)

"""The face of a toolkit package whose modules pull heavy dependencies (JAX, ONNX, SQLAlchemy, paho).

Such a package's ``__init__`` names what it exports and where each name lives; a name's module is imported
when the name is first used (PEP 562), so importing the package, or a light name from it, costs nothing.
Type checkers read the same names from an ``if TYPE_CHECKING:`` block of re-export lines::

    if TYPE_CHECKING:
        from edgekws.toolkit.train._loop import train as train
    __getattr__, __all__ = lazy_exports(__name__, {"train": "_loop"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: each exported name -> the private module defining it."""
    table = dict(where)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{table[name]}"), name)

    return __getattr__, sorted(table)

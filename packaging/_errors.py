"""The packaging subsystem's exceptions: each subclasses a built-in and says what was wrong and the fix.

Validation collects every problem first and raises once, so a user fixing a bundle sees all its faults
in one run: :class:`ManifestError` and :class:`InvalidBundle` carry the full list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One fault found while checking a bundle.

    ``code`` is a stable machine-readable kind (see docs/bundle.md, "Problem codes"), ``where`` names the
    tar member or manifest field at fault ("" for the archive as a whole), ``message`` says what was
    wrong and how to fix it.
    """

    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return (
            f"[{self.code}] {self.where}: {self.message}" if self.where else f"[{self.code}] {self.message}"
        )

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "where": self.where, "message": self.message}


class ManifestError(ValueError):
    """A manifest (or its JSON form) is malformed; ``problems`` lists every fault, each naming its field."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"invalid bundle manifest ({len(self.problems)} problem(s)):\n  - " + "\n  - ".join(self.problems)
        )


class InvalidBundle(ValueError):
    """A bundle failed verification; ``problems`` lists every fault found, nothing in it was trusted."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n  - ".join(str(p) for p in self.problems)
        super().__init__(
            f"{source} is not a valid edgekws bundle ({len(self.problems)} problem(s)):\n  - {lines}"
        )

    @property
    def codes(self) -> set[str]:
        """The distinct problem codes, for tests and scripts."""
        return {p.code for p in self.problems}


class KeyFileError(ValueError):
    """A signing or public key file is missing, unreadable, malformed or too widely readable."""


class StoreError(ValueError):
    """A bundle store operation was refused; the message says why and what to do."""


class VersionConflict(StoreError):
    """The store already holds this name and version (or one of equal precedence) with different bytes."""


class NotInStore(StoreError, LookupError):
    """The store holds no bundle with the requested name or version."""


class RollbackRefused(ValueError):
    """Activating a bundle would lower the active version (or switch models) without being told to."""

"""Progress bars with ETA for long work, shared by every toolkit command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def bar_columns(label: str = "{task.description}", info: bool = False) -> list[ProgressColumn]:
    """The columns of every toolkit bar: label, bar, done/total, elapsed, ETA (and a free ``info`` field)."""
    columns: list[ProgressColumn] = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return columns


@contextmanager
def progress_bar(label: str, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr; yields ``update(done, total)`` for the work to call as it goes."""
    with Progress(*bar_columns(f"[bold]{label}"), console=Console(stderr=True), disable=disable) as bar:
        job = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        yield update

"""Input batches prepared in a background thread: the training step never waits for augmentation or binning.

``Feed(items, depth)`` runs the iterator ``items`` in a daemon thread and hands its items over in order
through a queue of ``depth`` items; an exception in the thread is raised by the ``get`` that would have
returned the next item. What the thread computes is a pure function of the run's seed and position
(``_loop._epoch_data``), so prefetching changes nothing in the results, only when the work is done. numpy
(augmentation, binning) and the kernels (numba, XLA) release the GIL, so the thread overlaps the step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


class Feed:
    """The items of ``items``, produced ``depth`` ahead in a background thread; a context manager."""

    def __init__(self, items: Iterator[Any], depth: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="edgekws-feed", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
            return
        self._put(_DONE)

    def get(self) -> Any:
        """The next item; raises what the producer raised, or ``StopIteration`` after the last item."""
        item = self._queue.get()
        if isinstance(item, _Failed):
            raise item.exc
        if item is _DONE:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer and wait for its thread."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> Feed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""The background batch feed: order, errors handed to the consumer, and a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from edgekws.toolkit.train._feed import Feed


def test_items_arrive_in_order_and_the_end_is_signalled() -> None:
    """Every item of the producer, in order, then StopIteration."""
    with Feed(iter(range(50)), depth=3) as feed:
        assert [feed.get() for _ in range(50)] == list(range(50))
        with pytest.raises(StopIteration):
            feed.get()


def test_a_producer_error_is_raised_by_the_consumer() -> None:
    """An exception in the background thread reaches the consumer after the items made before it."""

    def items() -> Iterator[int]:
        yield 1
        raise ValueError("augmentation failed: bad channel count")

    with Feed(items()) as feed:
        assert feed.get() == 1
        with pytest.raises(ValueError, match="bad channel count"):
            feed.get()


def test_the_producer_runs_ahead_in_its_own_thread_and_stops_on_close() -> None:
    """The producer fills the queue while the consumer is busy, stays at most ``depth`` ahead, and close()
    ends it without consuming the rest."""
    made: list[int] = []
    names: set[str] = set()

    def items() -> Iterator[int]:
        for i in range(1000):
            names.add(threading.current_thread().name)
            made.append(i)
            yield i

    feed = Feed(items(), depth=2)
    assert feed.get() == 0
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert 3 <= len(made) <= 4  # 1 consumed + 2 queued (+ 1 waiting to be put)
    feed.close()
    assert names == {"edgekws-feed"} and len(made) < 10

"""Shared fixtures: a real mosquitto on 127.0.0.1 (edgekws.toolkit.fleet._broker.LocalBroker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekws.toolkit.fleet._broker import LocalBroker as Broker
from edgekws.toolkit.fleet._broker import free_port as free_port


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make brokers with extra config lines (auth, ACL, TLS); all are killed at teardown."""
    brokers: list[Broker] = []

    def make(extra: str = "", start: bool = True) -> Broker:
        folder = tmp_path / f"broker{len(brokers)}"
        folder.mkdir()
        b = Broker(folder, extra)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        b.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A running anonymous mosquitto on a free 127.0.0.1 port, persistence off."""
    return broker_factory()

"""Shared fixtures: a real mosquitto on 127.0.0.1 (edgekws.toolkit.fleet._broker.LocalBroker) and a real
PostgreSQL server (a throwaway cluster of Debian's ``postgresql`` package) for the fleet store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekws.toolkit.fleet._broker import LocalBroker as Broker
from edgekws.toolkit.fleet._broker import free_port as free_port
from edgekws.toolkit.fleet._postgres import LocalPostgres, postgres_bin


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


# ---- PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server on 127.0.0.1 for this test session (LocalPostgres: Debian's server programs in a
    temporary folder). Fails, saying what to install, where PostgreSQL or psycopg is missing (make test
    installs both)."""
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: `apt install postgresql` (make test installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed: pip install 'edgekws[fleet]'")
    server = LocalPostgres()
    server.start()  # a PostgresError says what is missing (e.g. the postgres user when running as root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty fleet store: a SQLite file, and a database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: LocalPostgres = request.getfixturevalue("postgres")
    return server.new_database()

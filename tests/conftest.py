"""Shared fixtures: a real mosquitto on 127.0.0.1 (edgekws.toolkit.fleet._broker.LocalBroker) and a real
PostgreSQL server (a throwaway cluster of Debian's ``postgresql`` package) for the fleet store."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


# ---- PostgreSQL ------------------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps initdb and pg_ctl off PATH)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    """A running throwaway PostgreSQL cluster; :meth:`new_database` gives each test its own database."""

    port: int
    folder: Path
    started_s: float  # seconds from initdb to accepting connections
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://edgekws@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"fleet{next(self._names)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=edgekws dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 for this test session: ``initdb`` into a temporary folder and
    ``pg_ctl start`` (as the ``postgres`` user when the tests run as root: PostgreSQL refuses root).
    Skipped, saying why, only where PostgreSQL or psycopg is not installed."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed: `apt install postgresql` (make test installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'edgekws[fleet]'")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="edgekws-pg-"))
    if os.geteuid() == 0:
        if (
            shutil.which("runuser") is None
            or subprocess.run(["id", "postgres"], capture_output=True).returncode
        ):
            pytest.skip("running as root needs the postgres user and runuser to start PostgreSQL")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"
    t0 = time.monotonic()
    run = [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "edgekws", "--auth=trust", "-E", "UTF8"]
    subprocess.run([*run, "--no-sync", "--no-instructions"], check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} -c fsync=off"
    start = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options]
    done = subprocess.run([*start, "-w", "-t", "60", "start"], capture_output=True, text=True)
    if done.returncode:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {done.stderr}\n{log}")
    try:
        yield Postgres(port, folder, round(time.monotonic() - t0, 2))
    finally:
        subprocess.run([*start, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty fleet store: a SQLite file, and a database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_database()

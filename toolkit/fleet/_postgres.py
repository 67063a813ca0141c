"""A throwaway PostgreSQL server for one machine: the tests and the fleet benchmarks (as LocalBroker is
for mosquitto). Production stores are a managed or packaged PostgreSQL (docs/mqtt.md, "Several monitors").

:class:`LocalPostgres` runs Debian's ``postgresql`` server programs: ``initdb`` into a temporary folder
(trust authentication, user ``edgekws``, fsync off: nothing here must survive a power cut) and ``pg_ctl
start`` on a free 127.0.0.1 port -- as the ``postgres`` user when run as root, which PostgreSQL refuses.
:meth:`LocalPostgres.new_database` gives each user its own database.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edgekws.toolkit.fleet._broker import free_port


class PostgresError(RuntimeError):
    """PostgreSQL is missing or did not start; the message says why and how to fix it."""


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps initdb and pg_ctl off PATH)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class LocalPostgres:
    """``start()`` a PostgreSQL cluster in a temporary folder; ``stop()`` removes it."""

    def __init__(self, options: str = "") -> None:
        self.options = options  # extra ``-c name=value`` server settings
        self.port = 0
        self.folder: Path | None = None
        self.started_s = 0.0  # seconds from initdb to accepting connections
        self._names = itertools.count(1)
        self._as_user: list[str] = []

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://edgekws@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        bindir = postgres_bin()
        if bindir is None:
            raise PostgresError(
                "PostgreSQL is not installed: `apt install postgresql` (make test installs it)"
            )
        if os.geteuid() == 0:
            if (
                shutil.which("runuser") is None
                or subprocess.run(["id", "postgres"], capture_output=True).returncode
            ):
                raise PostgresError("running as root needs the postgres user and runuser to start PostgreSQL")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.folder = folder = Path(tempfile.mkdtemp(prefix="edgekws-pg-"))
        if self._as_user:
            shutil.chown(folder, "postgres")
        self.port, data = free_port(), folder / "data"
        t0 = time.monotonic()
        initdb = [*self._as_user, str(bindir / "initdb"), "-D", str(data), "-U", "edgekws", "--auth=trust"]
        subprocess.run(
            [*initdb, "-E", "UTF8", "--no-sync", "--no-instructions"], check=True, capture_output=True
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={folder} -c fsync=off"
        )
        self._ctl = [*self._as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
        self._ctl += ["-o", f"{options} {self.options}".strip()]
        done = subprocess.run([*self._ctl, "-w", "-t", "60", "start"], capture_output=True, text=True)
        if done.returncode:
            log = (folder / "log").read_text() if (folder / "log").exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresError(f"PostgreSQL did not start: {done.stderr}\n{log}")
        self.started_s = round(time.monotonic() - t0, 2)
        return self

    def version(self) -> str:
        """``postgres --version`` of the server programs, e.g. "postgres (PostgreSQL) 15.x"."""
        bindir = postgres_bin()
        if bindir is None:
            return "PostgreSQL not installed"
        done = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
        return done.stdout.strip()

    def new_database(self) -> str:
        """CREATE DATABASE fleetN; returns its SQLAlchemy URL."""
        import psycopg

        name = f"fleet{next(self._names)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=edgekws dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        if self.folder is None:
            return
        subprocess.run([*self._ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

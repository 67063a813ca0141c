"""Shared fixtures: a real mosquitto on 127.0.0.1, started from deploy/mosquitto/mosquitto.test.conf.in."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = os.environ.get("EDGEKWS_MOSQUITTO", "/usr/sbin/mosquitto")
TEST_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.test.conf.in"
ACL_FILE = REPO / "deploy" / "mosquitto" / "acl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process; :meth:`kill` (SIGKILL) and :meth:`start` again on the same port."""

    def __init__(self, folder: Path, extra: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.host = "127.0.0.1"
        self.conf = folder / "mosquitto.conf"
        text = TEST_CONF.read_text().replace("@PORT@", str(self.port)).replace("@DIR@", str(folder))
        text = text.replace("@USER@", getpass.getuser())
        self.conf.write_text(text.replace("@EXTRA@", extra or "allow_anonymous true"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, nothing persisted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


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

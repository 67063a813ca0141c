"""A local mosquitto for one machine: the demo, the tutorial, the tests and the fleet benchmarks.

:class:`LocalBroker` writes a mosquitto config into a folder (127.0.0.1 only, a free or given port,
persistence off so a restarted broker starts empty, logs in the folder) and runs ``mosquitto -c`` on it.
Extra config lines add authentication, ACLs or TLS; the default allows anonymous clients, which is only
right on 127.0.0.1. Production brokers use ``deploy/mosquitto/mosquitto.conf`` (TLS, passwords, ACL).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: mosquitto's config; ``user`` is the account running it (mosquitto started as root would otherwise switch
#: to the ``mosquitto`` user and not read the folder's files).
CONFIG_TEMPLATE = """\
# written by edgekws (edgekws.toolkit.fleet._broker): a local broker on 127.0.0.1
user {user}
per_listener_settings false
persistence false
log_dest file {folder}/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
max_inflight_messages 20
max_queued_messages 100000
listener {port} 127.0.0.1
{extra}
"""


class BrokerError(RuntimeError):
    """mosquitto is missing, exited, or did not listen; the message says why and how to fix it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    """The mosquitto binary: ``$EDGEKWS_MOSQUITTO``, else ``mosquitto`` on PATH or in /usr/sbin."""
    configured = os.environ.get("EDGEKWS_MOSQUITTO")
    if configured:
        if not os.access(configured, os.X_OK):
            raise BrokerError(f"EDGEKWS_MOSQUITTO={configured} is not an executable file")
        return configured
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: `sudo apt install mosquitto` (make setup does), set "
            "EDGEKWS_MOSQUITTO to its path, or point edgekws at a running broker with --broker mqtt://host:port"
        )
    return found


class LocalBroker:
    """One mosquitto process on 127.0.0.1; :meth:`kill` (SIGKILL) and :meth:`start` again on the same port.

    ``config``: a whole mosquitto.conf to run instead of the template (a production config under test); it
    must listen on ``port``, which :meth:`start` waits for.
    """

    def __init__(
        self, folder: Path, extra: str = "", port: int | None = None, config: str | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text(
            config
            if config is not None
            else CONFIG_TEMPLATE.format(
                user=getpass.getuser(),
                folder=self.folder.resolve(),
                port=self.port,
                extra=extra or "allow_anonymous true",
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> LocalBroker:
        """Run mosquitto and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise BrokerError(f"mosquitto exited at start: {err.strip()}\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise BrokerError(
            f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s\n{self.log()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

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

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

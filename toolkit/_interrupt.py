"""Long toolkit commands stop on SIGTERM as they do on Ctrl-C: cleanly, with their partial output removed
or checkpointed, and no worker processes left behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, systemd, a job scheduler) raises ``KeyboardInterrupt`` in the
    main thread, so the Ctrl-C paths run: ``train`` saves its interrupt checkpoint, ``data synth`` shuts
    its workers down and removes its partial folder."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """A worker-process initializer: on Linux, the kernel sends the worker SIGTERM when the process that
    started it dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one owned by another user counts), e.g. the owner of a partial
    folder or a core claim that a killed run left behind."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

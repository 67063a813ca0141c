"""The toolkit's Lava bridge: a Lava backend run in the Lava interpreter through a subprocess.

Runs in both environments (`make test` adds this file to the Lava run): in .venv-lava the bridge spawns
.venv-lava itself; the toolkit module it lives in imports no JAX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _devices import realistic_network

from edgekws.agent.backends import BackendUnavailable, EmulatorBackend
from edgekws.packaging import write_netx
from edgekws.toolkit.quant import LavaBridge, lava_python


@pytest.mark.lava
def test_bridge_runs_lava_in_a_subprocess(tmp_path: Path) -> None:
    """The subprocess bridge returns the emulator's readout for a short sample."""
    net = realistic_network()
    path = write_netx(net, tmp_path / "real.net")
    x = (np.random.default_rng(15).random((1, 40, 20)) < 0.1).astype(np.uint8)
    assert np.array_equal(LavaBridge(path, timeout_s=300).run(x), EmulatorBackend(net).run(x))


def test_missing_lava_interpreter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A missing EDGEKWS_LAVA_PYTHON interpreter is reported with how to build one."""
    monkeypatch.setenv("EDGEKWS_LAVA_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(BackendUnavailable, match="make setup"):
        lava_python()
    assert not LavaBridge.available()

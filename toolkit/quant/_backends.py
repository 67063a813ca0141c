"""Readout functions that score a float model through its fixed-point deployment (for `edgekws eval`).

Each quantizes the float parameters (default percentile) and runs the agent's own runtime, so what the
workstation measures is what the device runs: ``emulator`` (bit-exact numpy, any Python) and ``lava``
(Lava's ``fixed_pt`` simulation, through the subprocess bridge into the Python 3.10 Lava interpreter).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.agent.backends import EmulatorBackend, LavaBridgeBackend
from edgekws.packaging import NetworkSpec, write_netx
from edgekws.toolkit.quant._quantize import quantize


def _params(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def emulator_readout(
    params: dict[str, Any], spec: NetworkSpec, spikes: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The quantized model's readout ``(B, T, O)`` in float units, from the fixed-point emulator."""
    net, _ = quantize(_params(params), spec)
    emulator = EmulatorBackend(net)
    x = np.asarray(spikes)
    parts = [emulator.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, spec.num_steps, spec.num_outputs))


def lava_readout(
    params: dict[str, Any], spec: NetworkSpec, spikes: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The quantized model's readout from Lava ``fixed_pt`` (slow: about 1.5–5 s per 1000-step sample)."""
    net, _ = quantize(_params(params), spec)
    with tempfile.TemporaryDirectory(prefix="edgekws-eval-") as tmp:
        path = write_netx(net, Path(tmp) / "netx.h5")
        return LavaBridgeBackend(path).run(np.asarray(spikes))

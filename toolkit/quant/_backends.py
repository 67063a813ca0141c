"""A float model scored through its deployment: the quantized network on the agent's own backends.

``edgekws eval --backend NAME`` and the bundle builder's evaluation both come here, for every backend in
the agent's registry (:func:`edgekws.agent.backends.backend_classes`): the model files a backend runs
(``model/netx.h5``, ``model/model.onnx``) are written into a temporary folder laid out like an extracted
bundle, and the backend opens them exactly as the daemon does. So what the workstation measures is what
the device runs.

The Lava backends need the Python 3.10 Lava interpreter (``.venv-lava``); from any other interpreter they
run through :class:`LavaBridge`, a subprocess of that interpreter running ``edgekws-agent lava-run`` (whole
samples only; about 1.5–5 s per 1000-step sample).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.agent.backends import (
    BackendUnavailable,
    LavaBackend,
    backend_classes,
    check_spikes,
)
from edgekws.packaging import FixedPointNetwork, NetworkSpec, read_netx, write_netx
from edgekws.toolkit.quant._quantize import quantize

Runner = Callable[[np.ndarray], np.ndarray]  # spikes (B, T, C) -> readout (B, T, O) float64


def lava_python() -> Path:
    """The Lava interpreter: ``$EDGEKWS_LAVA_PYTHON``, else ``.venv-lava/bin/python`` of this source tree
    (where `make setup` builds it)."""
    env = os.environ.get("EDGEKWS_LAVA_PYTHON")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".venv-lava" / "bin" / "python"
    if not path.is_file():
        source = "EDGEKWS_LAVA_PYTHON" if env else "the default .venv-lava/bin/python"
        raise BackendUnavailable(
            f"the Lava interpreter {path} ({source}) does not exist; run `make setup` to build .venv-lava "
            "or set EDGEKWS_LAVA_PYTHON to a Python 3.10 with lava-nc 0.10.0, lava-dl 0.6.0 and edgekws"
        )
    return path


class LavaBridge:
    """A Lava backend (``lava-sim`` or ``loihi2``) run in the Lava interpreter through a subprocess.

    Each :meth:`run` writes the spikes to an npz file, runs ``edgekws-agent lava-run`` in the Lava
    interpreter and reads the readout traces back. Streaming is not offered across the process boundary.
    """

    def __init__(
        self, netx_path: str | Path, *, backend: str = "lava-sim", timeout_s: float | None = None
    ) -> None:
        self.python = lava_python()
        self.netx_path = Path(netx_path).resolve()
        self.net = read_netx(self.netx_path)
        self.backend = backend
        self.timeout_s = timeout_s

    @classmethod
    def available(cls) -> bool:
        try:
            lava_python()
        except BackendUnavailable:
            return False
        return True

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Readout traces ``(batch, steps, outputs)`` of independent samples, from the Lava subprocess."""
        x = check_spikes(spikes, self.net.num_inputs)
        with tempfile.TemporaryDirectory(prefix="edgekws-lava-") as tmp:
            inp, out = Path(tmp) / "spikes.npz", Path(tmp) / "readout.npz"
            np.savez(inp, spikes=x.astype(np.uint8))
            cmd = [
                str(self.python),
                "-c",
                "from edgekws.agent._cli import main; main()",
                "lava-run",
                "--netx",
                str(self.netx_path),
                "--spikes",
                str(inp),
                "--out",
                str(out),
                "--backend",
                self.backend,
            ]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=self.timeout_s)
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
                raise BackendUnavailable(
                    f"the Lava subprocess ({self.python}) failed with exit code {proc.returncode}: "
                    + " | ".join(tail)
                )
            with np.load(out) as data:
                return np.asarray(data["readout"], dtype=np.float64)


def deployment_files(
    params: Mapping[str, Any], spec: NetworkSpec, net: FixedPointNetwork, names: list[str]
) -> dict[str, bytes]:
    """The bundle files that the backends ``names`` run, made from the float and the quantized model."""
    needed = {backend_classes()[n].model_file for n in names}
    files: dict[str, bytes] = {}
    if "model/netx.h5" in needed:
        with tempfile.TemporaryDirectory(prefix="edgekws-netx-") as tmp:
            files["model/netx.h5"] = write_netx(net, Path(tmp) / "netx.h5").read_bytes()
    if "model/model.onnx" in needed:
        from edgekws.toolkit.export import export_onnx_streaming

        files["model/model.onnx"] = export_onnx_streaming(dict(params), spec)
    missing = needed - set(files)
    if missing:
        raise BackendUnavailable(f"the toolkit cannot make {sorted(missing)} for backends {names}")
    return files


@contextlib.contextmanager
def deployed(files: Mapping[str, bytes]) -> Iterator[Callable[[str], Runner]]:
    """The bundle ``files`` laid out in a temporary folder; yields ``open(name)``, the ``run`` of backend
    ``name`` on them (in this interpreter, or through :class:`LavaBridge` for a Lava backend)."""
    with tempfile.TemporaryDirectory(prefix="edgekws-deploy-") as tmp, contextlib.ExitStack() as opened:
        root = Path(tmp)
        for path, data in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)

        def open_backend(name: str) -> Runner:
            cls = backend_classes()[name]
            if issubclass(cls, LavaBackend) and not cls.available():
                return LavaBridge(cls.model_path(root), backend=name).run
            backend = cls.open(root, cls.Config(type=name))
            opened.callback(backend.close)
            return backend.run

        yield open_backend


def run_in_batches(
    run: Runner,
    spikes: np.ndarray,
    batch_size: int,
    num_outputs: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``run`` over ``spikes`` at most ``batch_size`` samples at a time, the readouts concatenated;
    ``on_batch(samples_done)`` after each batch (for a progress bar)."""
    x = np.asarray(spikes)
    parts = []
    for i in range(0, len(x), batch_size):
        parts.append(run(x[i : i + batch_size]))
        if on_batch is not None:
            on_batch(min(i + batch_size, len(x)))
    return np.concatenate(parts) if parts else np.zeros((0, x.shape[1] if x.ndim == 3 else 0, num_outputs))


def deployed_readout(
    backend: str, params: Mapping[str, Any], spec: NetworkSpec, spikes: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The readout ``(B, T, O)`` in float units of the quantized model (default percentile) on ``backend``."""
    net, _ = quantize({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, spec)
    with deployed(deployment_files(params, spec, net, [backend])) as open_backend:
        return run_in_batches(open_backend(backend), spikes, batch_size, spec.num_outputs)

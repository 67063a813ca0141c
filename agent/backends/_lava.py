"""Lava backends: a NetX file run by ``lava.lib.dl.netx`` in Lava's bit-accurate simulator or on Loihi 2.

- ``lava-sim``: ``Loihi2SimCfg(select_tag='fixed_pt')``, any machine with the Lava environment.
- ``loihi2``: ``Loihi2HwCfg``, needs Intel's lava-loihi extension; only the run configuration and the I/O
  adapters differ from ``lava-sim``.

Lava 0.10 needs CPython 3.10 with numpy < 2 (``.venv-lava``); this module imports without Lava (all Lava
imports are lazy). The workstation (Python 3.11) reaches these backends through a subprocess of the Lava
interpreter running ``edgekws-agent lava-run`` (the toolkit's Lava bridge).

Input spikes go through an ``io.source.RingBuffer`` into ``net.inp``; the readout voltage is read every step
by an ``io.sink.Read`` on ``net.out_layer.neuron.v`` (post-management, i.e. after the spike reset, as a
Monitor would). Samples are made independent by zeroing, between samples, every LIF's ``u`` and ``v`` and
every Dense's ``a_buff`` (NetX's ``reset_interval`` zeros ``u, v`` but not the synapses' one-step buffers, so
the previous sample's last spikes would leak into the next one). With that, Lava step ``n*T + 1 + t``
equals emulator step ``t`` of sample ``n`` exactly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgekws.agent.backends._base import Backend, BackendConfig, BackendUnavailable, check_spikes
from edgekws.packaging import read_netx

LAVA_HINT = (
    "Lava needs CPython 3.10 with lava-nc 0.10.0 and lava-dl 0.6.0 "
    "(Lava 0.10 does not import on Python 3.11): "
    "run `make setup` to build .venv-lava and run the agent there (on a workstation, `edgekws eval "
    "--backend lava-sim` reaches it through a subprocess; EDGEKWS_LAVA_PYTHON names its interpreter)"
)
LOIHI_HINT = (
    "Loihi 2 hardware needs Intel's lava-loihi extension (module lava.utils.loihi2_profiler), which is "
    "available only to members of the Intel Neuromorphic Research Community (INRC): join at "
    "https://intel-ncl.atlassian.net/wiki/spaces/INRC, install lava-loihi into .venv-lava per Intel's "
    "instructions and run on an INRC host; use backend 'lava-sim' (bit-identical simulation) meanwhile"
)


@contextlib.contextmanager
def _quiet_lava() -> Iterator[None]:
    """Silence the import-time and compile-time warnings of Lava's dependencies (networkx, torch, ...), and
    send what lava-dl prints (its "Prophesee Dataset Toolbox could not be found" notice) to standard error:
    standard output belongs to the commands (``classify --json``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        for category in (ImportWarning, DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield


_LIVE: weakref.WeakSet[_Session] = weakref.WeakSet()  # sessions whose Lava runtime may be up


@atexit.register
def _stop_runtimes() -> None:
    """Stop every Lava runtime still up when the interpreter exits: a runtime left running keeps its
    processes alive, and the command that used it would never exit."""
    for session in list(_LIVE):
        session.close()


def lava_problem() -> str | None:
    """Why Lava cannot be used in this interpreter, or None if it can."""
    if sys.version_info[:2] != (3, 10):
        return f"this is Python {sys.version_info[0]}.{sys.version_info[1]}; " + LAVA_HINT
    try:
        with _quiet_lava():
            import lava.lib.dl.netx
            import lava.magma.core.run_configs  # noqa: F401
    except ImportError as exc:
        return f"cannot import Lava ({exc}); " + LAVA_HINT
    return None


def loihi2_problem() -> str | None:
    """Why Loihi 2 hardware cannot be used, or None if lava-loihi is installed."""
    problem = lava_problem()
    if problem:
        return problem
    from lava.utils import loihi

    return None if loihi.is_installed() else LOIHI_HINT


class _Session:
    """One compiled Lava network with an input ring buffer and voltage readers of ``capacity`` steps."""

    def __init__(
        self, netx_path: Path, capacity: int, hardware: bool, probe: bool | str, num_inputs: int
    ) -> None:
        from lava.lib.dl import netx
        from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
        from lava.proc import io

        self.capacity = capacity
        self.steps = 0
        self.num_inputs = num_inputs
        self.net = netx.hdf5.Network(net_config=str(netx_path), input_message_bits=0)
        self.source = io.source.RingBuffer(data=np.zeros((num_inputs, capacity), dtype=np.int32))
        if hardware:  # pragma: no cover - needs lava-loihi and a Loihi 2 system
            from lava.proc.embedded_io.spike import PyToNxAdapter

            adapter = PyToNxAdapter(shape=(num_inputs,))
            self.source.s_out.connect(adapter.inp)
            adapter.out.connect(self.net.inp)
            self.run_cfg: Any = Loihi2HwCfg()
        else:
            self.source.s_out.connect(self.net.inp)
            self.run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
        self.readers: dict[str, Any] = {}
        layers = list(self.net.layers)
        targets = {"out.v": layers[-1].neuron.v}
        if probe is True:
            for i, block in enumerate(layers):
                targets[f"{i}.u"] = block.neuron.u
                targets[f"{i}.v"] = block.neuron.v
        for key, var in targets.items():
            reader = io.sink.Read(buffer=capacity)
            reader.connect_var(var)
            self.readers[key] = reader
        self.spike_sinks: dict[str, Any] = {}
        if probe:  # True or "spikes": every layer's spikes (the readout never spikes)
            for i, block in enumerate(layers[:-1] if probe == "spikes" else layers):
                sink = io.sink.RingBuffer(shape=block.out.shape, buffer=capacity)
                block.out.connect(sink.a_in)
                self.spike_sinks[f"{i}.s"] = sink
        self.state_vars = []
        for block in layers:
            self.state_vars += [block.neuron.u, block.neuron.v]
            for name in ("synapse", "synapse_rec"):
                syn = getattr(block, name, None)
                if syn is not None:
                    self.state_vars.append(syn.a_buff)
        self.hardware = hardware
        self.started = False

    def feed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``x`` (steps, inputs) (at most ``capacity`` steps); returns each probe's (steps, n) trace."""
        from lava.magma.core.run_conditions import RunSteps

        m = x.shape[0]
        pos = (self.steps + np.arange(m)) % self.capacity
        data = np.zeros((self.num_inputs, self.capacity), dtype=np.int32)
        data[:, pos] = (x != 0).T
        if self.started:
            self.source.data.set(data)
        else:
            self.source.data.init = data
        self.started = True  # from here on the runtime may be up, also if run() fails: close() stops it
        _LIVE.add(self)
        with _quiet_lava():
            self.net.run(condition=RunSteps(num_steps=m), run_cfg=self.run_cfg)
        self.steps += m
        out = {}
        for key, reader in self.readers.items():
            values = np.asarray(reader.data.get()).astype(np.int64)
            # on Loihi the register reads back as a 24-bit word; the simulator holds plain int32
            out[key] = _sign_extend_24(values[:, pos].T) if self.hardware else values[:, pos].T
        for key, sink in self.spike_sinks.items():
            out[key] = np.asarray(sink.data.get())[:, pos].T != 0
        return out

    def reset_state(self) -> None:
        """Zero every LIF's u, v and every synapse's one-step buffer (a new, independent sample)."""
        if self.started:
            for var in self.state_vars:
                var.set(np.zeros(var.shape, dtype=np.int32))

    def close(self) -> None:
        if self.started:
            self.started = False
            _LIVE.discard(self)
            with contextlib.suppress(Exception), _quiet_lava():  # a runtime that never came up
                self.net.stop()


def _sign_extend_24(values: np.ndarray) -> np.ndarray:
    """Interpret 24-bit two's-complement words (as Loihi reads them out); identity for in-range values."""
    return ((values.astype(np.int64) & 0xFFFFFF) ^ 0x800000) - 0x800000


class LavaSimConfig(BackendConfig):
    """Lava's `fixed_pt` CPU simulation of the NetX network (needs lava-nc and lava-dl, Python 3.10)."""

    type: Literal["lava-sim"] = Field(description="Backend kind.")


class Loihi2Config(BackendConfig):
    """Loihi 2 hardware through Lava (needs Intel's lava-loihi extension and a Loihi 2 board)."""

    type: Literal["loihi2"] = Field(description="Backend kind.")
    partition: str | None = Field(
        default=None,
        description="Loihi partition (e.g. 'oheogulch'), set as lava-loihi's PARTITION environment variable; "
        "None: the host's default.",
    )


class LavaBackend(Backend):
    """A NetX file run by Lava's bit-accurate ``fixed_pt`` simulation (``lava-sim``); streams one sample
    at a time (``streaming``), whole samples with :meth:`run`."""

    name: ClassVar[str] = "lava-sim"
    Config: ClassVar[type[BackendConfig]] = LavaSimConfig
    model_file: ClassVar[str] = "model/netx.h5"
    _hardware: ClassVar[bool] = False

    def __init__(self, netx_path: str | Path, *, probe: bool | str = False) -> None:
        problem = self._problem()
        if problem:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {problem}")
        self.netx_path = Path(netx_path)
        self.net = read_netx(self.netx_path)
        self.probe = probe
        self._session: _Session | None = None
        self._stream: _Session | None = None

    @classmethod
    def _problem(cls) -> str | None:
        return lava_problem()

    @classmethod
    def available(cls) -> bool:
        return cls._problem() is None

    @classmethod
    def open(cls, model_dir: Path, config: BackendConfig) -> LavaBackend:
        return cls(cls.model_path(model_dir))

    @property
    def num_inputs(self) -> int:
        return self.net.num_inputs

    @property
    def num_outputs(self) -> int:
        return self.net.num_outputs

    @property
    def streaming(self) -> bool:
        return True

    @property
    def rests_without_input(self) -> bool:
        return all(layer.bias is None or not np.any(layer.bias) for layer in self.net.layers)

    def _new_session(self, capacity: int) -> _Session:
        return _Session(self.netx_path, capacity, self._hardware, self.probe, self.num_inputs)

    def run_probes(self, spikes: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per sample, every probe's integer trace (``'out.v'``; with ``probe=True`` also ``'{i}.u'``,
        ``'{i}.v'`` and spikes ``'{i}.s'`` of layer ``i``; with ``probe="spikes"`` the hidden layers' spikes
        only, which costs a third of the time), each ``(steps, neurons)``."""
        x = check_spikes(spikes, self.num_inputs)
        steps = x.shape[1]
        if self._session is None or self._session.capacity != steps:
            if self._session is not None:
                self._session.close()
            self._session = self._new_session(steps)
        results = []
        for sample in x:
            self._session.reset_state()
            results.append(self._session.feed(sample))
        return results

    def run(self, spikes: np.ndarray) -> np.ndarray:
        traces = self.run_probes(spikes)
        return np.stack([t["out.v"] for t in traces]).astype(np.float64) * self.net.readout_scale

    def reset(self, batch_size: int = 1) -> None:
        if batch_size != 1:
            raise ValueError(f"the Lava backends stream one sample at a time, got batch_size={batch_size}")
        if self._stream is not None:
            self._stream.reset_state()

    def step(self, chunk: np.ndarray) -> np.ndarray:
        x = check_spikes(chunk, self.num_inputs)
        if x.shape[0] != 1:
            raise ValueError(f"the Lava backends stream one sample at a time, got batch size {x.shape[0]}")
        if self._stream is None:
            self._stream = self._new_session(max(x.shape[1], 1))
        pieces = []
        cap = self._stream.capacity
        for start in range(0, x.shape[1], cap):
            pieces.append(self._stream.feed(x[0, start : start + cap])["out.v"])
        v = np.concatenate(pieces) if pieces else np.zeros((0, self.num_outputs), dtype=np.int64)
        return v[None].astype(np.float64) * self.net.readout_scale

    def close(self) -> None:
        """Stop the Lava runtimes (also done at interpreter exit)."""
        for session in (self._session, self._stream):
            if session is not None:
                session.close()
        self._session = self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter shutdown
            self.close()


class Loihi2Backend(LavaBackend):
    """The same NetX file on Loihi 2 hardware (``Loihi2HwCfg``; needs lava-loihi, INRC members only)."""

    name: ClassVar[str] = "loihi2"
    Config: ClassVar[type[BackendConfig]] = Loihi2Config
    _hardware: ClassVar[bool] = True

    @classmethod
    def _problem(cls) -> str | None:
        return loihi2_problem()

    @classmethod
    def open(cls, model_dir: Path, config: BackendConfig) -> LavaBackend:
        if isinstance(config, Loihi2Config) and config.partition is not None:  # pragma: no cover - hardware
            os.environ["PARTITION"] = config.partition  # lava-loihi picks the partition from the environment
        return super().open(model_dir, config)

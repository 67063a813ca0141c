"""Bit-exact emulator of Lava's ``fixed_pt`` CUBA-LIF network (reference §2.2, docs/fixed-point.md).

Two kernels compute the same numbers: a compiled event-driven time loop (``agent/_emulator_kernel.py``,
numba; used when numba is installed) and the numpy loop below (the fallback). All layers share one state
vector per sample (hidden layers first, the readout last) so one numpy step is a dozen vectorised
operations whatever the depth:

1. ``u, v <- rtz(u * (4096 - d_u), 12), rtz(v * (4096 - d_v), 12)`` — held in float64, where the 36-bit
   products and the truncation toward zero are exact;
2. ``u += (a << 6)`` with ``a = W_0 x[t-1]`` for the first layer (computed for a whole chunk at once, since it
   does not depend on the state; once for an input broadcast to all streams) plus ``M s[t-1]`` for the rest
   (recurrent and layer-to-layer weights of all layers in one matrix, gathered over the few neurons that
   spiked);
3. ``v += u + (bias << 6)``; only if some value left the 24-bit range: wrap ``u`` once (``u > 2^23`` →
   ``u - 2^24``, ``u <= -2^23`` → ``u + 2^24``), correct ``v`` by the same amount and saturate it to
   ``±(2^23 - 1)``;
4. ``s = v > (vThMant << 6)``, ``v <- 0`` where ``s`` (``u`` is not reset).

Integers up to 2^53 are exact in float64 and the per-chunk input drive is an exact float32 integer sum
(``|W| <= 256``, fewer than 2^16 inputs), so the result equals Lava's int32/int64 arithmetic bit for bit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import Field

from edgekws.agent.backends._base import Backend, BackendConfig, BackendUnavailable, check_spikes
from edgekws.packaging import FixedPointNetwork, read_netx

_U_MAX = float(1 << 23)  # u wraps when u > 2^23 or u <= -2^23
_V_MAX = float((1 << 23) - 1)  # v saturates at +-(2^23 - 1)
_WRAP = float(1 << 24)
_CHUNK = 128  # steps of input drive computed per matrix product

Kernel = Literal["auto", "numba", "numpy"]


@functools.cache
def _compiled_kernel() -> Callable[..., None] | None:
    """The numba time loop (``_emulator_kernel.advance``), or None when numba is not installed (or cannot
    set up its compilation cache: numba raises RuntimeError at import when no cache directory is writable,
    e.g. a read-only install under a service without a home; NUMBA_CACHE_DIR fixes that)."""
    try:
        from edgekws.agent._emulator_kernel import advance
    except (ImportError, RuntimeError, OSError):
        return None
    return advance


class Traces(NamedTuple):
    """Per-layer state traces, each ``(batch, steps, neurons)`` int64, index ``t`` = after step ``t``."""

    u: list[np.ndarray]
    v: list[np.ndarray]
    spikes: list[np.ndarray]


@dataclass
class EmulatorState:
    """The state of a batch of streams between two steps.

    ``uv[:, 0]`` / ``uv[:, 1]`` are ``u`` / ``v`` of all layers (hidden first, readout last), integer-valued
    float64; ``spikes`` are the spikes of the last step (what the synapses deliver next step, i.e. Lava's
    ``a_buff`` before the weights); ``last_input`` is the last input column (the first layer's delay buffer).
    """

    uv: np.ndarray  # (batch, 2, neurons) float64
    spikes: np.ndarray  # (batch, neurons) bool
    last_input: np.ndarray  # (batch, inputs) float32
    steps: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class EmulatorConfig(BackendConfig):
    """The bit-exact fixed-point emulator on the CPU (numpy); always available."""

    type: Literal["emulator"] = Field(description="Backend kind.")


class EmulatorBackend(Backend):
    """Bit-exact fixed-point emulator, batched over samples and steppable chunk by chunk.

    ``kernel``: ``"numba"`` runs the compiled event-driven time loop (``agent/_emulator_kernel.py``; needs
    numba, in the ``agent`` extra), ``"numpy"`` the vectorised numpy loop, ``"auto"`` (default) numba when
    it is installed. Both compute the same numbers bit for bit; :attr:`kernel` says which one runs.

    Capabilities: ``streaming``, :class:`~edgekws.agent.backends.LaneStates` (the spotter's lanes are one
    batched state) and :class:`~edgekws.agent.backends.CountsEvents`.
    """

    name: ClassVar[str] = "emulator"
    Config: ClassVar[type[BackendConfig]] = EmulatorConfig
    model_file: ClassVar[str] = "model/netx.h5"

    def __init__(
        self, net: FixedPointNetwork | str | Path, *, graded_input: bool = False, kernel: Kernel = "auto"
    ) -> None:
        if not isinstance(net, FixedPointNetwork):
            net = read_netx(net)
        self.net = net
        self.graded_input = graded_input
        if kernel not in ("auto", "numba", "numpy"):
            raise ValueError(f"kernel must be 'auto', 'numba' or 'numpy', got {kernel!r}")
        compiled = _compiled_kernel() if kernel != "numpy" else None
        if kernel == "numba" and compiled is None:
            raise BackendUnavailable(
                "the emulator's numba kernel needs numba: pip install 'edgekws[agent]' (or pip install "
                "numba), or use kernel='numpy'"
            )
        self._compiled = compiled
        self.kernel: Literal["numba", "numpy"] = "numba" if compiled is not None else "numpy"
        layers = net.layers
        sizes = [layer.size for layer in layers]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        n_total = int(self._offsets[-1])
        self._n0 = sizes[0]
        self._n_out = sizes[-1]
        alpha = np.empty((2, n_total))
        vth = np.empty(n_total)
        bias = np.zeros(n_total)
        for i, layer in enumerate(layers):
            sl = slice(self._offsets[i], self._offsets[i + 1])
            alpha[0, sl] = (4096 - layer.i_decay) / 4096.0
            alpha[1, sl] = (4096 - layer.v_decay) / 4096.0
            vth[sl] = float(layer.v_th_mant << 6)
            if layer.bias is not None:
                bias[sl] = layer.bias * 64.0
        self._alpha = alpha
        self._vth = vth
        self._bias = bias if bias.any() else None
        # first layer: x (inputs) -> a, unscaled integers (float32 sums are exact)
        self._w0t = np.ascontiguousarray(layers[0].weight.T, dtype=np.float32)
        # the rest: spikes of every layer -> a of all layers, pre-multiplied by 64 (float64, exact);
        # the readout's rows are zero (its spikes, if its threshold were ever crossed, go nowhere)
        m = np.zeros((n_total, n_total))
        for i, layer in enumerate(layers):
            post = slice(self._offsets[i], self._offsets[i + 1])
            if layer.weight_rec is not None:
                m[self._offsets[i] : self._offsets[i + 1], post] = layer.weight_rec.T * 64.0
            if i > 0:
                m[self._offsets[i - 1] : self._offsets[i], post] = layer.weight.T * 64.0
        # float32 is exact (and half the memory traffic) while every partial sum stays below 2^24
        exact32 = np.abs(m).sum(axis=0).max() < (1 << 24)
        self._mt = m.astype(np.float32) if exact32 else m
        if layers[-1].weight_rec is not None:
            raise ValueError("a recurrent readout layer is not supported; make the readout a dense layer")
        self._state: EmulatorState | None = None
        # what every advance() computed, summed over all streams: spikes per neuron, input events delivered,
        # steps per stream (the op counts of an energy estimate, :meth:`event_counts`)
        self._events = np.zeros(n_total + 2)
        self._fan_out_sizes = np.zeros(n_total)
        for i, layer in enumerate(layers[:-1]):
            own = layer.size if layer.weight_rec is not None else 0
            self._fan_out_sizes[self._offsets[i] : self._offsets[i + 1]] = own + layers[i + 1].size
        if self._compiled is not None:
            self._init_kernel(m)

    def _init_kernel(self, m: np.ndarray) -> None:
        """Arrays of the compiled kernel: weights * 64 in rows per presynaptic input / neuron."""
        w0 = self.net.layers[0].weight.T * 64.0  # (inputs, n0)
        # a neuron's synaptic sum over a step is at most the sum of its |weights| (binary input): float32
        # accumulation is exact below 2^24; graded input can be any size, so it is summed in float64
        bound = np.abs(m).sum(axis=0)
        bound[: self._n0] += np.abs(w0).sum(axis=0)
        dtype = np.float32 if not self.graded_input and bound.max() < (1 << 24) else np.float64
        self._k_w0 = np.ascontiguousarray(w0, dtype=dtype)
        self._k_m = np.ascontiguousarray(m, dtype=dtype)
        self._k_fan_out = np.ascontiguousarray(m.any(axis=1))
        self._k_alpha_u = np.ascontiguousarray(self._alpha[0])
        self._k_alpha_v = np.ascontiguousarray(self._alpha[1])
        self._k_bias = self._bias if self._bias is not None else np.zeros_like(self._vth)
        self._k_none_uv = np.empty((0, 0, 2, 0))
        self._k_none_s = np.empty((0, 0, 0), dtype=bool)

    def event_counts(self) -> dict[str, float]:
        """What the emulator has computed since it was made, over every stream: input events delivered,
        spikes of the hidden layers, synaptic events (each input event or spike times its structural
        fan-out: the dense and recurrent synapses it reaches) and neuron updates (every neuron, every step).

        The deltas between two calls are the op counts of an ``estimated:loihi2-opcount`` energy figure.
        """
        n_total = int(self._offsets[-1])
        spikes = self._events[:n_total]
        inputs = float(self._events[n_total])
        return {
            "input_events": inputs,
            "hidden_spikes": float(spikes[: n_total - self._n_out].sum()),
            "synops": inputs * self._n0 + float(spikes @ self._fan_out_sizes),
            "neuron_updates": float(self._events[n_total + 1]) * n_total,
        }

    def compile_seconds(self) -> float:
        """Compile (or load from numba's on-disk cache) the kernel for this network's types; seconds taken.

        Zero for the numpy kernel. The first ``advance`` does this anyway; call it to keep it out of timings.
        """
        if self._compiled is None:
            return 0.0
        t0 = time.perf_counter()
        state = self.new_state(1)
        self.advance(state, np.zeros((1, 2, self.num_inputs), dtype=np.uint8))
        self.run_traces(np.zeros((1, 1, self.num_inputs), dtype=np.uint8))
        return time.perf_counter() - t0

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def open(cls, model_dir: Path, config: BackendConfig) -> EmulatorBackend:
        return cls(read_netx(cls.model_path(model_dir)))

    @property
    def num_inputs(self) -> int:
        return self.net.num_inputs

    @property
    def num_outputs(self) -> int:
        return self._n_out

    @property
    def streaming(self) -> bool:
        return True

    @property
    def rests_without_input(self) -> bool:
        return self._bias is None

    # -- LaneStates: the spotter's lanes as one batched state ----------------------------------------------

    def step_lanes(self, state: EmulatorState, x: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Advance the ``lanes`` (indices) of ``state`` over the same input ``x`` (steps, inputs); their
        readout ``(len(lanes), steps, outputs)`` in float units."""
        batch = state.uv.shape[0]
        if lanes.size == batch:
            v, _ = self.advance(state, np.broadcast_to(x, (batch, *x.shape)))
            return v * self.net.readout_scale
        sub = EmulatorState(
            uv=state.uv[lanes],
            spikes=state.spikes[lanes],
            last_input=state.last_input[lanes],
            steps=state.steps,
        )
        v, _ = self.advance(sub, np.broadcast_to(x, (lanes.size, *x.shape)))
        state.uv[lanes], state.spikes[lanes], state.last_input[lanes] = sub.uv, sub.spikes, sub.last_input
        state.steps = sub.steps
        return v * self.net.readout_scale

    def reset_lanes(self, state: EmulatorState, lanes: np.ndarray) -> None:
        """Zero the ``lanes`` of ``state`` (a new window starts there)."""
        state.uv[lanes] = 0.0
        state.spikes[lanes] = False
        state.last_input[lanes] = 0

    def new_state(self, batch_size: int = 1) -> EmulatorState:
        """A zero state for ``batch_size`` streams."""
        n_total = int(self._offsets[-1])
        return EmulatorState(
            uv=np.zeros((batch_size, 2, n_total)),
            spikes=np.zeros((batch_size, n_total), dtype=bool),
            last_input=np.zeros(
                (batch_size, self.num_inputs), dtype=np.float64 if self.graded_input else np.float32
            ),
        )

    def reset(self, batch_size: int = 1) -> None:
        self._state = self.new_state(batch_size)

    def step(self, chunk: np.ndarray) -> np.ndarray:
        x = check_spikes(chunk, self.num_inputs)
        if self._state is None or self._state.uv.shape[0] != x.shape[0]:
            if self._state is not None and self._state.steps:
                raise ValueError(
                    f"chunk has batch size {x.shape[0]} but the streams have {self._state.uv.shape[0]}; "
                    "call reset(batch_size) to start new streams"
                )
            self.reset(x.shape[0])
        assert self._state is not None
        v_int, _ = self.advance(self._state, x)
        return v_int * self.net.readout_scale

    def run(self, spikes: np.ndarray) -> np.ndarray:
        x = check_spikes(spikes, self.num_inputs)
        v_int, _ = self.advance(self.new_state(x.shape[0]), x)
        return v_int * self.net.readout_scale

    def run_traces(self, spikes: np.ndarray, state: EmulatorState | None = None) -> Traces:
        """Integer ``u``, ``v`` and spikes of every layer at every step (for tests and debugging)."""
        x = check_spikes(spikes, self.num_inputs)
        _, traces = self.advance(state or self.new_state(x.shape[0]), x, traces=True)
        assert traces is not None
        return traces

    def advance(
        self, state: EmulatorState, x: np.ndarray, traces: bool = False
    ) -> tuple[np.ndarray, Traces | None]:
        """Advance ``state`` in place over the input ``x`` (batch, steps, inputs).

        Returns the integer readout voltage ``(batch, steps, outputs)`` and, if asked, all traces.
        """
        batch, steps, _ = x.shape
        if state.uv.shape[0] != batch:
            raise ValueError(f"state holds {state.uv.shape[0]} streams but the input has {batch}")
        if self._compiled is not None:
            return self._advance_compiled(state, x, traces)
        out = np.empty((batch, steps, self._n_out))
        n_total = int(self._offsets[-1])
        tr_uv = np.empty((batch, steps, 2, n_total)) if traces else None
        tr_s = np.zeros((batch, steps, n_total), dtype=bool) if traces else None
        uv, spikes = state.uv, state.spikes
        u, v = uv[:, 0], uv[:, 1]
        u0 = u[:, : self._n0]
        alpha, vth, bias, mt = self._alpha, self._vth, self._bias, self._mt
        readout = slice(n_total - self._n_out, n_total)
        rec = np.empty((batch, n_total), dtype=mt.dtype)
        spikes_f = np.empty((batch, n_total), dtype=mt.dtype)
        flat = uv.reshape(-1)
        # one dot product bounds every |u|, |v| (sum of squares); the exact check runs only above it
        safe = 0.99 * _V_MAX * _V_MAX
        single = batch == 1
        events = self._events
        for start in range(0, steps, _CHUNK):
            stop = min(start + _CHUNK, steps)
            # input events delivered in this chunk: the previous column, then this chunk's all but the last
            events[n_total] += np.count_nonzero(state.last_input) + np.count_nonzero(x[:, start : stop - 1])
            first, rest = self._input_drive(state, x[:, start:stop])
            for j in range(stop - start):
                np.multiply(uv, alpha, out=uv)
                np.trunc(uv, out=uv)
                np.add(u0, first if j == 0 else rest[:, j - 1], out=u0)
                if single:
                    idx = np.flatnonzero(spikes[0])
                    if idx.size:
                        np.add(u[0], mt[idx].sum(axis=0), out=u[0])
                else:
                    lanes, idx = np.nonzero(spikes)
                    if idx.size == 0:
                        pass
                    elif batch <= 16 and idx.size * 32 < spikes.size:  # few spikes: add their rows
                        starts = np.flatnonzero(np.diff(lanes, prepend=-1))
                        u[lanes[starts]] += np.add.reduceat(mt[idx], starts, axis=0)
                    else:
                        np.copyto(spikes_f, spikes)
                        np.matmul(spikes_f, mt, out=rec)
                        np.add(u, rec, out=u)
                np.add(v, u, out=v)
                if bias is not None:
                    np.add(v, bias, out=v)
                if np.dot(flat, flat) > safe and (uv.max() > _V_MAX or uv.min() < -_V_MAX):
                    self._wrap_and_saturate(u, v)
                np.greater(v, vth, out=spikes)
                v[spikes] = 0.0
                events[:n_total] += spikes.sum(axis=0)
                t = start + j
                out[:, t] = v[:, readout]
                if tr_uv is not None and tr_s is not None:
                    tr_uv[:, t] = uv
                    tr_s[:, t] = spikes
            state.steps += stop - start
            events[n_total + 1] += batch * (stop - start)
        if tr_uv is None or tr_s is None:
            return out, None
        return out, self._traces(tr_uv, tr_s)

    def _traces(self, tr_uv: np.ndarray, tr_s: np.ndarray) -> Traces:
        """Per-layer int64 currents, voltages and spikes from the flat (batch, steps, [2,] neurons) traces."""
        o = self._offsets
        layers = range(len(self.net.layers))
        return Traces(
            u=[tr_uv[:, :, 0, o[i] : o[i + 1]].astype(np.int64) for i in layers],
            v=[tr_uv[:, :, 1, o[i] : o[i + 1]].astype(np.int64) for i in layers],
            spikes=[tr_s[:, :, o[i] : o[i + 1]].copy() for i in layers],
        )

    def _advance_compiled(
        self, state: EmulatorState, x: np.ndarray, traces: bool
    ) -> tuple[np.ndarray, Traces | None]:
        batch, steps, _ = x.shape
        if batch > 1 and x.strides[0] == 0:
            x = x[:1]  # one input broadcast to every stream (the spotter's lanes): read it once
        if self.graded_input:
            xk = np.ascontiguousarray(x, dtype=np.float64)
        elif x.dtype == np.bool_ or x.dtype.itemsize == 1:
            xk = np.ascontiguousarray(x).view(np.uint8)
        else:
            xk = (x != 0).view(np.uint8)
        n_total = int(self._offsets[-1])
        out = np.empty((batch, steps, self._n_out))
        tr_uv = np.empty((batch, steps, 2, n_total)) if traces else self._k_none_uv
        tr_s = np.zeros((batch, steps, n_total), dtype=bool) if traces else self._k_none_s
        for name in ("uv", "spikes", "last_input"):
            arr = getattr(state, name)
            if not arr.flags.c_contiguous or not arr.flags.writeable:
                setattr(state, name, np.array(arr))
        kernel: Any = self._compiled
        kernel(
            state.uv,
            state.spikes,
            xk,
            state.last_input,
            self.graded_input,
            self._k_w0,
            self._k_m,
            self._k_fan_out,
            self._k_alpha_u,
            self._k_alpha_v,
            self._vth,
            self._k_bias,
            n_total - self._n_out,
            out,
            tr_uv,
            tr_s,
            self._events,
        )
        state.steps += steps
        if not traces:
            return out, None
        return out, self._traces(tr_uv, tr_s)

    def _input_drive(self, state: EmulatorState, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``64 * W_0 x[t-1]`` for each step of the chunk ``x``: step 0 ``(batch, n0)`` (from the last input
        column of each stream) and steps 1.. ``(1 or batch, steps - 1, n0)``, float64; an input broadcast to
        every stream (the spotter's lanes) is multiplied once."""
        # binary input: a column sum of at most 2^16 weights |W| <= 256 is exact in float32;
        # graded payloads can be large, so they are summed in float64
        batch, steps, channels = x.shape
        if batch > 1 and x.strides[0] == 0:
            x = x[:1]
        xf = x.astype(np.float64) if self.graded_input else (x != 0).astype(np.float32)
        w0t = self._w0t.astype(xf.dtype, copy=False)
        first = np.matmul(state.last_input.astype(xf.dtype, copy=False), w0t).astype(np.float64)
        first *= 64.0
        state.last_input = np.broadcast_to(xf[:, -1], state.last_input.shape).astype(state.last_input.dtype)
        rest = np.matmul(xf[:, :-1].reshape(-1, channels), w0t).astype(np.float64)
        rest *= 64.0
        return first, rest.reshape(xf.shape[0], steps - 1, self._n0)

    @staticmethod
    def _wrap_and_saturate(u: np.ndarray, v: np.ndarray) -> None:
        """Lava's single 24-bit wrap of ``u`` (v corrected by the same amount, it was summed before) and the
        saturation of ``v``."""
        wrapped = np.where(u > _U_MAX, u - _WRAP, np.where(u <= -_U_MAX, u + _WRAP, u))
        v += wrapped - u
        u[...] = wrapped
        np.clip(v, -_V_MAX, _V_MAX, out=v)

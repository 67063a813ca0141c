"""The network spec: one definition of the model's topology and neuron semantics.

Shared by the trainer (float model), the quantizer, the fixed-point emulator, the Lava backend and the
bundle manifest, so that every number system runs the same network.

Semantics (Loihi 2 CUBA LIF as Lava's ``fixed_pt`` models execute it; see docs/model.md). For each
layer ``l`` at step ``t`` with input spikes ``x_l`` (the previous layer's spikes, or the data):

    u_l[t] = (1 - i_decay/4096) * u_l[t-1] + W_l x_l[t-1] + R_l s_l[t-1]     (one-step synaptic delay)
    v_l[t] = (1 - v_decay/4096) * v_l[t-1] + u_l[t]
    s_l[t] = v_l[t] > threshold;   v_l[t] <- 0 where s_l[t]                 (u is not reset)

The readout is the same update without spikes (threshold unreachable). The float model uses exactly
the 12-bit decays of the fixed-point model, so quantization changes only weights and rounding.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, get_args

import numpy as np

#: The decision rules over the readout voltage (defined in ``edgekws.agent.decide``): one vocabulary for
#: training, the network spec, bundles and the agent.
Readout = Literal["exp_weighted_mean", "max_over_time"]
READOUTS: tuple[str, ...] = get_args(Readout)
DEFAULT_READOUT: Readout = "exp_weighted_mean"


def readout_problem(rule: object) -> str | None:
    """Why ``rule`` is not a readout rule (a message naming the allowed ones), or None when it is one."""
    if rule in READOUTS:
        return None
    return f"readout must be one of {', '.join(repr(r) for r in READOUTS)}, got {rule!r}"


def tagged_dict(spec: Any) -> dict[str, Any]:
    """A versioned spec dataclass as plain JSON data: ``{"type", "format_version", field: value, …}`` with
    tuples as lists (NIR's tagged nodes; NetworkSpec and the trainer's config share it)."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
    return {"type": spec.TYPE, "format_version": spec.FORMAT_VERSION, **fields}


def layer_problems(hidden: Sequence[int], recurrent: Sequence[bool], readout: object) -> list[str]:
    """What is wrong with a hidden-layer list, its recurrence flags and a readout rule (NetworkSpec and the
    trainer's config check them alike)."""
    problems = []
    if not hidden or any(int(h) <= 0 for h in hidden):
        problems.append(f"hidden must list positive layer sizes, got {list(hidden)}")
    if len(recurrent) != len(hidden):
        problems.append(f"recurrent needs one flag per hidden layer ({len(hidden)}), got {len(recurrent)}")
    if readout_problem(readout):
        problems.append(str(readout_problem(readout)))
    return problems


class SpecError(ValueError):
    """A spec dictionary is malformed; the message names the field and the fix."""


# Bounds of a network spec (a manifest is untrusted input until these hold): far above any keyword
# spotter, far below what would exhaust a device's memory.
MAX_UNITS = 65536  # neurons of one layer, or input channels
MAX_LAYERS = 16
MAX_STEPS = 100_000  # one window: 100 s at 1 ms


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _type_problems(spec: NetworkSpec) -> list[str]:
    """Fields of the wrong kind: integers that are floats (``1e3``) or booleans, non-finite reals, …"""
    problems = []
    for name in ("num_inputs", "num_outputs", "num_steps"):
        if not _is_int(getattr(spec, name)):
            problems.append(f"{name} must be an integer, got {getattr(spec, name)!r}")
    for name in ("dt_ms", "tau_mem_ms", "tau_syn_ms", "threshold"):
        if not _is_real(getattr(spec, name)):
            problems.append(f"{name} must be a finite number, got {getattr(spec, name)!r}")
    if not all(_is_int(h) for h in spec.hidden):
        problems.append(f"hidden must list integers, got {list(spec.hidden)!r}")
    if not all(isinstance(r, (bool, np.bool_)) for r in spec.recurrent):
        problems.append(f"recurrent must list booleans, got {list(spec.recurrent)!r}")
    if not all(isinstance(c, str) and c for c in spec.class_names):
        problems.append("class_names must be non-empty strings")
    return problems


def decay_12bit(dt: float, tau: float) -> int:
    """The 12-bit Loihi decay ``round(4096 * (1 - exp(-dt / tau)))`` for a time constant ``tau``."""
    if dt <= 0 or tau <= 0:
        raise SpecError(f"dt and tau must be positive, got dt={dt}, tau={tau}")
    return round(4096 * (1.0 - math.exp(-dt / tau)))


@dataclass(frozen=True)
class NetworkSpec:
    """Topology and neuron parameters of a (recurrent) LIF network with a leaky-integrator readout.

    Times are in milliseconds. ``hidden[i]`` is the size of hidden layer ``i``; ``recurrent[i]``
    says whether it has recurrent weights. Parameter arrays are named ``layer{i}.weight`` (out, in)
    and ``layer{i}.weight_rec`` (out, out), the readout being the last layer (as in NetX files).
    """

    TYPE: ClassVar[str] = "edgekws.network"
    FORMAT_VERSION: ClassVar[int] = 1

    num_inputs: int
    hidden: tuple[int, ...] = (256,)
    recurrent: tuple[bool, ...] = (True,)
    num_outputs: int = 20
    dt_ms: float = 1.0
    num_steps: int = 1000
    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 5.0
    threshold: float = 1.0
    readout: Readout = DEFAULT_READOUT
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:  # the range checks below assume numbers of the right kind
            raise SpecError("invalid network spec: " + "; ".join(problems))
        if self.num_inputs <= 0:
            problems.append(f"num_inputs must be positive, got {self.num_inputs}")
        problems += layer_problems(self.hidden, self.recurrent, self.readout)
        if self.num_outputs <= 0:
            problems.append(f"num_outputs must be positive, got {self.num_outputs}")
        if self.dt_ms <= 0 or self.num_steps <= 0:
            problems.append(f"dt_ms and num_steps must be positive, got {self.dt_ms}, {self.num_steps}")
        if self.tau_mem_ms <= 0 or self.tau_syn_ms <= 0:
            problems.append("tau_mem_ms and tau_syn_ms must be positive")
        if self.threshold <= 0:
            problems.append(f"threshold must be positive, got {self.threshold}")
        big = {
            k: v
            for k, v in (("num_inputs", self.num_inputs), ("num_outputs", self.num_outputs))
            if v > MAX_UNITS
        }
        big.update({f"hidden[{i}]": h for i, h in enumerate(self.hidden) if h > MAX_UNITS})
        if big:
            problems.append(f"layer sizes are at most {MAX_UNITS}, got {big}")
        if self.num_steps > MAX_STEPS:
            problems.append(f"num_steps is at most {MAX_STEPS}, got {self.num_steps}")
        if len(self.hidden) > MAX_LAYERS:
            problems.append(f"at most {MAX_LAYERS} hidden layers, got {len(self.hidden)}")
        if self.class_names and len(self.class_names) != self.num_outputs:
            problems.append(
                f"class_names must name all {self.num_outputs} outputs, got {len(self.class_names)}"
            )
        if problems:
            raise SpecError("invalid network spec: " + "; ".join(problems))

    @property
    def i_decay(self) -> int:
        """12-bit current decay (NetX ``iDecay``)."""
        return decay_12bit(self.dt_ms, self.tau_syn_ms)

    @property
    def v_decay(self) -> int:
        """12-bit voltage decay (NetX ``vDecay``)."""
        return decay_12bit(self.dt_ms, self.tau_mem_ms)

    @property
    def alpha_syn(self) -> float:
        """Float current retention per step, ``1 - i_decay/4096``."""
        return 1.0 - self.i_decay / 4096.0

    @property
    def alpha_mem(self) -> float:
        """Float voltage retention per step, ``1 - v_decay/4096``."""
        return 1.0 - self.v_decay / 4096.0

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Sizes of every layer after the input: the hidden layers, then the readout."""
        return (*self.hidden, self.num_outputs)

    def parameter_shapes(self) -> dict[str, tuple[int, int]]:
        """Name and shape of every weight array of the network."""
        shapes: dict[str, tuple[int, int]] = {}
        fan_in = self.num_inputs
        for i, size in enumerate(self.layer_sizes):
            shapes[f"layer{i}.weight"] = (size, fan_in)
            if i < len(self.hidden) and self.recurrent[i]:
                shapes[f"layer{i}.weight_rec"] = (size, size)
            fan_in = size
        return shapes

    def to_dict(self) -> dict[str, Any]:
        return tagged_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        data = dict(data)
        if data.pop("type", cls.TYPE) != cls.TYPE:
            raise SpecError(f"not a network spec: type must be {cls.TYPE!r}")
        version = data.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            raise SpecError(
                f"network spec format_version must be {cls.FORMAT_VERSION}, got {version!r}; "
                "upgrade edgekws to read newer specs"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown network spec fields {unknown}; known fields are {sorted(known)}")
        for key in ("hidden", "recurrent", "class_names"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"invalid network spec: {exc}") from exc

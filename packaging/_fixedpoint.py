"""The fixed-point network: integer weights and Loihi 2 CUBA-LIF parameters, as a NetX file holds them.

Each layer runs Lava's bit-accurate CUBA LIF (docs/fixed-point.md):

    u[t] = wrap24( rtz(u[t-1] * (4096 - i_decay), 12) + (a[t] << 6) )
    v[t] = sat24( rtz(v[t-1] * (4096 - v_decay), 12) + u[t] + (bias << 6) )
    s[t] = v[t] > (v_th_mant << 6);  v[t] <- 0 where s[t]
    a[t] = weight @ x[t-1] + weight_rec @ s[t-1]

``weight_scale`` is the float value of one integer weight step ``q`` (a power of two from the quantizer),
so the fixed-point state is the float state times ``64 / q``: a readout voltage ``v_int`` is
``v_int * q / 64`` in float units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

V_TH_MANT_MAX = (1 << 17) - 1  # vThMant is a 17-bit field on Loihi 2
READOUT_V_TH_MANT = (
    V_TH_MANT_MAX  # largest valid mantissa: vth_eff = 2^23 - 64, never crossed below saturation
)
DECAY_MAX = 4096


class FixedPointError(ValueError):
    """A fixed-point network (or its spec dictionary) is invalid; the message names the layer and the fix."""


def _weight_problems(name: str, weight: np.ndarray, weight_rec: np.ndarray | None) -> list[str]:
    """Problems that stop NetX + Lava from delivering ``a_in = W_int @ s`` exactly (reference §1.2)."""
    parts = [weight] if weight_rec is None else [weight, weight_rec]
    values = np.concatenate([p.ravel() for p in parts])
    if values.size == 0:
        return []
    lo, hi = int(values.min()), int(values.max())
    if lo == 0 and hi == 0:
        return [f"{name}: all weights are zero; NetX cannot load an all-zero weight matrix"]
    if lo < 0 and (lo < -256 or hi > 254):
        return [f"{name}: mixed-sign weights must lie in [-256, 254], got [{lo}, {hi}]; requantize"]
    if lo >= 0 and hi > 255:
        return [f"{name}: non-negative weights must be at most 255, got {hi}; requantize"]
    if hi < 0 and lo < -256:
        return [f"{name}: negative weights must be at least -256, got {lo}; requantize"]
    return []


@dataclass(frozen=True, eq=False)
class FixedPointLayer:
    """One CUBA-LIF layer in Loihi 2 fixed point (one NetX ``dense`` or ``dense_rec`` layer)."""

    weight: np.ndarray  # (out, in) integers
    weight_rec: np.ndarray | None = None  # (out, out) integers, recurrent layers only
    i_decay: int = 4096  # 12-bit current decay (NetX iDecay)
    v_decay: int = 4096  # 12-bit voltage decay (NetX vDecay)
    v_th_mant: int = READOUT_V_TH_MANT  # threshold mantissa; the effective threshold is v_th_mant << 6
    weight_scale: float = 1.0  # float units per integer weight step
    bias: np.ndarray | None = None  # (out,) bias mantissas; the effective bias is bias << 6

    def __post_init__(self) -> None:
        w = np.asarray(self.weight)
        problems: list[str] = []
        if w.ndim != 2:
            problems.append(f"weight must be 2-D (out, in), got shape {w.shape}")
        elif not np.issubdtype(w.dtype, np.integer):
            problems.append(f"weight must hold integers, got dtype {w.dtype}")
        object.__setattr__(self, "weight", w.astype(np.int64) if not problems else w)
        if self.weight_rec is not None:
            r = np.asarray(self.weight_rec)
            if w.ndim == 2 and r.shape != (w.shape[0], w.shape[0]):
                problems.append(f"weight_rec must be ({w.shape[0]}, {w.shape[0]}), got {r.shape}")
            elif not np.issubdtype(r.dtype, np.integer):
                problems.append(f"weight_rec must hold integers, got dtype {r.dtype}")
            else:
                object.__setattr__(self, "weight_rec", r.astype(np.int64))
        if self.bias is not None:
            b = np.asarray(self.bias)
            if w.ndim == 2 and b.shape != (w.shape[0],):
                problems.append(f"bias must have shape ({w.shape[0]},), got {b.shape}")
            elif not np.issubdtype(b.dtype, np.integer) or (b.size and np.abs(b).max() >= 1 << 12):
                problems.append("bias must hold integers in the 13-bit range (-4096, 4096)")
            else:
                object.__setattr__(self, "bias", b.astype(np.int64))
        for key in ("i_decay", "v_decay"):
            value = getattr(self, key)
            if int(value) != value or not 0 <= value <= DECAY_MAX:
                problems.append(f"{key} must be an integer in [0, 4096], got {value!r}")
        if int(self.v_th_mant) != self.v_th_mant or not 0 <= self.v_th_mant <= V_TH_MANT_MAX:
            problems.append(
                f"v_th_mant must be an integer in [0, {V_TH_MANT_MAX}] (17 bits), got {self.v_th_mant!r}; "
                "use a smaller weight scale or threshold"
            )
        if not (self.weight_scale > 0 and np.isfinite(self.weight_scale)):
            problems.append(f"weight_scale must be positive and finite, got {self.weight_scale!r}")
        if not problems:
            problems += _weight_problems("weights", self.weight, self.weight_rec)
        if problems:
            raise FixedPointError("invalid fixed-point layer: " + "; ".join(problems))

    @property
    def num_inputs(self) -> int:
        return int(self.weight.shape[1])

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def spiking(self) -> bool:
        """False for a readout: its mantissa is the largest 17-bit one, whose threshold ``2^23 - 64`` only a
        voltage within 63 LSB of saturation crosses (docs/fixed-point.md)."""
        return self.v_th_mant < READOUT_V_TH_MANT


@dataclass(frozen=True, eq=False)
class FixedPointNetwork:
    """Integer network: hidden CUBA-LIF layers, then a non-spiking readout (the last layer)."""

    TYPE: ClassVar[str] = "edgekws.fixed_point_network"
    FORMAT_VERSION: ClassVar[int] = 1

    layers: tuple[FixedPointLayer, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        problems = []
        if not self.layers:
            problems.append("a network needs at least one layer")
        for i in range(1, len(self.layers)):
            if self.layers[i].num_inputs != self.layers[i - 1].size:
                problems.append(
                    f"layer {i} takes {self.layers[i].num_inputs} inputs but layer {i - 1} has "
                    f"{self.layers[i - 1].size} neurons"
                )
        if problems:
            raise FixedPointError("invalid fixed-point network: " + "; ".join(problems))

    @property
    def num_inputs(self) -> int:
        return self.layers[0].num_inputs

    @property
    def num_outputs(self) -> int:
        return self.layers[-1].size

    @property
    def readout_scale(self) -> float:
        """Float units of one readout voltage LSB: ``weight_scale / 64`` of the last layer."""
        return self.layers[-1].weight_scale / 64.0

    def arrays(self) -> dict[str, np.ndarray]:
        """The integer arrays, named ``layer{i}.weight`` / ``layer{i}.weight_rec`` / ``layer{i}.bias``."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            out[f"layer{i}.weight"] = layer.weight
            if layer.weight_rec is not None:
                out[f"layer{i}.weight_rec"] = layer.weight_rec
            if layer.bias is not None:
                out[f"layer{i}.bias"] = layer.bias
        return out

    def to_dict(self) -> dict[str, Any]:
        """The non-array spec (shapes, decays, thresholds, scales), JSON-ready, with type and version tags."""
        layers = [
            {
                "shape": [layer.size, layer.num_inputs],
                "recurrent": layer.weight_rec is not None,
                "bias": layer.bias is not None,
                "i_decay": int(layer.i_decay),
                "v_decay": int(layer.v_decay),
                "v_th_mant": int(layer.v_th_mant),
                "weight_scale": float(layer.weight_scale),
            }
            for layer in self.layers
        ]
        return {"type": self.TYPE, "format_version": self.FORMAT_VERSION, "layers": layers}

    @classmethod
    def from_dict(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> FixedPointNetwork:
        """Rebuild from :meth:`to_dict` output and :meth:`arrays`; all problems are reported at once."""
        if data.get("type") != cls.TYPE:
            raise FixedPointError(f"not a fixed-point network spec: type must be {cls.TYPE!r}")
        if data.get("format_version") != cls.FORMAT_VERSION:
            raise FixedPointError(
                f"fixed-point network format_version must be {cls.FORMAT_VERSION}, got "
                f"{data.get('format_version')!r}; upgrade edgekws to read newer files"
            )
        problems: list[str] = []
        layers: list[FixedPointLayer] = []
        specs = data.get("layers")
        if not isinstance(specs, list):
            raise FixedPointError("fixed-point network spec needs a 'layers' list")
        known = {"shape", "recurrent", "bias", "i_decay", "v_decay", "v_th_mant", "weight_scale"}
        for i, spec in enumerate(specs):
            missing = sorted(known - set(spec))
            unknown = sorted(set(spec) - known)
            if missing or unknown:
                problems.append(f"layer {i}: missing fields {missing}, unknown fields {unknown}")
                continue
            names = [f"layer{i}.weight"]
            names += [f"layer{i}.weight_rec"] if spec["recurrent"] else []
            names += [f"layer{i}.bias"] if spec["bias"] else []
            absent = [n for n in names if n not in arrays]
            if absent:
                problems.append(f"layer {i}: arrays {absent} are missing")
                continue
            if tuple(np.shape(arrays[names[0]])) != tuple(spec["shape"]):
                problems.append(
                    f"layer {i}: weight has shape {np.shape(arrays[names[0]])}, spec says {spec['shape']}"
                )
                continue
            try:
                layers.append(
                    FixedPointLayer(
                        weight=arrays[f"layer{i}.weight"],
                        weight_rec=arrays.get(f"layer{i}.weight_rec") if spec["recurrent"] else None,
                        bias=arrays.get(f"layer{i}.bias") if spec["bias"] else None,
                        i_decay=spec["i_decay"],
                        v_decay=spec["v_decay"],
                        v_th_mant=spec["v_th_mant"],
                        weight_scale=spec["weight_scale"],
                    )
                )
            except FixedPointError as exc:
                problems.append(f"layer {i}: {exc}")
        if problems:
            raise FixedPointError("invalid fixed-point network: " + "; ".join(problems))
        return cls(layers=tuple(layers))

"""Quantize a float model to Loihi 2 CUBA fixed point (8-bit weights, power-of-two step per layer).

As the public mlGeNN → NetX converter does (seed paper §4): per layer, the ``percentile`` of the positive
weights and of the magnitudes of the negative weights (feed-forward and recurrent together, since NetX
concatenates them and gives them one exponent), the larger of the two is ``m``;
``high_bit = floor(log2(m))``, step ``q = 2^(high_bit - (num_bits - 2))``, and
``W_int = clip(round(W / q), -2^(num_bits-1), 2^(num_bits-1) - 1)``. The decays are the spec's 12-bit
decays, hidden thresholds are ``vThMant = round(θ / q)``, and the readout gets the largest 17-bit mantissa
so it never spikes. Fixed-point ``u, v`` are then the float ``u, v`` times ``64 / q`` (docs/fixed-point.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekws.packaging import (
    READOUT_V_TH_MANT,
    V_TH_MANT_MAX,
    FixedPointLayer,
    FixedPointNetwork,
    NetworkSpec,
)


class QuantizationError(ValueError):
    """The float parameters cannot be quantized; the message lists every problem and its fix."""


@dataclass(frozen=True)
class LayerQuantReport:
    """How well one layer's weights fit the fixed-point grid."""

    name: str
    step: float  # float value of one integer weight step (a power of two)
    percentile_value: float  # the weight magnitude the step was chosen from
    num_weights: int
    num_clipped: int  # weights outside the representable range, clipped
    rms_error: float  # RMS of (W - q * W_int)
    max_error: float  # max |W - q * W_int|
    relative_error: float  # rms_error / RMS(W)
    v_th_mant: int
    threshold_error: float  # |θ - q * vThMant| (0 for the readout)


@dataclass(frozen=True)
class QuantReport:
    """Per-layer quantization report, with the settings that produced it."""

    percentile: float
    num_bits: int
    layers: tuple[LayerQuantReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "percentile": self.percentile,
            "num_bits": self.num_bits,
            "layers": [asdict(layer) for layer in self.layers],
        }


def _step_for(weights: np.ndarray, percentile: float, num_bits: int) -> tuple[float, float]:
    pos = weights[weights > 0]
    neg = -weights[weights < 0]
    m = max(
        float(np.percentile(pos, percentile)) if pos.size else 0.0,
        float(np.percentile(neg, percentile)) if neg.size else 0.0,
    )
    if m <= 0.0:
        return 0.0, 0.0
    high_bit = math.floor(math.log2(m))
    return 2.0 ** (high_bit - (num_bits - 2)), m


# The weight percentile that sets each layer's step. 100 (no clipping) measured best on the trained digits
# models (benchmarks/results/parity.md: +0.67 points vs float, where mlGeNN's 99 lost 3.5 points).
DEFAULT_PERCENTILE = 100.0


def quantize(
    params: dict[str, np.ndarray],
    spec: NetworkSpec,
    percentile: float = DEFAULT_PERCENTILE,
    num_bits: int = 8,
) -> tuple[FixedPointNetwork, QuantReport]:
    """Quantize the float ``params`` of a ``spec`` network; returns the network and its report."""
    problems: list[str] = []
    if not 0.0 < percentile <= 100.0:
        problems.append(f"percentile must be in (0, 100], got {percentile}")
    if not 2 <= num_bits <= 8:
        problems.append(f"num_bits must be in [2, 8] (Loihi 2 synapses hold 8 bits), got {num_bits}")
    shapes = spec.parameter_shapes()
    for name, shape in shapes.items():
        if name not in params:
            problems.append(f"parameter {name!r} {shape} is missing")
        elif np.shape(params[name]) != shape:
            problems.append(f"parameter {name!r} must have shape {shape}, got {np.shape(params[name])}")
        elif not np.all(np.isfinite(params[name])):
            problems.append(f"parameter {name!r} holds NaN or Inf")
    unknown = sorted(set(params) - set(shapes))
    if unknown:
        problems.append(f"unknown parameters {unknown}; the spec expects {sorted(shapes)}")
    if problems:
        raise QuantizationError("cannot quantize: " + "; ".join(problems))

    lo, hi = -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1
    layers: list[FixedPointLayer] = []
    reports: list[LayerQuantReport] = []
    num_layers = len(spec.layer_sizes)
    for i in range(num_layers):
        w = np.asarray(params[f"layer{i}.weight"], dtype=np.float64)
        r = params.get(f"layer{i}.weight_rec")
        rf = None if r is None else np.asarray(r, dtype=np.float64)
        both = w.ravel() if rf is None else np.concatenate([w.ravel(), rf.ravel()])
        step, m = _step_for(both, percentile, num_bits)
        if step == 0.0:
            problems.append(f"layer {i}: all weights are zero; train the model or drop the layer")
            continue
        q = np.round(both / step)
        num_clipped = int(np.count_nonzero((q < lo) | (q > hi)))
        q = np.clip(q, lo, hi)
        err = both - q * step
        rms_w = float(np.sqrt(np.mean(both**2)))
        w_int = q[: w.size].reshape(w.shape).astype(np.int64)
        r_int = None if rf is None else q[w.size :].reshape(rf.shape).astype(np.int64)
        readout = i == num_layers - 1
        if readout:
            v_th = READOUT_V_TH_MANT
            th_err = 0.0
        else:
            v_th = round(spec.threshold / step)
            th_err = abs(spec.threshold - v_th * step)
            if not 1 <= v_th <= V_TH_MANT_MAX:
                problems.append(
                    f"layer {i}: vThMant = round(θ / q) = {v_th} does not fit 17 bits (1..{V_TH_MANT_MAX}); "
                    f"the weights are too small relative to the threshold θ = {spec.threshold} "
                    f"(step q = {step:g}); rescale the model"
                )
                continue
        if int(np.abs(q).max()) == 0:
            problems.append(f"layer {i}: every weight rounds to zero at step {step:g}")
            continue
        layers.append(
            FixedPointLayer(
                weight=w_int,
                weight_rec=r_int,
                i_decay=spec.i_decay,
                v_decay=spec.v_decay,
                v_th_mant=v_th,
                weight_scale=step,
            )
        )
        reports.append(
            LayerQuantReport(
                name="readout" if readout else f"hidden{i}",
                step=step,
                percentile_value=m,
                num_weights=int(both.size),
                num_clipped=num_clipped,
                rms_error=float(np.sqrt(np.mean(err**2))),
                max_error=float(np.abs(err).max()),
                relative_error=float(np.sqrt(np.mean(err**2)) / rms_w) if rms_w else 0.0,
                v_th_mant=v_th,
                threshold_error=th_err,
            )
        )
    if problems:
        raise QuantizationError("cannot quantize: " + "; ".join(problems))
    report = QuantReport(percentile=percentile, num_bits=num_bits, layers=tuple(reports))
    return FixedPointNetwork(layers=tuple(layers)), report

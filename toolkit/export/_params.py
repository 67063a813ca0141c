"""Checking a parameter dictionary against its network spec before any exporter reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekws.packaging import NetworkSpec


class ExportError(ValueError):
    """The parameters cannot be exported as given; the message lists every problem and its fix."""


def checked_params(params: Mapping[str, Any], spec: NetworkSpec) -> dict[str, np.ndarray]:
    """The parameters as float64 numpy arrays, after checking names, shapes and values against ``spec``.

    Collects every problem (missing, unexpected, misshapen or non-finite arrays) and raises one
    ``ExportError`` naming them all.
    """
    expected = spec.parameter_shapes()
    problems: list[str] = []
    missing = sorted(set(expected) - set(params))
    if missing:
        problems.append(f"missing parameters {missing} (the spec needs {sorted(expected)})")
    unexpected = sorted(set(params) - set(expected))
    if unexpected:
        problems.append(
            f"unexpected parameters {unexpected}: the spec has no such arrays; "
            "check hidden/recurrent in the spec or drop them"
        )
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in params:
            continue
        array = np.asarray(params[name], dtype=np.float64)
        if array.shape != shape:
            problems.append(f"{name} must have shape {shape} (out, in), got {array.shape}")
        elif not np.all(np.isfinite(array)):
            problems.append(f"{name} holds NaN or Inf values")
        out[name] = array
    if problems:
        raise ExportError("cannot export the network: " + "; ".join(problems))
    return out

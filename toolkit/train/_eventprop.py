"""Exact Eventprop gradients for the recurrent LIF network (discrete adjoint; see docs/eventprop.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp

from edgekws.packaging._network import NetworkSpec

ReadoutRule = Literal["exp_weighted_mean", "max_over_time"]


@dataclass(frozen=True)
class LossConfig:
    """Loss settings: readout rule, and mlGeNN's spike-count regularisation ``reg_lambda``, ``reg_nu``.

    ``readout=None`` means the spec's readout rule. The regulariser pulls each hidden neuron's batch-mean
    spike count per trial towards ``reg_nu`` (docs/eventprop.md §4).
    """

    readout: ReadoutRule | None = None
    reg_lambda: float = 0.0
    reg_nu: float = 14.0

    def __post_init__(self) -> None:
        problems = []
        if self.readout not in (None, "exp_weighted_mean", "max_over_time"):
            problems.append(f"readout must be 'exp_weighted_mean' or 'max_over_time', got {self.readout!r}")
        if self.reg_lambda < 0:
            problems.append(f"reg_lambda must be >= 0, got {self.reg_lambda}")
        if self.reg_nu < 0:
            problems.append(f"reg_nu must be >= 0, got {self.reg_nu}")
        if problems:
            raise ValueError("invalid LossConfig: " + "; ".join(problems))

    def rule(self, spec: NetworkSpec) -> ReadoutRule:
        """The readout rule in force for ``spec``."""
        return self.readout if self.readout is not None else spec.readout


def eventprop_loss_and_grad(
    params: dict[str, jax.Array],
    spikes: jax.Array,
    labels: jax.Array,
    spec: NetworkSpec,
    cfg: LossConfig,
) -> tuple[jax.Array, dict[str, Any], dict[str, jax.Array]]:
    """Loss, aux (``accuracy``, ``hidden_counts``, ...) and Eventprop gradients of ``params``."""
    del params, spikes, labels, spec, cfg
    _ = jnp
    raise NotImplementedError("eventprop_loss_and_grad is being implemented")

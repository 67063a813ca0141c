"""The backend interface: binary input spikes in, readout voltage in float units out.

Every backend runs the same fixed-point network (a :class:`~edgekws.packaging.FixedPointNetwork`, or the
NetX file that holds it) with the same timing: input column ``t`` reaches the first layer's current at step
``t + 1`` and each further layer one step later (docs/model.md). A trace returned by :meth:`Backend.run`
or :meth:`Backend.step` holds the readout voltage after step ``t`` at index ``t``, in the float units of
the trained model (``v_int * weight_scale / 64``), ready for :func:`edgekws.agent.decide`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from edgekws.agent._decision import Decision, decide
from edgekws.packaging import DEFAULT_READOUT, Readout


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine; the message says what is missing and how to install it."""


def check_spikes(spikes: np.ndarray, num_inputs: int) -> np.ndarray:
    """``spikes`` as a (batch, steps, channels) array, or a ValueError that says what shape was expected."""
    x = np.asarray(spikes)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != num_inputs:
        raise ValueError(
            f"spikes must be (batch, steps, {num_inputs}) or (steps, {num_inputs}), "
            f"got shape {np.shape(spikes)}"
        )
    if x.dtype.kind not in "biu":
        raise ValueError(f"spikes must hold integers or booleans, got dtype {x.dtype}")
    return x


class Backend(abc.ABC):
    """A runtime for a fixed-point network: whole samples with :meth:`run`, streams with :meth:`step`."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """Whether this backend can run on this machine (without raising :class:`BackendUnavailable`)."""

    @property
    @abc.abstractmethod
    def num_inputs(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_outputs(self) -> int: ...

    @abc.abstractmethod
    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Readout traces ``(batch, steps, outputs)`` float64 of independent samples, each from zero state."""

    @abc.abstractmethod
    def reset(self, batch_size: int = 1) -> None:
        """Start ``batch_size`` new streams from zero state."""

    @abc.abstractmethod
    def step(self, chunk: np.ndarray) -> np.ndarray:
        """Continue the streams by one chunk ``(batch, steps, channels)``; returns its readout trace.

        Feeding a sample chunk by chunk returns exactly what :meth:`run` returns for the whole sample.
        """

    def decide(self, spikes: np.ndarray, rule: Readout = DEFAULT_READOUT) -> Decision:
        """Run whole samples and apply the one decision rule (:func:`edgekws.agent.decide`)."""
        return decide(self.run(spikes), rule)

"""The backend interface, its optional capabilities, and the registry every backend list derives from.

Every backend runs the same fixed-point network (a :class:`~edgekws.packaging.FixedPointNetwork`, or the
NetX file that holds it) with the same timing: input column ``t`` reaches the first layer's current at step
``t + 1`` and each further layer one step later (docs/model.md). A trace returned by :meth:`Backend.run`
or :meth:`Backend.step` holds the readout voltage after step ``t`` at index ``t``, in the float units of
the trained model (``v_int * weight_scale / 64``), ready for :func:`edgekws.agent.decide`.

**The registry** (frigate's detector plugins): a backend is one module ``agent/backends/_NAME.py`` holding
a :class:`Backend` subclass with a ``name``, its ``Config`` (the pydantic model of its ``[[backends]]``
table, tagged by ``type = name``) and the bundle file it runs (``model_file``). Defining the class registers
it; :func:`backend_classes` imports every module of this folder and returns them by name. The agent's
config union, the ``--backend`` choices of ``edgekws-agent classify`` and ``edgekws eval``, the bundle
builder's evaluation and its manifest's ``backends``, and the daemon's factory are all derived from it.

**Capabilities** a backend may have beyond :meth:`Backend.run` are declared, never probed:

- ``streaming`` (an attribute of every backend): :meth:`Backend.reset` / :meth:`Backend.step` carry the
  network state between calls, so a stream can be fed chunk by chunk (or forever);
- :class:`LaneStates`: the state of a batch of streams is one object whose streams (the spotter's lanes) can
  be zeroed and advanced each on its own, so the staggered lanes run as one batch;
- :class:`CountsEvents`: running operation counts (input events, spikes, synaptic events, neuron updates)
  for the ``estimated:loihi2-opcount`` energy figure.
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgekws.agent._decision import Decision, decide
from edgekws.packaging import DEFAULT_READOUT, Readout


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (a runtime or a model file is missing); the message says what and how to
    fix it."""


class BackendConfig(BaseModel):
    """The base of every backend's ``[[backends]]`` table: unknown keys are rejected, ``type`` is the tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


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


_REGISTRY: dict[str, type[Backend]] = {}


class Backend(abc.ABC):
    """A runtime for a fixed-point network: whole samples with :meth:`run`, streams with :meth:`step`.

    Subclasses that set ``name`` register themselves (``class X(Backend, register=False)`` opts out).
    """

    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    model_file: ClassVar[str]  # the bundle file it runs, e.g. "model/netx.h5"

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register or "name" not in cls.__dict__:
            return
        if cls.name in _REGISTRY and _REGISTRY[cls.name].__qualname__ != cls.__qualname__:
            raise TypeError(f"two backends are named {cls.name!r}: {_REGISTRY[cls.name]} and {cls}")
        _REGISTRY[cls.name] = cls

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """Whether this backend can run here (without raising :class:`BackendUnavailable`)."""

    @classmethod
    @abc.abstractmethod
    def open(cls, model_dir: Path, config: BackendConfig) -> Backend:
        """The backend for the model files under ``model_dir`` (a bundle extracted there: ``model/…``)."""

    @classmethod
    def model_path(cls, model_dir: Path) -> Path:
        """``model_dir / model_file``, or :class:`BackendUnavailable` naming the file the bundle lacks."""
        path = Path(model_dir) / cls.model_file
        if not path.is_file():
            raise BackendUnavailable(f"the bundle has no {cls.model_file}, which backend {cls.name!r} needs")
        return path

    @property
    @abc.abstractmethod
    def num_inputs(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_outputs(self) -> int: ...

    @property
    def streaming(self) -> bool:
        """Whether :meth:`reset` / :meth:`step` carry the network state between calls."""
        return False

    @property
    def rests_without_input(self) -> bool:
        """Whether a stream at zero state stays there, with a zero readout, while no input spike arrives
        (true for networks without biases); the spotter then skips idle lanes exactly."""
        return False

    @abc.abstractmethod
    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Readout traces ``(batch, steps, outputs)`` float64 of independent samples, each from zero state."""

    def reset(self, batch_size: int = 1) -> None:
        """Start ``batch_size`` new streams from zero state (backends with ``streaming``)."""
        raise BackendUnavailable(f"backend {self.name!r} runs whole samples only; it cannot stream")

    def step(self, chunk: np.ndarray) -> np.ndarray:
        """Continue the streams by one chunk ``(batch, steps, channels)``; returns its readout trace.

        Feeding a sample chunk by chunk returns exactly what :meth:`run` returns for the whole sample.
        """
        raise BackendUnavailable(f"backend {self.name!r} runs whole samples only; it cannot stream")

    def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing to release
        """Release what the backend holds (a Lava runtime, …); a no-op for most backends."""

    def decide(self, spikes: np.ndarray, rule: Readout = DEFAULT_READOUT) -> Decision:
        """Run whole samples and apply the one decision rule (:func:`edgekws.agent.decide`)."""
        return decide(self.run(spikes), rule)


@runtime_checkable
class LaneStates(Protocol):
    """A backend whose streams share one state object, each stream (lane) resettable on its own."""

    def new_state(self, batch_size: int = 1) -> Any:
        """A zero state for ``batch_size`` lanes."""

    def step_lanes(self, state: Any, x: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Advance the ``lanes`` of ``state`` over the same input ``x`` (steps, channels); returns their
        readout ``(len(lanes), steps, outputs)`` in float units."""

    def reset_lanes(self, state: Any, lanes: np.ndarray) -> None:
        """Put the ``lanes`` of ``state`` back to zero state."""


@runtime_checkable
class CountsEvents(Protocol):
    """A backend that counts what it computed (the op counts of an ``estimated:loihi2-opcount`` figure)."""

    def event_counts(self) -> dict[str, float]:
        """Running totals: ``input_events``, ``hidden_spikes``, ``synops``, ``neuron_updates``."""


def backend_classes() -> dict[str, type[Backend]]:
    """Every registered backend by name (sorted), after importing each backend module of this folder."""
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if module.name != "_base" and not module.ispkg:
            importlib.import_module(f"{package}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def backend_names() -> tuple[str, ...]:
    """The backend vocabulary (``type`` in agent.toml, ``--backend`` of the CLIs, manifest ``backends``)."""
    return tuple(backend_classes())

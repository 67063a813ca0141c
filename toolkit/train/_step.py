"""The training step and where it runs: device, gradient kernel, input batches, data parallelism.

``place(device, kernel, method, batch_size)`` chooses (docs/training.md, "Which kernel runs where"):

- ``sparse`` -- the event-driven Eventprop kernel (``_sparse.py``, numba): work in proportion to input events
  and spikes, on the CPU cores (the batch is split over them by numba threads). The default on CPU.
- ``dense`` -- the JAX/XLA reference (``eventprop_loss_and_grad``, or BPTT): dense matrix products per step,
  on any JAX device. The default on GPU, and the only kernel for BPTT. With several devices of the chosen
  kind (GPUs, or CPU devices made with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) it is
  data-parallel: the batch is sharded over the devices, parameters and optimizer state are replicated, and
  XLA sums the gradient across them.

``train_step(spec, config, placement, total_steps)`` is the step ``edgekws train`` runs (loss, gradient,
Adam through optax) for that placement; ``step.prepare(data, index, dt_s, num_steps)`` makes a batch in the
kernel's input format (events for ``sparse``, a dense array on the devices for ``dense``), which the training
loop calls in a background thread (``_feed.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train._config import TrainConfig, lr_schedule

DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
KERNELS: tuple[str, ...] = ("auto", "dense", "sparse")


class PlacementError(ValueError):
    """The requested device or kernel cannot run here; the message says why and what to use instead."""


@dataclass(frozen=True)
class BpttLossConfig:
    """The loss settings of the BPTT baseline: Eventprop's ``LossConfig`` plus the surrogate slope."""

    readout: str
    reg_lambda: float
    reg_nu: float
    surrogate_slope: float = 25.0

    def rule(self, spec: NetworkSpec) -> str:
        return self.readout or spec.readout


@dataclass(frozen=True)
class Placement:
    """Where the training step runs: ``device`` ("cpu" or "gpu"), ``kernel`` ("dense" or "sparse"), the
    JAX ``devices`` holding parameters and batches (the batch is split over them when there are several)."""

    device: str
    kernel: str
    devices: tuple[Any, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """What ``run.json`` records under ``placement``."""
        return {
            "device": self.device,
            "kernel": self.kernel,
            "devices": [str(d) for d in self.devices],
            "reason": self.reason,
        }


def _gpus() -> tuple[Any, ...]:
    import jax

    try:
        return tuple(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend (CPU-only jaxlib, or no CUDA device)
        return ()


def place(
    device: str = "auto", kernel: str = "auto", method: str = "eventprop", batch_size: int = 32
) -> Placement:
    """Where to train for ``device`` in ``DEVICES`` and ``kernel`` in ``KERNELS`` (module docstring)."""
    import jax

    from edgekws.toolkit.train._sparse import numba_available

    problems = []
    if device not in DEVICES:
        problems.append(f"device must be one of {list(DEVICES)}, got {device!r}")
    if kernel not in KERNELS:
        problems.append(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
    if problems:
        raise PlacementError("; ".join(problems))
    gpus = _gpus() if device in ("auto", "gpu") else ()
    if device == "gpu" and not gpus:
        raise PlacementError(
            f"--device gpu: JAX sees no GPU (backend {jax.default_backend()!r}); install a CUDA build of JAX "
            "(pip install 'jax[cuda12]') on a machine with an NVIDIA GPU, or train with --device cpu"
        )
    where = "gpu" if gpus else "cpu"
    devices = gpus if gpus else tuple(jax.devices("cpu"))
    if kernel == "sparse":
        if where == "gpu":
            raise PlacementError(
                "the sparse (event-driven) kernel runs on CPU cores only; use --device cpu with it, or the "
                "dense kernel on the GPU"
            )
        if method != "eventprop":
            raise PlacementError(f"the sparse kernel computes Eventprop gradients only; method is {method!r}")
        if not numba_available():
            raise PlacementError("the sparse kernel needs numba (pip install numba); use --kernel dense")
    if kernel == "auto":
        if method != "eventprop":
            kernel, reason = "dense", f"{method} has a dense (JAX) implementation only"
        elif where == "gpu":
            kernel, reason = (
                "dense",
                "GPU: dense per-step matrix products in XLA (the sparse kernel is CPU-only)",
            )
        elif numba_available():
            kernel, reason = (
                "sparse",
                "CPU: event-driven kernel, work per input event and spike, on every core",
            )
        else:
            kernel, reason = "dense", "CPU without numba: the dense JAX kernel"
    else:
        reason = f"{kernel} kernel requested"
    if kernel == "sparse":
        devices = devices[:1]  # JAX only applies the optimizer update; numba threads use the cores
    else:
        n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
        devices = devices[:n]
    return Placement(where, kernel, devices, reason)


def optimizer(
    lr: float,
    ease_in: bool,
    decay: str = "none",
    total_steps: int = 0,
    min_fraction: float = 0.05,
    grad_clip: float = 0.0,
) -> Any:
    """Adam on :func:`lr_schedule` (the paper's ease-in, optionally a cosine decay over the run), after
    clipping the gradient's global norm to ``grad_clip`` when that is > 0."""
    import jax.numpy as jnp
    import optax

    def schedule(count: Any) -> Any:
        return lr_schedule(count, lr, ease_in, decay, total_steps, min_fraction, xp=jnp)

    adam = optax.adam(learning_rate=schedule)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip > 0 else adam


class TrainStep:
    """One optimizer step: ``step(params, opt_state, batch) -> (params, opt_state, loss, accuracy, counts)``.

    ``batch`` comes from :meth:`prepare`; ``counts`` are the hidden spike counts summed over the batch, one
    array per hidden layer. ``put`` moves parameters or optimizer state onto the step's devices.
    ``jitted`` is what XLA compiles: the whole step ``(params, opt_state, spikes, labels)`` of the dense
    kernel, the optimizer update ``(params, opt_state, grads)`` after the sparse kernel's gradient.
    """

    def __init__(
        self,
        placement: Placement,
        fn: Callable[..., Any],
        jitted: Any,
        batch_sharding: Any,
        stream: tuple[Any, int] | None = None,
    ) -> None:
        self.placement = placement
        self._fn = fn
        self.jitted = jitted
        self._batch_sharding = batch_sharding
        self._stream = stream  # stream training: (StreamLoss, pooled windows per batch)
        self._replicated = None
        if batch_sharding is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            self._replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())

    def prepare(self, data: SpikeDataset, index: np.ndarray, dt_s: float, num_steps: int) -> tuple[Any, Any]:
        """Samples ``index`` of ``data`` binned (binary) on the grid and their labels (for stretches their
        time-resolved targets), ready for the step."""
        labels: Any = np.asarray(data.labels[index], np.int32)
        if self._stream is not None:
            from edgekws.toolkit.train._streams import batch_targets

            labels = batch_targets(data, np.asarray(index), num_steps, dt_s, *self._stream)
        if self.placement.kernel == "sparse":
            from edgekws.toolkit.train._sparse import SpikeEvents

            pairs = [data.event_steps(int(i), dt_s, num_steps) for i in index]
            return SpikeEvents.from_steps(pairs, num_steps, data.num_channels), labels
        import jax

        x = data.bin(dt_s, num_steps, index)  # uint8: a quarter of float32's transfer; cast per column
        target = self._batch_sharding if self._batch_sharding is not None else self.placement.devices[0]
        return jax.device_put(x, target), jax.device_put(labels, target)

    def put(self, tree: Any) -> Any:
        import jax

        return jax.device_put(tree, self._replicated or self.placement.devices[0])

    def __call__(self, params: Any, opt_state: Any, batch: tuple[Any, Any]) -> Any:
        return self._fn(params, opt_state, *batch)


def train_step(
    spec: NetworkSpec,
    config: TrainConfig,
    placement: Placement,
    total_steps: int = 0,
    stream_windows: int | None = None,
) -> TrainStep:
    """The training step for this network, the loss/optimizer settings of ``config`` and ``placement``.

    ``stream_windows`` (stream training: the pooled windows per batch) makes the step take time-resolved
    targets from the keyword spans of stretches, with the spike-count penalty per second of stretch."""
    reg_lambda, reg_nu = config.reg_lambda, config.reg_nu
    stream = None
    if stream_windows is not None:
        from edgekws.toolkit.train._streams import stream_loss, stream_regulariser

        if config.method != "eventprop":
            raise PlacementError("stream training computes Eventprop gradients; set method = 'eventprop'")
        stream = (stream_loss(config), stream_windows)
        reg_lambda, reg_nu = stream_regulariser(reg_lambda, reg_nu, spec.num_steps * spec.dt_ms / 1000.0)
    fn, jitted, sharding = _cached_step(
        spec,
        config.method,
        config.readout,
        reg_lambda,
        reg_nu,
        config.surrogate_slope,
        (
            config.learning_rate,
            config.ease_in,
            config.lr_decay,
            total_steps,
            config.lr_min_fraction,
            config.grad_clip,
        ),
        placement.kernel,
        placement.devices,
    )
    return TrainStep(placement, fn, jitted, sharding, stream)


@functools.lru_cache(maxsize=8)
def _cached_step(
    spec: NetworkSpec,
    method: str,
    readout: str,
    reg_lambda: float,
    reg_nu: float,
    slope: float,
    schedule: tuple[float, bool, str, int, float, float],
    kernel: str,
    devices: tuple[Any, ...],
) -> tuple[Callable[..., Any], Any, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    from edgekws.toolkit.train._bptt import bptt_loss_and_grad
    from edgekws.toolkit.train._eventprop import LossConfig, eventprop_loss_and_grad

    opt = optimizer(*schedule)
    if method == "bptt":
        grad_fn: Callable[..., Any] = bptt_loss_and_grad
        loss_cfg: Any = BpttLossConfig(readout, reg_lambda, reg_nu, slope)
    else:
        grad_fn = eventprop_loss_and_grad
        loss_cfg = LossConfig(readout=readout, reg_lambda=reg_lambda, reg_nu=reg_nu)

    if kernel == "sparse":
        from edgekws.toolkit.train._sparse import sparse_loss_and_grad

        @jax.jit
        def update(params: Any, opt_state: Any, grads: Any) -> Any:
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def sparse_step(params: Any, opt_state: Any, events: Any, labels: Any) -> Any:
            loss, aux, grads = sparse_loss_and_grad(params, events, labels, spec, loss_cfg)
            params, opt_state = update(params, opt_state, grads)
            counts = [np.asarray(c).sum(axis=0) for c in aux["hidden_counts"]]
            return params, opt_state, loss, aux["accuracy"], counts

        return sparse_step, update, None

    def step(params: Any, opt_state: Any, spikes: Any, labels: Any) -> Any:
        loss, aux, grads = grad_fn(params, spikes, labels, spec, loss_cfg)
        updates, opt_state = opt.update(grads, opt_state, params)
        counts = [jnp.sum(c, axis=0) for c in aux["hidden_counts"]]
        return optax.apply_updates(params, updates), opt_state, loss, aux["accuracy"], counts

    if len(devices) == 1:
        jitted = jax.jit(step)
        return jitted, jitted, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("batch",))
    rep, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))
    jitted = jax.jit(step, in_shardings=(rep, rep, split, split), out_shardings=rep)
    return jitted, jitted, split

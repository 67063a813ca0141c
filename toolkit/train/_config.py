"""The training configuration: one dataclass, loadable from TOML or JSON, with every knob of a run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from edgekws.packaging import DEFAULT_READOUT, NetworkSpec, layer_problems, tagged_dict
from edgekws.toolkit.train._targets import StreamLoss

Method = Literal["eventprop", "bptt"]
Augment = Literal["none", "shift", "shift-blend"]

METHODS: tuple[str, ...] = ("eventprop", "bptt")
AUGMENTS: tuple[str, ...] = ("none", "shift", "shift-blend")
LR_DECAYS: tuple[str, ...] = ("none", "cosine")


def lr_schedule(
    step: Any,
    lr: float,
    ease_in: bool,
    decay: str = "none",
    total_steps: int = 0,
    min_fraction: float = 0.05,
    xp: Any = np,
) -> Any:
    """Learning rate of optimizer step ``step`` (0-based), for numpy (``xp=np``) or jax.numpy step counts.

    ``ease_in``: the paper's ramp ``min(lr, lr/1000 * 1.05**step)``. ``decay="cosine"``: times
    ``f + (1 - f)(1 + cos(pi * step / total_steps)) / 2`` with ``f = min_fraction``, so the rate ends at
    ``f * lr`` after ``total_steps`` steps.
    """
    dtype = np.float64 if xp is np else xp.float32  # JAX computes in float32 unless x64 is enabled
    step = xp.asarray(step, dtype=dtype)
    rate = xp.asarray(lr, dtype=dtype)
    if ease_in:
        # The ramp reaches lr after 142 steps; capping the exponent keeps 1.05**step finite in float32.
        ramp = xp.power(xp.asarray(1.05, dtype=dtype), xp.minimum(step, 500.0))
        rate = xp.minimum(rate, (lr / 1000.0) * ramp)
    if decay == "cosine" and total_steps > 0:
        progress = xp.minimum(step / float(total_steps), 1.0)
        rate = rate * (min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + xp.cos(np.pi * progress)))
    return rate


SHD_CHANNELS = 700  # the channel count the paper's shift of ±40 refers to


class ConfigError(ValueError):
    """A training configuration is malformed; the message names every bad field and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run (defaults: the seed paper's SHD recipe, seed-paper.md §1).

    The learning rate ramps up as ``(lr/1000) * 1.05**batch`` until it reaches ``lr`` (the paper's
    "ease-in", about 142 batches) when ``ease_in`` is set. ``reg_lambda`` and ``reg_nu`` are the
    spike-count regulariser: hidden neurons firing more than ``reg_nu`` spikes per trial are penalised.
    ``shift_channels`` is the paper's ±40 channel shift for 700-channel SHD; it is scaled by
    ``num_channels / 700`` for other front-ends. ``blend_fraction`` extra same-class blends are added per
    epoch as a fraction of the training set (SHD used 7644/8156 = 0.94), each keeping the spikes of its
    two sources with probabilities ``blend_p`` and ``1 - blend_p``. ``silent_boost`` is the paper's +0.002
    added after each epoch to the input weights of hidden neurons that never spiked, in mlGeNN weight
    units (converted to ours with the mlGeNN factor, 0.0442 at dt = 1 ms). ``dt_ms``/``num_steps`` of
    ``None`` are taken from the data set (its attrs, else 1 ms and its longest sample). The ``stream_*``
    keys apply to a data set of stretches (stream training): how keyword spans become time-resolved
    targets (:class:`~edgekws.toolkit.train._targets.StreamLoss`). ``init_from`` names a run folder whose
    weights start this run where they fit (hidden layers of the same shape, readout rows of shared classes).
    ``tau_mem_ms``/``tau_syn_ms`` are the neurons' membrane and synaptic time constants (the paper's 20 and
    5 ms), carried by the network spec to every backend (Loihi 2's 12-bit decays are derived from them).
    """

    TYPE: ClassVar[str] = "edgekws.train_config"
    FORMAT_VERSION: ClassVar[int] = 1

    hidden: tuple[int, ...] = (256,)
    recurrent: tuple[bool, ...] = (True,)
    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 5.0
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    ease_in: bool = True
    reg_lambda: float = 2.5e-10
    reg_nu: float = 14.0
    readout: str = DEFAULT_READOUT
    augment: str = "shift"
    shift_channels: float = 40.0
    blend_fraction: float = 0.94
    blend_p: float = 0.5
    time_shift_ms: float = 0.0
    time_shift_sources: tuple[str, ...] = ()  # the sources (metadata "source") time_shift_ms delays; (): all
    input_dropout: float = 0.0
    grad_clip: float = 0.0
    method: str = "eventprop"
    surrogate_slope: float = 25.0
    seed: int = 1234
    dt_ms: float | None = None
    num_steps: int | None = None
    silent_boost: float = 0.002
    lr_decay: str = "cosine"
    lr_min_fraction: float = 0.05
    eval_batch_size: int = 64
    # stream training (a data set of stretches; docs/training.md, "Stream training")
    stream_loss: str = "max"
    stream_window_ms: float = 400.0
    stream_window_start_ms: float = 0.0
    stream_guard_ms: float = 200.0
    stream_background_weight: float = 1.0
    init_from: str = ""  # a run folder whose weights start this run where they fit ("": random init)

    def __post_init__(self) -> None:
        problems: list[str] = layer_problems(self.hidden, self.recurrent, self.readout)
        if not (self.tau_mem_ms > 0 and self.tau_syn_ms > 0):
            problems.append(
                f"tau_mem_ms and tau_syn_ms must be positive, got {self.tau_mem_ms}, {self.tau_syn_ms}"
            )
        if self.epochs <= 0:
            problems.append(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            problems.append("batch_size and eval_batch_size must be positive")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.reg_lambda < 0 or self.reg_nu < 0:
            problems.append("reg_lambda and reg_nu must be non-negative")
        if self.augment not in AUGMENTS:
            problems.append(f"augment must be one of {list(AUGMENTS)}, got {self.augment!r}")
        if self.shift_channels < 0:
            problems.append(f"shift_channels must be non-negative, got {self.shift_channels}")
        if self.grad_clip < 0:
            problems.append(f"grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        if not 0.0 <= self.input_dropout < 1.0:
            problems.append(f"input_dropout must lie in [0, 1), got {self.input_dropout}")
        if self.time_shift_ms < 0:
            problems.append(f"time_shift_ms must be non-negative, got {self.time_shift_ms}")
        if self.time_shift_sources and not self.time_shift_ms:
            problems.append(
                "time_shift_sources names whose samples time_shift_ms delays; set time_shift_ms too"
            )
        if self.time_shift_sources and self.augment == "shift-blend":
            problems.append(
                "time_shift_sources picks samples by source, and shift-blend's blends mix two samples: "
                "use augment 'none' or 'shift' with it"
            )
        if self.blend_fraction < 0 or not 0.0 <= self.blend_p <= 1.0:
            problems.append("blend_fraction must be >= 0 and blend_p in [0, 1]")
        if self.lr_decay not in LR_DECAYS:
            problems.append(f"lr_decay must be one of {list(LR_DECAYS)}, got {self.lr_decay!r}")
        if not 0.0 <= self.lr_min_fraction <= 1.0:
            problems.append(f"lr_min_fraction must lie in [0, 1], got {self.lr_min_fraction}")
        if self.method not in METHODS:
            problems.append(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.surrogate_slope <= 0:
            problems.append(f"surrogate_slope must be positive, got {self.surrogate_slope}")
        if self.dt_ms is not None and self.dt_ms <= 0:
            problems.append(f"dt_ms must be positive (or unset to take it from the data), got {self.dt_ms}")
        if self.num_steps is not None and self.num_steps <= 0:
            problems.append(f"num_steps must be positive (or unset), got {self.num_steps}")
        if self.silent_boost < 0:
            problems.append(f"silent_boost must be non-negative, got {self.silent_boost}")
        try:
            StreamLoss(
                self.stream_loss,
                self.stream_window_ms,
                self.stream_window_start_ms,
                self.stream_guard_ms,
                self.stream_background_weight,
            )
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def network_spec(
        self,
        num_inputs: int,
        num_outputs: int,
        dt_ms: float,
        num_steps: int,
        class_names: tuple[str, ...] = (),
    ) -> NetworkSpec:
        """The network this configuration trains, for data with the given shape and time step."""
        return NetworkSpec(
            num_inputs=num_inputs,
            hidden=tuple(int(h) for h in self.hidden),
            recurrent=tuple(bool(r) for r in self.recurrent),
            num_outputs=num_outputs,
            dt_ms=dt_ms,
            num_steps=num_steps,
            tau_mem_ms=float(self.tau_mem_ms),
            tau_syn_ms=float(self.tau_syn_ms),
            readout=self.readout,
            class_names=class_names,
        )

    def max_shift(self, num_channels: int) -> int:
        """The channel shift range ``±max_shift`` for a front-end with ``num_channels`` channels."""
        return round(self.shift_channels * num_channels / SHD_CHANNELS)

    def learning_rate_at(self, step: int, total_steps: int = 0) -> float:
        """The learning rate of optimizer step ``step`` (0-based) of a run of ``total_steps`` steps."""
        return float(
            lr_schedule(
                step,
                self.learning_rate,
                self.ease_in,
                self.lr_decay,
                total_steps,
                self.lr_min_fraction,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return tagged_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config; unknown keys are rejected, ``type``/``format_version`` are optional."""
        data = dict(data)
        problems: list[str] = []
        kind = data.pop("type", cls.TYPE)
        if kind != cls.TYPE:
            problems.append(f"type must be {cls.TYPE!r}, got {kind!r}")
        version = data.pop("format_version", cls.FORMAT_VERSION)
        if version != cls.FORMAT_VERSION:
            problems.append(f"format_version must be {cls.FORMAT_VERSION}, got {version!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            problems.append(f"unknown keys {unknown}; known keys are {sorted(known)}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        if "hidden" in data:
            hidden = data["hidden"]
            data["hidden"] = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
        if "time_shift_sources" in data:
            sources = data["time_shift_sources"]
            data["time_shift_sources"] = (sources,) if isinstance(sources, str) else tuple(map(str, sources))
        if "recurrent" in data:
            rec = data["recurrent"]
            n = len(data.get("hidden", cls.hidden))
            data["recurrent"] = (bool(rec),) * n if isinstance(rec, bool) else tuple(bool(r) for r in rec)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a config from a ``.toml`` or ``.json`` file (keys as in :meth:`to_dict`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc})") from exc
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a table/object of keys, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``None`` values are ignored, as from unset CLI options)."""
        d = self.to_dict()
        d.update({k: v for k, v in changes.items() if v is not None})
        return TrainConfig.from_dict(d)

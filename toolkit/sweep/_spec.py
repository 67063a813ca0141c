"""The sweep specification: a TOML file naming the data, the fixed recipe, the search space and the seeds.

```toml
[sweep]
name = "digits-lr"                 # optional: the spec file's name without .toml
data = "data/digits/train.h5"      # paths are relative to the directory edgekws runs in
val = "data/digits/val.h5"         # selection, early stopping and the report use validation accuracy
seeds = [1, 2, 3]                  # every point is trained once per seed
search = "grid"                    # grid | random | optuna (adaptive: Optuna's TPE through Ray Tune)
points = 8                         # random / optuna: how many points to try (grid: the whole product)

[sweep.early_stop]                 # optional: ASHA stops trials whose validation accuracy lags
grace_epochs = 5                   # no trial is stopped before this many epochs
reduction_factor = 3               # keep the best 1/3 at each rung (epochs 5, 15, 45, ...)

[train]                            # fixed TrainConfig keys (docs/training.md)
epochs = 60
silent_boost = 0.02

[space]                            # swept TrainConfig keys
learning_rate = [5e-4, 1e-3]                   # a list: these values
reg_lambda = { loguniform = [1e-11, 1e-9] }    # random / optuna only
```

A *point* is one value for every swept key; a *trial* is one point with one seed, trained into its own run
folder. This module only reads and checks the spec; ``_engine`` turns it into a Ray Tune experiment.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import tomllib

from edgekws.toolkit.train import ConfigError, TrainConfig

SEARCHES: tuple[str, ...] = ("grid", "random", "optuna")
KINDS: tuple[str, ...] = ("values", "uniform", "loguniform", "int")
SEED = "_seed"  # the trial config key of the seed (grid, random); sorts first, so Tune varies it fastest
REPEAT_INDEX = "__trial_index__"  # set by Ray Tune's Repeater (optuna search): the seed's position
METRIC = "best_val_accuracy"  # what early stopping and the adaptive searcher maximise
MAX_GRID_CHECK = 10_000  # grid points whose configs are all checked when the spec is read


class SweepError(ValueError):
    """A sweep cannot be read, started or resumed; the message says every problem and the fix."""


@dataclass(frozen=True)
class Dimension:
    """One swept key: a list of values (``kind="values"``) or a range ``(low, high)`` to sample from."""

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def encoded(self) -> bool:
        """Whether Optuna gets these values as JSON strings (it takes only scalar categories)."""
        return self.kind == "values" and any(isinstance(v, list | dict) for v in self.values)

    def to_dict(self) -> Any:
        return list(self.values) if self.kind == "values" else {self.kind: list(self.values)}

    def to_tune(self, search: str) -> Any:
        """This dimension as a Ray Tune search-space entry."""
        from ray import tune

        if self.kind == "values":
            if search == "grid":
                return tune.grid_search(list(self.values))
            if search == "optuna" and self.encoded:
                return tune.choice([json.dumps(v) for v in self.values])
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        return tune.randint(low, high + 1)  # randint's upper bound is exclusive; ours is inclusive

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def is_log(self) -> bool:
        """Whether the report should plot this key on a log axis."""
        return self.kind == "loguniform" or (
            self.kind == "values"
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in self.values)
            and max(self.values) / min(self.values) >= 20
        )


@dataclass(frozen=True)
class EarlyStop:
    """ASHA's settings in epochs: rungs at ``grace_epochs · reduction_factor**k`` below the run's epochs."""

    grace_epochs: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep specification (see the module docstring for the file format)."""

    TYPE: ClassVar[str] = "edgekws.sweep_spec"
    FORMAT_VERSION: ClassVar[int] = 1

    name: str
    data: str
    val: str
    train: dict[str, Any]
    space: tuple[Dimension, ...]
    seeds: tuple[int, ...]
    search: str = "grid"
    points: int = 1
    sample_seed: int = 0
    early_stop: EarlyStop | None = None

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> SweepSpec:
        """Read a spec file; ``overrides`` (``data``, ``val``, ``name``; ``None`` ignored) replace ``[sweep]``
        keys. Relative data paths are made absolute against the current directory."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise SweepError(f"{path}: cannot read the sweep spec ({exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{path}: not valid TOML: {exc}") from exc
        sweep = raw.get("sweep")
        if isinstance(sweep, dict):
            sweep.setdefault("name", path.stem)
            sweep.update({k: str(v) for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(raw)
        except SweepError as exc:
            raise SweepError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SweepSpec:
        """Check a spec given as the TOML file's tables; every problem is reported at once."""
        problems: list[str] = []
        raw = dict(raw)
        raw.pop("type", None)
        version = raw.pop("format_version", cls.FORMAT_VERSION)
        if version != cls.FORMAT_VERSION:
            problems.append(f"format_version must be {cls.FORMAT_VERSION}, got {version!r}")
        unknown = sorted(set(raw) - {"sweep", "train", "space"})
        if unknown:
            problems.append(f"unknown tables {unknown}; a spec has [sweep], [train] and [space]")
        sweep = _table(raw, "sweep", problems)
        train = _table(raw, "train", problems)
        space_raw = _table(raw, "space", problems)
        known = {"name", "data", "val", "seeds", "search", "points", "sample_seed", "early_stop"}
        unknown = sorted(set(sweep) - known)
        if unknown:
            problems.append(f"unknown [sweep] keys {unknown}; known keys are {sorted(known)}")
        name = str(sweep.get("name", "sweep"))
        if not name or "/" in name:
            problems.append(f"[sweep] name must be a non-empty name without '/', got {name!r}")
        data, val = (_data_path(sweep, key, problems) for key in ("data", "val"))
        search = sweep.get("search", "grid")
        if search not in SEARCHES:
            problems.append(f"[sweep] search must be one of {list(SEARCHES)}, got {search!r}")
        seeds = sweep.get("seeds", [train.get("seed", TrainConfig.seed)])
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            problems.append(f"[sweep] seeds must be a non-empty list of distinct integers, got {seeds!r}")
            seeds = [TrainConfig.seed]
        if "seed" in train:
            problems.append("[train] seed: list the seeds in [sweep] seeds instead")
        points = sweep.get("points", 1)
        if search == "grid" and "points" in sweep:
            problems.append("[sweep] points is for random and optuna search; a grid tries every combination")
        if not isinstance(points, int) or isinstance(points, bool) or points < 1:
            problems.append(f"[sweep] points must be a positive integer, got {points!r}")
            points = 1
        sample_seed = sweep.get("sample_seed", 0)
        if not isinstance(sample_seed, int) or isinstance(sample_seed, bool):
            problems.append(f"[sweep] sample_seed must be an integer, got {sample_seed!r}")
            sample_seed = 0
        dimensions = (_dimension(key, value, problems) for key, value in space_raw.items())
        space = tuple(d for d in dimensions if d is not None)
        _check_keys(train, space, search, problems)
        early_stop = _early_stop(sweep.get("early_stop"), problems)
        if problems:
            raise SweepError("invalid sweep spec: " + "; ".join(problems))
        spec = cls(
            name=name,
            data=data,
            val=val,
            train=dict(train),
            space=space,
            seeds=tuple(seeds),
            search=str(search),
            points=int(points),
            sample_seed=int(sample_seed),
            early_stop=early_stop,
        )
        if early_stop is not None and early_stop.grace_epochs >= spec.max_epochs:
            raise SweepError(
                f"invalid sweep spec: [sweep.early_stop] grace_epochs ({early_stop.grace_epochs}) must be "
                f"below the epochs of a trial ({spec.max_epochs}), or nothing is ever stopped"
            )
        spec._check_configs()
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The spec as TOML-shaped tables (``from_dict(to_dict())`` gives it back)."""
        sweep: dict[str, Any] = {
            "name": self.name,
            "data": self.data,
            "val": self.val,
            "seeds": list(self.seeds),
            "search": self.search,
            "sample_seed": self.sample_seed,
        }
        if self.search != "grid":
            sweep["points"] = self.points
        if self.early_stop is not None:
            sweep["early_stop"] = {
                "grace_epochs": self.early_stop.grace_epochs,
                "reduction_factor": self.early_stop.reduction_factor,
            }
        return {
            "type": self.TYPE,
            "format_version": self.FORMAT_VERSION,
            "sweep": sweep,
            "train": dict(self.train),
            "space": {d.key: d.to_dict() for d in self.space},
        }

    # ------------------------------------------------------------------------------------------ points

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of a grid search."""
        keys = [d.key for d in self.space]
        return [dict(zip(keys, c, strict=True)) for c in itertools.product(*(d.values for d in self.space))]

    @property
    def num_points(self) -> int:
        return math.prod(len(d.values) for d in self.space) if self.search == "grid" else self.points

    @property
    def num_trials(self) -> int:
        return self.num_points * len(self.seeds)

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial trains (``epochs`` may be swept)."""
        for d in self.space:
            if d.key == "epochs":
                return int(max(d.values))
        return int(self.train.get("epochs", TrainConfig.epochs))

    def capped(self, epochs: int) -> SweepSpec:
        """This spec with no trial longer than ``epochs`` (EDGEKWS_SHRINK): ``[train]`` epochs and every swept
        value capped; early stopping is dropped when its grace period no longer fits."""
        raw = self.to_dict()
        raw["train"]["epochs"] = min(int(raw["train"].get("epochs", TrainConfig.epochs)), epochs)
        for d in self.space:
            if d.key == "epochs":
                del raw["train"]["epochs"]
                lowered = dict.fromkeys(min(int(v), epochs) for v in d.values)
                raw["space"]["epochs"] = (
                    list(lowered) if d.kind == "values" or len(lowered) == 1 else {d.kind: list(lowered)}
                )
        stop = raw["sweep"].get("early_stop")
        if stop is not None and stop["grace_epochs"] >= epochs:
            del raw["sweep"]["early_stop"]
        return SweepSpec.from_dict(raw)

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune search space: the swept keys, plus the seed for grid and random search (the
        optuna searcher is wrapped in a Repeater that sets ``__trial_index__`` instead)."""
        from ray import tune

        space = {d.key: d.to_tune(self.search) for d in self.space}
        if self.search != "optuna":  # a point's seeds run one after the other, so its spread is known early
            space[SEED] = tune.grid_search(list(self.seeds))  # and the first points set ASHA's bar
        return space

    def trial_of(self, config: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """``(point, seed)`` of a Ray Tune trial config."""
        point = {d.key: d.decode(config[d.key]) for d in self.space}
        seed = self.seeds[int(config[REPEAT_INDEX])] if self.search == "optuna" else int(config[SEED])
        return point, seed

    def train_config(self, point: dict[str, Any], seed: int) -> TrainConfig:
        """The TrainConfig of one trial: ``[train]``, then the point's values, then the seed."""
        return TrainConfig.from_dict({**self.train, **_plain(point), "seed": seed})

    def dimension(self, key: str) -> Dimension:
        return next(d for d in self.space if d.key == key)

    def _check_configs(self) -> None:
        """Build the TrainConfig of every grid point (or each value and range end) so a bad value fails
        now, not in a trial an hour into the sweep."""
        if self.search == "grid" and self.num_points <= MAX_GRID_CHECK:
            candidates = self.grid_points()
        else:
            candidates = [{}]
            for d in self.space:
                ends = d.values if d.kind == "values" else d.values[:1] + d.values[-1:]
                candidates += [{d.key: d.decode(v) if d.kind == "values" else v} for v in ends]
        problems: list[str] = []
        for point in candidates:
            try:
                self.train_config(point, self.seeds[0])
            except ConfigError as exc:
                where = f"with {_plain(point)}" if point else "in [train]"
                message = f"{where}: {exc}"
                if message not in problems:
                    problems.append(message)
        if problems:
            raise SweepError("invalid sweep spec: " + "; ".join(problems))


def format_point(point: dict[str, Any]) -> str:
    """A short, file-name-safe text of a point: ``learning_rate=0.001,hidden=128x128``."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, list | tuple):
            return "x".join(text(v) for v in value)
        return str(value).replace("/", "_")

    return ",".join(f"{k}={text(v)}" for k, v in point.items())


# -------------------------------------------------------------------------------------------------- checks


def _plain(point: dict[str, Any]) -> dict[str, Any]:
    """Values as TrainConfig.from_dict takes them (numpy scalars from Tune's samplers become Python's)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in point.items()}


def _table(raw: dict[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[{name}] must be a table, got {type(value).__name__}")
        return {}
    return dict(value)


def _data_path(sweep: dict[str, Any], key: str, problems: list[str]) -> str:
    value = sweep.get(key)
    if not isinstance(value, str) or not value:
        what = "training" if key == "data" else "validation"
        problems.append(f"[sweep] {key} must name the {what} set (an SHD-layout .h5 file)")
        return ""
    path = Path(value).expanduser()
    if not path.is_file():
        problems.append(f"[sweep] {key}: {path} is not a file (make it with `edgekws data synth`)")
    return str(path.resolve())


def _dimension(key: str, value: Any, problems: list[str]) -> Dimension | None:
    if isinstance(value, list):
        value = {"values": value}
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in KINDS:
        problems.append(
            f"[space] {key} must be a list of values or one of "
            + ", ".join(f"{{ {k} = [...] }}" for k in KINDS)
            + f", got {value!r}"
        )
        return None
    kind, values = next(iter(value.items()))
    if not isinstance(values, list) or not values:
        problems.append(f"[space] {key}: {kind} needs a non-empty list, got {values!r}")
        return None
    if kind == "values":
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            problems.append(f"[space] {key}: values repeat in {values!r}")
        return Dimension(key, kind, tuple(values))
    numbers = len(values) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numbers or not values[0] < values[1]:
        problems.append(f"[space] {key}: {kind} needs [low, high] with low < high, got {values!r}")
        return None
    if kind == "loguniform" and values[0] <= 0:
        problems.append(f"[space] {key}: loguniform needs a positive low end, got {values[0]!r}")
        return None
    if kind == "int" and not all(isinstance(v, int) for v in values):
        problems.append(f"[space] {key}: int needs integer ends, got {values!r}")
        return None
    return Dimension(key, kind, (values[0], values[1]))


def _check_keys(
    train: dict[str, Any], space: tuple[Dimension, ...], search: str, problems: list[str]
) -> None:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        problems.append(f"[train] keys {unknown} are not TrainConfig keys; known keys are {sorted(known)}")
    for d in space:
        if d.key == "seed":
            problems.append("[space] seed: list the seeds in [sweep] seeds instead")
        elif d.key not in known:
            problems.append(f"[space] {d.key} is not a TrainConfig key; known keys are {sorted(known)}")
        if d.key in train:
            problems.append(f"{d.key} is both fixed in [train] and swept in [space]; keep it in one")
        if search == "grid" and d.kind != "values":
            problems.append(
                f"[space] {d.key} is a {d.kind} range, which a grid cannot enumerate: give a list of values "
                "or set [sweep] search = 'random' or 'optuna'"
            )
    if search != "grid" and not space:
        problems.append(f"search = {search!r} needs at least one key in [space]")


def _early_stop(value: Any, problems: list[str]) -> EarlyStop | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"[sweep.early_stop] must be a table, got {value!r}")
        return None
    unknown = sorted(set(value) - {"grace_epochs", "reduction_factor"})
    if unknown:
        problems.append(f"unknown [sweep.early_stop] keys {unknown}; known: grace_epochs, reduction_factor")
    grace = value.get("grace_epochs", EarlyStop.grace_epochs)
    factor = value.get("reduction_factor", EarlyStop.reduction_factor)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 1:
        problems.append(f"[sweep.early_stop] grace_epochs must be a positive integer, got {grace!r}")
        return None
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 1:
        problems.append(f"[sweep.early_stop] reduction_factor must be a number > 1, got {factor!r}")
        return None
    return EarlyStop(grace, float(factor))

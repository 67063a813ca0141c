"""The training loop: epochs of augmented mini-batches, checkpoints, resume, model selection.

The run folder it writes (``run.json``, ``metrics.jsonl``, ``checkpoints/``, ``best.npz``) is described and
read and written by :mod:`edgekws.toolkit.train._run`.

Everything random is a pure function of ``(seed, epoch)``, so a resumed run (from an epoch or an
interrupt checkpoint) produces exactly the parameters of an uninterrupted run on the same machine.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train._augment import augment_epoch
from edgekws.toolkit.train._config import TrainConfig
from edgekws.toolkit.train._evaluate import score_dataset
from edgekws.toolkit.train._feed import Feed
from edgekws.toolkit.train._run import (
    TrainState,
    epoch_checkpoint,
    has_run,
    interrupt_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    make_run_dir,
    new_run_info,
    read_metrics,
    read_run_info,
    save_best,
    save_checkpoint,
    write_metrics,
    write_run_info,
)
from edgekws.toolkit.train._step import Placement, PlacementError, TrainStep, optimizer, place, train_step

BatchCallback = Callable[[int, int, dict[str, float]], None]
EpochCallback = Callable[[dict[str, Any]], None]


class TrainError(ValueError):
    """A training run cannot start or resume; the message says why and what to do."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int
    selection: str  # "val_accuracy" or "train_accuracy"
    best_score: float
    interrupted: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def time_grid(data: SpikeDataset, config: TrainConfig) -> tuple[float, int]:
    """``(dt_ms, num_steps)``: from the config, else the data's attrs, else 1 ms and the longest sample."""
    frontend = data.attrs.get("frontend") if isinstance(data.attrs.get("frontend"), dict) else {}
    dt_ms = config.dt_ms
    if dt_ms is None:
        if "dt" in data.attrs:
            dt_ms = float(data.attrs["dt"]) * 1000.0
        elif frontend and "dt_ms" in frontend:
            dt_ms = float(frontend["dt_ms"])
        else:
            dt_ms = 1.0
    steps = config.num_steps
    if steps is None:
        if "num_steps" in data.attrs and config.dt_ms is None:
            steps = int(data.attrs["num_steps"])
        else:
            longest = float(data.durations().max()) if len(data) else 0.0
            steps = max(1, math.floor(longest * 1000.0 / dt_ms + 1e-3) + 1)
    return float(dt_ms), int(steps)


def _core() -> Any:
    """The Eventprop core (``init_params``, ``simulate``, ``eventprop_loss_and_grad``, ``LossConfig``)."""
    from edgekws.toolkit.train import _eventprop, _model

    return _model, _eventprop


def mlgenn_silent_boost(spec: NetworkSpec, boost_genn: float) -> float:
    """The paper's silent-neuron boost (mlGeNN weight units) in our weight units."""
    from edgekws.toolkit.train._mlgenn import mlgenn_weight_factor

    return boost_genn * mlgenn_weight_factor(spec)


def _boost_silent(params: dict[str, Any], counts: tuple[np.ndarray, ...], boost: float) -> Any:
    if boost <= 0:
        return params
    params = dict(params)
    for layer, c in enumerate(counts):
        silent = np.asarray(c) == 0
        if silent.any():
            w = np.array(params[f"layer{layer}.weight"])
            w[silent] += boost
            params[f"layer{layer}.weight"] = w
    return params


def channels_per_band(data: SpikeDataset) -> int:
    """Level units per frequency band of the data's front-end (1 for SHD-style data without one)."""
    frontend = data.attrs.get("frontend")
    if isinstance(frontend, str):
        frontend = json.loads(frontend)
    if isinstance(frontend, dict) and frontend.get("num_bands"):
        per_band = data.num_channels // int(frontend["num_bands"])
        if per_band * int(frontend["num_bands"]) == data.num_channels:
            return per_band
    return 1


def time_shift_mask(train_data: SpikeDataset, config: TrainConfig) -> np.ndarray | None:
    """Which samples ``time_shift_ms`` delays: those of ``time_shift_sources`` (None: every sample).

    A TrainError when the data do not say their samples' sources or a named source has no sample (a typo
    would otherwise leave the shift off without a word)."""
    if not config.time_shift_sources:
        return None
    sources = train_data.metadata("source")
    if sources is None:
        raise TrainError(
            "time_shift_sources picks samples by their source, and the training data do not say theirs; "
            "make them with `edgekws data synth` / `data import` (both write it) or drop time_shift_sources"
        )
    present = sorted(set(sources.tolist()))
    missing = [s for s in config.time_shift_sources if s not in present]
    if missing:
        raise TrainError(
            f"time_shift_sources {missing} name no training sample; the data's sources are {present}"
        )
    return np.isin(sources, list(config.time_shift_sources))


def _epoch_data(
    train_data: SpikeDataset,
    config: TrainConfig,
    epoch: int,
    dt_s: float,
    delay_only: np.ndarray | None,
) -> tuple[Any, Any]:
    """One epoch's augmented samples and their order; ``delay_only`` is :func:`time_shift_mask`'s."""
    rng = np.random.default_rng([config.seed, epoch])
    stride = channels_per_band(train_data)
    data = augment_epoch(
        train_data,
        config.augment,
        config.max_shift(train_data.num_channels // stride),
        config.blend_fraction,
        config.blend_p,
        rng,
        dt_s,
        stride,
        max_delay_steps=round(config.time_shift_ms / (dt_s * 1000.0)),
        drop_p=config.input_dropout,
        delay_only=delay_only,
    )
    return data, rng.permutation(len(data))


def epoch_samples(n: int, config: TrainConfig) -> int:
    """Training samples per epoch: the originals plus, for ``shift-blend``, the same-class blends."""
    return n + (round(config.blend_fraction * n) if config.augment == "shift-blend" else 0)


def _batches(n: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped; the order changes every epoch)."""
    return max(1, n // batch_size) if n >= batch_size else 1


# ---------------------------------------------------------------------------------------------- the loop


def train(
    train_data: SpikeDataset,
    out: str | os.PathLike[str],
    config: TrainConfig,
    *,
    val_data: SpikeDataset | None = None,
    resume: bool = False,
    data_paths: dict[str, Path] | None = None,
    progress: bool = True,
    on_batch: BatchCallback | None = None,
    device: str = "auto",
    kernel: str = "auto",
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a network on ``train_data`` into the run folder ``out``; see the module docstring.

    ``on_batch(epoch, batch, metrics)`` is called after every optimizer step (epoch and batch 0-based);
    ``on_epoch(record)`` after every epoch, once its ``metrics.jsonl`` line, ``best.npz`` and checkpoint are
    written (``record`` is that line). Ctrl-C (``KeyboardInterrupt``, also from a callback) saves an
    interrupt checkpoint and returns a result with ``interrupted=True``; ``resume=True`` continues from
    the latest checkpoint. ``device`` ("auto", "cpu", "gpu") and ``kernel`` ("auto", "dense", "sparse")
    choose where and how the gradient is computed (``_step.place``; docs/training.md); the choice is
    recorded in run.json under ``placement``.
    """
    import jax

    try:
        placement = place(device, kernel, config.method, config.batch_size)
    except PlacementError as exc:
        raise TrainError(str(exc)) from exc
    with jax.default_device(placement.devices[0]):
        return _train(
            train_data, out, config, val_data, resume, data_paths, progress, on_batch, on_epoch, placement
        )


def _train(
    train_data: SpikeDataset,
    out: str | os.PathLike[str],
    config: TrainConfig,
    val_data: SpikeDataset | None,
    resume: bool,
    data_paths: dict[str, Path] | None,
    progress: bool,
    on_batch: BatchCallback | None,
    on_epoch: EpochCallback | None,
    placement: Placement,
) -> TrainResult:
    import jax
    import jax.numpy as jnp

    run_dir = Path(out)
    if len(train_data) == 0:
        raise TrainError("the training set is empty; pass a data file with samples")
    if val_data is not None and val_data.num_channels != train_data.num_channels:
        raise TrainError(
            f"validation data has {val_data.num_channels} channels but training data "
            f"{train_data.num_channels}; make both with the same front-end"
        )
    dt_ms, num_steps = time_grid(train_data, config)
    dt_s = dt_ms / 1000.0
    spec = config.network_spec(
        train_data.num_channels, train_data.num_classes, dt_ms, num_steps, tuple(train_data.class_names)
    )
    stream_windows = _stream_check(train_data, val_data, config)
    # once per run, and a bad source list fails here, not in the batch feed's thread
    delay_only = time_shift_mask(train_data, config)
    model, _ = _core()
    init = model.init_params(spec, jax.random.PRNGKey(config.seed))
    if config.init_from:
        from edgekws.toolkit.train._run import RunError, load_run
        from edgekws.toolkit.train._streams import init_from_run

        try:
            init = init_from_run(init, spec, load_run(config.init_from))
        except (RunError, ValueError) as exc:
            raise TrainError(f"init_from = {config.init_from!r}: {exc}") from exc
    init = {k: jnp.asarray(v, jnp.float32) for k, v in init.items()}
    template_opt = optimizer(config.learning_rate, config.ease_in, grad_clip=config.grad_clip).init(init)

    existing = latest_checkpoint(run_dir)
    history: list[dict[str, Any]] = []
    if resume:
        if existing is None:
            raise TrainError(f"{run_dir}: no checkpoint to resume from; drop --resume to start a new run")
        previous = read_run_info(run_dir)
        old_cfg = TrainConfig.from_dict(dict(previous.get("config", {}))).to_dict()  # with today's defaults
        new_cfg = config.to_dict()
        changed = sorted(k for k in new_cfg if k != "epochs" and old_cfg.get(k) != new_cfg[k])
        if changed:
            raise TrainError(
                f"{run_dir}: cannot resume with a different configuration (changed: {changed}); "
                "resume with the original settings (only --epochs may change) or start a new --out"
            )
        state = load_checkpoint(existing, template_opt)
        history = [h for h in read_metrics(run_dir) if h["epoch"] <= state.epoch]
        info = previous
        info["config"] = new_cfg
    else:
        if has_run(run_dir):
            raise TrainError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        state = TrainState(params=init, opt_state=template_opt, epoch=0, batch=0, step=0)
        info = new_run_info(spec, config, train_data, val_data, data_paths)
    make_run_dir(run_dir)
    info["status"] = "running"
    info["placement"] = placement.to_dict()
    write_run_info(run_dir, info)
    write_metrics(run_dir, history)

    total_steps = config.epochs * _batches(epoch_samples(len(train_data), config), config.batch_size)
    step = train_step(spec, config, placement, total_steps, stream_windows)
    state = replace(state, params=step.put(state.params), opt_state=step.put(state.opt_state))
    boost = mlgenn_silent_boost(spec, config.silent_boost)
    selection = info["selection"]["metric"]
    interrupted = False
    bar = _Progress(progress, config.epochs, state.epoch)
    feed = Feed(
        _batch_stream(train_data, config, step, dt_s, num_steps, state.epoch, state.batch, delay_only)
    )
    try:
        with bar, feed:
            while state.epoch < config.epochs:
                epoch = state.epoch
                t0 = time.perf_counter()
                if state.batch == 0:
                    state = replace(
                        state,
                        loss_sum=0.0,
                        correct=0.0,
                        seen=0,
                        counts=tuple(np.zeros(h, np.int64) for h in spec.hidden),
                    )
                item = feed.get()
                bar.start_epoch(epoch, item.batches, state.batch)
                while True:
                    if (item.epoch, item.batch) != (epoch, state.batch):  # the feed follows the loop exactly
                        raise RuntimeError(
                            f"batch feed out of step: {item.epoch, item.batch} at {epoch, state.batch}"
                        )
                    params, opt_state, loss, acc, counts = step(
                        state.params, state.opt_state, item.batch_data
                    )
                    loss_f, acc_f = float(loss), float(acc)
                    state = replace(
                        state,
                        params=params,
                        opt_state=opt_state,
                        batch=state.batch + 1,
                        step=state.step + 1,
                        loss_sum=state.loss_sum + loss_f * item.size,
                        correct=state.correct + acc_f * item.size,
                        seen=state.seen + item.size,
                        counts=tuple(
                            c + np.asarray(n, np.int64) for c, n in zip(state.counts, counts, strict=True)
                        ),
                    )
                    bar.advance_batch(loss_f, acc_f)
                    if on_batch is not None:
                        on_batch(epoch, state.batch - 1, {"loss": loss_f, "accuracy": acc_f})
                    if state.batch == item.batches:
                        break
                    item = feed.get()
                # End of epoch: silent-neuron fix, metrics, selection, checkpoint.
                params = _boost_silent(state.params, state.counts, boost)
                params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
                record = _epoch_record(epoch, state, spec, config, num_steps, dt_s, total_steps)
                if val_data is not None and stream_windows is not None:
                    from edgekws.toolkit.train._streams import validate_stretches

                    record.update(validate_stretches(params, spec, val_data, config))
                elif val_data is not None:
                    val_loss, val_acc = _validate(params, spec, val_data, config)
                    record.update(val_loss=val_loss, val_accuracy=val_acc)
                else:
                    record.update(val_loss=None, val_accuracy=None)
                score = record["val_accuracy"] if val_data is not None else record["train_accuracy"]
                best_score, best_epoch = state.best_score, state.best_epoch
                if score > best_score:
                    best_score, best_epoch = score, epoch + 1
                    save_best(run_dir, params)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                history.append(record)
                write_metrics(run_dir, history)
                state = replace(
                    state,
                    params=step.put(params),
                    epoch=epoch + 1,
                    batch=0,
                    best_score=best_score,
                    best_epoch=best_epoch,
                )
                save_checkpoint(epoch_checkpoint(run_dir, epoch + 1), state, config)
                bar.end_epoch(record)
                if on_epoch is not None:
                    on_epoch(record)
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint(interrupt_checkpoint(run_dir, state), state, config)
    info["status"] = "interrupted" if interrupted else "finished"
    info["selection"].update(best_epoch=state.best_epoch, best_score=state.best_score)
    info["epochs_done"] = state.epoch
    write_run_info(run_dir, info)
    return TrainResult(
        run_dir=run_dir,
        epochs_done=state.epoch,
        best_epoch=state.best_epoch,
        selection=selection,
        best_score=state.best_score,
        interrupted=interrupted,
        history=history,
    )


def _stream_check(train_data: SpikeDataset, val_data: SpikeDataset | None, config: TrainConfig) -> int | None:
    """For a data set of stretches (stream training) the pooled windows per batch, else None; a TrainError
    for what stream training does not take (clip validation data, blends, time shifts)."""
    from edgekws.toolkit.data import is_stream_set

    if not is_stream_set(train_data):
        if val_data is not None and is_stream_set(val_data):
            raise TrainError("the validation data are stretches, the training data clips; pass clips to both")
        return None
    problems = []
    if val_data is not None and not is_stream_set(val_data):
        problems.append("validate on stretches too (the val.h5 of `edgekws data stretches`), not on clips")
    if val_data is not None and val_data.class_names != train_data.class_names:
        problems.append(f"validation classes {val_data.class_names} differ from {train_data.class_names}")
    if config.augment == "shift-blend":
        problems.append("augment = 'shift-blend' mixes samples of a class; stretches take 'none' or 'shift'")
    if config.time_shift_ms:
        problems.append("time_shift_ms moves a clip's word in its window; stretches have no window (set 0)")
    if problems:
        raise TrainError("stream training (a data set of stretches): " + "; ".join(problems))
    from edgekws.toolkit.train._streams import max_windows

    return max(max_windows(train_data), max_windows(val_data) if val_data is not None else 1)


class _Batch(NamedTuple):
    epoch: int
    batch: int
    batches: int  # batches in this epoch
    size: int  # samples in this batch
    batch_data: Any  # what TrainStep.prepare made


def _batch_stream(
    train_data: SpikeDataset,
    config: TrainConfig,
    step: TrainStep,
    dt_s: float,
    num_steps: int,
    epoch: int,
    batch: int,
    delay_only: np.ndarray | None,
) -> Iterator[_Batch]:
    """Every batch from ``(epoch, batch)`` to the end of training, in order (run by the Feed's thread)."""
    for e in range(epoch, config.epochs):
        data, order = _epoch_data(train_data, config, e, dt_s, delay_only)
        n_batches = _batches(len(data), config.batch_size)
        for b in range(batch if e == epoch else 0, n_batches):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            yield _Batch(e, b, n_batches, len(idx), step.prepare(data, idx, dt_s, num_steps))


def _epoch_record(
    epoch: int,
    state: TrainState,
    spec: NetworkSpec,
    config: TrainConfig,
    num_steps: int,
    dt_s: float,
    total_steps: int,
) -> dict[str, Any]:
    total_spikes = float(sum(c.sum() for c in state.counts))
    neurons = sum(spec.hidden)
    rate = total_spikes / max(1, state.seen) / neurons / (num_steps * dt_s)
    return {
        "epoch": epoch + 1,
        "train_loss": state.loss_sum / max(1, state.seen),
        "train_accuracy": state.correct / max(1, state.seen),
        "lr": config.learning_rate_at(max(0, state.step - 1), total_steps),
        "hidden_rate_hz": rate,
        "silent_neurons": int(sum(int((c == 0).sum()) for c in state.counts)),
        "samples": state.seen,
    }


def _validate(
    params: dict[str, Any], spec: NetworkSpec, data: SpikeDataset, config: TrainConfig
) -> tuple[float, float]:
    """Cross-entropy (no regulariser) and accuracy of the decision rule on ``data`` (float model)."""
    scored = score_dataset(params, spec, data, "float", config.eval_batch_size)
    z = scored.scores - scored.scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-np.mean(logp[np.arange(len(data)), data.labels]))
    return loss, float(np.mean(scored.labels == data.labels))


class _Progress:
    """Two rich progress bars (epochs, batches of this epoch) with ETAs; a no-op when disabled."""

    def __init__(self, enabled: bool, epochs: int, done: int) -> None:
        self.enabled = enabled
        self._epochs_total, self._done = epochs, done
        if enabled:
            from rich.progress import Progress

            from edgekws.toolkit._progress import bar_columns

            self._p = Progress(*bar_columns(info=True))

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._p.__enter__()
            self._epochs = self._p.add_task("epochs", total=self._epochs_total, completed=self._done, info="")
            self._batches = self._p.add_task("batches", total=1, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.__exit__(None, None, None)

    def start_epoch(self, epoch: int, n_batches: int, done: int) -> None:
        if self.enabled:
            self._p.reset(self._batches, total=n_batches, completed=done, description=f"epoch {epoch + 1}")

    def advance_batch(self, loss: float, acc: float) -> None:
        if self.enabled:
            self._p.update(self._batches, advance=1, info=f"loss {loss:.3f} acc {acc:.2f}")

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.enabled:
            val = record.get("val_accuracy")
            info = f"train acc {record['train_accuracy']:.3f}" + (
                f" val acc {val:.3f}" if val is not None else ""
            )
            self._p.update(self._epochs, advance=1, info=info)

"""Ray as the sweep engine: an embedded local Ray or a cluster, Ray Tune for the search, ASHA to stop early.

With no address the driver starts a local Ray sized to the machine (or to ``cpus``); with an address (or
``RAY_ADDRESS``) it joins that cluster, and the same trials are placed by their CPU and GPU needs. Ray Tune
restarts a trial whose worker was lost (up to ``max_failures`` times) and the trial resumes from its run's
last checkpoint. Ctrl-C stops the driver and leaves every trial resumable; ``resume=True`` restores the
experiment and continues the trials that had not finished. The folder layout is in ``_folder``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import BasicVariantGenerator, Repeater

from edgekws.toolkit.sweep._folder import (
    RUNS,
    SWEEP_FORMAT_VERSION,
    SWEEP_INFO,
    SWEEP_TYPE,
    TRIALS,
    TUNE,
    UNFINISHED,
    now,
    read_sweep_info,
    read_trials,
    write_json,
)
from edgekws.toolkit.sweep._spec import METRIC, SweepError, SweepSpec, format_point
from edgekws.toolkit.sweep._trial import TrialSetup, run_trial, thread_env

OBJECT_STORE_BYTES = 256 << 20  # the embedded Ray's shared-memory object store (trials pass only paths)
AGENT_START_MS = 180_000  # how long the embedded Ray's raylet waits for its agents to start (Ray: 30 s)


@dataclass(frozen=True)
class EngineOptions:
    """Where and how the trials run (a resume may change all of it except ``storage``)."""

    address: str | None = None  # None: RAY_ADDRESS if set, else an embedded local Ray
    storage: str | None = (
        None  # None: run folders in SWEEP/runs on a shared file system; else a Ray storage URI
    )
    cpus: float | None = None  # CPUs of the embedded Ray (None: those this process may run on)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 3


@dataclass
class SweepOutcome:
    sweep_dir: Path
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | os.PathLike[str],
    options: EngineOptions | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> SweepOutcome:
    """Run (or with ``resume`` continue) ``spec`` into ``sweep_dir``; see the module docstring.

    Returns when every trial finished, was stopped early or failed, or when the driver was interrupted
    (Ctrl-C: ``interrupted=True``; every trial can be resumed).
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    new_folder = not sweep_dir.exists()
    info, options = _prepare(spec, sweep_dir, options or EngineOptions(), resume)
    experiment = str(info["engine"]["experiment"])
    with _removed_on_refusal(sweep_dir if new_folder else None), _ray(options) as engine:
        info["engine"].update(engine)
        info["status"] = "running"
        write_json(sweep_dir / SWEEP_INFO, info)
        setup = TrialSetup(
            spec=spec.to_dict(),
            sweep_dir=str(sweep_dir),
            storage=options.storage is not None,
            cpus=options.cpus_per_trial,
            gpus=options.gpus_per_trial,
        )
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, setup=setup),
            {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
        )
        if resume and tune.Tuner.can_restore(experiment):
            if options.storage is not None:  # the driver's run folders first, for ASHA's rungs
                _sync_back(tune.Tuner.restore(experiment, trainable=trainable).get_results(), sweep_dir)
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
        else:
            tuner = _new_tuner(spec, sweep_dir, experiment, options, trainable, progress)
        results = tuner.fit()
        if options.storage is not None:
            _sync_back(results, sweep_dir)
    trials = read_trials(sweep_dir)
    unfinished = any(t["status"] in UNFINISHED for t in trials.values())
    outcome = SweepOutcome(sweep_dir, trials, interrupted=len(trials) < spec.num_trials or unfinished)
    info["status"] = "interrupted" if outcome.interrupted else "finished"
    info["finished"] = None if outcome.interrupted else now()
    write_json(sweep_dir / SWEEP_INFO, info)
    return outcome


@contextlib.contextmanager
def _removed_on_refusal(folder: Path | None) -> Iterator[None]:
    """Remove ``folder`` (the sweep folder this run created) when Ray refuses the sweep before any trial
    (no cluster at the address, too few resources): the same command works once the cause is fixed."""
    try:
        yield
    except SweepError:
        if folder is not None and not read_trials(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _prepare(
    spec: SweepSpec, sweep_dir: Path, options: EngineOptions, resume: bool
) -> tuple[dict[str, Any], EngineOptions]:
    """Check the options and the sweep folder against ``resume``; returns ``sweep.json`` (new or read back)
    and the options with the recorded storage."""
    problems: list[str] = []
    if options.cpus_per_trial <= 0:
        problems.append(f"--cpus-per-trial must be positive, got {options.cpus_per_trial:g}")
    gpus = options.gpus_per_trial
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        problems.append(f"--gpus-per-trial must be a share of one GPU (0.5) or whole GPUs, got {gpus:g}")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        problems.append(f"--max-concurrent must be at least 1, got {options.max_concurrent}")
    problems += _data_problems(spec)
    if problems:
        raise SweepError("; ".join(problems))
    exists = (sweep_dir / SWEEP_INFO).is_file()
    if not resume:
        if exists:
            raise SweepError(
                f"{sweep_dir} already holds a sweep; pass --resume to continue it or choose another --out"
            )
        (sweep_dir / RUNS).mkdir(parents=True, exist_ok=True)
        if options.storage is None:
            experiment = str(sweep_dir / TUNE)
        else:
            experiment = f"{options.storage.rstrip('/')}/{sweep_dir.name}-{secrets.token_hex(3)}"
        info = {
            "type": SWEEP_TYPE,
            "format_version": SWEEP_FORMAT_VERSION,
            "spec": spec.to_dict(),
            "created": now(),
            "finished": None,
            "engine": {"storage": options.storage, "experiment": experiment},
            "status": "starting",
        }
        write_json(sweep_dir / SWEEP_INFO, info)
        return info, options
    if not exists:
        raise SweepError(f"{sweep_dir} holds no sweep ({SWEEP_INFO} missing); drop --resume to start one")
    info = read_sweep_info(sweep_dir)
    recorded, current = info["spec"], spec.to_dict()
    changed = sorted(
        f"[{table}] {key}"
        for table in ("sweep", "train", "space")
        for key in set(recorded.get(table, {})) | set(current.get(table, {}))
        if recorded.get(table, {}).get(key) != current.get(table, {}).get(key)
    )
    if changed:
        raise SweepError(
            f"{sweep_dir}: the spec changed since the sweep started ({', '.join(changed)}); resume with the "
            "original spec, or start a new sweep with another --out"
        )
    storage = info["engine"].get("storage")
    if options.storage not in (None, storage):
        raise SweepError(
            f"{sweep_dir}: the sweep keeps its state in {storage or sweep_dir / TUNE}, not "
            f"{options.storage}; resume without --storage"
        )
    return info, replace(options, storage=storage)


def _data_problems(spec: SweepSpec) -> list[str]:
    """What would make every trial fail at its start: unreadable or mismatched data (checked before Ray)."""
    from edgekws.toolkit.data import DatasetError, read_shd

    try:
        train, val = read_shd(spec.data), read_shd(spec.val)
    except DatasetError as exc:
        return [str(exc)]
    problems = [
        f"{path} holds no samples" for path, ds in ((spec.data, train), (spec.val, val)) if not len(ds)
    ]
    if val.num_channels != train.num_channels:
        problems.append(
            f"{spec.val} has {val.num_channels} channels but {spec.data} has {train.num_channels}; "
            "make both with the same front-end"
        )
    if list(val.class_names) != list(train.class_names):
        problems.append(
            f"{spec.val} has classes {list(val.class_names)} but {spec.data} {list(train.class_names)}"
        )
    return problems


def _new_tuner(
    spec: SweepSpec, sweep_dir: Path, experiment: str, options: EngineOptions, trainable: Any, progress: bool
) -> tune.Tuner:
    search_alg: Any
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = Repeater(OptunaSearch(seed=spec.sample_seed), repeat=len(spec.seeds), set_index=True)
    else:  # random values are drawn once per point and kept over the seeds' grid
        search_alg = BasicVariantGenerator(constant_grid_search=True, random_state=spec.sample_seed)
    scheduler = None
    if spec.early_stop is not None:
        scheduler = ResumableAsha(
            str(sweep_dir / RUNS),
            time_attr="epoch",
            max_t=spec.max_epochs,
            grace_period=spec.early_stop.grace_epochs,
            reduction_factor=spec.early_stop.reduction_factor,
            brackets=1,
        )
    namer = TrialNamer(spec)
    storage_path, name = experiment.rsplit("/", 1)
    return tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=1
            if spec.search == "grid"
            else spec.num_trials
            if spec.search == "optuna"
            else spec.points,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=options.max_concurrent,
            trial_name_creator=namer,
            trial_dirname_creator=namer,
            reuse_actors=True,  # a worker runs trial after trial: no new process, no new JAX import
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[JsonLoggerCallback(), TrialTable(str(sweep_dir), spec, progress)],
            verbose=0,
        ),
    )


def _sync_back(results: Any, sweep_dir: Path) -> None:
    """Copy each trial's latest Ray checkpoint (from the storage path) into ``SWEEP/runs/NAME``."""
    runs = sweep_dir / RUNS
    for result in results:
        checkpoint = result.checkpoint
        if checkpoint is None:
            continue
        name = Path(result.path).name
        tmp = runs / f".{name}.sync"
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoint.to_directory(str(tmp))
        shutil.rmtree(runs / name, ignore_errors=True)
        os.replace(tmp, runs / name)


# ------------------------------------------------------------------------------------------------ Ray


@contextlib.contextmanager
def _ray(options: EngineOptions) -> Iterator[dict[str, Any]]:
    """Start an embedded Ray, or join the cluster at ``options.address`` / ``RAY_ADDRESS``; yields what
    ``sweep.json`` records about the engine. Only a connection made here is closed here."""
    # The run folders hold the metrics: of Tune's loggers only result.json (which its analysis reads) stays,
    # and the sweep draws its own progress bars instead of Tune's tables.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    env = {"env_vars": thread_env(options.cpus_per_trial)}
    started = not ray.is_initialized()
    if not started:
        where = "existing"
    elif address:
        try:
            _join(address, env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(
                f"cannot join the Ray cluster at {address} ({exc}); start one with `ray start --head` or "
                "drop --address (and RAY_ADDRESS) for a local Ray. A cluster with token authentication needs "
                "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from exc
        where = address
    else:
        cpus = options.cpus if options.cpus is not None else len(_affinity())
        # Ray's raylet gives its Python agents 30 s to start and aborts the start after that ("Timed out
        # waiting for file .../metrics_agent_port_*"); on a busy machine (load average 14 on 2 cores here)
        # they take longer, so the embedded Ray waits up to AGENT_START_MS.
        os.environ.setdefault("RAY_agent_register_timeout_ms", str(AGENT_START_MS))
        ray.init(
            num_cpus=round(cpus),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            runtime_env=env,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        where = "embedded"
    try:
        resources = ray.cluster_resources()
        need = {"CPU": options.cpus_per_trial, "GPU": options.gpus_per_trial}
        short = [
            f"{v:g} {k} per trial but {resources.get(k, 0):g} in the cluster"
            for k, v in need.items()
            if v > resources.get(k, 0)
        ]
        if short:
            raise SweepError(
                f"no trial could start on {'the local Ray' if where == 'embedded' else where}: "
                f"{'; '.join(short)}; lower --cpus-per-trial/--gpus-per-trial"
            )
        yield {
            "ray": ray.__version__,
            "address": where,
            "cluster_cpus": resources.get("CPU", 0),
            "cluster_gpus": resources.get("GPU", 0),
            "cpus_per_trial": options.cpus_per_trial,
            "gpus_per_trial": options.gpus_per_trial,
        }
    finally:
        if started:
            ray.shutdown()


# What Ray 2.60's client proxy says when a per-client server failed to start: its start-up check reads the
# server's command line and gives up when the process is briefly a zombie (psutil.ZombieProcess), reported
# either as "Starting Ray client server failed" or as the check's own traceback ("Initialization failure from
# server: ... psutil.ZombieProcess"; ray-project/ray#63202 is the race behind it).
CLIENT_SERVER_START_FAILED = ("client server failed", "ZombieProcess")


def _client_server_start_failed(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in CLIENT_SERVER_START_FAILED)


def _join(address: str, runtime_env: dict[str, Any], attempts: int = 5) -> None:
    """``ray.init`` on a cluster; a Ray Client address is tried again after its per-client server failed to
    start (``CLIENT_SERVER_START_FAILED``; on a busy head three tries 5 s apart all failed once, so the waits
    grow: 5, 10, 20, 40 s)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING
            )
            return
        except ConnectionError as exc:
            retry = address.startswith("ray://") and attempt < attempts and _client_server_start_failed(exc)
            if not retry:
                raise
            logging.getLogger(__name__).warning(
                "Ray Client: %s; trying again (%d/%d)", exc, attempt, attempts
            )
            ray.shutdown()
            time.sleep(5.0 * 2 ** (attempt - 1))


def _no_restore_hint(record: logging.LogRecord) -> bool:
    """Drop Tune's "resume with Tuner.restore(...)" hint: a sweep resumes with --resume (the CLI says so)."""
    return "Tuner.restore" not in record.getMessage()


def _affinity() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------ Tune hooks


class TrialNamer:
    """Names a trial, its Tune folder and its run folder alike: ``00003-learning_rate=0.001,seed=2``."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> str:
        point, seed = self.spec.trial_of(trial.config)
        label = ",".join(filter(None, (format_point(point), f"seed={seed}")))
        if len(label) > 180:  # file names stay short; the point is in run.json and trials.json
            label = f"{label[:160]}~{secrets.token_hex(4)}"
        return f"{trial.trial_id.rsplit('_', 1)[-1]}-{label}"


class ResumableAsha(AsyncHyperBandScheduler):
    """Ray Tune's ASHA which, when a sweep is resumed, puts every trial back on the rungs its run reached.

    Tune saves the trials and the searcher, but not the scheduler's rungs; without this a resumed sweep would
    judge the remaining trials against empty rungs. A rung's value is the best validation accuracy up to its
    epoch, read from the trial's run folder: what the trial reported when it passed the rung.
    """

    def __init__(self, runs_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._runs_dir = runs_dir

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        from edgekws.toolkit.train import read_metrics

        history = read_metrics(Path(self._runs_dir) / str(trial))
        if not history:
            return
        for milestone, recorded in self._trial_info[trial.trial_id]._rungs:
            accuracies = [h["val_accuracy"] for h in history if h["epoch"] <= milestone]
            if history[-1]["epoch"] >= milestone and trial.trial_id not in recorded:
                recorded[trial.trial_id] = max(accuracies)


class TrialTable(tune.Callback):
    """A Tune callback on the driver: keeps ``SWEEP/trials.json`` and draws the sweep's progress bars."""

    def __init__(self, sweep_dir: str, spec: SweepSpec, progress: bool) -> None:
        self.sweep_dir, self.spec, self.progress = sweep_dir, spec, progress
        self._trials: dict[str, dict[str, Any]] = {}
        self._bar: Any = None

    def __getstate__(self) -> dict[str, Any]:  # pickled with the experiment; the live bar stays behind
        return {**self.__dict__, "_bar": None}

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self._trials = read_trials(self.sweep_dir)
        if not self.progress:
            return
        from rich.console import Console
        from rich.progress import Progress

        from edgekws.toolkit._progress import bar_columns

        bar = Progress(*bar_columns(info=True), console=Console(stderr=True))
        bar.start()
        total, epochs = self.spec.num_trials, self.spec.max_epochs
        done = [t for t in self._trials.values() if t["status"] not in UNFINISHED]
        epochs_done = sum(epochs if t in done else t["epoch"] for t in self._trials.values())
        self._bar = (
            bar,
            bar.add_task("trials", total=total, completed=len(done), info=self._summary()),
            bar.add_task("epochs", total=total * epochs, completed=epochs_done, info=""),
        )

    def _entry(self, trial: Any) -> dict[str, Any]:
        name = str(trial)
        if name not in self._trials:
            point, seed = self.spec.trial_of(trial.config)
            epochs = self.spec.train_config(point, seed).epochs
            self._trials[name] = {
                "point": point,
                "seed": seed,
                "trial_id": trial.trial_id,
                "status": "pending",
                "epoch": 0,
                "epochs": epochs,
                "restarts": 0,
                "run": str(Path(self.sweep_dir) / RUNS / name),
            }
        return self._trials[name]

    def _update(self, trial: Any, **fields: Any) -> dict[str, Any]:
        entry = self._entry(trial)
        entry.update(fields)
        write_json(Path(self.sweep_dir) / TRIALS, self._trials)
        return entry

    def _advance(self, trials: int = 0, epochs: int = 0) -> None:
        if self._bar is not None:
            bar, trials_task, epochs_task = self._bar
            bar.update(trials_task, advance=trials, info=self._summary())
            bar.update(epochs_task, advance=epochs)

    def _summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self._trials.values():
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        entry = self._entry(trial)
        restarted = entry["status"] != "pending"  # a lost worker, an error, or a resumed sweep
        self._update(trial, status="running", restarts=entry["restarts"] + int(restarted), started=now())
        self._advance()

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        before = self._entry(trial)["epoch"]
        epoch = int(result.get("epoch", before))
        self._update(
            trial,
            status="running",
            epoch=epoch,
            best_val_accuracy=result.get(METRIC),
            run=result.get("run"),
            cpu_cores=result.get("cpu_cores"),
            gpu_ids=result.get("gpu_ids"),
            resumed_from_epoch=result.get("resumed_from_epoch", 0),
            node=result.get("node_ip"),
            pid=result.get("pid"),
        )
        self._advance(epochs=max(0, epoch - before))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        entry = self._entry(trial)
        status = "finished" if entry["epoch"] >= entry["epochs"] else "stopped"
        self._update(trial, status=status, ended=now())
        self._advance(trials=1, epochs=self.spec.max_epochs - entry["epoch"])

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        entry = self._entry(trial)
        message = None
        with contextlib.suppress(OSError, TypeError):  # the error's last line, e.g. "TrainError: ..."
            lines = Path(trial.error_file).read_text().strip().splitlines()
            message = lines[-1] if lines else None
        error_file = f"{trial.path}/error.txt" if trial.path else None  # in the sweep's Tune folder
        self._update(trial, status="error", error=message, error_file=error_file, ended=now())
        self._advance(trials=1, epochs=self.spec.max_epochs - entry["epoch"])

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None

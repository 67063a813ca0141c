"""One trial of a sweep, as it runs inside a Ray worker: a normal `edgekws train` run with a report per epoch.

The trial trains through the public training API (``edgekws.toolkit.train.train``, what `edgekws train` calls)
into a run folder named after the trial, and reports every epoch's metrics line to Ray Tune. Where the run
folder lives depends on the sweep's storage:

- shared (the default): ``SWEEP/runs/NAME`` on a file system every node sees at the same path. A trial that
  starts again (after its worker was lost, or after ``--resume``) continues from the run's last checkpoint.
- Ray storage (``--storage URI``): a node-local folder; after every epoch the files needed to resume
  (run.json, metrics.jsonl, best.npz and the latest checkpoint) are reported as a Ray checkpoint, which Ray
  copies to the storage path. A trial that starts again on any node restores that checkpoint first.

Before anything imports JAX the trial sets its threads to its CPU allotment: the worker's CPU affinity is
pinned to as many free cores as the trial was given (XLA sizes its thread pools from the affinity mask), and
the BLAS/OpenMP thread counts follow.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekws.toolkit._interrupt import pid_alive

CORE_CLAIMS = "edgekws-sweep-cores.json"  # node-local, in the temp dir: core -> pid of the trial pinned to it


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (sent to the workers with the trainable)."""

    spec: dict[str, Any]  # SweepSpec.to_dict()
    sweep_dir: str
    storage: bool  # run folders travel through Ray checkpoints rather than a shared SWEEP/runs
    cpus: float
    gpus: float


def thread_env(cpus: float) -> dict[str, str]:
    """Environment variables that size the numeric libraries' thread pools to ``cpus`` (at least one)."""
    n = str(max(1, math.floor(cpus)))
    env = {k: n for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if cpus < 2:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"  # where affinity cannot be set (macOS)
    return env


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Ray Tune trainable of a sweep (called in a Ray worker, once per trial start)."""
    from ray import tune

    from edgekws.toolkit.sweep._spec import SweepSpec

    cores = _limit_threads(setup.cpus, setup.gpus)
    try:
        spec = SweepSpec.from_dict(setup.spec)
        point, seed = spec.trial_of(config)
        train_config = spec.train_config(point, seed)
        name = tune.get_context().get_trial_name()
        if setup.storage:
            scratch = Path(tempfile.gettempdir()) / "edgekws-sweep" / f"{os.getuid()}-{os.getpid()}"
            run_dir = scratch / name
            resume = _restore_from_ray(run_dir)
        else:
            run_dir = Path(setup.sweep_dir) / "runs" / name
            resume = _resumable(run_dir)
        try:
            _train(spec, train_config, run_dir, resume, setup.storage, cores)
        finally:
            if setup.storage:  # everything the run needs is in its Ray checkpoint by now
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        _release_cores(cores)


def _train(spec: Any, config: Any, run_dir: Path, resume: bool, storage: bool, cores: list[int]) -> None:
    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.train import train

    train_data, val_data = read_shd(spec.data), read_shd(spec.val)
    reporter = _Reporter(run_dir, config.epochs, storage, cores, resume)
    result = train(
        train_data,
        run_dir,
        config,
        val_data=val_data,
        resume=resume,
        data_paths={"train": Path(spec.data), "val": Path(spec.val)},
        progress=False,
        on_epoch=reporter.epoch,
    )
    if result.interrupted:  # a KeyboardInterrupt reached the trainer: fail, so Tune restarts and it resumes
        raise RuntimeError(f"{run_dir}: training was interrupted after {result.epochs_done} epochs")
    reporter.finish()


class _Reporter:
    """Reports each epoch's metrics line to Ray Tune (the last one once run.json says the run finished)."""

    def __init__(self, run_dir: Path, epochs: int, storage: bool, cores: list[int], resume: bool) -> None:
        import ray

        from edgekws.toolkit.train import read_metrics

        self.run_dir, self.epochs, self.storage = run_dir, epochs, storage
        self.history = read_metrics(run_dir) if resume else []
        self.resumed_from = self.history[-1]["epoch"] if self.history else 0
        self.extra = {
            "run": str(run_dir),
            "cpu_cores": ",".join(map(str, cores)) or "any",
            "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))
            or "none",  # Ray's placement (CUDA_VISIBLE_DEVICES)
        }
        self.reported = False

    def epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if record["epoch"] < self.epochs:
            self._report(record)

    def finish(self) -> None:
        """After training returned: report the last epoch (also for a run that had already finished)."""
        if self.history and (not self.reported or self.history[-1]["epoch"] >= self.epochs):
            self._report(self.history[-1])

    def _report(self, record: dict[str, Any]) -> None:
        from ray import tune

        best = max(
            (h["val_accuracy"] for h in self.history if h.get("val_accuracy") is not None), default=0.0
        )
        metrics = {k: v for k, v in record.items() if v is not None}
        metrics.update(self.extra, best_val_accuracy=best, resumed_from_epoch=self.resumed_from)
        self.reported = True
        if not self.storage:
            tune.report(metrics)
            return
        with _staged(self.run_dir) as folder:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


@contextlib.contextmanager
def _staged(run_dir: Path) -> Any:
    """A folder of hard links to what resuming ``run_dir`` needs: run.json, metrics.jsonl, best.npz and
    the latest checkpoint (not every epoch's)."""
    from edgekws.toolkit.train import latest_checkpoint

    stage = Path(tempfile.mkdtemp(prefix=".ray-checkpoint-", dir=run_dir.parent))
    try:
        (stage / "checkpoints").mkdir()
        latest = latest_checkpoint(run_dir)
        names = ["run.json", "metrics.jsonl", "best.npz"]
        for path in [run_dir / n for n in names] + ([latest] if latest else []):
            if path.is_file():
                os.link(path, stage / path.relative_to(run_dir))
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _resumable(run_dir: Path) -> bool:
    """Whether the shared run folder can be resumed; a run that never finished an epoch starts over."""
    from edgekws.toolkit.train import latest_checkpoint

    if not run_dir.exists():
        return False
    if latest_checkpoint(run_dir) is not None:
        return True
    shutil.rmtree(run_dir)  # run.json of a start that never reached its first checkpoint
    return False


def _restore_from_ray(run_dir: Path) -> bool:
    """Rebuild the node-local run folder from the trial's latest Ray checkpoint, if it has one."""
    from ray import tune

    shutil.rmtree(run_dir, ignore_errors=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    checkpoint.to_directory(str(run_dir))
    return True


# -------------------------------------------------------------------------------------------- threads


def _limit_threads(cpus: float, gpus: float) -> list[int]:
    """Size this worker's numeric thread pools to the trial's CPUs and share of a GPU; returns the cores the
    process is pinned to (empty where it could not be pinned)."""
    os.environ.update(thread_env(cpus))
    if gpus <= 0:
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif gpus < 1:  # JAX takes 75 % of a GPU by default; trials sharing one must split it
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpus:.3f}"
    want = max(1, math.floor(cpus))
    if not hasattr(os, "sched_setaffinity"):
        return []
    cores = _claim_cores(want)
    if cores:
        for task in os.listdir("/proc/self/task"):  # every thread, not just this one
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), cores)
    return cores


@contextlib.contextmanager
def _claims() -> Any:
    """The node's core claims (core -> pid), read and written under an exclusive lock."""
    path = Path(tempfile.gettempdir()) / CORE_CLAIMS
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            claims = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            claims = {}
        yield claims
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(claims.items())}))
        os.replace(tmp, path)


def _claim_cores(n: int) -> list[int]:
    """Claim ``n`` cores of this process's affinity no live trial holds; none if fewer are free (then
    the trial runs unpinned, e.g. when trials were given fractions of a CPU)."""
    available = sorted(os.sched_getaffinity(0))
    with _claims() as claims:
        for core, pid in list(claims.items()):
            if pid != os.getpid() and not pid_alive(pid):
                del claims[core]
        free = [c for c in available if c not in claims]
        if len(free) < n:
            return []
        chosen = free[:n]
        claims.update(dict.fromkeys(chosen, os.getpid()))
    return chosen


def _release_cores(cores: list[int]) -> None:
    if not cores:
        return
    with _claims() as claims:
        for core in cores:
            if claims.get(core) == os.getpid():
                del claims[core]

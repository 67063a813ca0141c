"""`edgekws sweep` on a real Ray: an embedded local Ray (Ctrl-C, resume, ASHA, report, bundle) and a Ray
cluster started with `ray start --head` (Ray client, Ray storage, a lost worker), on tiny data."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from _spikes import T, two_class_data

from edgekws.packaging import open_bundle, write_keypair
from edgekws.toolkit.data import SpikeDataset, read_shd, write_shd
from edgekws.toolkit.fleet._broker import free_port
from edgekws.toolkit.sweep import SweepError, SweepSpec
from edgekws.toolkit.train import TrainConfig, evaluate, load_run, read_metrics

BIN = Path(sys.executable).parent
TINY = {  # a BPTT network small enough that an epoch of 1000 samples takes a fraction of a second; with a
    # learning rate of 0.01 it separates two_class_data in one epoch, with 1e-6 it stays at chance
    "hidden": [16],
    "batch_size": 8,
    "ease_in": False,
    "augment": "none",
    "method": "bptt",
    "reg_lambda": 1e-6,
    "silent_boost": 0.3,
    "eval_batch_size": 64,
}


def toml(value: Any) -> str:
    return json.dumps(value).replace(": ", " = ") if not isinstance(value, bool) else str(value).lower()


def write_spec(
    folder: Path,
    name: str,
    space: dict[str, Any],
    seeds: list[int],
    epochs: int,
    samples: int = 1000,
    **sweep: Any,
) -> Path:
    """A spec over the tiny network on fresh data files in ``folder`` (``samples`` to train on)."""
    write_shd(two_class_data(samples, 0), folder / "train.h5")
    write_shd(two_class_data(64, 1), folder / "val.h5")
    lines = ["[sweep]", f'name = "{name}"', f'data = "{folder / "train.h5"}"', f'val = "{folder / "val.h5"}"']
    lines += [f"seeds = {seeds}"] + [f"{k} = {toml(v)}" for k, v in sweep.items() if not isinstance(v, dict)]
    for k, v in sweep.items():
        if isinstance(v, dict):
            lines += [f"[sweep.{k}]"] + [f"{kk} = {toml(vv)}" for kk, vv in v.items()]
    lines += ["[train]", f"epochs = {epochs}"] + [
        f"{k} = {toml(v)}" for k, v in TINY.items() if k not in space
    ]
    lines += ["[space]"] + [f"{k} = {toml(v)}" for k, v in space.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ray_env() -> Iterator[dict[str, str]]:
    """Environment of a sweep driver: Ray's files in a fresh short temp dir (sockets have a length limit), the
    trials' core claims there too (TMPDIR: a sweep running elsewhere on the machine holds its own cores), a
    token for Ray's authentication, and afterwards a check that no Ray process of this test outlived it."""
    temp = Path(tempfile.mkdtemp(prefix="ekray-"))
    env = dict(os.environ, RAY_TMPDIR=str(temp), TMPDIR=str(temp), RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32))  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    yield env
    leftovers = _processes_using(temp)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    assert not leftovers, f"Ray processes were left running: {leftovers}"


def _processes_using(temp: Path) -> list[int]:
    """Ray's processes of one test: their command line names ``temp``, or (those Ray retitles, such as
    ``ray::DashboardAgent``) their environment has it as RAY_TMPDIR."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(temp).encode() in (proc / "cmdline").read_bytes() or (
                    f"RAY_TMPDIR={temp}\0".encode() in (proc / "environ").read_bytes()
                ):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    process: subprocess.Popen[str] | None = None,
    state: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``predicate`` until it holds; fail with ``process``'s output if that ends first, and with
    ``state()`` (e.g. the trials) on a timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the driver ended ({process.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f"; state: {state()}" if state else "")
    )


@contextlib.contextmanager
def driver(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`edgekws ARGS` in its own process group (as a terminal starts it), killed with its group if the test
    ends first; its pipes are closed either way."""
    proc = subprocess.Popen(
        [str(BIN / "edgekws"), *args], env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def trials(sweep: Path) -> dict[str, dict[str, Any]]:
    try:
        return dict(json.loads((sweep / "trials.json").read_text()))
    except (OSError, ValueError):
        return {}


def edgekws(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgekws"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# -------------------------------------------------------------------------------------------------- the spec


def test_a_spec_round_trips_and_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    """A spec survives to_dict/from_dict; a bad one names each bad table, key and value in one error."""
    spec = SweepSpec.load(
        write_spec(tmp_path, "ok", {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "hidden": [[16], [32]]},
                   [1, 2, 3], 4, search="random", points=5, early_stop={"grace_epochs": 1}),
    )  # fmt: skip
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    assert spec.num_trials == 15 and spec.max_epochs == 4
    bad = spec.to_dict()
    bad["sweep"].update(seeds=[1, 1], search="grid", points=2, data="/nonexistent.h5")
    bad["space"] = {"learning_rat": [0.1], "seed": [1], "epochs": {"uniform": [1, 2]}, "method": ["sgd"]}
    bad["train"]["hiden"] = 3
    with pytest.raises(SweepError) as err:
        SweepSpec.from_dict(bad)
    message = str(err.value)
    for part in ("distinct integers", "points is for random", "/nonexistent.h5 is not a file",
                 "learning_rat is not a TrainConfig key", "[space] seed", "a grid cannot enumerate",
                 "[train] keys ['hiden']"):  # fmt: skip
        assert part in message, message
    bad = spec.to_dict()
    bad["space"], bad["sweep"]["search"] = {"surrogate_slope": [25.0, -1.0]}, "grid"
    del bad["sweep"]["points"]
    with pytest.raises(
        SweepError,
        match=r"with \{.surrogate_slope.: -1.0\}: invalid training config: surrogate_slope must be positive",
    ):
        SweepSpec.from_dict(bad)


def test_edgekws_shrink_caps_every_trials_epochs(tmp_path: Path) -> None:
    """SweepSpec.capped (what EDGEKWS_SHRINK's epochs does to a sweep): fixed and swept epochs are lowered,
    never raised; early stopping goes when its grace period no longer fits."""
    spec = SweepSpec.load(write_spec(tmp_path, "s", {"learning_rate": [0.01, 0.02]}, [1], 8,
                                     early_stop={"grace_epochs": 2}))  # fmt: skip
    assert spec.capped(8) == spec and spec.capped(100) == spec
    assert spec.capped(3).max_epochs == 3 and spec.capped(3).early_stop == spec.early_stop
    assert spec.capped(2).early_stop is None and spec.capped(2).num_trials == 2
    raw = spec.to_dict()
    del raw["train"]["epochs"]
    raw["space"]["epochs"] = [2, 5, 8]
    swept = SweepSpec.from_dict(raw).capped(5)
    assert swept.dimension("epochs").values == (2, 5) and swept.num_trials == 4 and swept.max_epochs == 5


def test_a_folder_that_is_not_a_sweep_or_a_run_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    """sweep.json and run.json that are missing, not JSON, a JSON array or of another type: a SweepError or
    RunError naming the file and what it should be (a JSON array used to escape as an AttributeError)."""
    from edgekws.toolkit.sweep._report import write_report
    from edgekws.toolkit.train import RunError

    cases = {"missing": None, "garbled": "{", "array": "[1, 2]", "other": '{"type": "edgekws.bundle"}'}
    for name, text in cases.items():
        for file, call, error, what in (
            ("sweep.json", write_report, SweepError, "sweep"),
            ("run.json", load_run, RunError, "run"),
        ):
            folder = tmp_path / f"{name}-{what}"
            folder.mkdir()
            if text is not None:
                (folder / file).write_text(text)
            with pytest.raises(error) as err:
                call(folder)
            message = str(err.value)
            assert str(folder / file) in message, (name, what, message)
            if name == "other":
                assert f"type must be 'edgekws.{what}', got 'edgekws.bundle'" in message, message
            else:
                assert f"is {folder} a" in message and f"{what} description" in message, message


def test_a_run_description_without_a_valid_network_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A run.json of the right type with no "network" (a KeyError before) or an invalid one: a RunError
    naming the file and, for a missing spec, how to make the run again."""
    from edgekws.toolkit.train import RunError

    for name, network in {"none": None, "bad": {"type": "edgekws.bundle"}}.items():
        folder = tmp_path / name
        folder.mkdir()
        info = {"type": "edgekws.run"} | ({} if network is None else {"network": network})
        (folder / "run.json").write_text(json.dumps(info))
        with pytest.raises(RunError) as err:
            load_run(folder)
        message = str(err.value)
        assert str(folder / "run.json") in message, message
        assert ("edgekws train" in message) if network is None else ("not a network spec" in message), message


def test_a_seeds_only_sweeps_plot_names_the_seeds_and_shows_their_mean_and_spread(tmp_path: Path) -> None:
    """With no swept key the plot's one panel has the seeds as categories in the spec's order (1234, 1 and 2
    were once a numeric axis with two dots crowded at 0) and the recipe's mean ± spread as a band."""
    from edgekws.toolkit.sweep._report import TrialResult, figure, summarize

    spec = SweepSpec.load(write_spec(tmp_path, "seeds", {}, [1234, 1, 2], 3, samples=8))
    accuracies = {1234: 0.65, 1: 0.63, 2: 0.61}
    trials = [TrialResult(f"{i:05d}-seed={seed}", {}, seed, "finished", 3, 3, acc, 2, str(tmp_path))
              for i, (seed, acc) in enumerate(accuracies.items())]  # fmt: skip
    (point,) = summarize(trials)
    ax = figure(spec, trials, [point]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1234", "1", "2"]
    dots = np.concatenate([c.get_offsets() for c in ax.collections])
    assert dots[:, 0].tolist() == [0.0, 1.0, 2.0] and dots[:, 1].tolist() == list(accuracies.values())
    assert [line.get_ydata()[0] for line in ax.get_lines()] == pytest.approx([0.63])
    (band,) = ax.patches
    low, high = sorted({y for _, y in band.get_path().transformed(band.get_patch_transform()).vertices})
    assert (low, high) == pytest.approx((0.63 - 0.02, 0.63 + 0.02))


# the recipe each reference bundle was trained by (tests/assets/*-reference.ekb; docs/training.md)
REFERENCE_RECIPES = {
    "en-digits": "recipe_en_digits_round6.toml",
    "en-commands": "recipe_en_commands_round15.toml",
}


@pytest.mark.parametrize("task", ["en-digits", "en-commands"])
def test_the_reference_sweeps_train_their_recipes_over_three_seeds(tmp_path: Path, task: str) -> None:
    """docs/sweeps/TASK-reference.toml trains exactly the TrainConfig of the reference bundle's recipe
    (benchmarks/research/, REFERENCE_RECIPES) with its seed and two others, without a search space or early
    stopping."""
    write_shd(two_class_data(4, 0), tmp_path / "d.h5")
    root = Path(__file__).resolve().parents[2]
    spec = SweepSpec.load(
        root / f"docs/sweeps/{task}-reference.toml", data=tmp_path / "d.h5", val=tmp_path / "d.h5"
    )
    recipe = tomllib.loads((root / "benchmarks/research" / REFERENCE_RECIPES[task]).read_text())
    assert spec.num_trials == 3 and len(set(spec.seeds)) == 3 and spec.seeds[0] == TrainConfig.seed
    assert not spec.space and spec.early_stop is None
    assert spec.train_config({}, TrainConfig.seed) == TrainConfig.from_dict(recipe["train"])


# -------------------------------------------------------------------------------------------------- local Ray


def test_embedded_sweep_survives_ctrl_c_resumes_stops_the_laggards_and_reports_its_runs(
    tmp_path: Path, ray_env: dict[str, str]
) -> None:
    """Two learning rates × two seeds on a local Ray with 2 CPUs: Ctrl-C (SIGINT to the driver's process
    group, as a terminal sends it) leaves the trials resumable, --resume finishes them, ASHA stops the
    learning rate that stays at chance, the report's numbers are those of the run folders, and the best
    trial bundles."""
    spec = write_spec(tmp_path, "lr", {"learning_rate": [0.01, 1e-6]}, [1, 2], 20,
                      early_stop={"grace_epochs": 1, "reduction_factor": 2})  # fmt: skip
    sweep = tmp_path / "sweep"
    args = ["sweep", str(spec), "--out", str(sweep), "--cpus", "2"]
    with driver(args, ray_env) as first:
        started = lambda: any(t["epoch"] >= 1 for t in trials(sweep).values())  # noqa: E731
        wait_for(started, 240, "a trial's first epoch", first, lambda: trials(sweep))
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert f"edgekws sweep {spec} --out {sweep} --resume" in stderr and "of 4 trial(s) unfinished" in stderr
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "interrupted"
    before = trials(sweep)
    unfinished = {n for n, t in before.items() if t["status"] == "running"}
    assert unfinished or len(before) < 4, before
    gone = lambda: not _processes_using(Path(ray_env["RAY_TMPDIR"]))  # noqa: E731
    wait_for(gone, 30, "the driver's Ray to stop after the driver ended")

    write_keypair(tmp_path / "keys", "release")
    bundle = ["--bundle-best", "--key", str(tmp_path / "keys/release.key")]
    write_shd(two_class_data(40, 7), tmp_path / "test.h5")
    done = edgekws([*args, "--resume", *bundle, "--test", str(tmp_path / "test.h5"), "--json"], ray_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    after = trials(sweep)
    assert len(after) == 4 and {t["status"] for t in after.values()} <= {"finished", "stopped"}
    good = [t for t in after.values() if t["point"]["learning_rate"] == 0.01]
    bad = [t for t in after.values() if t["point"]["learning_rate"] == 1e-6]
    assert [t["status"] for t in good] == ["finished"] * 2 and [t["status"] for t in bad] == ["stopped"] * 2
    assert all(t["epoch"] == 1 for t in bad)
    for name in unfinished:  # a trial running at Ctrl-C went on from its checkpoint, not from scratch
        history = read_metrics(sweep / "runs" / name)
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        assert after[name]["restarts"] >= 1
    assert any(after[n]["resumed_from_epoch"] >= 1 for n in unfinished) or not unfinished
    assert all(t["cpu_cores"] in ("0", "1") for t in after.values())  # one pinned core per 1-CPU trial

    # The report against the run folders.
    by_point: dict[float, list[tuple[str, float]]] = {}
    for name, t in after.items():
        history = read_metrics(sweep / "runs" / name)
        assert len(history) == t["epoch"] and (sweep / "runs" / name / "best.npz").is_file()
        by_point.setdefault(t["point"]["learning_rate"], []).append(
            (t["status"], max(h["val_accuracy"] for h in history))
        )
    rows = {p["point"]["learning_rate"]: p for p in report["points"]}
    for lr, members in by_point.items():
        finished = [acc for status, acc in members if status == "finished"] or [acc for _, acc in members]
        assert rows[lr]["mean"] == pytest.approx(np.mean(finished))
        assert rows[lr]["std"] == pytest.approx(np.std(finished, ddof=1))
        assert (rows[lr]["finished"], rows[lr]["stopped"]) == (
            sum(s == "finished" for s, _ in members), sum(s == "stopped" for s, _ in members))  # fmt: skip
    assert report["points"][0]["point"] == {"learning_rate": 0.01}  # the best point first

    def accuracy(name: str) -> tuple[float, int]:  # ties go to the first trial
        return max(h["val_accuracy"] for h in read_metrics(sweep / "runs" / name)), -int(name[:5])

    best = max((n for n, t in after.items() if t["status"] == "finished"), key=accuracy)
    assert report["best_trial"]["name"] == best
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG" and "| trial |" in (
        sweep / "report.md"
    ).read_text()

    test = read_shd(tmp_path / "test.h5")  # held-out accuracy: each run's best.npz scored by `eval`'s code
    for t in report["trials"]:
        assert t["test_accuracy"] == pytest.approx(evaluate(load_run(t["run"]), test)["accuracy"])
    good_tests = [t["test_accuracy"] for t in report["trials"] if t["point"]["learning_rate"] == 0.01]
    assert rows[0.01]["test_mean"] == pytest.approx(np.mean(good_tests))
    path = Path(report["bundle"]["path"])
    assert path == sweep / "best" / "lr-1.0.0.ekb" and report["bundle"]["trial"] == best
    assert open_bundle(path, [tmp_path / "keys/release.pub"]).manifest.name == "lr"
    table = edgekws(["sweep", "report", str(sweep)], ray_env)  # the same report as a table (no Ray)
    assert table.returncode == 0 and f"best trial: {best} (" in table.stdout, table.stderr
    assert "learning_rate=0.01 " in table.stdout and "learning_rate=1e-06 " in table.stdout

    # Bad input is refused before Ray starts, and the sweep is left as it was.
    again = edgekws(args, ray_env)
    assert again.returncode == 1 and "already holds a sweep; pass --resume" in again.stderr
    spec.write_text(spec.read_text().replace("seeds = [1, 2]", "seeds = [1, 3]"))
    changed = edgekws([*args, "--resume"], ray_env)
    assert (
        changed.returncode == 1
        and "the spec changed since the sweep started ([sweep] seeds)" in changed.stderr
    )
    six = SpikeDataset.from_raster([np.zeros((T, 6), np.uint8)] * 2, [0, 1], 0.001, ["low", "high"])
    write_shd(six, tmp_path / "six.h5")
    other = edgekws(
        ["sweep", str(spec), "--out", str(tmp_path / "other"), "--val", str(tmp_path / "six.h5")], ray_env
    )
    assert (
        other.returncode == 1 and "has 6 channels but" in other.stderr and not (tmp_path / "other").exists()
    )
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "finished"


# -------------------------------------------------------------------------------------------------- a cluster


@pytest.fixture
def ray_cluster(ray_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster started as a user starts one (`ray start --head`), with a Ray client port, two
    CPUs and one GPU (declared: Ray places it as a real one; JAX finds no GPU there and uses the CPU)."""
    gcs, client = free_port(), free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--ray-client-server-port={client}",
            "--num-cpus=2",
            "--num-gpus=1",  # a logical GPU: Ray places and shares it as a real one (CUDA_VISIBLE_DEVICES)
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            f"--temp-dir={ray_env['RAY_TMPDIR']}",
        ],
        env=dict(ray_env, RAY_agent_register_timeout_ms="180000"),  # as the sweep's local Ray: a busy box
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ray_env["RAY_TMPDIR"],
    )  # fmt: skip  (not the repository: its packaging/ would shadow PyPA's in `python -m` children)
    lines: list[str] = []  # what `ray start` says; "--block" comes after every process started
    reader = threading.Thread(target=lambda: lines.extend(head.stdout or ()), daemon=True)
    reader.start()
    try:
        started = lambda: any("--block" in line for line in lines) and _listening(client)  # noqa: E731
        wait_for(lambda: started() or head.poll() is not None, 120, "the Ray head")
        assert head.poll() is None and _listening(client), "".join(lines)
        yield f"ray://127.0.0.1:{client}", ray_env
    finally:
        head.send_signal(signal.SIGINT)  # `ray start --block` stops its processes on Ctrl-C
        try:
            head.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.communicate()
        temp = Path(ray_env["RAY_TMPDIR"])
        _stop_as_ray_stop_would(temp)


def _stop_as_ray_stop_would(temp: Path) -> None:
    """Wait for a Ray head's processes (those using ``temp``) to end after its Ctrl-C. The raylet's agents and
    workers can outlive it, on a busy box for more than 30 s: then stop ours as `ray stop` does, SIGTERM and,
    after a grace period, SIGKILL; fail only if they outlive that too."""
    gone = lambda: not _processes_using(temp)  # noqa: E731
    with contextlib.suppress(AssertionError):
        wait_for(gone, 30, "the Ray head to stop")
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_using(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(AssertionError) if sig == signal.SIGTERM else contextlib.nullcontext():
            wait_for(gone, 30, f"the Ray processes to end after {sig.name}")
            return


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_joining_a_cluster_retries_only_when_the_client_proxy_failed_to_start_its_server() -> None:
    """Both ways Ray's client proxy reports a per-client server that died at start are retried (the second was
    seen in this file's cluster test); a refused connection or any other error is not."""
    from edgekws.toolkit.sweep._engine import _client_server_start_failed

    said = (
        'Initialization failure from server:\nTraceback (most recent call last):\n  File ".../proxier.py", '
        "line 765, in Datapath\n...\npsutil.ZombieProcess: PID still exists but it's a zombie (pid=10554)"
    )
    assert _client_server_start_failed(ConnectionAbortedError(said))
    assert _client_server_start_failed(
        ConnectionError("Starting Ray client server failed. See ray_client_server_23000.err for details.")
    )
    assert not _client_server_start_failed(ConnectionError("ray client connection timeout"))
    assert not _client_server_start_failed(ConnectionRefusedError("[Errno 111] Connection refused"))


def test_a_cluster_runs_the_same_spec_and_a_lost_workers_trial_resumes_from_ray_storage(
    tmp_path: Path, ray_cluster: tuple[str, dict[str, str]]
) -> None:
    """Against `ray start --head` through a Ray client address, with run folders travelling through Ray's
    storage path, one point from Optuna's adaptive search trained with two seeds, the two trials sharing the
    cluster's GPU (--gpus-per-trial 0.5): killing a trial's worker mid-run (SIGKILL) makes Ray Tune restart
    the trial, which resumes from its last Ray checkpoint; the run folders are synced back into SWEEP/runs,
    complete and loadable. RAY_ADDRESS names the cluster as --address does, and a sweep the cluster cannot
    place is refused with the reason, leaving no sweep folder."""
    address, env = ray_cluster
    space = {"learning_rate": {"loguniform": [0.005, 0.02]}}
    spec = write_spec(tmp_path, "adaptive", space, [1, 2], 25, 2000, search="optuna", points=1)
    sweep, storage = tmp_path / "sweep", tmp_path / "ray-storage"

    def running() -> (
        str | None
    ):  # from epoch 2 on: Tune registers epoch 1's checkpoint before epoch 2's result
        found = (n for n, t in trials(sweep).items() if t["status"] == "running" and 2 <= t["epoch"] < 20)
        return next((n for n in found if trials(sweep)[n].get("pid")), None)

    args = [
        "sweep",
        str(spec),
        "--out",
        str(sweep),
        "--address",
        address,
        "--storage",
        str(storage),
        "--gpus-per-trial",
        "0.5",
        "--json",
    ]
    with driver(args, env) as proc:
        victim = wait_for(running, 240, "a trial in its first epochs", proc, lambda: trials(sweep))
        os.kill(trials(sweep)[victim]["pid"], signal.SIGKILL)  # its worker is lost
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    after = trials(sweep)
    assert {t["status"] for t in after.values()} == {"finished"}
    assert after[victim]["restarts"] == 1 and after[victim]["resumed_from_epoch"] >= 1
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["engine"]["address"] == address and info["engine"]["experiment"].startswith(str(storage))
    assert list(Path(info["engine"]["experiment"]).glob("*/checkpoint_*/checkpoints/epoch_025.npz"))
    for name in after:
        run = sweep / "runs" / name
        assert [h["epoch"] for h in read_metrics(run)] == list(range(1, 26))
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert load_run(run).spec.hidden == (16,)
    assert sorted(t["seed"] for t in after.values()) == [1, 2]  # the Repeater's two trials of Optuna's point
    assert len(report["points"]) == 1 and report["points"][0]["finished"] == 2
    first, second = after.values()  # both on the one GPU, at the same time
    assert first["gpu_ids"] == second["gpu_ids"] == "0", after
    assert first["started"] < second["ended"] and second["started"] < first["ended"], after
    assert (info["engine"]["cluster_gpus"], info["engine"]["gpus_per_trial"]) == (1, 0.5)

    refused = edgekws(["sweep", str(spec), "--out", str(tmp_path / "big"), "--gpus-per-trial", "2"],
                      dict(env, RAY_ADDRESS=address))  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert f"no trial could start on {address}: 2 GPU per trial but 1 in the cluster" in refused.stderr
    assert not (tmp_path / "big").exists()

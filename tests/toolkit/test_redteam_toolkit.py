"""The workstation-side Low findings of the 2026-12 red-team review (#17): SIGTERM of `train` and `data
synth` (real processes, real signals, real worker processes), `bundle` of an interrupted run, unwritable or
full outputs (real file-system errors: a path under a file, /proc, RLIMIT_FSIZE as a full disk), and key
names that would escape --out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _devices import FULL_DISK
from _tiny_data import TINY_TOML, tiny_data

EDGEKWS = Path(sys.executable).parent / "edgekws"


def _run(*args: object, full: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    launcher = FULL_DISK if full else []
    return subprocess.run(
        [*launcher, str(EDGEKWS), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run stopped by SIGTERM during its second epoch (L5), and a key pair."""
    root = tmp_path_factory.mktemp("sigterm")
    train_h5, val_h5 = tiny_data(root / "train.h5", 64, 0), tiny_data(root / "val.h5", 16, 1)
    config = root / "tiny.toml"
    config.write_text(TINY_TOML.replace("batch_size = 8", "batch_size = 4"))  # SIGTERM lands mid-epoch
    run = root / "run"
    cmd = [str(EDGEKWS), "train", "--data", train_h5, "--val", val_h5, "--out", run, "--config", config]
    proc = subprocess.Popen(
        [*map(str, cmd), "--epochs", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait(
            lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip() != "",
            240,
            "an epoch",
        )
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert _run("keys", "generate", "--out", root / "keys", "--name", "release").returncode == 0
    return root


def test_l5_sigterm_stops_training_like_ctrl_c(interrupted: Path) -> None:
    """SIGTERM mid-training saves the interrupt checkpoint and marks the run interrupted (SIGINT did this
    already; SIGTERM killed it without either)."""
    run = interrupted / "run"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and 1 <= info["epochs_done"] < 500
    assert list((run / "checkpoints").glob("interrupt_e*.npz"))


def test_l5_bundle_refuses_an_interrupted_run_unless_told(interrupted: Path, tmp_path: Path) -> None:
    """`bundle` of the interrupted run is refused (it packed 2 of 5 epochs silently); --allow-unfinished
    packs it with a warning."""
    args = ("bundle", interrupted / "run", "--name", "kws", "--version", "1.0.0")
    key = ("--key", interrupted / "keys" / "release.key")
    refused = _run(*args, *key, "--out", tmp_path / "a.ekb")
    assert refused.returncode == 1 and "training is interrupted" in refused.stderr
    assert "--allow-unfinished" in refused.stderr and not (tmp_path / "a.ekb").exists()
    ok = _run(*args, *key, "--out", tmp_path / "a.ekb", "--allow-unfinished", "--json")
    assert ok.returncode == 0, ok.stderr
    assert any("interrupted" in w for w in json.loads(ok.stdout)["warnings"])


def test_l1_unwritable_or_full_outputs_give_clear_errors(interrupted: Path, tmp_path: Path) -> None:
    """bundle build/push/pull and data synth with an output under a file, under /proc or on a full disk:
    exit 1 with a message naming the path, no traceback, no partial file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    build = ("bundle", interrupted / "run", "--name", "kws", "--version", "1.0.0", "--allow-unfinished")
    key = ("--key", interrupted / "keys" / "release.key")
    trust = ("--trust", interrupted / "keys" / "release.pub")
    cases = [
        _run(*build, *key, "--out", blocker / "x.ekb"),
        _run(*build, *key, "--out", "/proc/x.ekb"),
        _run(*build, *key, "--out", tmp_path / "full.ekb", full=True),
        _run(
            "data",
            "synth",
            "--task",
            "commands",
            "--classes",
            "yes",
            "--per-class",
            "1",
            "--out",
            blocker / "d",
        ),
        _run(
            "data", "synth", "--task", "commands", "--classes", "yes", "--per-class", "1", "--out", "/proc/d"
        ),
    ]
    good = tmp_path / "good.ekb"
    assert _run(*build, *key, "--out", good).returncode == 0
    cases += [
        _run("bundle", "push", good, "--store", blocker / "store", *trust),
        _run("bundle", "push", good, "--store", tmp_path / "store", *trust, full=True),
    ]
    assert _run("bundle", "push", good, "--store", tmp_path / "ok-store", *trust).returncode == 0
    cases.append(_run("bundle", "pull", "kws", "--store", tmp_path / "ok-store", "--out", blocker / "p.ekb"))
    for out in cases:
        assert out.returncode == 1, (out.args, out.stdout, out.stderr)
        assert "Error:" in out.stderr and "Traceback" not in out.stderr, (out.args, out.stderr)
        where = next(str(a) for a in reversed(out.args) if str(a).startswith(("/proc", str(tmp_path))))
        assert Path(where).name in out.stderr, (out.args, out.stderr)  # the message names the output
    assert not (tmp_path / "full.ekb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_l5_sigterm_and_sigkill_of_data_synth_leave_no_workers_and_no_partial_folder(tmp_path: Path) -> None:
    """SIGTERM mid-synthesis: the worker processes end and the partial folder is removed. SIGKILL: the
    workers still end (they die with their parent) and the next run removes the stale partial folder."""
    out = tmp_path / "corpus"
    cmd = [str(EDGEKWS), "data", "synth", "--task", "commands", "--classes", "yes,no", "--per-class", "200"]
    cmd += ["--workers", "2", "--seed", "3", "--out", str(out)]

    def started() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(lambda: any(tmp_path.glob(".corpus.partial-*/wavs/*/*.wav")), 120, "the first utterances")
        return proc

    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = started()
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the pool's workers (and its resource tracker)
        proc.send_signal(sig)
        proc.wait(60)
        assert proc.stderr is not None
        proc.stderr.close()
        _wait(lambda w=workers: _gone(w), 30, f"the workers to end after {sig.name}")
        partials = list(tmp_path.glob(".corpus.partial-*"))
        assert partials == [] if sig == signal.SIGTERM else len(partials) == 1
    small = _run("data", "synth", "--task", "commands", "--classes", "yes", "--per-class", "1", "--out", out)
    assert small.returncode == 0, small.stderr
    assert not list(tmp_path.glob(".corpus.partial-*")) and (out / "manifest.json").is_file()


def test_l8_key_names_cannot_escape_out(tmp_path: Path) -> None:
    """`keys generate --name ../../trav` is refused; nothing is written outside --out."""
    out = tmp_path / "deep" / "keys"
    for name in ("../../trav", "/abs", ".hidden", "a/b"):
        res = _run("keys", "generate", "--out", out, "--name", name)
        assert res.returncode == 1 and "key name" in res.stderr, (name, res.stderr)
    assert not list(tmp_path.rglob("*.key")) and not list(tmp_path.rglob("*.pub"))
    assert os.listdir(tmp_path) in ([], ["deep"])


def test_the_lava_hints_name_backends_the_commands_offer() -> None:
    """The Lava and Loihi hints name backends that `edgekws eval --backend` and the agent accept (the Lava
    hint named a `lava` backend that no command offered)."""
    import re

    from edgekws.agent.backends import backend_names
    from edgekws.agent.backends._lava import LAVA_HINT, LOIHI_HINT
    from edgekws.toolkit.train._evaluate import BACKENDS

    named = re.findall(r"--backend ([\w-]+)", LAVA_HINT) + re.findall(r"backend '([\w-]+)'", LOIHI_HINT)
    assert named and all(name in BACKENDS and name in backend_names() for name in named), named


def test_l8_scoring_on_a_fixed_point_backend_reports_progress_per_batch(interrupted: Path) -> None:
    """`eval --backend lava-sim` printed nothing for minutes: scoring on a fixed-point backend now calls
    progress(done, total) after every batch (the CLI's bar on stderr), rising to the data set's size."""
    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.train import load_run
    from edgekws.toolkit.train._evaluate import score_dataset

    run, data = load_run(interrupted / "run"), read_shd(interrupted / "val.h5")
    calls: list[tuple[int, int]] = []
    score_dataset(
        run.params, run.spec, data, "emulator", batch_size=4, progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert len(set(done)) >= len(data) // 4 and done == sorted(done) and calls[-1] == (len(data), len(data))
    out = _run(
        "eval", interrupted / "run", "--data", interrupted / "val.h5", "--backend", "emulator", "--json"
    )
    assert out.returncode == 0 and "scoring on emulator" in out.stderr, out.stderr
    json.loads(out.stdout)  # the bar stays on stderr

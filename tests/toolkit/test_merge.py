"""Merging runs: one network whose readout is the members' mean, refused for runs that do not fit together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TINY_TOML, tiny_data
from click.testing import CliRunner

from edgekws.agent import decide
from edgekws.packaging import NetworkSpec
from edgekws.toolkit._cli import main
from edgekws.toolkit.data import read_shd
from edgekws.toolkit.train import MergeError, float_readout, load_run, merge_runs
from edgekws.toolkit.train._merge import merge_params, merged_spec
from edgekws.toolkit.train._model import simulate


def _member(spec: NetworkSpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, 0.6 / np.sqrt(shape[1]), size=shape).astype(np.float32)
        for name, shape in spec.parameter_shapes().items()
    }


@pytest.mark.parametrize(
    ("hidden", "recurrent"),
    [(((16,), (16,), (16,)), (True,)), (((12, 8), (6, 10), (12, 8)), (True, False))],
)
def test_merged_readout_is_the_members_mean_and_their_spikes_are_unchanged(
    hidden: tuple[tuple[int, ...], ...], recurrent: tuple[bool, ...]
) -> None:
    """Float readout trace of the merge = mean of the members' traces (members of equal or different widths,
    one or two hidden layers); each member's hidden spikes survive."""
    specs = [
        NetworkSpec(num_inputs=10, hidden=h, recurrent=recurrent, num_outputs=3, num_steps=60) for h in hidden
    ]
    members = [_member(s, seed) for seed, s in enumerate(specs)]
    spec = merged_spec(specs)
    assert spec.hidden == tuple(sum(h[i] for h in hidden) for i in range(len(recurrent)))
    params = merge_params(specs, members)
    spikes = (np.random.default_rng(7).random((5, 60, 10)) < 0.2).astype(np.float32)
    traces = [float_readout(p, s, spikes) for p, s in zip(members, specs, strict=True)]
    assert max(float(np.abs(t).max()) for t in traces) > 0.05  # the members do respond
    np.testing.assert_allclose(
        float_readout(params, spec, spikes), np.mean(traces, axis=0), rtol=1e-5, atol=1e-6
    )
    merged_hidden = simulate(params, spikes, spec).hidden_spikes[-1]
    alone = np.concatenate(
        [simulate(p, spikes, s).hidden_spikes[-1] for p, s in zip(members, specs, strict=True)], -1
    )
    np.testing.assert_array_equal(np.asarray(merged_hidden), np.asarray(alone))
    assert float(np.asarray(alone).sum()) > 0  # the test sees spikes, not silence


def test_runs_of_other_architectures_are_refused_with_every_difference() -> None:
    """Inputs, classes and layer counts that differ are all named in one error."""
    a = NetworkSpec(num_inputs=10, hidden=(16,), num_outputs=2, class_names=("yes", "no"))
    b = NetworkSpec(num_inputs=12, hidden=(16,), num_outputs=2, class_names=("no", "yes"))
    c = NetworkSpec(num_inputs=10, hidden=(16, 8), recurrent=(True, True), num_outputs=2)
    with pytest.raises(MergeError) as info:
        merged_spec([a, b, c])
    message = str(info.value)
    assert "num_inputs: run 0 10, run 1 12" in message and "class_names" in message
    assert "run 2 has 2 hidden layers" in message


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("merge")
    train_h5, val_h5 = tiny_data(root / "train.h5", 32, 0), tiny_data(root / "val.h5", 16, 1)
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    runs = []
    for seed in (1, 2):
        out = root / f"run{seed}"
        args = ["train", "--data", str(train_h5), "--val", str(val_h5), "--out", str(out), "--config"]
        result = CliRunner().invoke(main, [*args, str(config), "--epochs", "2", "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        runs.append(out)
    return runs, val_h5


def test_merge_cli_makes_a_run_that_eval_scores_on_the_emulator(two_runs: tuple[list[Path], Path]) -> None:
    """`train merge` writes a run of twice the neurons, recording its members; eval runs it in fixed point."""
    runs, val_h5 = two_runs
    out = runs[0].parent / "merged"
    result = CliRunner().invoke(main, ["train", "merge", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    merged = load_run(out)
    assert merged.spec.hidden == (32,) and merged.info["status"] == "merged"
    members = merged.info["source"]["members"]
    assert [m["seed"] for m in members] == [1, 2] and all(
        m["best_npz"].startswith("sha256:") for m in members
    )
    assert merged.info["data"] == load_run(runs[0]).info["data"]  # same training files: kept
    assert merged.info["config"]["hidden"] == [32] and "seed" not in merged.info["config"]  # seeds differ
    data = read_shd(val_h5)
    spikes = data.bin(merged.spec.dt_ms / 1000.0, merged.spec.num_steps)
    mean = np.mean([float_readout(load_run(r).params, load_run(r).spec, spikes) for r in runs], axis=0)
    expected = decide(mean, merged.spec.readout).labels
    for backend in ("float", "emulator"):
        result = CliRunner().invoke(
            main, ["eval", str(out), "--data", str(val_h5), "--backend", backend, "--json"]
        )
        assert result.exit_code == 0, result.output
        accuracy = json.loads(result.stdout)["accuracy"]
        if backend == "float":  # the merge decides as the mean of its members' readouts does
            assert accuracy == pytest.approx(float(np.mean(expected == data.labels)))


def test_merge_refuses_runs_that_do_not_fit_together_and_an_existing_output(
    two_runs: tuple[list[Path], Path], tmp_path: Path
) -> None:
    """Each misuse ends with a message naming it (one run, a repeat, an unfinished run, a copy of a run,
    another front-end and detection mode, a merge as a member, an existing output), and nothing is written."""
    runs, _ = two_runs
    with pytest.raises(MergeError, match="at least two runs"):
        merge_runs(runs[:1], tmp_path / "a")
    with pytest.raises(MergeError, match="has the weights of run 0"):
        merge_runs([runs[0], runs[0]], tmp_path / "b")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("run.json", "best.npz"):
        (unfinished / name).write_bytes((runs[1] / name).read_bytes())
    info = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(MergeError, match=r"run 1 .* has not finished training \(status 'running'\)"):
        merge_runs([runs[0], unfinished], tmp_path / "c")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("run.json", "best.npz"):
        (copy / name).write_bytes((runs[0] / name).read_bytes())
    with pytest.raises(MergeError, match="has the weights of run 0"):
        merge_runs([runs[0], copy], tmp_path / "d")
    other = tmp_path / "other"
    other.mkdir()
    (other / "best.npz").write_bytes((runs[1] / "best.npz").read_bytes())
    info = json.loads((runs[1] / "run.json").read_text())
    frontend = {"type": "edgekws.frontend", "num_channels": info["network"]["num_inputs"], "num_bands": 2}
    other_info = {**info, "frontend": frontend, "detection_mode": "always_on"}
    (other / "run.json").write_text(json.dumps(other_info))
    with pytest.raises(MergeError, match=r"another front-end than run 0 .*'always_on' model"):
        merge_runs([runs[0], other], tmp_path / "e")
    merged = merge_runs(runs, tmp_path / "m")
    with pytest.raises(MergeError, match="is itself a merge; merge its members instead"):
        merge_runs([merged, runs[0]], tmp_path / "f")
    assert not any((tmp_path / n).exists() for n in "abcdef")
    result = CliRunner().invoke(main, ["train", "merge", *map(str, runs), "--out", str(runs[0])])
    assert result.exit_code == 1 and "already holds a run" in result.output

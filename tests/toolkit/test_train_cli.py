"""`edgekws train|eval|report` and `train import-mlgenn` on tiny files written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TINY_TOML, C, T, tiny_data
from click.testing import CliRunner

from edgekws.toolkit._cli import main
from edgekws.toolkit.data import write_shd
from edgekws.toolkit.train import ConfigError, TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    train_h5, val_h5 = tiny_data(root / "train.h5", 32, 0), tiny_data(root / "val.h5", 16, 1)
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    args = ["train", "--data", str(train_h5), "--val", str(val_h5), "--out", str(root / "run")]
    result = CliRunner().invoke(main, [*args, "--config", str(config), "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_done"] == 2 and summary["selection"] == "val_accuracy"
    return root / "run", val_h5


def test_train_writes_a_complete_run(trained: tuple[Path, Path]) -> None:
    """A CLI run holds run.json (spec, config, data fingerprints), metrics, checkpoints and best.npz."""
    run, _ = trained
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["epochs"] == 2 and info["config"]["method"] == "bptt"
    assert info["placement"]["kernel"] == "dense" and info["placement"]["device"] == "cpu"
    assert info["network"]["hidden"] == [16] and info["class_names"] == ["yes", "no"]
    assert len(info["data"]["train"]["sha256"]) == 64 and info["data"]["val"]["samples"] == 16
    assert (run / "best.npz").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_eval_json_has_accuracy_confusion_and_spike_statistics(trained: tuple[Path, Path]) -> None:
    """`eval --json` reports accuracy, per-class accuracy, the confusion matrix and hidden spike rates."""
    run, val_h5 = trained
    result = CliRunner().invoke(main, ["eval", str(run), "--data", str(val_h5), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["backend"] == "float" and out["samples"] == 16 and 0.0 <= out["accuracy"] <= 1.0
    assert set(out["per_class_accuracy"]) == {"yes", "no"}
    assert np.asarray(out["confusion_matrix"]).sum() == 16
    assert np.trace(np.asarray(out["confusion_matrix"])) / 16 == pytest.approx(out["accuracy"])
    assert {"mean_rate_hz", "silent_fraction", "p95_neuron_rate_hz"} <= set(out["hidden_spikes"])
    assert Path(out["confusion_png"]).read_bytes()[:4] == b"\x89PNG"


def test_report_draws_curves_and_a_raster(trained: tuple[Path, Path]) -> None:
    """`report` writes RUN/curves.png and RUN/raster.png (from the recorded training set)."""
    run, _ = trained
    result = CliRunner().invoke(main, ["report", str(run), "--sample", "1"])
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "raster.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"


def test_resume_of_a_finished_run_extends_it(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """`train --resume --epochs 3` continues a finished two-epoch run with its recorded config."""
    run, val_h5 = trained
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run, copy)
    info = json.loads((copy / "run.json").read_text())
    args = ["train", "--data", info["data"]["train"]["path"], "--out", str(copy), "--resume", "--epochs", "3"]
    result = CliRunner().invoke(main, [*args, "--val", str(val_h5), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs_done"] == 3


def test_import_mlgenn_cli_makes_a_run_eval_accepts(tmp_path: Path) -> None:
    """`train import-mlgenn` turns .npy checkpoints into a run that `eval` scores."""
    rng = np.random.default_rng(0)
    ck = tmp_path / "ck"
    ck.mkdir()
    for name, n in (("Conn_Input_Hidden", C * 6), ("Conn_Hidden_Hidden", 36), ("Conn_Hidden_Output", 12)):
        np.save(ck / f"4-{name}-g.npy", rng.normal(size=n).astype(np.float32))
    args = ["train", "import-mlgenn", str(ck), "--out", str(tmp_path / "run"), "--num-steps", str(T)]
    result = CliRunner().invoke(main, [*args, "--classes", "yes,no"])
    assert result.exit_code == 0, result.output
    data = tiny_data(tmp_path / "test.h5", 4, 2)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 4


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    """Missing --data/--out and a bad config key end with a usage or click error naming the problem."""
    result = CliRunner().invoke(main, ["train"])
    assert result.exit_code == 2 and "--data and --out are required" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"hiden": [16]}')
    data = tiny_data(tmp_path / "d.h5", 2, 0)
    result = CliRunner().invoke(
        main, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--config", str(bad)]
    )
    assert result.exit_code == 1 and "unknown keys ['hiden']" in result.output


def test_config_round_trips_and_rejects_bad_values(tmp_path: Path) -> None:
    """TrainConfig survives to_dict/from_dict and JSON files; invalid values are all reported at once."""
    config = TrainConfig(hidden=(32, 16), recurrent=(True, False), method="bptt", augment="shift-blend")
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.load(path) == config
    with pytest.raises(ConfigError, match=r"epochs must be positive.*method must be one of"):
        TrainConfig(epochs=0, method="sgd")
    assert TrainConfig().learning_rate_at(0) == pytest.approx(1e-6)
    assert TrainConfig().learning_rate_at(141) < 1e-3 == TrainConfig().learning_rate_at(142)


@pytest.mark.parametrize(
    "command", [["train"], ["train", "import-mlgenn"], ["train", "merge"], ["eval"], ["report"]]
)
def test_help_texts_have_examples(command: list[str]) -> None:
    """Every training command's --help shows an Example."""
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "edgekws " in result.output


def test_eval_reports_accuracy_per_speaker_worst_first(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """With extra/speaker and voice/variant meta_info, eval gives each speaker's accuracy, weakest first."""
    from edgekws.toolkit.data import read_shd

    run, val_h5 = trained
    data = read_shd(val_h5)
    data.extra["speaker"] = np.arange(len(data)) % 3
    data.attrs["meta_info"] = {"voice": ["en-us", "de", "en-gb"], "variant": ["f1", "m3", "steph"]}
    path = write_shd(data, tmp_path / "spk.h5")
    result = CliRunner().invoke(main, ["eval", str(run), "--data", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    per = out["per_speaker_accuracy"]
    assert set(per) == {"en-us+f1", "de+m3", "en-gb+steph"}
    assert sum(v["samples"] for v in per.values()) == 16
    accs = [v["accuracy"] for v in per.values()]
    assert accs == sorted(accs)
    weighted = sum(v["accuracy"] * v["samples"] for v in per.values()) / 16
    assert weighted == pytest.approx(out["accuracy"])
    text = CliRunner().invoke(main, ["eval", str(run), "--data", str(path)]).output
    assert "3 speakers; weakest:" in text


def test_eval_breaks_accuracy_down_by_source(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """With per-sample metadata (as `data synth` and `data import` write it), eval gives the accuracy by
    source, voice, gender, accent and each augmentation, and per speaker by name."""
    from edgekws.toolkit.data import read_shd

    run, val_h5 = trained
    data = read_shd(val_h5)
    n = len(data)
    data.extra.update(
        {
            "source": np.array(["flite", "fsdd"] * (n // 2)),
            "speaker_name": np.array(["flite-slt", "fsdd-george"] * (n // 2)),
            "voice": np.array(["slt", ""] * (n // 2)),
            "gender": np.array(["female", "male"] * (n // 2)),
            "accent": np.array(["US", "GRC/Greek"] * (n // 2)),
            "augment": np.array(["room+babble", "white"] * (n // 2)),
        }
    )
    path = write_shd(data, tmp_path / "meta.h5")
    result = CliRunner().invoke(main, ["eval", str(run), "--data", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    by = out["per_source_accuracy"]
    assert set(by) == {"source", "voice", "gender", "accent", "augment"}
    assert {k: v["samples"] for k, v in by["source"].items()} == {"flite": n // 2, "fsdd": n // 2}
    assert set(by["voice"]) == {"slt"}  # real recordings have no voice: left out
    assert set(by["augment"]) == {"room", "babble", "white"} and by["augment"]["room"]["samples"] == n // 2
    assert by["augment"]["room"]["accuracy"] == by["source"]["flite"]["accuracy"]
    weighted = sum(v["accuracy"] * v["samples"] for v in by["source"].values()) / n
    assert weighted == pytest.approx(out["accuracy"])
    assert set(out["per_speaker_accuracy"]) == {"flite-slt", "fsdd-george"}
    text = CliRunner().invoke(main, ["eval", str(run), "--data", str(path)]).output
    assert "by source: " in text and "by augment: " in text


def test_train_on_a_missing_gpu_or_with_an_impossible_kernel_says_what_to_use(tmp_path: Path) -> None:
    """--device gpu without a GPU, and the sparse kernel with BPTT, fail before training and name the fix."""
    data = tiny_data(tmp_path / "train.h5", 8, 0)
    base = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    import jax

    if jax.default_backend() != "gpu":
        no_gpu = CliRunner().invoke(main, [*base, "--device", "gpu"])
        assert (
            no_gpu.exit_code == 1 and "JAX sees no GPU" in no_gpu.output and "--device cpu" in no_gpu.output
        )
    bptt = CliRunner().invoke(main, [*base, "--method", "bptt", "--kernel", "sparse"])
    assert bptt.exit_code == 1 and "Eventprop gradients only" in bptt.output
    assert not (tmp_path / "run").exists()

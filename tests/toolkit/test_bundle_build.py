"""Building a signed bundle from a training run: files, manifest, determinism, errors, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import _spikes
import numpy as np
import pytest
from _spikes import C, T
from click.testing import CliRunner

from edgekws.agent import FrontendSpec, decide
from edgekws.agent._cli import main as agent_main
from edgekws.agent.backends import EmulatorBackend, OnnxBackend
from edgekws.packaging import SigningKey, open_bundle, read_netx, write_keypair
from edgekws.toolkit._bundle_build import BundleBuildError, build_run_bundle
from edgekws.toolkit._cli import main
from edgekws.toolkit.data import SpikeDataset, read_shd, write_shd
from edgekws.toolkit.quant import quantize
from edgekws.toolkit.quant._quantize import DEFAULT_PERCENTILE
from edgekws.toolkit.train import TrainConfig, load_run, read_metrics, train
from edgekws.toolkit.train._evaluate import float_readout

CREATED = "2026-05-09T07:35:25Z"
FRONTEND = FrontendSpec(num_bands=8, thresholds_db=(-20.0,)).to_dict()  # 8 channels


def two_class_data(n: int, seed: int) -> SpikeDataset:
    """The tests' two-class spikes, with the attrs a front-end writes."""
    return _spikes.two_class_data(n, seed, frontend=FRONTEND)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run trained by the loop on SHD-format files, and a key pair."""
    root = tmp_path_factory.mktemp("bundle_build")
    write_shd(two_class_data(32, 0), root / "train.h5")
    write_shd(two_class_data(16, 1), root / "test.h5")
    config = TrainConfig(
        hidden=(16,), epochs=1, batch_size=8, learning_rate=0.01, ease_in=False, augment="none",
        method="bptt", reg_lambda=1e-6, silent_boost=0.3, eval_batch_size=16,
    )  # fmt: skip
    train(
        read_shd(root / "train.h5"),
        root / "run",
        config,
        val_data=read_shd(root / "test.h5"),
        data_paths={"train": root / "train.h5", "val": root / "test.h5"},
        progress=False,
    )
    write_keypair(root / "keys", "release")
    return root


@pytest.fixture(scope="module")
def built(work: Path) -> Path:
    """The bundle of the run, evaluated on the test file."""
    out = work / "kws-1.0.0.ekb"
    return build_run_bundle(
        work / "run", "kws", "1.0.0", work / "keys/release.key", out,
        eval_data=work / "test.h5", parent="0.9.0", created=CREATED,
    ).path  # fmt: skip


def test_bundle_verifies_with_the_trusted_key_and_manifest_has_every_section(work: Path, built: Path) -> None:
    """The bundle opens with the signer's public key and its manifest carries lineage, specs and metrics."""
    bundle = open_bundle(built, [work / "keys/release.pub"])
    m = bundle.manifest
    run = load_run(work / "run")
    info = run.info
    assert (m.name, m.version, m.created) == ("kws", "1.0.0", CREATED)
    assert sorted(m.files) == ["model/float.npz", "model/model.nir", "model/model.onnx", "model/netx.h5"]
    assert m.labels == ("low", "high") and m.network == run.spec.to_dict() and m.frontend == FRONTEND
    assert FrontendSpec.from_dict(dict(m.frontend)).num_channels == C  # what the agent reads
    run_json = (work / "run/run.json").read_bytes()
    assert m.lineage.training_run_id == "sha256:" + hashlib.sha256(run_json).hexdigest()
    train_digest = hashlib.sha256((work / "train.h5").read_bytes()).hexdigest()
    assert m.lineage.dataset_fingerprint == f"sha256:{train_digest}" and m.lineage.parent_version == "0.9.0"
    assert m.backends == ("emulator", "lava-sim", "loihi2", "onnx")
    q = m.quantization
    assert q is not None and q["type"] == "edgekws.quantization" and q["percentile"] == DEFAULT_PERCENTILE
    assert [layer["name"] for layer in q["layers"]] == ["hidden0", "readout"]
    assert {"weight_scale", "num_clipped", "v_th_mant", "i_decay", "v_decay"} <= set(q["layers"][0])
    nir = q["nir_semantics"]
    assert nir["dt"] == 0.001 and nir["reset"] == "reset v to 0, u kept" and nir["i_decay_12bit"] == 742
    assert nir["readout"].startswith("CubaLIF")  # the form third-party importers run (test_nir_norse.py)
    best = next(r for r in read_metrics(work / "run") if r["epoch"] == info["selection"]["best_epoch"])
    assert m.metrics.float["train_accuracy"] == best["train_accuracy"]
    assert m.metrics.float["val_accuracy"] == best["val_accuracy"]


def test_model_files_hold_the_float_params_and_the_quantized_integers(work: Path, built: Path) -> None:
    """float.npz holds best.npz's parameters and netx.h5 reads back to the quantizer's integers and scales."""
    bundle = open_bundle(built, [work / "keys/release.pub"])
    run = load_run(work / "run")
    with np.load(io.BytesIO(bundle.read("model/float.npz"))) as z:
        assert sorted(z.files) == sorted(run.params)
        for k in z.files:
            np.testing.assert_array_equal(z[k], run.params[k])
    expected, _ = quantize(run.params, run.spec, percentile=DEFAULT_PERCENTILE)
    extracted = bundle.extract(work / "extracted")
    net = read_netx(extracted / "model/netx.h5")
    assert net.to_dict() == expected.to_dict()
    for name, array in expected.arrays().items():
        np.testing.assert_array_equal(net.arrays()[name], array)
    scales = [layer["weight_scale"] for layer in bundle.manifest.quantization["layers"]]
    assert scales == [layer.weight_scale for layer in net.layers]


def test_onnx_model_matches_the_float_model_and_the_metrics_come_from_each_backend(
    work: Path, built: Path
) -> None:
    """The bundled ONNX model (ONNX Runtime) decides like the float model; metrics agree with a rerun."""
    bundle = open_bundle(built, [work / "keys/release.pub"])
    run = load_run(work / "run")
    data = read_shd(work / "test.h5")
    spikes = data.bin(0.001, T, np.arange(6))
    onnx = OnnxBackend(bundle.read("model/model.onnx"), providers=["CPUExecutionProvider"])
    assert onnx.streaming
    float_labels = decide(float_readout(run.params, run.spec, spikes)).labels
    np.testing.assert_array_equal(decide(onnx.run(spikes)).labels, float_labels)
    onnx.reset(len(spikes))
    chunked = np.concatenate([onnx.step(spikes[:, :20]), onnx.step(spikes[:, 20:])], axis=1)
    np.testing.assert_array_equal(decide(chunked).labels, float_labels)

    all_spikes = data.bin(0.001, T)
    emulator = EmulatorBackend(read_netx(bundle.extract(work / "x2") / "model/netx.h5"))
    emu_labels = decide(emulator.run(all_spikes)).labels
    float_all = decide(float_readout(run.params, run.spec, all_spikes)).labels
    met = bundle.manifest.metrics
    assert met.float["eval_samples"] == len(data)
    assert met.float["eval_accuracy"] == float(np.mean(float_all == data.labels))
    assert met.fixed_point["eval_accuracy"] == float(np.mean(emu_labels == data.labels))
    assert met.fixed_point["eval_agreement_with_float"] == float(np.mean(emu_labels == float_all))
    assert met.backends["emulator"] == {
        "eval_accuracy": met.fixed_point["eval_accuracy"],
        "eval_agreement_with_float": met.fixed_point["eval_agreement_with_float"],
    }
    assert set(met.backends["onnx"]) == {"eval_accuracy", "eval_agreement_with_float"}


def test_two_builds_with_the_same_created_are_byte_identical(work: Path, tmp_path: Path) -> None:
    """Every model file is deterministic: builds two seconds apart with one `created` give the same bytes."""
    key = work / "keys/release.key"
    a = build_run_bundle(work / "run", "kws", "2.0.0", key, tmp_path / "a.ekb", created=CREATED).path
    time.sleep(2.1)  # zip dates have two-second resolution, HDF5 times one second
    b = build_run_bundle(work / "run", "kws", "2.0.0", key, tmp_path / "b.ekb", created=CREATED).path
    assert a.read_bytes() == b.read_bytes()


def test_every_bad_argument_is_reported_at_once(work: Path, tmp_path: Path) -> None:
    """No best.npz, a public key as --key, a version that is not semver and an existing --out: one error."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(work / "run/run.json", run / "run.json")
    out = tmp_path / "exists.ekb"
    out.write_bytes(b"old")
    with pytest.raises(BundleBuildError) as exc:
        build_run_bundle(run, "kws", "1.0", work / "keys/release.pub", out)
    text = str(exc.value)
    assert len(exc.value.problems) == 4
    assert "best.npz is missing" in text and "not an Ed25519 private key" in text
    assert "version must be semantic" in text and "already exists" in text and "--force" in text
    assert out.read_bytes() == b"old"


def test_a_key_readable_by_others_is_refused(work: Path, tmp_path: Path) -> None:
    """A private key with group/other permissions is refused with the chmod that fixes it."""
    key = tmp_path / "open.key"
    key.write_bytes(SigningKey.generate().to_pem())
    key.chmod(0o644)
    with pytest.raises(BundleBuildError, match="chmod 600"):
        build_run_bundle(work / "run", "kws", "1.0.0", key, tmp_path / "x.ekb")
    assert not (tmp_path / "x.ekb").exists()


def test_force_overwrites_and_out_may_be_a_directory(work: Path, tmp_path: Path) -> None:
    """--out DIR writes NAME-VERSION.ekb there, and force replaces an existing bundle."""
    key = work / "keys/release.key"
    path = build_run_bundle(work / "run", "kws", "1.1.0", key, tmp_path, created=CREATED).path
    assert path == tmp_path / "kws-1.1.0.ekb"
    path.write_bytes(b"stale")
    with pytest.raises(BundleBuildError, match="already exists"):
        build_run_bundle(work / "run", "kws", "1.1.0", key, tmp_path)
    build_run_bundle(work / "run", "kws", "1.1.0", key, tmp_path, force=True)
    assert open_bundle(path, [work / "keys/release.pub"]).manifest.version == "1.1.0"


def test_heavy_clipping_and_a_missing_front_end_are_warned(work: Path, tmp_path: Path) -> None:
    """A low percentile clips weights; a run without a front-end spec gets a tagged stand-in; both warn."""
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    info = json.loads((run / "run.json").read_text())
    info["frontend"] = None
    (run / "run.json").write_text(json.dumps(info))
    result = build_run_bundle(
        run, "kws", "1.0.0", work / "keys/release.key", tmp_path / "b.ekb", percentile=50.0
    )
    assert any("clipped" in w and "hidden0" in w for w in result.warnings)
    assert any("no front-end spec" in w for w in result.warnings)
    m = open_bundle(result.path, [work / "keys/release.pub"]).manifest
    assert m.frontend == {"type": "edgekws.spike_input", "format_version": 1, "num_channels": C, "dt_ms": 1.0}
    assert m.quantization is not None and m.quantization["clipped_weights"] > 0
    assert m.metrics.fixed_point["clipped_weights"] == m.quantization["clipped_weights"]


def test_eval_data_of_another_shape_is_refused(work: Path, tmp_path: Path) -> None:
    """--eval-data with other channels or classes is refused before anything is written."""
    rasters = [np.zeros((T, C + 1), np.uint8)] * 3
    other = SpikeDataset.from_raster(rasters, [0, 1, 2], 0.001, ["a", "b", "c"])
    with pytest.raises(BundleBuildError, match="9 channels") as exc:
        build_run_bundle(
            work / "run", "kws", "1.0.0", work / "keys/release.key", tmp_path / "x.ekb", eval_data=other
        )
    assert "3 classes" in str(exc.value)
    assert not (tmp_path / "x.ekb").exists()


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_generate_bundle_verify(work: Path, tmp_path: Path) -> None:
    """`keys generate`, `bundle RUN …` and `bundle verify` work end to end, with a readable summary."""
    code, out = _cli("keys", "generate", "--out", tmp_path / "k", "--name", "ci")
    assert code == 0, out
    code, out = _cli(
        "bundle", work / "run", "--name", "n", "--version", "1.0.0", "--key", tmp_path / "k/ci.key",
        "--out", tmp_path / "n.ekb", "--eval-data", work / "test.h5",
    )  # fmt: skip
    assert code == 0, out
    key_id = SigningKey.from_bytes((tmp_path / "k/ci.key").read_bytes()).key_id
    assert key_id in out and "model/netx.h5" in out and "eval_accuracy" in out
    code, out = _cli("bundle", "verify", tmp_path / "n.ekb", "--trust", tmp_path / "k/ci.pub")
    assert code == 0 and out.startswith("OK n 1.0.0"), out


def test_cli_out_folder_gets_the_canonical_name(work: Path, tmp_path: Path) -> None:
    """`--out dist/` writes dist/NAME-VERSION.ekb (dist created) and says so; `--out dist2` is the file."""
    args = ["bundle", work / "run", "--name", "n", "--version", "1.0.0", "--key", work / "keys/release.key"]
    code, out = _cli(*args, "--out", f"{tmp_path}/dist/")
    assert code == 0, out
    assert (tmp_path / "dist/n-1.0.0.ekb").is_file()
    assert f"\nwrote {tmp_path}/dist/n-1.0.0.ekb " in out, out
    code, out = _cli(*args, "--out", tmp_path / "dist2", "--json")
    assert code == 0 and json.loads(out)["path"] == str(tmp_path / "dist2") and (tmp_path / "dist2").is_file()
    code, out = _cli(*args, "--out", f"{tmp_path}/dist2/")
    assert code == 1 and "is a file, not a folder" in out, out


def test_cli_json_and_clear_errors(work: Path, tmp_path: Path) -> None:
    """--json prints sizes, key id and metrics; a second build to the same file fails with the reason."""
    args = ["bundle", work / "run", "--name", "n", "--version", "1.0.0", "--key", work / "keys/release.key",
            "--out", tmp_path / "n.ekb", "--created", CREATED]  # fmt: skip
    code, out = _cli(*args, "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["size"] == (tmp_path / "n.ekb").stat().st_size
    assert set(summary["files"]) == {
        "model/float.npz",
        "model/model.nir",
        "model/model.onnx",
        "model/netx.h5",
    }
    assert summary["metrics"]["float"]["train_accuracy"] > 0 and len(summary["key_id"]) == 16
    code, out = _cli(*args)
    assert code == 1 and "already exists" in out


def test_the_agent_classifies_audio_with_the_bundle(work: Path, built: Path, tmp_path: Path) -> None:
    """`edgekws-agent classify` loads the built bundle (front-end from the manifest) on emulator and ONNX."""
    import soundfile as sf

    t = np.arange(16000) / 16000
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    for backend in ("emulator", "onnx"):
        result = CliRunner().invoke(
            agent_main,
            ["classify", "--bundle", str(built), "--trust", str(work / "keys/release.pub"),
             "--backend", backend, str(tmp_path / "tone.wav"), "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        decision = json.loads(result.output.strip().splitlines()[-1])
        assert decision["backend"] == backend and decision["label"] in ("low", "high")

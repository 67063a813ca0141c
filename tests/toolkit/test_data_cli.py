"""`edgekws data synth | info | plot`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekws.toolkit._cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "corpus"
    result = CliRunner().invoke(
        main,
        ["data", "synth", "--task", "commands", "--out", str(out), "--per-class", "3", "--classes", "yes,no",
         "--seed", "5", "--workers", "1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["utterances"] == 6 and summary["splits"] == {"train": 2, "val": 2, "test": 2}
    return out


@pytest.mark.parametrize(
    "command", [[], ["synth"], ["import"], ["info"], ["plot"], ["stream"], ["stretches"]]
)
def test_help_has_example(command: list[str]) -> None:
    """Every data command's help shows an Example."""
    result = CliRunner().invoke(main, ["data", *command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_synth_with_delay_taps_makes_the_same_corpus_tapped(corpus: Path, tmp_path: Path) -> None:
    """`data synth --delay-taps-ms` with the same seed: the same clips, encoded by the front-end with taps
    (what with_delay_taps makes of the plain corpus, bit for bit), the taps in the manifest's front-end."""
    from edgekws.toolkit.data import read_shd

    out = tmp_path / "tapped"
    result = CliRunner().invoke(
        main,
        ["data", "synth", "--task", "commands", "--out", str(out), "--per-class", "3", "--classes", "yes,no",
         "--seed", "5", "--workers", "1", "--delay-taps-ms", "0,50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["frontend"]["delay_taps_ms"] == [0.0, 50.0]
    for split in ("train", "test"):
        plain, tapped = read_shd(corpus / f"{split}.h5"), read_shd(out / f"{split}.h5")
        assert tapped.num_channels == 256 and tapped.labels.tolist() == plain.labels.tolist()
        steps = int(plain.attrs["num_steps"])
        assert (tapped.bin(0.001, steps) == plain.with_delay_taps((0, 50)).bin(0.001, steps)).all()


def test_synth_refuses_non_empty_out(corpus: Path) -> None:
    """synth into a non-empty folder fails with a message naming --force, and leaves the folder alone."""
    before = (corpus / "manifest.json").read_bytes()
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(corpus), "--per-class", "1"])
    assert result.exit_code != 0 and "--force" in result.output
    assert (corpus / "manifest.json").read_bytes() == before


def test_synth_rejects_unknown_class(tmp_path: Path) -> None:
    """An unknown --classes entry is an error that lists the known classes."""
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "x"), "--classes", "maybe"])
    assert result.exit_code != 0 and "unknown class" in result.output and "seven" in result.output


def test_info_on_corpus_h5_and_wav_folder(corpus: Path) -> None:
    """info summarises a corpus folder, one of its .h5 files and its WAV folder, as text and as JSON."""
    result = CliRunner().invoke(main, ["data", "info", str(corpus)])
    assert result.exit_code == 0, result.output
    assert "synth data set" in result.output and "spikes/sample" in result.output and "yes" in result.output
    result = CliRunner().invoke(main, ["data", "info", str(corpus / "test.h5"), "--json"])
    summary = json.loads(result.output)
    assert summary["kind"] == "shd" and summary["splits"]["test"]["per_class"] == {"yes": 1, "no": 1}
    assert summary["splits"]["test"]["spikes_per_sample"]["mean"] > 0
    result = CliRunner().invoke(main, ["data", "info", str(corpus / "wavs"), "--json", "--sample", "2"])
    summary = json.loads(result.output)
    assert summary["kind"] == "recordings" and summary["splits"]["test"]["samples"] == 2
    assert summary["splits"]["train"]["spikes"]["encoded_files"] == 2


def test_info_rejects_unknown_folder(tmp_path: Path) -> None:
    """info on a folder that holds no data set says what it accepts."""
    result = CliRunner().invoke(main, ["data", "info", str(tmp_path)])
    assert result.exit_code != 0 and "not a supported data set" in result.output


def test_plot_writes_png(corpus: Path, tmp_path: Path) -> None:
    """plot writes a PNG for a corpus sample (with its waveform) and for a bare .h5 sample."""
    for args, name in (
        ([str(corpus), "--split", "test", "--index", "1"], "a.png"),
        ([str(corpus / "val.h5")], "b.png"),
    ):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["data", "plot", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    result = CliRunner().invoke(
        main, ["data", "plot", str(corpus), "--index", "1", "--out", f"{tmp_path}/p/"]
    )
    written = tmp_path / "p" / f"{corpus.name}-train-1.png"
    assert result.exit_code == 0 and result.output == f"wrote {written}\n" and written.is_file()
    result = CliRunner().invoke(
        main, ["data", "plot", str(corpus), "--index", "99", "--out", str(tmp_path / "c.png")]
    )
    assert result.exit_code != 0 and "index must be in 0..1" in result.output

"""Labelled keyword streams (`edgekws data stream`): real espeak-ng words, truth that matches the audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgekws.toolkit._cli import main
from edgekws.toolkit.data import synthesize
from edgekws.toolkit.data._stream import RATE, StreamError, build_stream, read_truth, write_stream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "corpus"
    synthesize(out, "digits", per_class=5, seed=3, workers=1, classes=["en-one", "de-zwei"], fillers=True)
    return out


def test_keyword_spans_hold_the_words_and_the_stream_is_deterministic(corpus: Path) -> None:
    """Keyword spans (never a filler class) are loud speech; the same seed gives the same stream."""
    a = build_stream(corpus, "test", 0.4, seed=1, background=False)
    b = build_stream(corpus, "test", 0.4, seed=1, background=False)
    assert np.array_equal(a.audio, b.audio) and a.segments == b.segments
    truth = a.truth()
    assert truth and {k.label for k in truth} <= {"en-one", "de-zwei"}
    assert a.audio.dtype == np.float32 and a.duration_s == pytest.approx(24.0)
    for k in truth:
        inside = a.audio[round(k.start_s * RATE) : round(k.end_s * RATE)]
        assert np.sqrt(np.mean(inside.astype(np.float64) ** 2)) > 0.01
    quiet = np.ones(a.audio.size, bool)
    for s in a.segments:
        if s.kind != "silence":
            quiet[round(s.start_s * RATE) - 600 : round(s.end_s * RATE) + 600] = False
    assert np.abs(a.audio[quiet]).max() < 1e-6, "outside the events the noise-free stream is silent"
    noisy = build_stream(corpus, "test", 0.4, seed=1)
    assert noisy.segments == a.segments and not np.array_equal(noisy.audio, a.audio)
    assert build_stream(corpus, "test", 0.4, seed=2).segments != a.segments


def test_event_p_without_distractors_has_only_keywords_and_silence(corpus: Path) -> None:
    """event_p decides the kinds of events; a kind with no chance never occurs."""
    s = build_stream(corpus, "val", 0.3, seed=0, event_p={"keyword": 0.8, "silence": 0.2})
    assert {seg.kind for seg in s.segments} <= {"keyword", "silence"} and s.truth()
    with pytest.raises(StreamError, match="event_p"):
        build_stream(corpus, "val", 0.3, seed=0, event_p={"keyword": 1.0, "music": 0.5})


def test_write_stream_round_trips_the_ground_truth(corpus: Path, tmp_path: Path) -> None:
    """The WAV is 16 kHz 16-bit and the JSON's keyword spans read back exactly."""
    s = build_stream(corpus, "test", 0.2, seed=4)
    truth = write_stream(s, tmp_path / "s.wav")
    audio, rate = sf.read(tmp_path / "s.wav", dtype="float32")
    assert rate == RATE and sf.info(tmp_path / "s.wav").subtype == "PCM_16"
    assert np.abs(audio - s.audio).max() <= 1.0 / 32767
    assert read_truth(truth) == s.truth()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.wav"]


def test_bad_corpus_and_truth_files_are_refused(tmp_path: Path) -> None:
    """A folder without a manifest, and a JSON that is not a stream truth, get errors naming the file."""
    with pytest.raises(StreamError, match="edgekws data synth"):
        build_stream(tmp_path, "test", 1.0, seed=0)
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an edgekws stream"):
        read_truth(tmp_path / "x.json")


def test_cli_writes_wav_and_truth(corpus: Path, tmp_path: Path) -> None:
    """`edgekws data stream --json` writes both files and reports the composition."""
    out = tmp_path / "cli.wav"
    result = CliRunner().invoke(
        main,
        ["data", "stream", str(corpus), "--out", str(out), "--minutes", "0.2", "--no-distractors", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["distractors"] == 0 and summary["duration_s"] == pytest.approx(12.0)
    assert out.exists() and Path(summary["truth"]).exists()
    assert len(read_truth(Path(summary["truth"]))) == summary["keywords"]
    args = ["data", "stream", str(corpus), "--out", f"{tmp_path}/streams/", "--minutes", "0.1", "--seed", "3"]
    result = CliRunner().invoke(main, args)
    wav = tmp_path / "streams/stream-test-3.wav"
    assert result.exit_code == 0 and result.output.startswith(f"wrote {wav} ("), result.output
    assert wav.is_file() and wav.with_suffix(".json").is_file()

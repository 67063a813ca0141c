"""Stream training end to end: stretches from a corpus and from recordings, then Eventprop on them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekws.agent import DetectionConfig
from edgekws.toolkit._cli import main
from edgekws.toolkit.data import read_shd, synthesize
from edgekws.toolkit.data._recordings import scan
from edgekws.toolkit.data._stream import RATE, Pools, StreamError, compose, corpus_pools, recording_pools
from edgekws.toolkit.data._stretches import StretchPlan, encode_stretches, is_stream_set, stream_spans

KEYWORDS = ["en-one", "de-zwei"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stretch") / "corpus"
    synthesize(out, "digits", per_class=6, seed=2, workers=1, classes=KEYWORDS, fillers=True)
    return out


def test_stretches_hold_their_keywords_and_are_deterministic(corpus: Path) -> None:
    """A stretch's spans are its keywords' speech (loud), within the stretch, of the keyword classes; the
    same seed gives the same events whatever the worker count; classes end with _background_."""
    pools = corpus_pools(corpus, "train", "unknown")
    assert pools.distractors and all(c.label for c in pools.distractors)
    plan = StretchPlan(seconds=8.0, event_p={"keyword": 0.6, "distractor": 0.3, "silence": 0.1})
    frontend = json.loads((corpus / "manifest.json").read_text())["frontend"]
    a = encode_stretches(pools, KEYWORDS, frontend, 3, plan, seed=4, split="train", workers=1)
    b = encode_stretches(pools, KEYWORDS, frontend, 3, plan, seed=4, split="train", workers=2)
    assert is_stream_set(a) and a.class_names == [*KEYWORDS, "_background_"]
    assert all(np.array_equal(x, y) for x, y in zip(a.times, b.times, strict=True))
    spans = stream_spans(a)
    assert sum(len(s) for s in spans) >= 3
    for sample in spans:
        for cls, start, end in sample:
            assert cls in (0, 1) and 0 < start < end < 8.0
    assert a.attrs["num_steps"] == 8000 and max(float(t.max()) for t in a.times) < 8.0


def test_recordings_give_keyword_and_distractor_pools_by_speaker(tmp_path: Path, corpus: Path) -> None:
    """Labelled recordings (a CSV as real-speech/labels.csv): the keyword words are keywords, the other
    words distractors, only of the speakers asked for; their speech spans are found in the audio."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    rows = []
    for u in manifest["utterances"][:40]:
        label = {"en-one": "one", "de-zwei": "zwei"}.get(u["class"], "house")
        rows.append({"file": str(corpus / u["wav"]), "label": label, "speaker": u["speaker"], "source": "t"})
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "speaker", "source"])
        writer.writeheader()
        writer.writerows(rows)
    recordings = scan(tmp_path / "labels.csv")
    speakers = sorted({r.speaker for r in recordings})[:3]
    pools = recording_pools(recordings, ["one", "zwei"], speakers)
    assert {c.label for c in pools.keywords} <= {"one", "zwei"} and pools.keywords
    assert {c.speaker for c in (*pools.keywords, *pools.distractors)} <= set(speakers)
    audio, s0, s1 = pools.keywords[0].render(np.random.default_rng(0))
    assert 0 <= s0 < s1 <= audio.size / RATE
    loud = audio[round(s0 * RATE) : round(s1 * RATE)]
    assert np.sqrt(np.mean(loud**2)) > 3 * np.sqrt(np.mean(audio[: max(1, round(s0 * RATE))] ** 2) + 1e-12)
    with pytest.raises(StreamError, match="no recording of"):
        recording_pools(recordings, ["seven"], speakers)


def test_babble_needs_distractors_and_noise_kinds_are_checked(corpus: Path) -> None:
    pools = corpus_pools(corpus, "val", "none")
    rng = np.random.default_rng(0)
    with pytest.raises(StreamError, match="babble"):
        compose(pools, 5.0, rng, event_p={"keyword": 1.0}, noise_p={"babble": 1.0})
    with pytest.raises(StreamError, match="noise_p"):
        compose(pools, 5.0, rng, event_p={"keyword": 1.0}, noise_p={"rain": 1.0})
    s = compose(Pools(pools.keywords), 6.0, rng, event_p={"keyword": 1.0}, noise_p={"brown": 1.0})
    assert s.truth() and {n["type"] for n in s.noise} == {"brown"}


def test_every_noise_kind_fills_a_segment_cut_short_by_the_stretch_end(corpus: Path) -> None:
    """The last noise segment of a stretch may be a few samples long: every kind fills it exactly and
    finitely (brown noise's 100 ms drift filter failed on segments under 100 ms, pink noise on 1 sample)."""
    from edgekws.toolkit.data._stream import _noise

    pools = corpus_pools(corpus, "train", "unknown")
    rng = np.random.default_rng(3)

    def talk() -> np.ndarray:
        return pools.distractors[0].render(rng)[0]

    for kind in ("white", "pink", "brown", "babble"):
        for n in (1, 2, 737, RATE // 10, RATE):
            x = _noise(kind, n, rng, talk)
            assert x.shape == (n,) and np.isfinite(x).all(), (kind, n)
            if n >= RATE // 10 and kind != "babble":  # babble may not have started in a short segment
                assert 0.9 < x.std() < 1.1, (kind, n)


def test_stretches_with_delay_taps_are_the_plain_stretches_tapped(corpus: Path, tmp_path: Path) -> None:
    """`data stretches --delay-taps-ms` encodes each whole stretch with the corpus' front-end plus taps: the
    same stretches as without, each unit's spikes also on the delayed lines (bit for bit what with_delay_taps
    makes of the plain set, taps carried across words), and the taps recorded for the model that trains on
    them; bad taps are named before any work."""
    args = ["data", "stretches", "--corpus", str(corpus), "--count", "2", "--val-count", "0",
            "--seconds", "5", "--workers", "1"]  # fmt: skip
    for name, extra in (("plain", []), ("tapped", ["--delay-taps-ms", "0,25,50"])):
        made = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name), *extra])
        assert made.exit_code == 0, made.output
    plain, tapped = read_shd(tmp_path / "plain" / "train.h5"), read_shd(tmp_path / "tapped" / "train.h5")
    assert tapped.num_channels == 3 * plain.num_channels and stream_spans(tapped) == stream_spans(plain)
    assert tapped.attrs["frontend"]["delay_taps_ms"] == [0.0, 25.0, 50.0]
    manifest = json.loads((tmp_path / "tapped" / "manifest.json").read_text())
    assert manifest["frontend"]["delay_taps_ms"] == [0.0, 25.0, 50.0]
    assert np.array_equal(tapped.bin(0.001, 5000), plain.with_delay_taps((0, 25, 50)).bin(0.001, 5000))
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--delay-taps-ms", "0,-5"])
    assert bad.exit_code == 2 and "--delay-taps-ms" in bad.output and not (tmp_path / "bad").exists()


def test_stream_training_runs_and_validates_on_stretches(corpus: Path, tmp_path: Path) -> None:
    """`edgekws data stretches` then `edgekws train` on them: the run trains on time-resolved targets,
    validates by detection on whole stretches (recall, false accepts per hour), and refuses clip-only
    settings for stretches."""
    data = tmp_path / "stretches"
    made = CliRunner().invoke(
        main,
        ["data", "stretches", "--corpus", str(corpus), "--out", str(data), "--count", "4", "--val-count", "2",
         "--seconds", "6", "--workers", "1", "--json"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    summary = json.loads(made.output)
    assert summary["classes"] == [*KEYWORDS, "_background_"] and summary["splits"]["train"]["stretches"] == 4
    train = read_shd(data / "train.h5")
    assert is_stream_set(train) and len(train) == 4
    config = tmp_path / "cfg.toml"
    config.write_text("hidden = [16]\nepochs = 2\nbatch_size = 2\nstream_window_ms = 300.0\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(data / "train.h5"), "--val", str(data / "val.h5"), "--out", str(run),
         "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    for key in ("val_recall", "val_false_accepts_per_hour", "val_frame_accuracy", "val_window_accuracy"):
        assert key in metrics[-1]
    assert np.isfinite(metrics[-1]["train_loss"]) and np.isfinite(metrics[-1]["val_loss"])
    scored = {}
    for backend in ("float", "emulator", "onnx"):
        ev = CliRunner().invoke(
            main, ["eval", str(run), "--data", str(data / "val.h5"), "--backend", backend, "--json"]
        )
        assert ev.exit_code == 0, ev.output
        scored[backend] = json.loads(ev.stdout)
    truth = sum(len(s) for s in stream_spans(read_shd(data / "val.h5")))
    for backend, r in scored.items():
        assert r["backend"] == backend and r["stretches"] == 2 and r["seconds"] == 12.0
        assert r["keywords"] == truth and r["hits"] + r["misses"] == truth
        assert r["detection"]["mode"] == "always_on" and "accuracy" not in r
    text = CliRunner().invoke(main, ["eval", str(run), "--data", str(data / "val.h5")])
    assert text.exit_code == 0 and "2 stretches (12 s) on float, never reset: recall" in text.output
    blend = tmp_path / "blend.toml"
    blend.write_text('hidden = [16]\nepochs = 1\naugment = "shift-blend"\n')
    refused = CliRunner().invoke(
        main,
        ["train", "--data", str(data / "train.h5"), "--out", str(tmp_path / "r2"), "--config", str(blend)],
    )
    assert refused.exit_code != 0 and "stretches take 'none' or 'shift'" in refused.output


def test_an_always_on_bundle_carries_tuned_settings_and_runs_in_the_agent(
    corpus: Path, tmp_path: Path
) -> None:
    """The bundle of a stream run says always_on, with decision settings tuned on the run's validation
    stretches by the fixed-point emulator, detection metrics, and the agent's pipeline runs it always-on
    (and refuses to classify a recording with it)."""
    from edgekws.agent import Pipeline
    from edgekws.agent.backends import EmulatorBackend
    from edgekws.packaging import load_public_key, open_bundle, write_keypair
    from edgekws.toolkit._bundle_build import build_run_bundle

    data = tmp_path / "s"
    args = ["data", "stretches", "--corpus", str(corpus), "--out", str(data), "--count", "2", "--val-count",
            "2", "--seconds", "5", "--workers", "1"]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    (tmp_path / "c.toml").write_text("hidden = [12]\nepochs = 1\nbatch_size = 2\n")
    train = ["train", "--data", str(data / "train.h5"), "--val", str(data / "val.h5"), "--out",
             str(tmp_path / "run"), "--config", str(tmp_path / "c.toml")]  # fmt: skip
    assert CliRunner().invoke(main, train).exit_code == 0
    write_keypair(tmp_path / "keys", "t")
    built = build_run_bundle(
        tmp_path / "run", "kws-on", "1.0.0", tmp_path / "keys" / "t.key", tmp_path / "b.ekb",
        eval_data=data / "val.h5",
    )  # fmt: skip
    det = built.manifest["detection"]
    assert built.manifest["format_version"] == 2 and det["mode"] == "always_on"
    assert "2 stretches (10 s)" in det["tuned_on"] and det["background_label"] == "_background_"
    assert {"tune_recall", "eval_false_accepts_per_hour"} <= set(built.manifest["metrics"]["fixed_point"])
    bundle = open_bundle(tmp_path / "b.ekb", [load_public_key(tmp_path / "keys" / "t.pub")])
    pipeline = Pipeline.open(bundle, [EmulatorBackend.Config(type="emulator")], DetectionConfig())
    try:
        assert pipeline.spotter is not None and pipeline.spotter.mode == "always_on"
        assert pipeline.spotter.settings.threshold == det["threshold"]
        with pytest.raises(ValueError, match="trained on streams"):
            pipeline.classify(np.zeros(16000, np.float32))
    finally:
        pipeline.close()


def test_stretches_with_a_noise_floor_keep_the_words_and_drop_the_noise(corpus: Path, tmp_path: Path) -> None:
    """`data stretches --noise-floor 10`: the same stretches encoded with the per-band noise floor (recorded
    in the spec the model will carry); away from the words far fewer spikes (the steady background noise
    no longer drives the units), inside the keywords most of them are kept."""
    args = ["data", "stretches", "--corpus", str(corpus), "--count", "2", "--val-count", "0",
            "--seconds", "12", "--workers", "1", "--snr-db", "10", "20"]  # fmt: skip
    for name, extra in (("plain", []), ("floor", ["--noise-floor", "10"])):
        made = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name), *extra])
        assert made.exit_code == 0, made.output
    plain, floor = read_shd(tmp_path / "plain" / "train.h5"), read_shd(tmp_path / "floor" / "train.h5")
    assert floor.attrs["frontend"]["noise_floor_rise_db_per_s"] == 10.0
    assert "noise_floor_rise_db_per_s" not in plain.attrs["frontend"]
    assert stream_spans(floor) == stream_spans(plain) and floor.num_channels == plain.num_channels
    inside, outside = np.zeros(2), np.zeros(2)
    for k, data in enumerate((plain, floor)):
        for t, spans in zip(data.times, stream_spans(data), strict=True):
            word = np.zeros(t.shape, bool)
            for _, a, b in spans:
                word |= (t >= a) & (t < b)
            inside[k] += word.sum()
            outside[k] += (~word & (t > 3.0)).sum()  # after the floor has risen to the first noise
    assert inside[0] > 1000 and outside[0] > 1000  # both parts carried real spikes without the floor
    assert inside[1] > 0.8 * inside[0]
    assert outside[1] < 0.2 * outside[0]
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--noise-floor", "-1"])
    assert bad.exit_code == 2 and "--noise-floor" in bad.output and not (tmp_path / "bad").exists()

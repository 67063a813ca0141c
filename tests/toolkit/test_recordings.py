"""The reader of labelled recordings: CSV manifests, Speech Commands and flat folders, splits, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgekws.agent import FrontendSpec, encode
from edgekws.toolkit._cli import main
from edgekws.toolkit.data import DatasetError, SpikeDataset, import_recordings, read_recordings, read_shd
from edgekws.toolkit.data import _recordings as rec

FILES = {
    # word/file: (frequency Hz, seconds, sample rate, channels, format)
    "yes/aa11_nohash_0.wav": (440.0, 1.0, 16000, 1, "WAV"),
    "yes/aa11_nohash_1.flac": (460.0, 1.0, 44100, 1, "FLAC"),  # FLAC at 44.1 kHz: resampled
    "yes/bb22_nohash_0.wav": (480.0, 0.6, 16000, 1, "WAV"),  # shorter than a second: padded
    "yes/cc33_nohash_0.wav": (500.0, 1.0, 8000, 1, "WAV"),  # 8 kHz: resampled
    "no/aa11_nohash_0.wav": (900.0, 1.0, 16000, 2, "WAV"),  # stereo: down-mixed
    "no/bb22_nohash_0.flac": (950.0, 1.0, 8000, 1, "FLAC"),
    "no/dd44_nohash_0.wav": (1000.0, 1.2, 16000, 1, "WAV"),  # longer: cropped
    "up/aa11_nohash_0.wav": (1500.0, 1.0, 16000, 1, "WAV"),
    "_unknown_/ee55_nohash_0.wav": (700.0, 1.0, 16000, 1, "WAV"),
}


def _tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    envelope = np.clip(np.minimum(t, seconds - t) * 20, 0, 1)
    x = (0.3 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "sc"
    for rel, (freq, seconds, rate, channels, fmt) in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / rel, _tone(freq, seconds, rate, channels), rate, format=fmt, subtype="PCM_16")
    (folder / "_background_noise_").mkdir()
    noise = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    sf.write(folder / "_background_noise_" / "white.wav", noise, 16000)
    (folder / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.flac\n")
    (folder / "testing_list.txt").write_text("no/dd44_nohash_0.wav\nyes/cc33_nohash_0.wav\n")
    return folder


def test_speaker_rules() -> None:
    """Presets and templates turn file names into speakers (and labels); one lacking {speaker} is refused."""
    sc = rec.compile_rule("speech-commands")
    assert sc.match("0a7c2a8d_nohash_3").group("speaker") == "0a7c2a8d"
    assert sc.match("en-gb+f3_nohash_0").group("speaker") == "en-gb+f3"
    fsdd = rec.compile_rule("fsdd").match("7_george_12")
    assert fsdd is not None and fsdd.group("label") == "7" and fsdd.group("speaker") == "george"
    custom = rec.compile_rule("{speaker}-take{n}").match("anna-take2")
    assert custom is not None and custom.group("speaker") == "anna"
    with pytest.raises(DatasetError, match="speaker"):
        rec.compile_rule("{label}_{n}")


def test_speech_commands_layout(root: Path) -> None:
    """Label folders, split lists (others train), _unknown_ clips and background noise are recognised."""
    recs = rec.scan(root)
    clips = [r for r in recs if r.label != rec.BACKGROUND]
    assert len(clips) == len(FILES)
    by_file = {r.file: r for r in recs}
    assert (
        by_file["yes/aa11_nohash_1.flac"].speaker == "aa11"
        and by_file["yes/aa11_nohash_1.flac"].split == "train"
    )
    assert (
        by_file["no/bb22_nohash_0.flac"].split == "val" and by_file["yes/cc33_nohash_0.wav"].split == "test"
    )
    assert by_file["_unknown_/ee55_nohash_0.wav"].label == "_unknown_"
    assert [r.file for r in recs if r.label == rec.BACKGROUND] == ["_background_noise_/white.wav"]
    train = read_recordings(root, "train")
    assert train.class_names == ["no", "up", "yes", "_unknown_"]
    assert train.attrs["files"] == [
        "_unknown_/ee55_nohash_0.wav",
        "no/aa11_nohash_0.wav",
        "up/aa11_nohash_0.wav",
        "yes/aa11_nohash_0.wav",
        "yes/aa11_nohash_1.flac",
    ]
    np.testing.assert_array_equal(train.labels, [3, 0, 1, 2, 2])
    assert train.metadata("speaker").tolist() == ["ee55", "aa11", "aa11", "aa11", "aa11"]
    assert train.metadata("source").tolist() == ["sc"] * 5
    assert len(read_recordings(root, "validation")) == 2 and len(read_recordings(root, "testing")) == 2


def test_events_are_the_front_end_encoding(root: Path) -> None:
    """Each sample is the front-end encoding of its clip, any rate resampled, stereo averaged, padded or
    cropped to 1.0 s."""
    spec = FrontendSpec()
    ds = read_recordings(root, classes=["yes", "no", "up", "_unknown_"])
    files = ds.attrs["files"]

    def encoded(rel: str) -> np.ndarray:
        return ds.bin(0.001, 1000, [files.index(rel)])[0]

    long_clip, _ = sf.read(root / "no/dd44_nohash_0.wav", dtype="float32")
    np.testing.assert_array_equal(encoded("no/dd44_nohash_0.wav"), encode(long_clip[:16000], 16000, spec))
    for rel, rate in (("yes/cc33_nohash_0.wav", 8000), ("yes/aa11_nohash_1.flac", 44100)):
        audio, sr = sf.read(root / rel, dtype="float32")
        assert sr == rate
        np.testing.assert_array_equal(encoded(rel), encode(audio, rate, spec))
    stereo, _ = sf.read(root / "no/aa11_nohash_0.wav", dtype="float32")
    assert stereo.shape == (16000, 2)
    np.testing.assert_array_equal(encoded("no/aa11_nohash_0.wav"), encode(stereo.mean(axis=1), 16000, spec))
    short, _ = sf.read(root / "yes/bb22_nohash_0.wav", dtype="float32")
    padded = np.concatenate([short, np.zeros(16000 - len(short), dtype=np.float32)])
    np.testing.assert_array_equal(encoded("yes/bb22_nohash_0.wav"), encode(padded, 16000, spec))
    assert all(len(t) > 0 and t[-1] < 1.0 for t in ds.times)


def test_label_mapping() -> None:
    """Digits name their word, a language prefix is optional, other words map to _unknown_ or are dropped."""
    en = ["zero", "one", "seven", "_unknown_", "_silence_"]
    assert rec.map_label("7", en) == "seven" and rec.map_label(" Zero ", en) == "zero"
    assert rec.map_label("bed", en) == "_unknown_" and rec.map_label("bed", en, "drop") is None
    assert rec.map_label("silence", en) == "_silence_"
    assert rec.map_label("seven", ["en-seven", "de-sieben"]) == "en-seven"
    with pytest.raises(DatasetError, match=r"no _unknown_ class"):
        rec.map_label("bed", ["yes", "no"])
    with pytest.raises(DatasetError, match="not one of the classes"):
        rec.map_label("bed", en, "error")


def _fsdd(tmp_path: Path) -> Path:
    """A flat FSDD-style folder: 3 speakers x digits 0..2 x 2 takes, FLAC at 8 kHz."""
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for s, speaker in enumerate(("george", "jackson", "theo")):
        for digit in range(3):
            for take in range(2):
                tone = _tone(300 + 100 * digit + 10 * s, 0.4 + 0.1 * take, 8000)
                sf.write(folder / f"{digit}_{speaker}_{take}.flac", tone, 8000, format="FLAC")
    return folder


def test_flat_folder_and_csv_manifest(tmp_path: Path) -> None:
    """A flat FSDD folder gives labels and speakers from the file names; a CSV gives them from columns,
    checks the declared rate, and keeps gender and accent per sample."""
    folder = _fsdd(tmp_path)
    ds = read_recordings(folder, classes=["zero", "one", "two"])
    assert len(ds) == 18 and sorted(set(ds.metadata("speaker").tolist())) == ["george", "jackson", "theo"]
    assert ds.class_names[ds.labels[ds.attrs["files"].index("2_theo_1.flac")]] == "two"
    rows = ["file,label,speaker,source,sample_rate,gender,accent"]
    rows += [f"fsdd/{d}_george_{t},{d},fsdd-george,fsdd,8000,male,GRC/Greek".replace(f"_{t},", f"_{t}.flac,")
             for d in range(3) for t in range(2)]  # fmt: skip
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = read_recordings(csv, classes=["zero", "one", "two", "_unknown_"])
    assert len(ds) == 6 and set(ds.metadata("speaker")) == {"fsdd-george"}
    assert set(ds.metadata("accent")) == {"GRC/Greek"} and set(ds.metadata("gender")) == {"male"}
    csv.write_text("\n".join([rows[0], rows[1].replace(",8000,", ",16000,")]) + "\n")
    with pytest.raises(DatasetError, match="manifest says 16000 Hz but the file is 8000 Hz"):
        read_recordings(csv, classes=["zero"])


def test_per_speaker_label_keeps_the_first_recordings(tmp_path: Path) -> None:
    """per_speaker_label (EDGEKWS_SHRINK's recordings cap) keeps the first of each speaker and label."""
    out = tmp_path / "out"
    manifest = import_recordings(
        [_fsdd(tmp_path)], out, ["zero", "one", "two"], per_speaker_label=1, workers=1
    )
    files = sorted(row["file"] for row in manifest["recordings"])
    assert files == sorted(f"{d}_{s}_0.flac" for d in range(3) for s in ("george", "jackson", "theo"))


def test_bad_files_are_all_reported(tmp_path: Path) -> None:
    """Truncated, empty, NaN, missing files and unknown labels are named in one error; none is written."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = _tone(440, 0.5, 16000)
    sf.write(folder / "ok.wav", good, 16000, subtype="PCM_16")
    (folder / "cut.wav").write_bytes((folder / "ok.wav").read_bytes()[:3000])
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    nan = good.copy()
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    csv = tmp_path / "m.csv"
    names = ["ok", "cut", "empty", "nan", "gone"]
    csv.write_text("file,label,speaker\n" + "".join(f"bad/{n}.wav,yes,s{i}\n" for i, n in enumerate(names)))
    with pytest.raises(DatasetError) as err:
        read_recordings(csv, classes=["yes"])
    message = str(err.value)
    assert "4 unreadable recording(s) of 5" in message
    assert "truncated WAV" in message and "empty recording" in message and "NaN" in message
    assert "gone.wav: no such file" in message and "ok.wav" not in message
    out = tmp_path / "out"
    with pytest.raises(DatasetError):
        import_recordings([csv], out, ["yes"], workers=1)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    csv.write_text("file,label,speaker\nbad/ok.wav,maybe,s0\n")
    with pytest.raises(DatasetError, match="'maybe' is not one of the classes"):
        read_recordings(csv, classes=["yes"], unknown="error")
    csv.write_text("path,label\nbad/ok.wav,yes\n")
    with pytest.raises(DatasetError, match="missing file"):
        read_recordings(csv)


def _speakers_by_split(recs: list[rec.Recording]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in recs:
        out.setdefault(r.split, set()).add(r.speaker)
    return out


def test_splits_are_speaker_disjoint(tmp_path: Path) -> None:
    """Explicit lists, fractions and source lists all give speaker-disjoint splits; bad lists are refused."""
    recs = rec.scan(_fsdd(tmp_path))
    explicit = rec.assign_splits(recs, train_speakers=["george", "jackson"], test_speakers=["theo"])
    assert _speakers_by_split(explicit) == {"train": {"george", "jackson"}, "test": {"theo"}}
    rest = rec.assign_splits(recs, train_speakers=["george"], rest="val")
    assert _speakers_by_split(rest) == {"train": {"george"}, "val": {"jackson", "theo"}}
    dropped = rec.assign_splits(recs, test_speakers=["theo"], rest="drop")
    assert _speakers_by_split(dropped) == {"test": {"theo"}}
    for seed in range(5):
        split = _speakers_by_split(rec.assign_splits(recs, fractions=(0.4, 0.3, 0.3), seed=seed))
        assert sum(len(v) for v in split.values()) == 3
        assert not any(split[a] & split[b] for a in split for b in split if a != b)
    with pytest.raises(DatasetError, match="listed for both train and test"):
        rec.assign_splits(recs, train_speakers=["george"], test_speakers=["george"])
    with pytest.raises(DatasetError, match="not in the data"):
        rec.assign_splits(recs, train_speakers=["maria"])
    mixed = [r if r.file != "0_george_0.flac" else type(r)(**{**r.__dict__, "split": "test"}) for r in recs]
    with pytest.raises(DatasetError, match="not speaker-disjoint: george in test\\+train"):
        rec.assign_splits([type(r)(**{**r.__dict__, "split": r.split or "train"}) for r in mixed])


def test_import_writes_split_files_with_metadata_and_silence(root: Path, tmp_path: Path) -> None:
    """import maps labels onto a task, cuts _silence_ from background noise and writes SHD files whose
    samples carry source and speaker; the manifest lists every recording."""
    out = tmp_path / "imported"
    classes = ["yes", "no", "_unknown_", "_silence_"]
    manifest = import_recordings([root], out, classes, task=None, silence=2, workers=2, seed=3)
    assert manifest["splits"] == {"train": 5 + 2, "val": 2 + 2, "test": 2 + 2}
    train = read_shd(out / "train.h5")
    assert train.class_names == classes
    names = [train.class_names[i] for i in train.labels]
    assert names.count("_unknown_") == 2 and names.count("_silence_") == 2  # "up" is unknown here
    speakers = train.metadata("speaker")
    assert speakers is not None and {s for s in speakers if not s.startswith("noise:")} == {"aa11", "ee55"}
    assert set(train.metadata("source")) == {"sc"}
    rows = manifest["recordings"]
    assert len(rows) == 15 and all(r["split"] in ("train", "val", "test") for r in rows)
    silence = [r for r in rows if r["class"] == "_silence_"]
    assert all(0.05 <= r["gain"] <= 1 for r in silence)
    assert json.loads((out / "manifest.json").read_text())["recordings"] == rows
    again = import_recordings([root], tmp_path / "again", classes, silence=2, workers=1, seed=3)
    assert again["recordings"] == rows
    for split in ("train", "val", "test"):
        assert (out / f"{split}.h5").read_bytes() == (tmp_path / "again" / f"{split}.h5").read_bytes()


def test_import_cli_filters_and_splits(tmp_path: Path) -> None:
    """`edgekws data import` with --only, a task and explicit speakers writes speaker-disjoint splits."""
    folder = _fsdd(tmp_path)
    out = tmp_path / "fsdd-out"
    args = ["data", "import", str(folder), "--out", str(out), "--task", "en-digits", "--only", "label=0,1",
            "--train-speakers", "george,jackson", "--workers", "1", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["splits"] == {"train": 8, "val": 0, "test": 4}
    assert summary["speakers"] == {"train": ["george", "jackson"], "val": [], "test": ["theo"]}
    test = read_shd(out / "test.h5")
    assert test.class_names[:2] == ["zero", "one"] and test.class_names[-2:] == ["_unknown_", "_silence_"]
    result = CliRunner().invoke(main, [*args[:-3], "--workers", "1"])
    assert result.exit_code != 0 and "--force" in result.output
    result = CliRunner().invoke(main, ["data", "info", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["kind"] == "import"


def _import_plain_and(tmp_path: Path, extra: list[str]) -> tuple[SpikeDataset, SpikeDataset, list[str]]:
    """`data import` of two FSDD-style digits by george and jackson (train), once plain and once with the
    ``extra`` options: the two train sets and the command's common arguments."""
    folder = _fsdd(tmp_path)
    args = ["data", "import", str(folder), "--task", "en-digits", "--only", "label=0,1", "--train-speakers",
            "george,jackson", "--workers", "1"]  # fmt: skip
    for name, more in (("plain", []), ("other", extra)):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name), *more])
        assert result.exit_code == 0, result.output
    return read_shd(tmp_path / "plain" / "train.h5"), read_shd(tmp_path / "other" / "train.h5"), args


def test_import_cli_encodes_with_delay_taps_and_names_bad_ones(tmp_path: Path) -> None:
    """`data import --delay-taps-ms` encodes with the tapped front-end: 128 x 3 channels, its spec recorded,
    the same spikes as the plain import gains with with_delay_taps; bad taps are named before any work."""
    plain, tapped, args = _import_plain_and(tmp_path, ["--delay-taps-ms", "0,25,50"])
    assert tapped.num_channels == 384 and tapped.attrs["frontend"]["delay_taps_ms"] == [0.0, 25.0, 50.0]
    assert np.array_equal(tapped.bin(0.001, 1000), plain.with_delay_taps((0, 25, 50)).bin(0.001, 1000))
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--delay-taps-ms", "0,2.5,x"])
    assert result.exit_code == 2 and "--delay-taps-ms" in result.output and "0,25,50,100" in result.output
    assert not (tmp_path / "bad").exists()


def test_concat_keeps_metadata_and_refuses_other_classes(tmp_path: Path) -> None:
    """Two imported sets joined keep each sample's speaker, source and accent, re-index SHD's speaker ids,
    and survive a write/read; sets of other classes or front-ends are refused."""
    from edgekws.toolkit.data import write_shd

    folder = _fsdd(tmp_path)
    a = read_recordings(folder, classes=["zero", "one", "two"])
    csv = tmp_path / "m.csv"
    csv.write_text("file,label,speaker,source,accent\nfsdd/0_theo_0.flac,0,fsdd-theo,fsdd,BEL/French\n")
    b = read_recordings(csv, classes=["zero", "one", "two"])
    joined = SpikeDataset.concat([a, b])
    assert len(joined) == len(a) + 1
    names = joined.metadata("speaker")
    assert names is not None and names[-1] == "fsdd-theo" and names[0] == a.metadata("speaker")[0]
    assert joined.attrs["speakers"][int(joined.extra["speaker"][-1])] == "fsdd-theo"
    assert joined.metadata("source").tolist() == ["fsdd"] * len(a) + ["fsdd"]
    assert joined.metadata("accent")[-1] == "BEL/French" and joined.metadata("accent")[0] == ""
    back = read_shd(write_shd(joined, tmp_path / "joined.h5"))
    assert back.metadata("speaker").tolist() == names.tolist()
    with pytest.raises(DatasetError, match="classes"):
        SpikeDataset.concat([a, read_recordings(csv, classes=["zero", "one"])])
    other = read_recordings(csv, classes=["zero", "one", "two"], spec=FrontendSpec(num_bands=16))
    with pytest.raises(DatasetError, match="front-end"):
        SpikeDataset.concat([a, other])


def _spoken_folder(tmp_path: Path) -> Path:
    """FSDD-style folder of real synthesizer speech: 3 espeak-ng speakers x "zero"/"one" x 2 takes, 8 kHz."""
    from edgekws.agent import resample
    from edgekws.toolkit.data import _engines, _synth

    folder = tmp_path / "spoken"
    folder.mkdir()
    voices = {v.id: v for v in _engines.voices("espeak-ng", "en")}
    for speaker, vid in (("anna", "en-us+f2"), ("ben", "en-us+m1"), ("carl", "en-us+m3")):
        for digit, word in enumerate(("zero", "one")):
            for take in range(2):
                said = {"rate": 140 + 20 * take, "pitch": 50, "amplitude": 100}
                audio = resample(_synth.spoken_word(voices[vid], word, said), 16000, 8000)
                sf.write(folder / f"{digit}_{speaker}_{take}.flac", 0.5 * audio / np.abs(audio).max(), 8000)
    return folder


def test_import_copies_augment_the_train_speakers_only(tmp_path: Path) -> None:
    """--copies adds augmented copies of the train split's clips only, each with its drawn parameters in the
    manifest and the sample's metadata; the same seed gives the same copies, another seed other ones; the
    copies' spikes differ from the original's as their augmentation says (a quieter copy spikes less)."""
    folder = _spoken_folder(tmp_path)
    classes = ["zero", "one"]
    kwargs = {"train_speakers": ["anna", "ben"], "rest": "test", "workers": 1, "augment": "recordings"}
    manifest = import_recordings([folder], tmp_path / "a", classes, copies=2, seed=5, **kwargs)
    assert manifest["splits"] == {"train": 8 * 3, "val": 0, "test": 4}
    assert manifest["train_copies"]["copies"] == 2
    copies = [r for r in manifest["recordings"] if "augment" in r]
    assert len(copies) == 16 and {r["split"] for r in copies} == {"train"}
    assert {r["copy"] for r in copies} == {1, 2} and all("noise" in r["augment"] for r in copies)
    train = read_shd(tmp_path / "a" / "train.h5")
    augment = train.metadata("augment")
    assert augment is not None and sum(a != "" for a in augment) == 16
    test = read_shd(tmp_path / "a" / "test.h5")
    assert set(test.metadata("augment")) == {""} and set(test.metadata("speaker")) == {"carl"}
    # the same recordings and seed: byte-identical files; another seed: other draws
    again = import_recordings([folder], tmp_path / "b", classes, copies=2, seed=5, **kwargs)
    assert again["recordings"] == manifest["recordings"]
    assert (tmp_path / "a" / "train.h5").read_bytes() == (tmp_path / "b" / "train.h5").read_bytes()
    other = import_recordings([folder], tmp_path / "c", classes, copies=2, seed=6, **kwargs)
    assert [r.get("augment") for r in other["recordings"]] != [r.get("augment") for r in copies]
    # a copy 30 dB quieter (and nothing else) spikes less than its original
    quiet = rec.Recording(
        path=folder / "0_anna_0.flac", file="0_anna_0.flac", label="0", speaker="anna", source="spoken",
        copy=1, augment={"noise": {"kind": "white", "snr_db": 60.0}, "gain": {"db": -30.0}}, noise_seed=1,
    )  # fmt: skip
    plain = rec.Recording(path=quiet.path, file=quiet.file, label="0", speaker="anna", source="spoken")
    spec = FrontendSpec().to_dict()
    loud_spikes = len(rec._encode_job((plain, spec, 1.0, 0.0))[0])
    quiet_spikes = len(rec._encode_job((quiet, spec, 1.0, 0.0))[0])
    assert 0 < quiet_spikes < 0.8 * loud_spikes


def test_import_copies_babble_needs_other_words_and_usage_is_checked(tmp_path: Path) -> None:
    """Babble for recordings is other speakers' words that are not keywords: an import of digits only has
    none, so a policy with babble is refused naming what to do (nothing written); --copies without
    --augment is a usage error."""
    folder = _fsdd(tmp_path)
    classes = ["zero", "one", "two", "_unknown_"]
    with pytest.raises(DatasetError, match="babble for recordings is spoken by other speakers' words"):
        import_recordings([folder], tmp_path / "x", classes, copies=1, augment="default", workers=1)
    assert not (tmp_path / "x").exists()
    silent = [  # clips labelled "silence" are not talkers either
        rec.Recording(path=folder / "0_theo_0.flac", file="s.flac", label="silence", speaker=s, source="x")
        for s in ("a", "b", "c")
    ]
    with pytest.raises(DatasetError, match="from 0 speaker"):
        rec.augment_copies(silent, "default", 1, 0, classes=classes)
    result = CliRunner().invoke(
        main, ["data", "import", str(folder), "--out", str(tmp_path / "y"), "--copies", "1"]
    )
    assert result.exit_code != 0 and "--augment" in result.output


def test_import_copies_babble_is_other_speakers_other_words(tmp_path: Path) -> None:
    """With "one" as the other word (``_unknown_``), babble copies of the "zero" clips mix 2-3 recordings of
    "one" by other train speakers (never a test speaker, never a keyword), recorded in the manifest with
    their offsets; the same seed draws the same talkers; the babble is heard (at 0 dB SNR a copy spikes
    more than the same copy at 60 dB)."""
    folder = _spoken_folder(tmp_path)
    classes = ["zero", "_unknown_"]
    off = ("formant_p", "pitch_p", "tempo_p", "room_p", "band_p", "eq_p", "gain_p", "clip_p")
    policy = {"noise_weights": [0.0, 0.0, 1.0], "babble_talkers": [2, 3], **dict.fromkeys(off, 0.0)}
    kwargs = {"train_speakers": ["anna", "ben"], "rest": "test", "workers": 1, "augment": policy, "seed": 3}
    manifest = import_recordings([folder], tmp_path / "a", classes, copies=1, **kwargs)
    copies = [r for r in manifest["recordings"] if "augment" in r]
    assert len(copies) == 8 and {r["augment"]["noise"]["kind"] for r in copies} == {"babble"}
    for r in copies:
        voices = r["augment"]["noise"]["voices"]
        assert 2 <= len(voices) == r["augment"]["noise"]["talkers"] <= 3
        assert {v["speaker"] for v in voices} <= {"anna", "ben"} - {r["speaker"]}
        assert all(v["file"].startswith("1_") and -0.3 <= v["offset_s"] <= 0.6 for v in voices)
    again = import_recordings([folder], tmp_path / "b", classes, copies=1, **kwargs)
    assert again["recordings"] == manifest["recordings"]
    voices = copies[0]["augment"]["noise"]["voices"]
    spec = FrontendSpec().to_dict()
    spikes = {}
    for snr in (0.0, 60.0):
        copy = rec.Recording(
            path=folder / "0_anna_0.flac", file="0_anna_0.flac", label="0", speaker="anna", source="spoken",
            copy=1, augment={"noise": {"kind": "babble", "snr_db": snr, "talkers": 2, "voices": voices}},
        )  # fmt: skip
        spikes[snr] = len(rec._encode_job((copy, spec, 1.0, 0.0))[0])
    assert spikes[0.0] > 1.2 * spikes[60.0] > 0


def test_import_cli_encodes_with_a_noise_floor(tmp_path: Path) -> None:
    """`data import --noise-floor 10`: the clips encoded by the front-end with the per-band noise floor, its
    spec recorded; FSDD's quiet close-microphone clips keep most of their spikes (a fresh floor starts at the
    gate and rises to the noise it hears), and fewer than without; a bad value is named before any work."""
    plain, floor, args = _import_plain_and(tmp_path, ["--noise-floor", "10"])
    spec = FrontendSpec.from_dict(floor.attrs["frontend"])
    assert spec.noise_floor_rise_db_per_s == 10.0 and spec.num_channels == plain.num_channels
    n_plain, n_floor = sum(len(t) for t in plain.times), sum(len(t) for t in floor.times)
    assert 0.8 * n_plain < n_floor < n_plain
    for bad in ("x", "nan", "-1"):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--noise-floor", bad])
        assert result.exit_code == 2 and "--noise-floor" in result.output and not (tmp_path / "bad").exists()

"""The synthetic keyword corpus: plans, speakers, engines, augmentations, files and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekws.agent import FrontendSpec, encode, load_audio
from edgekws.toolkit.data import SynthError, _engines, _synth, read_recordings, read_shd, synthesize

CLASSES = ["en-seven", "de-fuenf"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "digits"
    synthesize(out, "digits", per_class=3, seed=7, workers=1, classes=CLASSES)
    return out


def test_vocabularies() -> None:
    """en-digits and en-commands have 10 keywords + _unknown_ + _silence_; digits 20 classes (English then
    German, like SHD); commands the 35 Speech Commands words."""
    assert _synth.class_names("en-digits") == [*_synth.DIGITS_EN, "_unknown_", "_silence_"]
    assert _synth.class_names("en-commands") == [
        "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"
    ]  # fmt: skip
    for task in ("en-digits", "en-commands"):
        pool = set(_synth.unknown_words(task, "en"))
        assert not pool & {w.text for w in _synth.vocabulary(task)}
        from edgekws.toolkit.data._stream import DISTRACTORS

        assert not pool & set(DISTRACTORS["en"]) and {"bed", "marvin", "apple"} <= pool
    digits = _synth.vocabulary("digits")
    assert [w.name for w in digits][:2] == ["en-zero", "en-one"] and digits[-1].name == "de-neun"
    assert len(digits) == 20 and {w.language for w in digits[10:]} == {"de"}
    commands = [w.name for w in _synth.vocabulary("commands")]
    assert len(commands) == 35 and len(set(commands)) == 35
    assert {"marvin", "sheila", "visual", "learn", "nine"} <= set(commands)
    with pytest.raises(ValueError, match="digits"):
        _synth.vocabulary("colours")


def test_plan_speaker_disjoint_and_language_matched() -> None:
    """No speaker is in two splits, and German words are only spoken by German voices (English by English)."""
    _, speakers, utts = _synth.plan_corpus("digits", 150, seed=0)
    split_of = {s.id: s.split for s in speakers}
    by_split: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for u in utts:
        assert split_of[u["speaker"]] == u["split"]
        by_split[u["split"]].add(u["speaker"])
        assert (u["voice"] == "de") == (u["language"] == "de")
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["val"]
    assert not by_split["val"] & by_split["test"]
    assert len(utts) == 3000
    for split in ("train", "val", "test"):  # every split hears both languages
        assert any(s.startswith("de+") for s in by_split[split]) and any(
            s.startswith("en") for s in by_split[split]
        )
    counts = {s: sum(u["split"] == s for u in utts) for s in by_split}
    assert counts == {"train": 2100, "val": 300, "test": 600}


def test_plan_is_a_pure_function_of_the_seed() -> None:
    """The same seed plans the same corpus; another seed another."""
    assert _synth.plan_corpus("commands", 4, seed=1) == _synth.plan_corpus("commands", 4, seed=1)
    assert _synth.plan_corpus("commands", 4, seed=1)[2] != _synth.plan_corpus("commands", 4, seed=2)[2]


def test_corpus_layout(corpus: Path) -> None:
    """The corpus holds 16 kHz 1.0 s WAVs, split lists, a manifest and train/val/test SHD files."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["splits"] == {"train": 2, "val": 2, "test": 2}
    assert manifest["frontend"] == FrontendSpec().to_dict() and manifest["num_steps"] == 1000
    for u in manifest["utterances"]:
        info = sf.info(str(corpus / u["wav"]))
        assert info.samplerate == 16000 and info.frames == 16000 and info.subtype == "PCM_16"
        assert {
            "text",
            "voice",
            "variant",
            "rate",
            "pitch",
            "amplitude",
            "snr_db",
            "speaker",
            "split",
        } <= set(u)
        assert u["lead_silence_s"] + u["speech_s"] + u["trail_silence_s"] == pytest.approx(1.0, abs=2e-6)
    val_list = (corpus / "wavs" / "validation_list.txt").read_text().split()
    assert sorted(val_list) == sorted(u["wav"][5:] for u in manifest["utterances"] if u["split"] == "val")
    for split in ("train", "val", "test"):
        ds = read_shd(corpus / f"{split}.h5")
        assert ds.class_names == CLASSES and ds.num_channels == FrontendSpec().num_channels
        assert ds.attrs["frontend"] == FrontendSpec().to_dict() and ds.attrs["seed"] == 7
        assert all(len(t) == 0 or t[-1] < 1.0 for t in ds.times)


def test_h5_events_equal_encoding_of_the_wavs(corpus: Path) -> None:
    """Each sample in the SHD files is exactly the front-end encoding of its WAV file."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    for split in ("train", "test"):
        ds = read_shd(corpus / f"{split}.h5")
        for i in range(len(ds)):
            utt = manifest["utterances"][int(ds.extra["utterance"][i])]
            assert utt["split"] == split and utt["sample_index"] == i
            assert ds.class_names[ds.labels[i]] == utt["class"]
            audio, rate = load_audio(corpus / utt["wav"])
            raster = encode(audio, rate, FrontendSpec())
            np.testing.assert_array_equal(ds.bin(0.001, 1000, [i])[0], raster)
            assert utt["num_spikes"] == len(ds.times[i]) > 0


def test_wav_folder_reads_as_speech_commands(corpus: Path) -> None:
    """The corpus's wavs/ folder read by the recordings reader gives the same spikes as test.h5."""
    sc = read_recordings(corpus / "wavs", "testing", classes=CLASSES)
    h5 = read_shd(corpus / "test.h5")
    assert sorted(map(tuple, sc.bin(0.001, 1000).reshape(len(sc), -1).tolist())) == sorted(
        map(tuple, h5.bin(0.001, 1000).reshape(len(h5), -1).tolist())
    )


def test_same_seed_identical_bytes(corpus: Path, tmp_path: Path) -> None:
    """A second run with the same seed gives a byte-identical manifest, identical events and files."""
    again = synthesize(tmp_path / "again", "digits", per_class=3, seed=7, workers=1, classes=CLASSES)
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (corpus / "manifest.json").read_bytes()
    assert again["utterances"] == json.loads((corpus / "manifest.json").read_text())["utterances"]
    for split in ("train", "val", "test"):
        a, b = read_shd(corpus / f"{split}.h5"), read_shd(tmp_path / "again" / f"{split}.h5")
        for ta, tb, ua, ub in zip(a.times, b.times, a.units, b.units, strict=True):
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_array_equal(ua, ub)
        assert (corpus / f"{split}.h5").read_bytes() == (tmp_path / "again" / f"{split}.h5").read_bytes()


def test_workers_do_not_change_the_corpus(tmp_path: Path) -> None:
    """Two worker processes give the same manifest and spikes as one."""
    one = synthesize(tmp_path / "one", "commands", per_class=3, seed=2, workers=1, classes=["marvin"])
    two = synthesize(tmp_path / "two", "commands", per_class=3, seed=2, workers=2, classes=["marvin"])
    assert one == two
    for split in ("train", "val", "test"):
        assert (tmp_path / "one" / f"{split}.h5").read_bytes() == (
            tmp_path / "two" / f"{split}.h5"
        ).read_bytes()


def test_refuses_non_empty_out_unless_forced(corpus: Path, tmp_path: Path) -> None:
    """A non-empty --out is refused; with force it is replaced."""
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty"):
        synthesize(out, "digits", per_class=1, seed=0, workers=1, classes=["en-one"])
    assert (out / "keep.txt").exists()
    synthesize(out, "digits", per_class=1, seed=0, workers=1, classes=["en-one"], force=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    """An interrupted run leaves neither the output folder nor its temporary folder."""

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(
            tmp_path / "cut", "digits", per_class=3, seed=0, workers=1, classes=["en-one"], progress=stop
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_voice_is_reported() -> None:
    """An espeak-ng voice that does not exist raises SynthError with espeak-ng's message."""
    with pytest.raises(SynthError, match="does not exist"):
        _synth.speak("hello", "xx-nonexistent", "m1", 150, 50, 100)


def test_fillers_add_unknown_and_silence_without_changing_the_keywords() -> None:
    """--fillers appends _unknown_ (other words) and _silence_ (no text); keyword utterances are unchanged."""
    words, _, plain = _synth.plan_corpus("digits", 5, seed=4)
    words_f, _, with_f = _synth.plan_corpus("digits", 5, seed=4, fillers=True)
    assert [w.name for w in words_f] == [w.name for w in words] + ["_unknown_", "_silence_"]
    assert with_f[: len(plain)] == plain
    extra = with_f[len(plain) :]
    unknown = [u for u in extra if u["class"] == "_unknown_"]
    silence = [u for u in extra if u["class"] == "_silence_"]
    assert len(unknown) == len(silence) == 5 and {u["label"] for u in unknown} == {20}
    assert all(u["text"] in _synth.FILLER_WORDS[u["language"]] for u in unknown)
    assert all(u["text"] == "" and u["noise"] in ("pink", "white") for u in silence)
    keyword_texts = {w.text for w in words}
    assert not keyword_texts & {w for ws in _synth.FILLER_WORDS.values() for w in ws}


def test_silence_clip_is_noise_at_its_level(tmp_path: Path) -> None:
    """A _silence_ clip has no speech and its RMS is the utterance's noise_dbfs."""
    _, _, utts = _synth.plan_corpus("digits", 3, seed=2, classes=["en-one"], fillers=True)
    utt = next(u for u in utts if u["class"] == "_silence_")
    pcm, timing = _synth.render(utt, seed=2)
    assert timing["speech_s"] == 0.0
    rms_db = 20 * np.log10(np.sqrt(np.mean((pcm / 32768.0) ** 2)))
    assert abs(rms_db - utt["noise_dbfs"]) < 1.0


def test_reference_task_plan_uses_every_engine_split_by_person() -> None:
    """en-digits speaks with every engine; no person (espeak-ng voice+variant, or the recorded person behind
    flite and festival voices) is in two splits; every split hears every engine; each utterance records
    engine, voice and augmentations."""
    words, speakers, utts = _synth.plan_corpus("en-digits", 20, seed=0)
    assert [w.name for w in words] == _synth.class_names("en-digits")
    person_split: dict[str, set[str]] = {}
    for s in speakers:
        person_split.setdefault(s.person, set()).add(s.split)
    assert all(len(v) == 1 for v in person_split.values())
    assert {"kal", "slt", "awb", "rms", "ked"} <= set(person_split)
    split_of = {s.id: s.split for s in speakers}
    for split in ("train", "val", "test"):
        engines = {u["engine"] for u in utts if u["split"] == split}
        assert engines == {"espeak-ng", "flite", "festival"}, split
    for u in utts:
        assert split_of[u["speaker"]] == u["split"]
        for talker in u.get("babble", []):
            assert split_of[talker["speaker"]] == u["split"]  # babble voices of the same split
        assert {"engine", "voice", "augment", "augment_names", "noise"} <= set(u)
    assert any("room" in u["augment"] and "formant" in u["augment"] for u in utts)


def test_exclude_and_single_engine_corpora() -> None:
    """--exclude leaves out engines, voices or persons; a single-engine plan is that engine's alone (the
    test set of leave-one-engine-out)."""
    _, speakers, utts = _synth.plan_corpus("en-digits", 10, seed=1, exclude=["festival", "flite-slt"])
    assert {u["engine"] for u in utts} == {"espeak-ng", "flite"}
    assert "flite-slt" not in {u["speaker"] for u in utts} and all(s.engine != "festival" for s in speakers)
    _, _, only = _synth.plan_corpus("en-digits", 10, seed=1, engines=["festival"])
    assert {u["engine"] for u in only} == {"festival"}
    _, _, no_slt = _synth.plan_corpus("en-digits", 10, seed=1, exclude=["slt"])
    assert not {u["speaker"] for u in no_slt} & {"flite-slt", "festival-slt"}
    with pytest.raises(SynthError, match="no en speaker left"):
        _synth.plan_corpus("en-digits", 10, seed=1, engines=["festival"], exclude=["kal", "ked"])


def test_hibari_joins_the_recorded_persons_and_trains() -> None:
    """With hibari among the engines its one person (af_heart, 12 derived speakers) joins flite's and
    festival's persons; the persons heard by two engines (kal, slt) go to test and validation first, so
    af_heart trains; each hibari utterance records its F0 and formant scales; a corpus without hibari plans
    exactly what it planned before hibari existed (the default engines)."""
    _, speakers, utts = _synth.plan_corpus(
        "en-digits", 20, seed=0, engines=["espeak-ng", "flite", "festival", "hibari"]
    )
    hibari = [s for s in speakers if s.engine == "hibari"]
    assert len(hibari) == 12 and {(s.person, s.split) for s in hibari} == {("af_heart", "train")}
    said = [u for u in utts if u["engine"] == "hibari"]
    assert said and all(u["split"] == "train" for u in said)
    for u in said:
        f0, formant, _ = _engines.HIBARI_VARIANTS[u["variant"]]
        assert abs(np.log(u["f0"] / f0)) <= 0.1 + 1e-3 and abs(np.log(u["formant"] / formant)) <= 0.03 + 1e-3
    default = _synth.plan_corpus("en-digits", 20, seed=0)
    assert default == _synth.plan_corpus("en-digits", 20, seed=0, engines=["espeak-ng", "flite", "festival"])
    assert "hibari" not in {u["engine"] for u in default[2]}
    with pytest.raises(SynthError, match="no en speaker left for the train split"):
        _synth.plan_corpus("en-digits", 10, seed=1, engines=["hibari"])  # one person: test only


def test_piper_joins_the_recorded_persons_and_trains() -> None:
    """With piper among the engines its one person (joe, 12 derived speakers) joins the recorded persons
    and trains beside af_heart (kal and slt, heard by two engines, go to test and validation); each piper
    utterance records its F0 and formant scales around its speaker's; the engines before it plan as before."""
    engines = ["espeak-ng", "flite", "festival", "hibari", "piper"]
    _, speakers, utts = _synth.plan_corpus("en-digits", 20, seed=0, engines=engines)
    piper = [s for s in speakers if s.engine == "piper"]
    assert len(piper) == 12 and {(s.person, s.split) for s in piper} == {("joe", "train")}
    said = [u for u in utts if u["engine"] == "piper"]
    assert said and all(u["split"] == "train" for u in said)
    for u in said:
        f0, formant, _ = _engines.PIPER_VARIANTS[u["variant"]]
        assert abs(np.log(u["f0"] / f0)) <= 0.1 + 1e-3 and abs(np.log(u["formant"] / formant)) <= 0.03 + 1e-3
    split = {s.person: s.split for s in speakers if s.engine != "espeak-ng"}
    assert {split["kal"], split["slt"]} == {"test", "val"} and split["af_heart"] == "train"


def test_kokoro_voices_are_persons_in_every_split() -> None:
    """kokoro's 27 voices are 27 persons among the recorded ones: they fill train, validation and test
    (kal and slt, heard by two engines, are drawn first: with 34 recorded persons the 7 test places take
    both); no person is in two splits;
    a kokoro utterance records the tempo and peak it was said at."""
    engines = ["espeak-ng", "flite", "festival", "hibari", "kokoro"]
    _, speakers, utts = _synth.plan_corpus("en-digits", 40, seed=0, engines=engines)
    kokoro = [s for s in speakers if s.engine == "kokoro"]
    assert len(kokoro) == 27 and {s.split for s in kokoro} == {"train", "val", "test"}
    split: dict[str, set[str]] = {}
    for s in speakers:
        split.setdefault(s.person, set()).add(s.split)
    assert all(len(v) == 1 for v in split.values())
    assert split["kal"] == split["slt"] == {"test"}
    said = [u for u in utts if u["engine"] == "kokoro"]
    assert {u["split"] for u in said} == {"train", "val", "test"}
    assert all("stretch" in u and "peak" in u and "f0" not in u for u in said)


def test_kokoro_blends_stay_in_their_persons_split_and_change_no_other_speaker() -> None:
    """kokoro-mix's blends of two kokoro persons are in those persons' split (none of a training and a test
    person: part of a test voice would be trained on); every other speaker and its split is as in the corpus
    without blends; a person excluded takes its blends along; kokoro-mix needs kokoro."""
    engines = ["espeak-ng", "flite", "festival", "hibari", "kokoro"]
    rngs = (np.random.default_rng(0), np.random.default_rng(1))
    plain = _synth.make_speakers(["en"], rngs[0], engines, engine_rng=rngs[1])
    rngs = (np.random.default_rng(0), np.random.default_rng(1))
    mixed = _synth.make_speakers(["en"], rngs[0], [*engines, "kokoro-mix"], engine_rng=rngs[1])
    blends = [s for s in mixed if s.engine == "kokoro-mix"]
    assert [s for s in mixed if s.engine != "kokoro-mix"] == plain
    split = {s.person: s.split for s in plain if s.engine == "kokoro"}
    sizes = {k: sum(v == k for v in split.values()) for k in ("train", "val", "test")}
    assert len(blends) == sum(n * (n - 1) // 2 for n in sizes.values()) > 0
    for s in blends:
        a, b = s.person.split("+")
        assert split[a] == split[b] == s.split, s.person
    assert {s.split for s in blends} == {"train", "val", "test"}
    rngs = (np.random.default_rng(0), np.random.default_rng(1))
    without_adam = _synth.make_speakers(
        ["en"], rngs[0], [*engines, "kokoro-mix"], exclude=["am_adam"], engine_rng=rngs[1]
    )
    assert not any("am_adam" in s.person for s in without_adam)
    assert any(s.engine == "kokoro-mix" for s in without_adam)
    _, _, utts = _synth.plan_corpus(
        "en-digits", 20, seed=0, engines=[*engines, "kokoro-mix"], engine_weights={"kokoro": 0.0}
    )
    said = {u["engine"] for u in utts}
    assert "kokoro-mix" in said and "kokoro" not in said
    with pytest.raises(SynthError, match="needs kokoro among the engines"):
        _synth.make_speakers(["en"], np.random.default_rng(0), ["espeak-ng", "kokoro-mix"])


@pytest.mark.parametrize(
    ("engine", "per_class", "seed", "splits", "least"),
    [("piper", 4, 3, {"train"}, 3), ("kokoro", 6, 4, {"train", "val", "test"}, 10)],
)
def test_neural_corpus_is_deterministic_across_workers(
    tmp_path: Path, engine: str, per_class: int, seed: int, splits: set[str], least: int
) -> None:
    """A corpus where a neural engine says most words (with the formant augmentation on) is byte-identical
    with one worker or two: piper's sampled durations and frames come from its seeded noise, kokoro's
    network has no random nodes. Piper's one person (joe) trains; kokoro's voices are heard in every split."""
    args = {
        "per_class": per_class, "seed": seed, "classes": ["seven"], "engines": ["flite", "festival", engine],
        "engine_weights": {engine: 8.0}, "augment": {"formant_p": 0.5},
    }  # fmt: skip
    one = synthesize(tmp_path / "one", "en-digits", workers=1, **args)
    two = synthesize(tmp_path / "two", "en-digits", workers=2, **args)
    said = [u for u in one["utterances"] if u["engine"] == engine]
    assert one == two and len(said) >= least and {u["split"] for u in said} == splits
    for u in said:
        assert (tmp_path / "one" / u["wav"]).read_bytes() == (tmp_path / "two" / u["wav"]).read_bytes()
    for h5 in ("train.h5", "val.h5", "test.h5"):
        assert (tmp_path / "one" / h5).read_bytes() == (tmp_path / "two" / h5).read_bytes()


def test_augmented_multi_engine_corpus_is_deterministic(tmp_path: Path) -> None:
    """A corpus from all engines with every augmentation is byte-identical with one worker or two, and its
    h5 samples carry engine, speaker, voice, gender, accent and augmentations."""
    policy = {"room_p": 0.5, "formant_p": 0.5, "band_p": 0.5, "eq_p": 0.5, "clip_p": 0.3}
    args = {"per_class": 3, "seed": 5, "classes": ["seven"], "augment": policy}
    one = synthesize(tmp_path / "one", "en-digits", workers=1, **args)
    two = synthesize(tmp_path / "two", "en-digits", workers=2, **args)
    assert one == two and len(one["utterances"]) == 9
    assert one["engines"] == ["espeak-ng", "flite", "festival"] and one["augment"]["room_p"] == 0.5
    for split in ("train", "val", "test"):
        assert (tmp_path / "one" / f"{split}.h5").read_bytes() == (
            tmp_path / "two" / f"{split}.h5"
        ).read_bytes()
    for u in one["utterances"]:
        assert (tmp_path / "one" / u["wav"]).read_bytes() == (tmp_path / "two" / u["wav"]).read_bytes()
    train = read_shd(tmp_path / "one" / "train.h5")
    rows = [one["utterances"][i] for i in train.extra["utterance"]]
    assert train.metadata("source").tolist() == [u["engine"] for u in rows]
    assert train.metadata("speaker").tolist() == [u["speaker"] for u in rows]
    assert train.metadata("augment").tolist() == [u["augment_names"] for u in rows]
    assert all(g in ("male", "female", "unknown") for g in train.metadata("gender"))


def test_legacy_task_plans_as_before_engines() -> None:
    """With its defaults the 20-class digits task plans exactly what it planned before engines and
    augmentations existed (these fields' hash, from the planner of main at 1131723), plus the new fields."""
    import hashlib

    _, _, utts = _synth.plan_corpus("digits", 5, seed=3, fillers=True)
    old = ("amplitude", "class", "index", "label", "language", "lead_silence_s", "noise", "noise_dbfs")
    old += ("pitch", "rate", "snr_db", "speaker", "speaker_index", "split", "text", "variant", "voice", "wav")
    keyword_noise = [u.pop("noise") for u in utts if u["class"] not in ("_unknown_", "_silence_")]
    assert set(keyword_noise) == {"white"}
    legacy = [{k: v for k, v in u.items() if k in old} for u in utts]
    digest = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert digest == "f0dd8f861eadee412cc0dc5cd2083478730e0ef790c948d0e27520f0679009d2"
    assert all(u["engine"] == "espeak-ng" and u["augment"] == {} for u in utts)

"""Speech Commands-style WAV folder reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekws.agent import FrontendSpec, encode
from edgekws.toolkit.data import DatasetError, read_speech_commands
from edgekws.toolkit.data._speech_commands import speaker_of

FILES = {
    # word/file: (frequency Hz, seconds, sample rate)
    "yes/aa11_nohash_0.wav": (440.0, 1.0, 16000),
    "yes/aa11_nohash_1.wav": (460.0, 1.0, 16000),
    "yes/bb22_nohash_0.wav": (480.0, 0.6, 16000),  # shorter than a second: padded
    "yes/cc33_nohash_0.wav": (500.0, 1.0, 8000),  # another rate: resampled
    "no/aa11_nohash_0.wav": (900.0, 1.0, 16000),
    "no/bb22_nohash_0.wav": (950.0, 1.0, 16000),
    "no/dd44_nohash_0.wav": (1000.0, 1.2, 16000),  # longer: cropped
    "up/aa11_nohash_0.wav": (1500.0, 1.0, 16000),
}


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    envelope = np.clip(np.minimum(t, seconds - t) * 20, 0, 1)
    return (0.3 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rel, (freq, seconds, rate) in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, _tone(freq, seconds, rate), rate, subtype="PCM_16")
    (tmp_path / "_background_noise_").mkdir()
    sf.write(tmp_path / "_background_noise_" / "white.wav", np.zeros(48000, dtype=np.float32), 16000)
    (tmp_path / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("no/dd44_nohash_0.wav\nyes/cc33_nohash_0.wav\n")
    return tmp_path


def test_speaker_id() -> None:
    """The speaker id is the file name before _nohash_."""
    assert speaker_of("yes/0a7c2a8d_nohash_3.wav") == "0a7c2a8d"
    assert speaker_of("en-gb+f3_nohash_0.wav") == "en-gb+f3"


def test_splits_follow_the_lists(root: Path) -> None:
    """Files in validation_list.txt / testing_list.txt form those splits; all others train; noise ignored."""
    train = read_speech_commands(root, "train")
    val = read_speech_commands(root, "validation")
    test = read_speech_commands(root, "testing")
    assert train.class_names == ["no", "up", "yes"]  # word folders sorted, _background_noise_ left out
    assert len(train) == 5 and len(val) == 1 and len(test) == 2
    assert train.attrs["files"] == [
        "no/aa11_nohash_0.wav",
        "no/bb22_nohash_0.wav",
        "up/aa11_nohash_0.wav",
        "yes/aa11_nohash_0.wav",
        "yes/aa11_nohash_1.wav",
    ]
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 2, 2])
    assert test.attrs["files"] == ["no/dd44_nohash_0.wav", "yes/cc33_nohash_0.wav"]
    speakers = train.attrs["speakers"]
    assert speakers == ["aa11", "bb22", "cc33", "dd44"]
    assert [speakers[i] for i in train.extra["speaker"]] == ["aa11", "bb22", "aa11", "aa11", "aa11"]
    assert [speakers[i] for i in test.extra["speaker"]] == ["dd44", "cc33"]


def test_events_are_the_front_end_encoding(root: Path) -> None:
    """Each sample is the front-end encoding of its clip padded/cropped to 1.0 s (other rates resampled)."""
    spec = FrontendSpec()
    test = read_speech_commands(root, "testing", spec=spec)
    val = read_speech_commands(root, "validation", spec=spec)
    assert test.num_channels == spec.num_channels and test.attrs["frontend"] == spec.to_dict()
    long_clip, _ = sf.read(root / "no/dd44_nohash_0.wav", dtype="float32")
    assert len(long_clip) == 19200
    np.testing.assert_array_equal(test.bin(0.001, 1000, [0])[0], encode(long_clip[:16000], 16000, spec))
    other_rate, rate = sf.read(root / "yes/cc33_nohash_0.wav", dtype="float32")
    assert rate == 8000
    np.testing.assert_array_equal(test.bin(0.001, 1000, [1])[0], encode(other_rate, 8000, spec))
    short, _ = sf.read(root / "yes/bb22_nohash_0.wav", dtype="float32")
    padded = np.concatenate([short, np.zeros(16000 - len(short), dtype=np.float32)])
    np.testing.assert_array_equal(val.bin(0.001, 1000, [0])[0], encode(padded, 16000, spec))
    assert all(len(t) > 0 and t[-1] < 1.0 for t in test.times)


def test_words_subset_and_order(root: Path) -> None:
    """words picks and orders the classes."""
    ds = read_speech_commands(root, "train", words=["yes", "no"])
    assert ds.class_names == ["yes", "no"] and sorted(ds.labels.tolist()) == [0, 0, 1, 1]


def test_errors(root: Path) -> None:
    """Unknown words, unknown splits and unreadable WAVs are reported clearly."""
    with pytest.raises(DatasetError, match="no folder for word"):
        read_speech_commands(root, "train", words=["maybe"])
    with pytest.raises(ValueError, match="split must be"):
        read_speech_commands(root, "dev")
    broken = root / "up" / "zz99_nohash_0.wav"
    broken.write_bytes((root / "up" / "aa11_nohash_0.wav").read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"zz99_nohash_0\.wav"):
        read_speech_commands(root, "train", words=["up"])

"""Tests for the in-memory spike data set and its binning."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekws.toolkit.data import DatasetError, SpikeDataset


def _tiny() -> SpikeDataset:
    return SpikeDataset(
        times=[np.array([0.0, 0.0015, 0.0019, 0.5], np.float32), np.array([], np.float32)],
        units=[np.array([0, 1, 1, 3], np.uint16), np.array([], np.uint16)],
        labels=np.array([1, 0]),
        num_channels=4,
        class_names=["a", "b"],
    )


def test_binary_binning_merges_events_in_one_bin() -> None:
    """Two events of a channel in the same 1 ms bin make one spike; late events are cropped."""
    raster = _tiny().bin(dt=0.001, num_steps=100)
    assert raster.shape == (2, 100, 4)
    assert raster[0, 0, 0] == 1 and raster[0, 1, 1] == 1
    assert raster.sum() == 2  # the event at 0.5 s lies beyond 100 steps
    counts = _tiny().bin(dt=0.001, num_steps=1000, binary=False)
    assert counts[0, 1, 1] == 2 and counts[0, 500, 3] == 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_raster_round_trip_is_exact(seed: int) -> None:
    """from_raster followed by bin at the same dt returns the raster exactly."""
    rng = np.random.default_rng(seed)
    rasters = [(rng.random((1000, 7)) < 0.05).astype(np.uint8) for _ in range(3)]
    ds = SpikeDataset.from_raster(rasters, [0, 1, 0], dt=0.001, class_names=["x", "y"])
    assert np.array_equal(ds.bin(0.001, 1000), np.stack(rasters))


def test_invalid_data_set_lists_every_problem() -> None:
    """Mismatched lengths, out-of-range units and labels are all reported in one error."""
    with pytest.raises(DatasetError) as info:
        SpikeDataset(
            times=[np.array([0.1, 0.2], np.float32)],
            units=[np.array([9], np.uint16)],
            labels=np.array([5]),
            num_channels=4,
            class_names=["a"],
        )
    message = str(info.value)
    assert "2 spike times but 1 units" in message and "labels must lie" in message


def test_subset_keeps_metadata() -> None:
    """A subset carries labels, extras and attributes of the chosen samples."""
    ds = _tiny()
    ds.extra["speaker"] = np.array([7, 8])
    ds.attrs["seed"] = 3
    sub = ds.subset([1])
    assert sub.labels.tolist() == [0] and sub.extra["speaker"].tolist() == [8] and sub.attrs["seed"] == 3


def _spoken(word: str, voice: str) -> np.ndarray:
    from edgekws.toolkit.data import _engines, _synth

    v = next(v for v in _engines.voices("espeak-ng", "en") if v.id == voice)
    audio = _synth.spoken_word(v, word, {"rate": 150, "pitch": 50, "amplitude": 100})
    return np.pad(audio, (2000, max(0, 16000 - 2000 - audio.size)))[:16000]


def test_delay_taps_on_a_data_set_equal_re_encoding_with_the_tapped_front_end() -> None:
    """SpikeDataset.with_delay_taps gives, bit for bit, what the front-end with those taps makes of the same
    espeak-ng words (so training sets need not be re-encoded), and records the tapped spec; it refuses data
    that already have taps or record no front-end."""
    from edgekws.agent import FrontendSpec, encode

    words = [_spoken("seven", "en-us+m1"), _spoken("three", "en-gb+f3")]
    plain = SpikeDataset.from_raster(
        [encode(w, 16000) for w in words], [0, 1], 0.001, ["seven", "three"],
        attrs={"frontend": FrontendSpec().to_dict(), "num_steps": 1000, "dt": 0.001},
    )  # fmt: skip
    taps = (0.0, 25.0, 50.0, 100.0)
    tapped = plain.with_delay_taps(taps)
    spec = FrontendSpec(delay_taps_ms=taps)
    expected = np.stack([encode(w, 16000, spec) for w in words])
    assert tapped.num_channels == 512 and tapped.attrs["frontend"] == spec.to_dict()
    assert np.array_equal(tapped.bin(0.001, 1000), expected)
    assert expected.sum() > 3 * plain.bin(0.001, 1000).sum()  # taps carry the word's spikes
    with pytest.raises(DatasetError, match="already has delay taps"):
        tapped.with_delay_taps(taps)
    bare = SpikeDataset(times=plain.times, units=plain.units, labels=plain.labels, num_channels=128,
                        class_names=plain.class_names)  # fmt: skip
    with pytest.raises(DatasetError, match="records no front-end"):
        bare.with_delay_taps(taps)
    with pytest.raises(DatasetError, match="whole steps of dt_ms"):
        plain.with_delay_taps((0.0, 0.5))
    unsized = bare.subset(range(len(bare)))
    unsized.attrs = {"frontend": plain.attrs["frontend"]}  # a front-end but no clip length
    with pytest.raises(DatasetError, match="neither num_steps nor duration_s"):
        unsized.with_delay_taps(taps)

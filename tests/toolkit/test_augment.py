"""Augmentation: channel shift and same-class blend on sparse events."""

from __future__ import annotations

import numpy as np

from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train import TrainConfig
from edgekws.toolkit.train._augment import augment_epoch, blend_same_class, shift_channels


def _data() -> SpikeDataset:
    rng = np.random.default_rng(0)
    rasters = [(rng.random((40, 20)) < 0.1).astype(np.uint8) for _ in range(6)]
    return SpikeDataset.from_raster(rasters, [0, 0, 0, 1, 1, 1], 0.001, ["a", "b"])


def test_shift_moves_every_event_of_a_sample_by_one_offset_and_drops_out_of_range() -> None:
    """Each sample's units move by one offset in [-max, max); out-of-range events vanish, times stay."""
    data = _data()
    shifted = shift_channels(data, 5, np.random.default_rng(1))
    offsets = np.random.default_rng(1).integers(-5, 5, size=len(data))
    for i, off in enumerate(offsets):
        moved = data.units[i].astype(int) + off
        keep = (moved >= 0) & (moved < 20)
        np.testing.assert_array_equal(shifted.units[i], moved[keep])
        np.testing.assert_array_equal(shifted.times[i], data.times[i][keep])
    np.testing.assert_array_equal(shifted.labels, data.labels)


def test_shift_range_scales_with_the_channel_count() -> None:
    """The paper's ±40 of 700 channels becomes ±7 for a 128-channel front-end and ±0 for 8."""
    assert TrainConfig().max_shift(700) == 40
    assert TrainConfig().max_shift(128) == 7
    assert TrainConfig().max_shift(8) == 0


def test_blend_mixes_two_samples_of_one_class() -> None:
    """A blend with p = 1 is its first source re-centred; labels come from the sources' class."""
    data = _data()
    blends = blend_same_class(data, 10, 1.0, np.random.default_rng(2), 0.001)
    assert len(blends) == 10 and set(blends.labels) <= {0, 1}
    for t, u in zip(blends.times, blends.units, strict=True):
        assert np.all(np.diff(t) >= 0) and (len(u) == 0 or (u.min() >= 0 and u.max() < 20))
    half = blend_same_class(data, 50, 0.5, np.random.default_rng(3), 0.001)
    mean_events = np.mean([len(t) for t in data.times])
    assert 0.6 * mean_events < np.mean([len(t) for t in half.times]) < 1.4 * mean_events


def test_augment_epoch_is_deterministic_and_adds_blends() -> None:
    """The same generator seed gives the same epoch; shift-blend adds round(fraction·n) samples."""
    data = _data()
    a = augment_epoch(data, "shift-blend", 3, 0.5, 0.5, np.random.default_rng(4), 0.001)
    b = augment_epoch(data, "shift-blend", 3, 0.5, 0.5, np.random.default_rng(4), 0.001)
    assert len(a) == len(data) + 3
    for x, y in zip(a.units, b.units, strict=True):
        np.testing.assert_array_equal(x, y)
    assert augment_epoch(data, "none", 3, 0.5, 0.5, np.random.default_rng(4), 0.001) is data


def test_shift_with_a_band_stride_keeps_each_events_level() -> None:
    """With 4 level units per band, shifts move whole bands: every event keeps its channel modulo 4."""
    rng = np.random.default_rng(0)
    units = [rng.integers(0, 128, 200).astype(np.uint16) for _ in range(20)]
    times = [np.sort(rng.random(200)).astype(np.float32) for _ in range(20)]
    data = SpikeDataset(
        times, units, np.zeros(20, np.int64), 128, ["a"], attrs={"frontend": {"num_bands": 32}}
    )
    shifted = shift_channels(data, 2, np.random.default_rng(1), stride=4)
    moved = 0
    for before, after, t_before, t_after in zip(
        data.units, shifted.units, data.times, shifted.times, strict=True
    ):
        kept = np.isin(t_before, t_after)
        offset = after.astype(int) - before[kept].astype(int)
        assert len(set(offset.tolist())) <= 1 and all(o % 4 == 0 and abs(o) <= 8 for o in offset)
        moved += int(len(offset) > 0 and offset[0] != 0)
    assert moved > 0


def test_channels_per_band_reads_the_front_end_spec() -> None:
    """The training loop finds 4 units per band in data from the default front-end, 1 for SHD-style data."""
    from edgekws.toolkit.train._loop import channels_per_band

    raster = [np.zeros((10, 128), np.uint8)]
    plain = SpikeDataset.from_raster(raster, [0], 0.001, ["a"])
    tagged = SpikeDataset.from_raster(raster, [0], 0.001, ["a"], attrs={"frontend": '{"num_bands": 32}'})
    assert (channels_per_band(plain), channels_per_band(tagged)) == (1, 4)


def test_delay_moves_each_sample_by_whole_steps_within_the_bound() -> None:
    """Every event of a sample is delayed by the same whole number of steps in [0, max]; units stay."""
    from edgekws.toolkit.train._augment import delay_samples

    data = _data()
    delayed = delay_samples(data, 7, np.random.default_rng(3), 0.001)
    seen = set()
    for before, after, u0, u1 in zip(data.times, delayed.times, data.units, delayed.units, strict=True):
        steps = np.round((after.astype(np.float64) - before) / 0.001)
        assert len(set(steps.tolist())) <= 1 and 0 <= steps.min() <= 7
        seen |= set(steps.tolist())
        np.testing.assert_array_equal(u0, u1)
    assert len(seen) > 1, "different samples get different delays"
    assert delay_samples(data, 0, np.random.default_rng(3), 0.001) is data


def test_delay_only_keeps_the_unpicked_samples_in_place_and_the_picked_ones_as_without_it() -> None:
    """``only`` leaves the samples where it is False untouched; the others move exactly as with no mask
    (every delay is drawn either way, so picking samples changes no other sample's draw)."""
    import pytest

    from edgekws.toolkit.train._augment import delay_samples

    data = _data()
    only = np.array([True, False, True, False, True, False])
    picked = delay_samples(data, 7, np.random.default_rng(3), 0.001, only)
    every = delay_samples(data, 7, np.random.default_rng(3), 0.001)
    for i in range(len(data)):
        expected = every.times[i] if only[i] else data.times[i]
        np.testing.assert_array_equal(picked.times[i], expected)
    assert any(not np.array_equal(every.times[i], data.times[i]) for i in np.flatnonzero(only))
    with pytest.raises(ValueError, match="2 entries for 6 samples"):
        delay_samples(data, 7, np.random.default_rng(3), 0.001, only[:2])
    with pytest.raises(ValueError, match="blends mix two"):
        augment_epoch(data, "shift-blend", 1, 0.5, 0.5, np.random.default_rng(0), 0.001, 1, 5, 0.0, only)


def test_augment_epoch_delays_even_without_shift_and_keeps_old_draws_when_off() -> None:
    """mode "none" with a delay only delays; with no delay the epoch equals the one made before delays."""
    data = _data()
    only = augment_epoch(data, "none", 0, 0.0, 0.5, np.random.default_rng(0), 0.001, max_delay_steps=5)
    assert any(not np.array_equal(a, b) for a, b in zip(only.times, data.times, strict=True))
    a = augment_epoch(data, "shift", 3, 0.0, 0.5, np.random.default_rng(9), 0.001)
    b = shift_channels(data, 3, np.random.default_rng(9))
    assert all(np.array_equal(x, y) for x, y in zip(a.units, b.units, strict=True))


def test_drop_events_thins_each_sample_at_the_rate_and_keeps_the_rest_intact() -> None:
    """About p of the events vanish; what stays is an unchanged subset (same times and units, in order)."""
    from edgekws.toolkit.train._augment import drop_events

    data = _data()
    thinned = drop_events(data, 0.3, np.random.default_rng(5))
    before = sum(len(t) for t in data.times)
    after = sum(len(t) for t in thinned.times)
    assert 0.6 * before < after < 0.8 * before
    for t0, u0, t1, u1 in zip(data.times, data.units, thinned.times, thinned.units, strict=True):
        kept = {(float(a), int(b)) for a, b in zip(t1, u1, strict=True)}
        assert kept <= {(float(a), int(b)) for a, b in zip(t0, u0, strict=True)}
        assert np.all(np.diff(t1) >= 0)
    assert drop_events(data, 0.0, np.random.default_rng(5)) is data

"""SHD/SSC HDF5 reader and writer."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from edgekws.toolkit.data import DatasetError, SpikeDataset, read_shd, write_shd

SHD_KEYS = [f"english-{w}" for w in ("zero", "one", "two")] + ["german-null"]


def _write_published(path: Path, with_meta: bool = True, drop: tuple[str, ...] = ()) -> dict:
    """Write a small file the way the published SHD files are laid out (float16 vlen times)."""
    rng = np.random.default_rng(0)
    times, units = [], []
    for n in (5, 0, 12):
        times.append(np.sort(rng.uniform(0, 0.9, n)).astype(np.float16))
        units.append(rng.integers(0, 700, n).astype(np.uint16))
    labels = np.array([0, 3, 1], dtype=np.uint16)
    speaker = np.array([4, 5, 4], dtype=np.uint16)
    with h5py.File(path, "w") as f:
        if "spikes/times" not in drop:
            ds = f.create_dataset("spikes/times", shape=(3,), dtype=h5py.vlen_dtype(np.dtype(np.float16)))
            for i, t in enumerate(times):
                ds[i] = t
        if "spikes/units" not in drop:
            ds = f.create_dataset("spikes/units", shape=(3,), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
            for i, u in enumerate(units):
                ds[i] = u
        if "labels" not in drop:
            f.create_dataset("labels", data=labels)
        if "extra/keys" not in drop:
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in SHD_KEYS]))
        f.create_dataset("extra/speaker", data=speaker)
        if with_meta:
            speakers = 6
            f.create_dataset("extra/meta_info/gender", data=np.array([b"female", b"male"] * 3))
            f.create_dataset("extra/meta_info/age", data=np.arange(20, 20 + speakers, dtype=np.uint16))
            f.create_dataset("extra/meta_info/body_height", data=np.linspace(160, 190, speakers))
    return {"times": times, "units": units, "labels": labels, "speaker": speaker}


def test_reads_published_layout(tmp_path: Path) -> None:
    """A file in the published SHD layout reads back with every event, label, key and speaker."""
    path = tmp_path / "shd_test.h5"
    truth = _write_published(path)
    ds = read_shd(path)
    assert len(ds) == 3 and ds.num_channels == 700
    assert ds.class_names == SHD_KEYS
    np.testing.assert_array_equal(ds.labels, truth["labels"])
    np.testing.assert_array_equal(ds.extra["speaker"], truth["speaker"])
    for i in range(3):
        np.testing.assert_array_equal(ds.times[i], truth["times"][i].astype(np.float32))
        np.testing.assert_array_equal(ds.units[i], truth["units"][i])
    assert ds.attrs["meta_info"]["gender"][:2] == ["female", "male"]
    assert ds.attrs["meta_info"]["age"][0] == 20


def test_reads_ssc_layout_without_meta_info(tmp_path: Path) -> None:
    """SSC files have no extra/meta_info; they still read."""
    path = tmp_path / "ssc_valid.h5"
    _write_published(path, with_meta=False)
    ds = read_shd(path)
    assert "meta_info" not in ds.attrs and len(ds) == 3


def test_round_trip_identical_events(tmp_path: Path) -> None:
    """write_shd then read_shd gives identical events, labels, extras and attrs."""
    rng = np.random.default_rng(1)
    rasters = [(rng.random((1000, 32)) < 0.01).astype(np.uint8) for _ in range(4)]
    ds = SpikeDataset.from_raster(
        rasters,
        [0, 1, 2, 1],
        dt=0.001,
        class_names=["a", "b", "c"],
        extra={"speaker": np.array([0, 1, 1, 2]), "utterance": np.array([7, 8, 9, 10])},
        attrs={"seed": 3, "frontend": {"num_channels": 32}, "meta_info": {"voice": ["en", "de", "en"]}},
    )
    path = write_shd(ds, tmp_path / "x.h5")
    back = read_shd(path)
    assert back.num_channels == 32 and back.class_names == ["a", "b", "c"]
    for i in range(4):
        np.testing.assert_array_equal(back.times[i], ds.times[i])
        np.testing.assert_array_equal(back.units[i], ds.units[i])
        assert back.times[i].dtype == np.float32 and back.units[i].dtype == np.uint16
    np.testing.assert_array_equal(back.labels, ds.labels)
    np.testing.assert_array_equal(back.extra["utterance"], ds.extra["utterance"])
    np.testing.assert_array_equal(back.extra["speaker"], ds.extra["speaker"])
    assert back.attrs["seed"] == 3 and back.attrs["frontend"] == {"num_channels": 32}
    assert back.attrs["meta_info"] == {"voice": ["en", "de", "en"]}
    np.testing.assert_array_equal(back.bin(0.001, 1000), np.stack(rasters))


def test_written_file_has_published_dtypes(tmp_path: Path) -> None:
    """write_shd writes the published keys and dtypes (vlen uint16 units, uint16 labels, bytes keys)."""
    ds = SpikeDataset.from_raster(
        [np.eye(3, dtype=np.uint8)], [0], 0.001, ["zero"], {"speaker": np.array([2])}
    )
    path = write_shd(ds, tmp_path / "y.h5")
    with h5py.File(path, "r") as f:
        assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float32
        assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
        assert f["labels"].dtype == np.uint16 and f["extra/speaker"].dtype == np.uint16
        assert f["extra/keys"].dtype.kind == "S" and f["extra/keys"][0] == b"zero"
        np.testing.assert_array_equal(f["spikes/units"][0], [0, 1, 2])


def test_missing_datasets_named(tmp_path: Path) -> None:
    """A file missing required datasets is rejected with the file and every missing key named."""
    path = tmp_path / "broken.h5"
    _write_published(path, drop=("spikes/units", "labels"))
    with pytest.raises(DatasetError) as info:
        read_shd(path)
    msg = str(info.value)
    assert "broken.h5" in msg and "spikes/units" in msg and "labels" in msg


def test_truncated_file_rejected(tmp_path: Path) -> None:
    """A truncated HDF5 file is rejected with a DatasetError naming the file."""
    path = tmp_path / "full.h5"
    _write_published(path)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut\.h5.*(truncated|corrupt|missing)"):
        read_shd(cut)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DatasetError, match=r"junk\.h5"):
        read_shd(junk)


def test_length_mismatch_rejected(tmp_path: Path) -> None:
    """Labels that do not match the number of spike trains are rejected."""
    path = tmp_path / "mismatch.h5"
    _write_published(path, drop=("labels",))
    with h5py.File(path, "a") as f:
        f.create_dataset("labels", data=np.array([0, 1], dtype=np.uint16))
    with pytest.raises(DatasetError, match="one entry per sample"):
        read_shd(path)

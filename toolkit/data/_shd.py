"""Read and write spike data sets in the SHD/SSC HDF5 layout (Cramer et al. 2020).

The published files (``shd_train.h5``, ``ssc_valid.h5``, ...) hold::

    spikes/times        (n,) variable-length float arrays: spike times in seconds, one array per sample
    spikes/units        (n,) variable-length uint16 arrays: channel (0..699) of each spike
    labels              (n,) uint16 class index
    extra/keys          (classes,) fixed-length bytes: the class name of each label
    extra/speaker       (n,) uint16 speaker id
    extra/meta_info/... per-speaker arrays (gender, age, body_height); SHD only, SSC omits them

The published SHD files store the times as float16. We write float32 (the element type of a
variable-length array is the reader's business: tonic, spytorch and h5py code read both), because
float16 cannot hold 1 ms bins beyond 0.5 s (its spacing there is 0.49 ms). What we add rides where
other readers do not look: a JSON root attribute ``edgekws`` (the data set's attrs: front-end spec,
seed, channel count) and per-sample datasets under ``extra/`` tagged with the attribute
``edgekws_per_sample``. See docs/datasets.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import atomic_path
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset

SHD_CHANNELS = 700  # the cochlea model's channel count in SHD and SSC
ATTRS_KEY = "edgekws"  # root attribute holding our JSON metadata
PER_SAMPLE_ATTR = "edgekws_per_sample"  # marks our extra per-sample datasets under extra/
REQUIRED = ("spikes/times", "spikes/units", "labels", "extra/keys")
_RESERVED_EXTRA = ("speaker", "keys", "meta_info")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is in the train extra
        raise DatasetError("reading SHD files needs h5py: pip install 'edgekws[train]'") from exc
    return h5py


def _decode(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def read_shd(path: str | os.PathLike[str], num_channels: int | None = None) -> SpikeDataset:
    """Read an SHD/SSC-layout HDF5 file into a :class:`SpikeDataset`.

    ``num_channels`` defaults to the value recorded by :func:`write_shd`, else 700 (SHD/SSC).
    Raises :class:`DatasetError` naming the file and every missing dataset, or saying that the
    file is truncated or not HDF5.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; pass the path of an SHD-layout .h5 file")
    try:
        with h5py.File(path, "r") as f:
            return _read_open(f, path, num_channels)
    except OSError as exc:
        raise DatasetError(
            f"{path}: not a readable HDF5 file ({exc}); the file is truncated or corrupt, "
            "download or write it again"
        ) from exc


def _read_open(f: Any, path: Path, num_channels: int | None) -> SpikeDataset:
    h5py = _h5py()
    missing = [key for key in REQUIRED if not isinstance(f.get(key), h5py.Dataset)]
    if missing:
        raise DatasetError(
            f"{path}: not in the SHD/SSC layout, missing dataset(s) {', '.join(missing)}; "
            f"an SHD-layout file needs {', '.join(REQUIRED)}"
        )
    attrs: dict[str, Any] = {}
    if ATTRS_KEY in f.attrs:
        try:
            attrs = json.loads(f.attrs[ATTRS_KEY])
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: root attribute {ATTRS_KEY!r} is not valid JSON") from exc
    times_raw = f["spikes/times"][()]
    units_raw = f["spikes/units"][()]
    labels = np.asarray(f["labels"][()]).astype(np.int64)
    class_names = _decode(f["extra/keys"][()])
    extra: dict[str, np.ndarray] = {}
    if isinstance(f.get("extra/speaker"), h5py.Dataset):
        extra["speaker"] = np.asarray(f["extra/speaker"][()]).astype(np.int64)
    for name, obj in f["extra"].items():
        if name not in _RESERVED_EXTRA and isinstance(obj, h5py.Dataset) and obj.attrs.get(PER_SAMPLE_ATTR):
            values = np.asarray(obj[()])
            extra[name] = np.array(_decode(values)) if values.dtype.kind in "SO" else values
    if isinstance(f.get("extra/meta_info"), h5py.Group):
        meta: dict[str, list[Any]] = {}
        for name, obj in f["extra/meta_info"].items():
            values = np.asarray(obj[()])
            meta[name] = _decode(values) if values.dtype.kind in "SOU" else values.tolist()
        attrs.setdefault("meta_info", meta)

    problems = []
    n = len(labels)
    if len(times_raw) != n or len(units_raw) != n:
        problems.append(
            f"spikes/times, spikes/units and labels must have one entry per sample, got "
            f"{len(times_raw)}, {len(units_raw)} and {n}"
        )
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems))
    times: list[np.ndarray] = []
    units: list[np.ndarray] = []
    for t_raw, u_raw in zip(times_raw, units_raw, strict=True):
        t = np.asarray(t_raw, dtype=np.float32).ravel()
        u = np.asarray(u_raw).ravel()
        if len(t) > 1 and np.any(np.diff(t) < 0):
            order = np.argsort(t, kind="stable")
            t, u = t[order], u[order]
        times.append(t)
        units.append(u.astype(np.uint16))
    if num_channels is None:
        num_channels = int(attrs.get("num_channels", SHD_CHANNELS))
    try:
        return SpikeDataset(
            times=times,
            units=units,
            labels=labels,
            num_channels=num_channels,
            class_names=class_names,
            extra=extra,
            attrs=attrs,
        )
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def write_shd(dataset: SpikeDataset, path: str | os.PathLike[str], time_dtype: Any = np.float32) -> Path:
    """Write ``dataset`` to ``path`` in the SHD/SSC HDF5 layout; returns the path.

    ``extra["speaker"]`` becomes ``extra/speaker`` (uint16); other per-sample extras go under
    ``extra/`` tagged ``edgekws_per_sample``; ``attrs`` (JSON-serialisable) and the channel count go
    in the root attribute ``edgekws``; ``attrs["meta_info"]`` (a dict of per-speaker lists) becomes
    ``extra/meta_info``. The file is written to a temporary name and renamed into place.
    """
    h5py = _h5py()
    path = Path(path)
    n = len(dataset)
    if n and int(dataset.labels.max()) > np.iinfo(np.uint16).max:
        raise DatasetError("labels must fit uint16 for the SHD layout")
    attrs = {k: v for k, v in dataset.attrs.items() if k != "meta_info"}
    attrs["num_channels"] = dataset.num_channels
    try:
        attrs_json = json.dumps(attrs, sort_keys=True)
    except TypeError as exc:
        raise DatasetError(f"data set attrs must be JSON-serialisable to write SHD files: {exc}") from exc
    times = np.empty(n, dtype=object)
    units = np.empty(n, dtype=object)
    for i in range(n):
        times[i] = np.asarray(dataset.times[i], dtype=time_dtype)
        units[i] = np.asarray(dataset.units[i], dtype=np.uint16)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[ATTRS_KEY] = attrs_json
        spikes = f.create_group("spikes")
        # create_dataset(data=object array) rather than slice assignment: the latter fails when
        # every row has the same length (h5py issue 2429).
        for name, rows, dtype in (("times", times, time_dtype), ("units", units, np.uint16)):
            vlen = h5py.vlen_dtype(np.dtype(dtype))
            if n:
                spikes.create_dataset(name, data=rows, dtype=vlen)
            else:
                spikes.create_dataset(name, shape=(0,), dtype=vlen)
        f.create_dataset("labels", data=dataset.labels.astype(np.uint16))
        extra = f.create_group("extra")
        extra.create_dataset("keys", data=np.array([c.encode("utf-8") for c in dataset.class_names]))
        for name, values in dataset.extra.items():
            arr = np.asarray(values)
            if name == "speaker":
                extra.create_dataset("speaker", data=arr.astype(np.uint16))
                continue
            if name in _RESERVED_EXTRA:
                raise DatasetError(f"extra/{name} is reserved in the SHD layout; rename the extra")
            if arr.dtype.kind == "U":
                arr = np.array([s.encode("utf-8") for s in arr.tolist()])
            extra.create_dataset(name, data=arr).attrs[PER_SAMPLE_ATTR] = True
        meta = dataset.attrs.get("meta_info")
        if meta:
            group = extra.create_group("meta_info")
            for name, values in meta.items():
                arr = np.asarray(values)
                if arr.dtype.kind == "U":
                    arr = np.array([s.encode("utf-8") for s in arr.tolist()])
                group.create_dataset(name, data=arr)
    return path

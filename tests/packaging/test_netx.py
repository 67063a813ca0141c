"""Tests for the NetX HDF5 writer and reader (layout as lava-dl NetX reads it)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgekws.packaging import FixedPointLayer, FixedPointNetwork, NetxError, read_netx, write_netx

GOLDEN = Path(__file__).parent / "golden" / "netx_tiny.json"


def _tiny() -> FixedPointNetwork:
    hidden = FixedPointLayer(
        weight=np.array([[1, -2, 3], [-128, 127, 0]]),
        weight_rec=np.array([[0, 5], [-6, 0]]),
        i_decay=742,
        v_decay=200,
        v_th_mant=2048,
        weight_scale=2.0**-11,
    )
    readout = FixedPointLayer(weight=np.array([[7, -8]]), i_decay=742, v_decay=200, weight_scale=2.0**-9)
    return FixedPointNetwork((hidden, readout))


def _dump(path: Path) -> dict[str, object]:
    """Every dataset: dtype, shape and value; every attribute of a layer group."""
    out: dict[str, object] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            if isinstance(value, np.ndarray):
                value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
            elif isinstance(value, np.generic):
                value = value.item()
            out[name] = {"dtype": obj.dtype.str, "shape": list(obj.shape), "value": value}
        elif isinstance(obj, h5py.Group) and obj.attrs:
            out[name + "@attrs"] = {k: float(v) for k, v in obj.attrs.items()}

    with h5py.File(path, "r") as h:
        h.visititems(visit)
        out["@root"] = {k: (v if isinstance(v, str) else int(v)) for k, v in h.attrs.items()}
    return out


def test_layout_matches_the_golden_file(tmp_path: Path) -> None:
    """The written file has exactly the datasets, dtypes and values of the golden NetX layout."""
    path = write_netx(_tiny(), tmp_path / "net.net")
    assert _dump(path) == json.loads(GOLDEN.read_text())


def test_type_is_fixed_length_bytes_as_netx_reads_it(tmp_path: Path) -> None:
    """`type` is an 'S' dataset of shape (1,) whose first element decodes to the layer type."""
    path = write_netx(_tiny(), tmp_path / "net.net")
    with h5py.File(path, "r") as h:
        assert h["layer/0/type"].dtype.kind == "S" and h["layer/0/type"].shape == (1,)
        assert h["layer/0/type"][0].decode("ascii") == "dense_rec"
        assert h["layer/1/type"][0].decode("ascii") == "dense"
        assert h["layer/1/neuron/vThMant"][()] == (1 << 17) - 1


def test_round_trip_is_exact(tmp_path: Path) -> None:
    """read_netx(write_netx(net)) has the same arrays and parameters."""
    net = _tiny()
    back = read_netx(write_netx(net, tmp_path / "net.net"))
    assert back.to_dict() == net.to_dict()
    for key, value in net.arrays().items():
        assert np.array_equal(back.arrays()[key], value)


def test_missing_keys_are_all_reported(tmp_path: Path) -> None:
    """A file without a weight and without vDecay names both problems."""
    path = write_netx(_tiny(), tmp_path / "net.net")
    with h5py.File(path, "a") as h:
        del h["layer/1/weight"]
        del h["layer/0/neuron/vDecay"]
    with pytest.raises(NetxError) as err:
        read_netx(path)
    assert "/layer/1: dataset 'weight' is missing" in str(err.value)
    assert "/layer/0/neuron: dataset 'vDecay' is missing" in str(err.value)


def test_truncated_file_gives_a_clear_error(tmp_path: Path) -> None:
    """A truncated file is reported as truncated or corrupt, not as an h5py traceback."""
    path = write_netx(_tiny(), tmp_path / "net.net")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NetxError, match="truncated or corrupt"):
        read_netx(path)


def test_non_integer_float_weights_are_refused(tmp_path: Path) -> None:
    """Float weights that are not whole numbers are refused (NetX would truncate them silently)."""
    path = write_netx(_tiny(), tmp_path / "net.net")
    with h5py.File(path, "a") as h:
        del h["layer/1/weight"]
        h["layer/1/weight"] = np.array([[7.5, -8.0]])
    with pytest.raises(NetxError, match="must be integers"):
        read_netx(path)


def test_mlgenn_style_input_layer_and_float_weights_are_read(tmp_path: Path) -> None:
    """A shape-only `input` layer 0 is skipped and integer-valued float32 weights are accepted."""
    path = tmp_path / "mlgenn.net"
    with h5py.File(path, "w") as h:
        h.create_dataset("layer/0/type", (1,), "S10", [b"input"])
        h["layer/0/shape"] = np.array([3])
        g = h.create_group("layer/1")
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g["shape"] = np.array([2])
        g["weight"] = np.array([[1.0, -2.0, 3.0], [4.0, 0.0, -5.0]], dtype=np.float32)
        for key, value in {"iDecay": 742, "vDecay": 200, "vThMant": 65536}.items():
            g[f"neuron/{key}"] = np.int32(value)
        g.create_dataset("neuron/type", (1,), "S10", [b"CUBA"])
    net = read_netx(path)
    assert net.num_inputs == 3 and net.num_outputs == 2
    assert net.layers[0].weight.tolist() == [[1, -2, 3], [4, 0, -5]]
    assert net.layers[0].weight_scale == 1.0


def test_missing_file_is_named(tmp_path: Path) -> None:
    """Reading a path that does not exist names the path."""
    with pytest.raises(NetxError, match="no such NetX file"):
        read_netx(tmp_path / "nope.net")

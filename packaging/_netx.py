"""Read and write fixed-point networks as lava-dl NetX HDF5 files (loadable by ``lava.lib.dl.netx``).

Layout (reference §1.1, as slayer writes it), one group per layer, no input layer::

    /layer/{i}/type            b'dense' or b'dense_rec' (fixed-length bytes, shape (1,))
    /layer/{i}/shape           (out,)
    /layer/{i}/weight          (out, in) integers
    /layer/{i}/weight_rec      (out, out) integers, dense_rec only
    /layer/{i}/bias            (out,) bias mantissas, optional
    /layer/{i}/neuron/type     b'CUBA'
    /layer/{i}/neuron/{iDecay, vDecay, vThMant, refDelay, gradedSpike}

NetX ignores HDF5 attributes, so edgekws keeps what NetX has no field for there: the float value of one
weight step of every layer (attribute ``edgekws_weight_scale``) and the format tags on the root.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging._fixedpoint import FixedPointError, FixedPointLayer, FixedPointNetwork

NETX_FORMAT = "edgekws.netx"
NETX_FORMAT_VERSION = 1
_SCALE_ATTR = "edgekws_weight_scale"


class NetxError(ValueError):
    """A NetX file cannot be read or written; the message names the file, the key and the fix."""


def _bytes(group: Any, name: str, value: bytes) -> None:
    group.create_dataset(name, (1,), f"S{max(10, len(value))}", [value])


def write_netx(net: FixedPointNetwork, path: str | Path) -> Path:
    """Write ``net`` as a NetX HDF5 file at ``path`` and return the path."""
    import h5py  # optional dependency (extras agent, train, lava): imported on use

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h:
        h.attrs["format"] = NETX_FORMAT
        h.attrs["format_version"] = NETX_FORMAT_VERSION
        for i, layer in enumerate(net.layers):
            g = h.create_group(f"layer/{i}")
            g.attrs[_SCALE_ATTR] = float(layer.weight_scale)
            _bytes(g, "type", b"dense_rec" if layer.weight_rec is not None else b"dense")
            g.create_dataset("shape", data=np.array([layer.size], dtype=np.int64))
            g.create_dataset("weight", data=layer.weight.astype(np.int32))
            if layer.weight_rec is not None:
                g.create_dataset("weight_rec", data=layer.weight_rec.astype(np.int32))
            if layer.bias is not None:
                g.create_dataset("bias", data=layer.bias.astype(np.int32))
            n = g.create_group("neuron")
            _bytes(n, "type", b"CUBA")
            n.create_dataset("iDecay", data=np.int32(layer.i_decay))
            n.create_dataset("vDecay", data=np.int32(layer.v_decay))
            n.create_dataset("vThMant", data=np.int32(layer.v_th_mant))
            n.create_dataset("refDelay", data=np.int32(1))
            n.create_dataset("gradedSpike", data=False)
    return path


def _str(dataset: Any) -> str:
    value = dataset[()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0]
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _int_array(g: Any, key: str, where: str, problems: list[str]) -> np.ndarray | None:
    if key not in g:
        problems.append(f"{where}: dataset '{key}' is missing")
        return None
    data = np.asarray(g[key][()])
    if not np.issubdtype(data.dtype, np.integer) and (
        not np.all(np.isfinite(data)) or np.any(data != np.round(data))
    ):
        problems.append(f"{where}/{key}: values must be integers (NetX truncates floats toward zero)")
        return None
    return data.astype(np.int64)


def _scalar(g: Any, key: str, where: str, problems: list[str]) -> int:
    if key not in g:
        problems.append(f"{where}: dataset '{key}' is missing")
        return 0
    return int(np.asarray(g[key][()]).ravel()[0])


def read_netx(path: str | Path | bytes, *, name: str = "model/netx.h5") -> FixedPointNetwork:
    """Read a NetX file of ``dense`` / ``dense_rec`` CUBA layers (a path, or the file's bytes, called
    ``name`` in messages); every problem is reported at once."""
    import h5py  # optional dependency (extras agent, train, lava): imported on use

    source: Any
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), Path(name)
    else:
        path = source = Path(path)
        if not path.is_file():
            raise NetxError(f"{path}: no such NetX file")
    try:
        h = h5py.File(source, "r")
    except OSError as exc:
        raise NetxError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    problems: list[str] = []
    layers: list[FixedPointLayer] = []
    try:
        with h:
            if "layer" not in h:
                raise NetxError(f"{path}: group '/layer' is missing; this is not a NetX file")
            keys = sorted(h["layer"].keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if keys != [str(i) for i in range(len(keys))]:
                raise NetxError(f"{path}: /layer children must be named 0..n-1, got {keys}")
            for key in keys:
                g = h["layer"][key]
                where = f"/layer/{key}"
                kind = _str(g["type"]) if "type" in g else None
                if kind is None:
                    problems.append(f"{where}: dataset 'type' is missing")
                    continue
                if kind == "input" and key == "0" and "neuron" not in g:
                    continue  # mlGeNN writes a shape-only input layer; NetX ignores it for dense nets
                if kind not in ("dense", "dense_rec"):
                    problems.append(f"{where}: layer type {kind!r} is not supported (dense, dense_rec)")
                    continue
                weight = _int_array(g, "weight", where, problems)
                weight_rec = _int_array(g, "weight_rec", where, problems) if kind == "dense_rec" else None
                bias = _int_array(g, "bias", where, problems) if "bias" in g else None
                if "neuron" not in g:
                    problems.append(
                        f"{where}: group 'neuron' is missing (edgekws needs explicit CUBA params)"
                    )
                    continue
                n = g["neuron"]
                ntype = _str(n["type"]) if "type" in n else "CUBA"
                if ntype not in ("CUBA", "LOIHI"):
                    problems.append(f"{where}/neuron: type {ntype!r} is not supported (CUBA)")
                params = {
                    k: _scalar(n, k, f"{where}/neuron", problems) for k in ("iDecay", "vDecay", "vThMant")
                }
                if weight is None or (kind == "dense_rec" and weight_rec is None):
                    continue
                try:
                    layers.append(
                        FixedPointLayer(
                            weight=weight,
                            weight_rec=weight_rec,
                            bias=bias,
                            i_decay=params["iDecay"],
                            v_decay=params["vDecay"],
                            v_th_mant=params["vThMant"],
                            weight_scale=float(g.attrs.get(_SCALE_ATTR, 1.0)),
                        )
                    )
                except FixedPointError as exc:
                    problems.append(f"{where}: {exc}")
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, NetxError):
            raise
        raise NetxError(f"{path}: cannot read NetX file (truncated or corrupt?): {exc}") from exc
    if problems:
        raise NetxError(f"{path}: invalid NetX file: " + "; ".join(problems))
    try:
        return FixedPointNetwork(layers=tuple(layers))
    except FixedPointError as exc:
        raise NetxError(f"{path}: {exc}") from exc

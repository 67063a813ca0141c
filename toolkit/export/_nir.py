"""NIR export of the float network, with the discrete semantics NIR leaves open pinned in a metadata dict.

NIR describes neurons by continuous-time ODEs (``τ_syn dI/dt = -I + w_in S``,
``τ_mem dv/dt = (v_leak - v) + R I``) and defines no time step, reset timing, delays or number
format. We choose the parameters so that the forward-Euler discretization with step ``dt`` — the one
snnTorch, Norse and Spyx use when they import NIR — reproduces our update exactly:

    I[t] = (1 - dt/τ_syn) I + (dt/τ_syn) w_in S     = α_s I + S   with τ_syn = dt/(1-α_s), w_in = τ_syn/dt
    v[t] = (1 - dt/τ_mem) v + (dt/τ_mem) R I        = α_m v + I   with τ_mem = dt/(1-α_m), R = τ_mem/dt

so ``τ = dt · 4096 / decay`` and the 12-bit decays come back as ``4096 · dt / τ``. Times are in
seconds. Graph: ``input → layer0_weight (Linear) → layer0 (CubaLIF, or a subgraph
lif ⇄ w_rec when recurrent) → … → layer{L}_weight (Linear) → layer{L} (CubaLI readout) → output``.

What NIR cannot say goes into the metadata dict (also stored as the graph's metadata), which the
bundle manifest pins: dt, the strict threshold, reset of v only, the one-step synaptic delay of
every layer, and the 12-bit decays. See docs/exports.md for the mapping and its approximations.

``readout="cuba_lif"`` writes the readout as a ``CubaLIF`` whose threshold is +inf (it never fires, so
its voltage is the ``CubaLI``'s) instead of a ``CubaLI``: the importers of Norse 1.1.0 and Spyx 1.0.0
silently drop a ``CubaLI`` node, but run a ``CubaLIF`` and expose its voltage in their state. Bundles ship
that form (``toolkit/_bundle_build.py``); ``tests/toolkit/test_nir_norse.py`` runs it in Norse.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal

import numpy as np

from edgekws.packaging import NetworkSpec
from edgekws.packaging import __version__ as edgekws_version
from edgekws.toolkit.export._params import checked_params

NIR_METADATA_VERSION = 1
NirReadout = Literal["cuba_li", "cuba_lif"]
NIR_READOUTS: tuple[NirReadout, ...] = ("cuba_li", "cuba_lif")
_READOUT_TEXT = {
    "cuba_li": "CubaLI: the readout voltage is the node's v",
    "cuba_lif": (
        "CubaLIF with v_threshold = +inf (never fires; for importers without CubaLI): the readout voltage "
        "is the node's v, not its (always zero) spike output"
    ),
}


def nir_metadata(spec: NetworkSpec, readout: NirReadout = "cuba_li") -> dict[str, Any]:
    """The discrete semantics a NIR graph of ``spec`` needs to be run as edgekws runs it."""
    nir = _import_nir()
    if readout not in NIR_READOUTS:
        raise ValueError(f"readout must be one of {', '.join(NIR_READOUTS)}, got {readout!r}")
    dt_s = spec.dt_ms / 1000.0
    return {
        "format": "edgekws.nir_semantics",
        "format_version": NIR_METADATA_VERSION,
        "edgekws_version": edgekws_version,
        "nir_version": nir.version,
        "time_unit": "s",
        "dt": dt_s,
        "discretization": (
            "forward Euler with step dt, v integrating the updated current: "
            "I[t] = I[t-1] + dt/tau_syn (w_in S[t] - I[t-1]); "
            "v[t] = v[t-1] + dt/tau_mem (v_leak - v[t-1] + r I[t])"
        ),
        "reset": "reset v to 0, u kept",
        "threshold": "strict: spike where v > v_threshold",
        "refractory_steps": 0,
        "delay": "one step per synapse layer (feed-forward and recurrent): u[t] gets W x[t-1] + R s[t-1]",
        "input_delay_steps": len(spec.layer_sizes),
        "delay_equivalence": (
            "run without feed-forward delays (recurrent edges delayed one step), the graph's readout "
            "at step t equals edgekws' readout at step t + input_delay_steps"
        ),
        "i_decay_12bit": spec.i_decay,
        "v_decay_12bit": spec.v_decay,
        "alpha_syn": spec.alpha_syn,
        "alpha_mem": spec.alpha_mem,
        "tau_syn_exp": _tau_exp(spec.alpha_syn, dt_s),
        "tau_mem_exp": _tau_exp(spec.alpha_mem, dt_s),
        "threshold_value": spec.threshold,
        "readout": _READOUT_TEXT[readout],
        "weights": "float32, units where the threshold is the given v_threshold (not quantized)",
    }


def export_nir(
    params: Mapping[str, Any], spec: NetworkSpec, *, readout: NirReadout = "cuba_li"
) -> tuple[bytes, dict[str, Any]]:
    """The NIR graph (HDF5 bytes, readable with ``nir.read``) and the semantics metadata it needs.

    ``readout`` is the readout node's type: ``cuba_li`` (exact), or ``cuba_lif``, a never-firing
    ``CubaLIF`` that third-party importers run (see the module docstring).
    """
    nir = _import_nir()
    weights = checked_params(params, spec)
    metadata = nir_metadata(spec, readout)
    dt_s = metadata["dt"]
    tau_syn = dt_s / (1.0 - spec.alpha_syn)
    tau_mem = dt_s / (1.0 - spec.alpha_mem)

    def full(n: int, value: float) -> np.ndarray:
        return np.full(n, value, dtype=np.float32)

    def linear(name: str) -> Any:
        return nir.Linear(weight=weights[name].astype(np.float32))

    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([spec.num_inputs]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for i, size in enumerate(spec.hidden):
        lif = nir.CubaLIF(
            tau_syn=full(size, tau_syn),
            tau_mem=full(size, tau_mem),
            r=full(size, tau_mem / dt_s),
            v_leak=full(size, 0.0),
            v_threshold=full(size, spec.threshold),
            v_reset=full(size, 0.0),
            w_in=full(size, tau_syn / dt_s),
        )
        layer: Any = lif
        if spec.recurrent[i]:
            layer = nir.NIRGraph(
                nodes={
                    "input": nir.Input(input_type=np.array([size])),
                    "lif": lif,
                    "w_rec": linear(f"layer{i}.weight_rec"),
                    "output": nir.Output(output_type=np.array([size])),
                },
                edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            )
        nodes[f"layer{i}_weight"] = linear(f"layer{i}.weight")
        nodes[f"layer{i}"] = layer
        edges += [(previous, f"layer{i}_weight"), (f"layer{i}_weight", f"layer{i}")]
        previous = f"layer{i}"
    last = len(spec.hidden)
    n = spec.num_outputs
    nodes[f"layer{last}_weight"] = linear(f"layer{last}.weight")
    leaky = {
        "tau_syn": full(n, tau_syn),
        "tau_mem": full(n, tau_mem),
        "r": full(n, tau_mem / dt_s),
        "v_leak": full(n, 0.0),
        "w_in": full(n, tau_syn / dt_s),
    }
    nodes[f"layer{last}"] = (
        nir.CubaLI(**leaky)
        if readout == "cuba_li"
        else nir.CubaLIF(**leaky, v_threshold=full(n, np.inf), v_reset=full(n, 0.0))
    )
    nodes["output"] = nir.Output(output_type=np.array([n]))
    edges += [
        (previous, f"layer{last}_weight"),
        (f"layer{last}_weight", f"layer{last}"),
        (f"layer{last}", "output"),
    ]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(metadata))
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return buffer.getvalue(), metadata


def _import_nir() -> ModuleType:
    # Imported on use: the ONNX exporter (and the agent tests that use it) must work without nir.
    try:
        import nir
    except ImportError as exc:
        raise ImportError("the NIR exporter needs the nir package: pip install 'edgekws[train]'") from exc
    return nir


def _tau_exp(alpha: float, dt: float) -> float:
    """The time constant whose exact exponential decay over ``dt`` is ``alpha``: ``-dt / ln(alpha)``."""
    return -dt / math.log(alpha)

"""The NIR export reads back with nir.read and, run as its metadata says, reproduces the network."""

from __future__ import annotations

import io
import itertools

import nir
import numpy as np
import pytest
from _nir_reference import SPEC, random_params, reference

from edgekws.toolkit.export import ExportError, export_nir


def run_nir(graph: nir.NIRGraph, dt: float, spikes: np.ndarray) -> np.ndarray:
    """A small NIR simulator with the conventions of the metadata: forward Euler, no feed-forward delay.

    Walks the chain from ``input`` to ``output``; a recurrent subgraph feeds its spikes back through
    ``w_rec`` one step later (a cycle needs a delay). Returns the readout voltage ``(T, O)``.
    """
    order, node = [], "input"
    while node != "output":
        (node,) = [dst for src, dst in graph.edges if src == node]
        order.append(node)
    state: dict[str, dict[str, np.ndarray]] = {}
    out = []
    for x_t in spikes.astype(np.float64):
        signal = x_t
        for name in order[:-1]:
            element = graph.nodes[name]
            if isinstance(element, nir.Linear):
                signal = element.weight.astype(np.float64) @ signal
                continue
            feedback = None
            if isinstance(element, nir.NIRGraph):
                feedback, element = element.nodes["w_rec"], element.nodes["lif"]
            st = state.setdefault(name, {k: np.zeros(len(element.r)) for k in ("i", "v", "z")})
            drive = signal if feedback is None else signal + feedback.weight @ st["z"]
            st["i"] = st["i"] + dt / element.tau_syn * (element.w_in * drive - st["i"])
            st["v"] = st["v"] + dt / element.tau_mem * (element.v_leak - st["v"] + element.r * st["i"])
            if isinstance(element, nir.CubaLIF):
                st["z"] = (st["v"] > element.v_threshold).astype(np.float64)
                st["v"] = np.where(st["z"] > 0, element.v_reset, st["v"])
                signal = st["z"]
            else:
                signal = st["v"]
        out.append(state[order[-2]]["v"].copy())  # the readout node's voltage (a CubaLIF's output is spikes)
    return np.array(out)


def test_graph_reads_back_with_the_expected_nodes_and_edges():
    """nir.read gives a chain Linear → recurrent CubaLIF subgraph → Linear → CubaLIF → Linear → CubaLI."""
    params = random_params(SPEC, 0)
    data, _ = export_nir(params, SPEC)
    graph = nir.read(io.BytesIO(data))
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {
        "input": "Input",
        "layer0_weight": "Linear",
        "layer0": "NIRGraph",
        "layer1_weight": "Linear",
        "layer1": "CubaLIF",
        "layer2_weight": "Linear",
        "layer2": "CubaLI",
        "output": "Output",
    }
    chain = [
        "input",
        "layer0_weight",
        "layer0",
        "layer1_weight",
        "layer1",
        "layer2_weight",
        "layer2",
        "output",
    ]
    assert sorted(graph.edges) == sorted(itertools.pairwise(chain))
    sub = graph.nodes["layer0"]
    assert {name: type(node).__name__ for name, node in sub.nodes.items()} == {
        "input": "Input",
        "lif": "CubaLIF",
        "w_rec": "Linear",
        "output": "Output",
    }
    assert sorted(sub.edges) == sorted(
        [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    )
    assert list(graph.nodes["input"].input_type["input"]) == [24]
    assert list(graph.nodes["output"].output_type["output"]) == [5]
    for i in range(3):
        weight = graph.nodes[f"layer{i}_weight"].weight
        assert weight.dtype == np.float32
        np.testing.assert_array_equal(weight, params[f"layer{i}.weight"].astype(np.float32))
    np.testing.assert_array_equal(sub.nodes["w_rec"].weight, params["layer0.weight_rec"].astype(np.float32))
    assert sub.nodes["lif"].tau_mem.shape == (32,) and graph.nodes["layer1"].v_threshold.shape == (16,)
    assert np.all(graph.nodes["layer1"].v_threshold == SPEC.threshold)
    assert np.all(graph.nodes["layer1"].v_reset == 0.0)


def test_time_constants_give_back_the_12_bit_decays():
    """τ = dt·4096/decay gives back iDecay and vDecay, and R, w_in make the Euler step exact."""
    data, meta = export_nir(random_params(SPEC, 0), SPEC)
    lif = nir.read(io.BytesIO(data)).nodes["layer1"]
    dt = meta["dt"]
    assert dt == pytest.approx(SPEC.dt_ms / 1000)
    assert np.all(np.round(4096 * dt / lif.tau_syn) == SPEC.i_decay)
    assert np.all(np.round(4096 * dt / lif.tau_mem) == SPEC.v_decay)
    np.testing.assert_allclose(lif.r * dt / lif.tau_mem, 1.0, rtol=1e-6)
    np.testing.assert_allclose(lif.w_in * dt / lif.tau_syn, 1.0, rtol=1e-6)
    # the exact-exponential time constants differ from the spec's only by the 12-bit rounding of the decays
    assert meta["tau_syn_exp"] == pytest.approx(SPEC.tau_syn_ms / 1000, rel=5e-3)
    assert meta["tau_mem_exp"] == pytest.approx(SPEC.tau_mem_ms / 1000, rel=5e-3)


def test_metadata_pins_what_nir_leaves_open():
    """The metadata, returned and stored in the graph, pins dt, reset, threshold, delays and decays."""
    data, meta = export_nir(random_params(SPEC, 0), SPEC)
    assert meta["reset"] == "reset v to 0, u kept"
    assert meta["threshold"].startswith("strict")
    assert meta["input_delay_steps"] == 3
    assert (meta["i_decay_12bit"], meta["v_decay_12bit"]) == (742, 200)
    stored = nir.read(io.BytesIO(data)).metadata
    for key, value in meta.items():
        assert stored[key] == value, key


def test_the_importable_readout_is_a_never_firing_cuba_lif():
    """readout="cuba_lif" (what bundles ship) writes the readout as a CubaLIF with threshold +inf and the
    CubaLI's parameters, and says so in the metadata; an unknown readout form is refused."""
    params = random_params(SPEC, 0)
    exact = nir.read(io.BytesIO(export_nir(params, SPEC)[0])).nodes["layer2"]
    data, meta = export_nir(params, SPEC, readout="cuba_lif")
    node = nir.read(io.BytesIO(data)).nodes["layer2"]
    assert isinstance(node, nir.CubaLIF) and np.all(np.isposinf(node.v_threshold))
    for name in ("tau_syn", "tau_mem", "r", "v_leak", "w_in"):
        np.testing.assert_array_equal(getattr(node, name), getattr(exact, name))
    assert meta["readout"].startswith("CubaLIF with v_threshold = +inf")
    with pytest.raises(ValueError, match="readout must be one of"):
        export_nir(params, SPEC, readout="li")  # type: ignore[arg-type]


@pytest.mark.parametrize("readout", ["cuba_li", "cuba_lif"])
def test_graph_run_as_the_metadata_says_reproduces_the_network(readout):
    """Simulating the read-back graph per its metadata gives edgekws' readout shifted by input_delay_steps,
    with either readout node."""
    params = random_params(SPEC, 1)
    x = (np.random.default_rng(2).random((300, SPEC.num_inputs)) < 0.1).astype(np.float64)
    data, meta = export_nir(params, SPEC, readout=readout)
    graph = nir.read(io.BytesIO(data))
    lag = meta["input_delay_steps"]
    expected = reference(params, SPEC, x)
    got = run_nir(graph, meta["dt"], x)
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(got[: len(x) - lag], expected[lag:], atol=1e-4)


def test_bad_parameters_raise_export_error():
    """A misshapen recurrent matrix is reported with its expected shape."""
    params = random_params(SPEC, 0)
    params["layer0.weight_rec"] = np.zeros((32, 31))
    with pytest.raises(ExportError, match=r"layer0.weight_rec must have shape \(32, 32\)"):
        export_nir(params, SPEC)

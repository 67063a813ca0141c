"""ONNX export of the float network: the time loop as one ``Scan``, so one model serves any length.

Two variants share one step graph (the update of docs/model.md, in the same order):

- ``export_onnx``: ``spikes [B, T, C] -> readout [B, T, O]``, state starting at zero.
- ``export_onnx_streaming``: ``spikes [B, T_chunk, C]`` plus the network state in, the readout chunk
  plus the new state out. Feeding the chunks of a sequence one after another, each with the state
  the previous chunk returned (zeros for the first), gives exactly the whole-sequence readout.

The first layer's input current ``W_0 x[t]`` is one batched ``MatMul`` over the whole chunk, outside
the loop; the loop carries it one step (the synaptic delay) in the state ``in0``. State tensors, all
``[B, n]`` float32, in this order:

    in0            W_0 x[t-1], the delayed input current of the first layer     (n = hidden[0])
    layer{i}.u     synaptic current of hidden layer i                            (n = hidden[i])
    layer{i}.v     membrane voltage of hidden layer i
    layer{i}.s     spikes of hidden layer i at the previous step (0 or 1)
    layer{L}.u     readout current, L = len(hidden)                              (n = num_outputs)
    layer{L}.v     readout voltage

The streaming model names each state input as above and each new-state output with a ``.next``
suffix. ``metadata_props`` hold the edgekws version, the variant, the network spec and the state
layout as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekws.packaging import NetworkSpec
from edgekws.packaging import __version__ as edgekws_version
from edgekws.toolkit.export._params import checked_params

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: readable by ONNX Runtime >= 1.12 and TensorRT 8.5+
FLOAT = TensorProto.FLOAT


def state_layout(spec: NetworkSpec) -> list[tuple[str, int]]:
    """Name and width of every state tensor, in the order the streaming model takes them."""
    layout = [("in0", spec.hidden[0])]
    for i, size in enumerate(spec.hidden):
        layout += [(f"layer{i}.u", size), (f"layer{i}.v", size), (f"layer{i}.s", size)]
    last = len(spec.hidden)
    layout += [(f"layer{last}.u", spec.num_outputs), (f"layer{last}.v", spec.num_outputs)]
    return layout


def export_onnx(params: Mapping[str, Any], spec: NetworkSpec) -> bytes:
    """The whole-sequence model ``spikes [B, T, C] -> readout [B, T, O]`` as ONNX bytes (opset 17)."""
    return _export(params, spec, streaming=False)


def export_onnx_streaming(params: Mapping[str, Any], spec: NetworkSpec) -> bytes:
    """The chunked model ``(spikes [B, T_chunk, C], state...) -> (readout chunk, state...)`` as ONNX bytes."""
    return _export(params, spec, streaming=True)


def _export(params: Mapping[str, Any], spec: NetworkSpec, *, streaming: bool) -> bytes:
    weights = checked_params(params, spec)
    layout = state_layout(spec)
    initializers = _initializers(weights, spec)

    spikes = helper.make_tensor_value_info("spikes", FLOAT, ["batch", "steps", spec.num_inputs])
    readout = helper.make_tensor_value_info("readout", FLOAT, ["batch", "steps", spec.num_outputs])
    nodes = [helper.make_node("MatMul", ["spikes", "layer0.weight_t"], ["in0_seq"], name="input_current")]
    inputs = [spikes]
    outputs = [readout]
    if streaming:
        inputs += [helper.make_tensor_value_info(name, FLOAT, ["batch", n]) for name, n in layout]
        outputs += [helper.make_tensor_value_info(f"{name}.next", FLOAT, ["batch", n]) for name, n in layout]
        initial = [name for name, _ in layout]
        final = [f"{name}.next" for name, _ in layout]
    else:
        nodes += _zero_states(layout)
        initial = [f"{name}.init" for name, _ in layout]
        final = [f"{name}.final" for name, _ in layout]
    nodes.append(
        helper.make_node(
            "Scan",
            [*initial, "in0_seq"],
            [*final, "readout"],
            name="time_loop",
            num_scan_inputs=1,
            scan_input_axes=[1],
            scan_output_axes=[1],
            body=_step_graph(spec, layout),
        )
    )
    variant = "streaming" if streaming else "sequence"
    graph = helper.make_graph(nodes, f"edgekws_{variant}", inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgekws",
        producer_version=edgekws_version,
        doc_string=f"edgekws float network ({variant}); semantics in edgekws docs/model.md",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "edgekws.version": edgekws_version,
            "edgekws.onnx_variant": variant,
            "edgekws.network_spec": json.dumps(spec.to_dict(), sort_keys=True),
            "edgekws.state": json.dumps([{"name": name, "size": n} for name, n in layout]),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _initializers(weights: dict[str, np.ndarray], spec: NetworkSpec) -> list[TensorProto]:
    def tensor(name: str, value: Any) -> TensorProto:
        return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)

    out = [
        tensor("alpha_syn", spec.alpha_syn),
        tensor("alpha_mem", spec.alpha_mem),
        tensor("threshold", spec.threshold),
        tensor("zero", 0.0),
    ]
    # MatMul computes x @ W^T for our (out, in) weights.
    out += [tensor(f"{name}_t", value.T) for name, value in weights.items()]
    return out


def _zero_states(layout: list[tuple[str, int]]) -> list[onnx.NodeProto]:
    """Nodes making a zero ``[B, n]`` tensor ``{name}.init`` for every state, B read from the input."""
    nodes = [
        helper.make_node("Shape", ["spikes"], ["spikes_shape"], start=0, end=1, name="batch_size"),
    ]
    zero = helper.make_tensor("zero_value", FLOAT, [1], [0.0])
    for name, n in layout:
        width = helper.make_tensor(f"{name}.width", TensorProto.INT64, [1], [n])
        nodes += [
            helper.make_node("Constant", [], [f"{name}.width"], value=width),
            helper.make_node("Concat", ["spikes_shape", f"{name}.width"], [f"{name}.shape"], axis=0),
            helper.make_node("ConstantOfShape", [f"{name}.shape"], [f"{name}.init"], value=zero),
        ]
    return nodes


def _step_graph(spec: NetworkSpec, layout: list[tuple[str, int]]) -> onnx.GraphProto:
    """One time step: old state and this step's ``W_0 x[t]`` in, new state and readout voltage out."""
    nodes: list[onnx.NodeProto] = []

    def node(op: str, ins: list[str], out: str) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out))
        return out

    def cuba(i: str, current: str, recurrent: str | None) -> tuple[str, str]:
        """``u = α_s u + (current + recurrent)``, ``v = α_m v + u``: the new u and the unreset v.

        Summed in the trainer's order (``toolkit/train/_model.py``), so float32 rounding matches it.
        """
        if recurrent is not None:
            current = node("Add", [current, recurrent], f"{i}.i_total")
        u = node("Add", [node("Mul", [f"{i}.u.old", "alpha_syn"], f"{i}.u_leak"), current], f"{i}.u_in")
        v = node("Add", [node("Mul", [f"{i}.v.old", "alpha_mem"], f"{i}.v_leak"), u], f"{i}.v_in")
        return u, v

    new_state: dict[str, str] = {"in0": node("Identity", ["in0_t"], "in0.new")}
    for i in range(len(spec.hidden)):
        layer = f"layer{i}"
        # Input of step t is what the layer below sent at step t-1 (one step of synaptic delay).
        current = "in0.old"
        if i > 0:
            current = node("MatMul", [f"layer{i - 1}.s.old", f"{layer}.weight_t"], f"{layer}.i_ff")
        recurrent = None
        if spec.recurrent[i]:
            recurrent = node("MatMul", [f"{layer}.s.old", f"{layer}.weight_rec_t"], f"{layer}.i_rec")
        u, v = cuba(layer, current, recurrent)
        fired = node("Greater", [v, "threshold"], f"{layer}.fired")  # strict threshold
        new_state[f"{layer}.u"] = node("Identity", [u], f"{layer}.u.new")
        new_state[f"{layer}.v"] = node("Where", [fired, "zero", v], f"{layer}.v.new")  # reset v only
        nodes.append(helper.make_node("Cast", [fired], [f"{layer}.s.new"], to=FLOAT, name=f"{layer}.s.new"))
        new_state[f"{layer}.s"] = f"{layer}.s.new"
    last = len(spec.hidden)
    out = f"layer{last}"
    current = node("MatMul", [f"layer{last - 1}.s.old", f"{out}.weight_t"], f"{out}.i_ff")
    u, v = cuba(out, current, None)
    new_state[f"{out}.u"] = node("Identity", [u], f"{out}.u.new")
    new_state[f"{out}.v"] = node("Identity", [v], f"{out}.v.new")
    node("Identity", [v], "readout_t")

    def info(name: str, n: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, FLOAT, ["batch", n])

    ins = [info(f"{name}.old", n) for name, n in layout] + [info("in0_t", spec.hidden[0])]
    outs = [info(new_state[name], n) for name, n in layout] + [info("readout_t", spec.num_outputs)]
    return helper.make_graph(nodes, "step", ins, outs)

"""A third-party framework runs the NIR graph bundles ship: Norse 1.1.0 (`norse.torch.from_nir`) imports
``model/model.nir`` as `edgekws bundle build` writes it and reproduces the float network's readout and
decisions.

Runs in the Lava environment, which has PyTorch (`make test` adds this file to its run; the Makefile
installs norse there); the main environment has no torch and skips the module by its `lava` mark.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from _nir_reference import SPEC, random_params, reference
from _parity import assert_readout_close

from edgekws.agent import decide
from edgekws.toolkit._bundle_build import bundle_nir

pytestmark = [
    pytest.mark.lava,
    # Norse 1.1.0's from_nir calls nirtorch.load, which nirtorch 2.x deprecates (it still works)
    pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning"),
]


def _norse_readout(nir_bytes: bytes, dt: float, spikes: np.ndarray, readout: str) -> np.ndarray:
    """The voltage of the graph's node ``readout`` ``(T, O)`` when Norse runs ``spikes`` ``(T, C)``."""
    import nir
    import norse.torch
    import torch

    module = norse.torch.from_nir(nir.read(io.BytesIO(nir_bytes)), dt=dt)
    state, trace = None, []
    with torch.no_grad():
        for x_t in spikes.astype(np.float32):
            out, state = module(torch.from_numpy(x_t[None]), state)
            assert not out.any()  # the readout never fires: its spikes are the graph's output
            ((_, lif_state),) = state.state[readout]
            trace.append(lif_state.v.numpy()[0].astype(np.float64))
    return np.array(trace)


def test_norse_runs_the_shipped_nir_and_makes_the_same_decisions() -> None:
    """Norse keeps the readout (a CubaLI it would drop silently), and its voltage, read from Norse's state
    with the input delayed by the metadata's input_delay_steps, is the float model's readout (within 2e-6
    of the readout's scale per sample) with the same decision for every sample."""
    rng = np.random.default_rng(7)
    params = random_params(SPEC, 3)
    data, semantics = bundle_nir(params, SPEC)
    delay, steps = semantics["input_delay_steps"], 200
    readout = f"layer{len(SPEC.hidden)}"
    ours, theirs = [], []
    for rate in np.linspace(0.05, 0.4, 12):
        spikes = (rng.random((steps, SPEC.num_inputs)) < rate).astype(np.uint8)
        # Norse has no synaptic delays: its readout runs input_delay_steps ahead of ours; input that
        # starts that many steps late lines the two up
        late = np.concatenate([np.zeros((delay, SPEC.num_inputs), np.uint8), spikes[: steps - delay]])
        ours.append(reference(params, SPEC, spikes))
        theirs.append(_norse_readout(data, semantics["dt"], late, readout))
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    assert np.abs(ours_a).max(axis=(1, 2)).min() > 1.0  # the hidden layers fire: no two silent traces
    for mine, norse in zip(ours_a, theirs_a, strict=True):
        assert_readout_close(norse, mine)
    labels = decide(ours_a).labels
    assert len(set(labels.tolist())) > 1  # the samples are told apart, so agreement means something
    assert np.array_equal(decide(theirs_a).labels, labels)


def test_norse_drops_the_exact_cuba_li_readout() -> None:
    """Why bundles ship the CubaLIF form: from the CubaLI graph Norse builds no readout node at all (its
    output is the readout's input current), so there is no readout voltage to read."""
    import nir
    import norse.torch

    from edgekws.toolkit.export import export_nir

    data, _ = export_nir(random_params(SPEC, 3), SPEC)
    module = norse.torch.from_nir(nir.read(io.BytesIO(data)), dt=SPEC.dt_ms / 1000)
    names = dict(module.named_children())
    assert f"layer{len(SPEC.hidden)}_weight" in names and f"layer{len(SPEC.hidden)}" not in names

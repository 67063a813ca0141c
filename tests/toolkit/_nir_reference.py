"""The float64 reference of docs/model.md and a random network, for the NIR tests (test_export_nir.py in
the main environment, test_nir_norse.py in the Lava one)."""

from __future__ import annotations

import numpy as np

from edgekws.packaging import NetworkSpec

SPEC = NetworkSpec(num_inputs=24, hidden=(32, 16), recurrent=(True, False), num_outputs=5)


def random_params(spec: NetworkSpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, (0.2 if name.endswith("_rec") else 0.8) / np.sqrt(shape[1]), shape)
        for name, shape in spec.parameter_shapes().items()
    }


def reference(params: dict[str, np.ndarray], spec: NetworkSpec, spikes: np.ndarray) -> np.ndarray:
    """Float64 readout ``(T, O)`` of docs/model.md for one sample ``(T, C)``: delays on every synapse."""
    sizes = spec.layer_sizes
    u = [np.zeros(n) for n in sizes]
    v = [np.zeros(n) for n in sizes]
    s = [np.zeros(n) for n in spec.hidden]
    x_prev = np.zeros(spikes.shape[1])
    out = []
    for x_t in spikes:
        inp, new_s = x_prev, []
        for i in range(len(sizes)):
            current = params[f"layer{i}.weight"] @ inp
            if i < len(spec.hidden) and spec.recurrent[i]:
                current = current + params[f"layer{i}.weight_rec"] @ s[i]
            u[i] = spec.alpha_syn * u[i] + current
            v[i] = spec.alpha_mem * v[i] + u[i]
            if i < len(spec.hidden):
                fired = v[i] > spec.threshold
                v[i] = np.where(fired, 0.0, v[i])
                new_s.append(fired.astype(np.float64))
                inp = s[i]
        s, x_prev = new_s, x_t
        out.append(v[-1].copy())
    return np.array(out)

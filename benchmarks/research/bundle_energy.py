"""Issue #12 round 6: what a reference bundle costs per inference, next to what it gets right.

Runs each bundle's fixed-point network through the emulator on a spike test set (e.g. all FSDD clips) and
reports its accuracy and the ``estimated:loihi2-opcount`` energy per inference from the emulator's op counts
(input events, hidden spikes, synaptic events, neuron updates: agent/_energy.py, Davies et al. 2018 Table 2
coefficients; an estimate, never a measurement). A network trained to fire more spends more per clip. A
bundle whose front-end has delay taps gets the plain set's spikes with its taps added (the same spikes).

```
.venv/bin/python benchmarks/research/bundle_energy.py DATA.h5 OUT.json NAME=BUNDLE:KEY.pub ...
```
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine  # benchmarks/ is on the path from here on


def measure(bundle_path: Path, key: Path, data_path: Path) -> dict[str, object]:
    import tempfile

    from edgekws.agent import FrontendSpec, decide
    from edgekws.agent._energy import loihi_opcount_joules, opcounts_of
    from edgekws.agent.backends import EmulatorBackend
    from edgekws.packaging import NetworkSpec, load_public_key, open_bundle, read_netx
    from edgekws.toolkit.data import read_shd

    bundle = open_bundle(bundle_path, [load_public_key(key)])
    spec = NetworkSpec.from_dict(dict(bundle.manifest.network))
    data = read_shd(data_path)
    taps = FrontendSpec.from_dict(dict(bundle.manifest.frontend)).delay_taps_ms
    if taps != (0.0,) and data.num_channels != spec.num_inputs:  # plain spikes for a tapped bundle
        data = data.with_delay_taps(taps)
    names = list(bundle.manifest.labels)
    truth = np.asarray([names.index(n) for n in np.asarray(data.class_names)[data.labels]])
    with tempfile.TemporaryDirectory() as tmp:
        netx = Path(tmp) / "netx.h5"
        netx.write_bytes(bundle.read("model/netx.h5"))
        backend = EmulatorBackend(read_netx(netx))
    start = time.perf_counter()
    predicted = []
    for i in range(0, len(data), 100):
        x = data.bin(spec.dt_ms / 1000.0, spec.num_steps, np.arange(i, min(i + 100, len(data))))
        predicted.append(decide(backend.run(x), spec.readout).labels)
    seconds = time.perf_counter() - start
    counts = backend.event_counts()  # everything this backend ran: the whole set
    ops = opcounts_of(counts, len(data))
    hidden = counts["hidden_spikes"] / len(data)
    return {
        "bundle": f"{bundle.manifest.name} {bundle.manifest.version}",
        "samples": len(data),
        "fixed_point_accuracy": round(float(np.mean(np.concatenate(predicted) == truth)), 4),
        "hidden_spikes_per_inference": round(hidden, 1),
        "hidden_rate_hz": round(hidden / sum(spec.hidden) / (spec.num_steps * spec.dt_ms / 1000.0), 2),
        "synops_per_inference": round(ops.synops),
        "estimated_uj_per_inference": round(loihi_opcount_joules(ops) * 1e6, 2),
        "emulator_s": round(seconds, 1),
    }


def main(argv: list[str]) -> None:
    data, out = Path(argv[0]), Path(argv[1])
    rows = {}
    for item in argv[2:]:
        name, _, rest = item.partition("=")
        bundle, _, key = rest.partition(":")
        rows[name] = measure(Path(bundle), Path(key), data)
        print(name, json.dumps(rows[name]), flush=True)
    command = "python benchmarks/research/bundle_energy.py " + " ".join(argv)
    method = "estimated:loihi2-opcount (agent/_energy.py)"
    doc = {"data": str(data), "machine": machine(), "command": command, "method": method, "rows": rows}
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1:])

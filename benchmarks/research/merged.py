"""Runs and their merge (``edgekws train merge``) scored on one test set: ``OUT.{md,json}``.

For protocol (c) of issue #12, where each rotation's runs were trained by ``benchmarks/real_voices.py``
(several seeds of one recipe, each in its own ``--work`` folder) and are tested on the FSDD speakers the
rotation held out. Each run is scored alone (float), then their merge (one network, the members' mean
readout) in float and in 8-bit fixed point (the emulator). The test set is read plain and given the runs'
delay taps (``sc_rejection.heard``), as the runs heard their training data.

```
W=runs/r19; N=synthetic+fsdd-george-jackson-nicolas-yweweler-copies3
.venv/bin/python benchmarks/research/merged.py benchmarks/results/merged_fsdd_lucas_theo \
    runs/r18/cAt/real/fsdd-without-lucas-theo-copies3/test.h5 runs/r18/cAt/runs/$N $W/cAts1/runs/$N \
    $W/cAts2/runs/$N --merged $W/merged-lucas-theo
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, machine, write_results  # benchmarks/ is on the path from here on
from sc_rejection import heard, taps_of

from edgekws.toolkit.data import read_shd
from edgekws.toolkit.train import evaluate, load_run, merge_runs


def _score(run: Any, data: Any, backend: str) -> dict[str, Any]:
    result = evaluate(run, data, backend=backend)
    per_speaker = {k: round(v["accuracy"], 4) for k, v in (result.get("per_speaker_accuracy") or {}).items()}
    return {"backend": backend, "accuracy": round(result["accuracy"], 4), "per_speaker": per_speaker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="results path without suffix (OUT.md, OUT.json)")
    ap.add_argument("test", type=Path, help="test spike file (HDF5, the plain front-end's spikes)")
    ap.add_argument("runs", type=Path, nargs="+", help="run folders of one architecture (two or more)")
    ap.add_argument("--merged", type=Path, required=True, help="run folder to write the merge to")
    args = ap.parse_args()
    runs = [load_run(p) for p in args.runs]
    taps = {taps_of(r) for r in runs}
    if len(taps) != 1:
        sys.exit(f"the runs were trained with different delay taps: {sorted(taps)}")
    data = heard(read_shd(args.test), taps.pop())
    merged = load_run(merge_runs(args.runs, args.merged))  # first: it refuses runs that do not fit together
    rows = [
        {"run": str(r.run_dir), "seed": r.info["config"].get("seed"), **_score(r, data, "float")}
        for r in runs
    ]
    merge_rows = [
        {"run": str(args.merged), "seed": "merge", **_score(merged, data, b)} for b in ("float", "emulator")
    ]
    doc = {
        "machine": machine(),
        "command": command_line(),
        "test": str(args.test),
        "samples": len(data),
        "members": rows,
        "merged": merge_rows,
        "members_mean": round(float(np.mean([r["accuracy"] for r in rows])), 4),
    }
    speakers = sorted({s for r in rows + merge_rows for s in r["per_speaker"]})
    md = [
        f"# Runs and their merge: `{args.out.stem}`",
        "",
        f"Test set `{args.test}` ({len(data)} clips; speakers {', '.join(speakers)}), never heard in "
        "training. "
        f"Machine: {doc['machine']['cpu']}. Reproduce: `{doc['command']}`.",
        "",
        "| run | seed | backend | accuracy | " + " | ".join(speakers) + " |",
        "| --- " * (4 + len(speakers)) + "|",
    ]
    for r in rows + merge_rows:
        per = " | ".join(f"{r['per_speaker'].get(s, float('nan')):.1%}" for s in speakers)
        md.append(f"| `{r['run']}` | {r['seed']} | {r['backend']} | **{r['accuracy']:.1%}** | {per} |")
    md += ["", f"Members' mean: {doc['members_mean']:.1%}; merged (float): {merge_rows[0]['accuracy']:.1%}."]
    print(write_results(args.out.with_suffix(".json"), doc, "\n".join(md) + "\n"))


if __name__ == "__main__":
    main()

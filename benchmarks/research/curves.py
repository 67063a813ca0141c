"""Training curves of runs side by side: ``OUT.{png,json}`` (hidden rate and accuracies per epoch).

For runs that did not end in ``runs/rv/results.jsonl`` (``real_runs.py report`` draws those), e.g. the
protocol (c) runs of ``benchmarks/real_voices.py``, stopped ones included: each run's ``metrics.jsonl`` as
written, so a divergence (the hidden rate jumping, the training accuracy falling) can be seen and compared.

```
.venv/bin/python benchmarks/research/curves.py benchmarks/results/divergence_rotation2 \
    'seed 1234, unclipped=runs/r18/cAt/runs/NAME' 'seed 1, unclipped=runs/r19/cAts1/runs/NAME' ...
```
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import command_line, machine  # benchmarks/ is on the path from here on

from edgekws.toolkit.train import read_metrics, read_run_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="results path without suffix (OUT.png, OUT.json)")
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER")
    args = ap.parse_args()
    rows = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep:
            sys.exit(f"{item!r}: give LABEL=RUN_FOLDER")
        metrics = read_metrics(folder)
        if not metrics:
            sys.exit(f"{folder}: no metrics.jsonl entries (not a trained run, or not one epoch yet)")
        info = read_run_info(folder)
        rows.append(
            {
                "label": label,
                "run": folder,
                "status": info.get("status"),
                "config": info.get("config"),
                "epochs": [m["epoch"] for m in metrics],
                "hidden_rate_hz": [round(m["hidden_rate_hz"], 2) for m in metrics],
                "train_accuracy": [round(m["train_accuracy"], 4) for m in metrics],
                "val_accuracy": [
                    round(m["val_accuracy"], 4) if "val_accuracy" in m else None for m in metrics
                ],
            }
        )
    doc = {"machine": machine(), "command": command_line(), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, r in enumerate(rows):
        ax1.plot(r["epochs"], r["hidden_rate_hz"], color=f"C{i}", label=f"{r['label']} ({r['status']})")
        ax2.plot(r["epochs"], [a * 100 for a in r["train_accuracy"]], color=f"C{i}", linestyle="--")
        val = [(e, v * 100) for e, v in zip(r["epochs"], r["val_accuracy"], strict=True) if v is not None]
        if val:
            ax2.plot(*zip(*val, strict=True), color=f"C{i}", label=r["label"])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("mean hidden rate (Hz)")
    ax1.set_title("hidden activity", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("training (dashed) and validation (solid)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()

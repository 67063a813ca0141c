"""Protocol (a) of several ``benchmarks/real_voices.py`` results side by side: ``OUT.{md,json,png}``.

Each ``LABEL=PATH`` is a result JSON of ``real_voices.py`` (``--out PATH``) with the ``synthetic`` protocol;
the rows keep its trained-on/tested-on descriptions, and the plot shows every scored set and the Speech
Commands sample per word, one bar per run. Issue #12 round 12 (docs/training.md) compares the commands
corpus with and without the Kokoro voices this way:

```
.venv/bin/python benchmarks/research/compare_real_voices.py benchmarks/results/kokoro_commands \
    'with Kokoro, seed 1234=benchmarks/results/real_voices_commands_round12.json' ...
```
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, write_results  # benchmarks/ is on the path from here on
from real_voices import _pct

SETS = {  # the keys of real_voices.py's protocol (a), in the order they are shown
    "speech_commands_sample_keywords": "SC sample, the task's words",
    "speech_commands_sample": "SC sample, all 249 clips",
    "fsdd": "FSDD, all 6 speakers",
    "synthetic_test": "unseen synthetic voices",
}


def _row(label: str, path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    scored = doc["results"].get("synthetic")
    if not scored:
        sys.exit(f"{path} has no 'synthetic' protocol (run real_voices.py with --protocols synthetic)")
    by_source = scored["synthetic_test"].get("per_source_accuracy", {}).get("source", {})
    return {
        "label": label,
        "result": str(path),
        "command": doc["command"],
        "sets": {
            k: {"tested_on": v["tested_on"], "samples": v["samples"], "accuracy": v["accuracy"]}
            for k, v in scored.items()
        },
        "synthetic_test_by_engine": {k: v["accuracy"] for k, v in by_source.items()},
        "fsdd_per_speaker": {
            k: v["accuracy"] for k, v in scored["fsdd"].get("per_speaker_accuracy", {}).items()
        },
        "sc_per_word": {
            k: v
            for k, v in scored.get("speech_commands_sample", {}).get("per_class_accuracy", {}).items()
            if v is not None
        },
    }


def compare(out: Path, items: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep:
            sys.exit(f"{item!r}: give LABEL=RESULT.json")
        rows.append(_row(label, Path(path)))
    doc = {
        "machine": machine(),
        "command": "python benchmarks/research/compare_real_voices.py "
        + " ".join(shlex.quote(a) for a in [str(out), *items]),
        "rows": rows,
    }
    sets = [k for k in SETS if all(k in r["sets"] for r in rows)]
    names = {k: SETS[k] for k in sets}
    if "fsdd" in sets and "_unknown_" in rows[0]["sets"]["fsdd"]["tested_on"]:  # a task without digits
        names["fsdd"] = "FSDD, all 6, rejected as _unknown_"
    engines = sorted({e for r in rows for e in r["synthetic_test_by_engine"]})
    words = [w for w in rows[0]["sc_per_word"] if all(w in r["sc_per_word"] for r in rows)]
    md = [
        f"# Real voices side by side: `{out.stem}`",
        "",
        "Protocol (a) of `benchmarks/real_voices.py` (synthetic speech only in training; float model) for "
        "each result named (which corpus and engines: the result's own note, recipe and command, in the "
        "JSON). "
        "Tested on: "
        + "; ".join(
            f"{names[k]}: {rows[0]['sets'][k]['tested_on']} ({rows[0]['sets'][k]['samples']} clips)"
            for k in sets
        )
        + f". Machine: {doc['machine']['cpu']}. Reproduce: `{doc['command']}`.",
        "",
        "| run | "
        + " | ".join(names[k] for k in sets)
        + " | "
        + " | ".join(f"unseen {e} voices" for e in engines)
        + " |",
        "| --- " * (1 + len(sets) + len(engines)) + "|",
    ]
    for r in rows:
        md.append(
            f"| {r['label']} | "
            + " | ".join(_pct(r["sets"][k]["accuracy"]) for k in sets)
            + " | "
            + " | ".join(
                _pct(r["synthetic_test_by_engine"][e]) if e in r["synthetic_test_by_engine"] else "–"
                for e in engines
            )
            + " |"
        )
    if words:
        md += ["", "Speech Commands sample per word (its `_unknown_`: the other words it must reject):", "",
               "| run | " + " | ".join(words) + " |", "| --- " * (1 + len(words)) + "|"]  # fmt: skip
        md += [
            f"| {r['label']} | " + " | ".join(_pct(r["sc_per_word"][w]) for w in words) + " |" for r in rows
        ]
    speakers = sorted({s for r in rows for s in r["fsdd_per_speaker"]})
    if speakers:
        md += ["", "FSDD per speaker:", "", "| run | " + " | ".join(speakers) + " |",
               "| --- " * (1 + len(speakers)) + "|"]  # fmt: skip
        md += [
            f"| {r['label']} | "
            + " | ".join(
                (_pct(r["fsdd_per_speaker"][s]) if s in r["fsdd_per_speaker"] else "–") for s in speakers
            )
            + " |"
            for r in rows
        ]
    write_results(out.with_suffix(".json"), doc, "\n".join(md) + "\n")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [2, 3]})
    width = 0.8 / len(rows)
    for ax, keys, ticks, value in (
        (ax1, sets, [names[k] for k in sets], lambda r, k: r["sets"][k]["accuracy"]),
        (ax2, words, words, lambda r, k: r["sc_per_word"][k]),
    ):
        x = np.arange(len(keys))
        for i, r in enumerate(rows):
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, [100 * value(r, k) for k in keys], width,
                   color=f"C{i}", label=r["label"])  # fmt: skip
        ax.set_xticks(x, [t.replace(", ", ",\n") for t in ticks], fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
    ax1.set_title("synthetic-only training, scored on voices it never heard", fontsize=9)
    ax2.set_title("Speech Commands sample (real speakers) per word", fontsize=9)
    ax1.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    return out.with_suffix(".md")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(compare(Path(sys.argv[1]), sys.argv[2:]))

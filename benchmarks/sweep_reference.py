"""A reference recipe's seed sweep, scored on unseen voices and real people: mean ± spread over the seeds.

Issue #15's target: "the recipe behind each reference model is reproduced as a sweep with >= 3 seeds and
reported as mean ± spread". Given a finished ``edgekws sweep`` of a reference recipe
(docs/sweeps/en-*-reference.toml) and the recipe's ``benchmarks/real_voices.py`` work folder (``--work``: its
synthetic corpus ``synth/all`` and the real speech it imported, ``real/fsdd-all`` and ``real/sc-sample``; made
there when missing), this scores every trial's selected parameters (the float model, ``edgekws eval``'s
``evaluate``) exactly as real_voices.py's protocol (a) "synthetic only" scores its run: the corpus's unseen
synthetic test voices, all six FSDD speakers, the Speech Commands v0.01 sample (all clips; its task words).
Validation accuracy and the selected epoch come from ``edgekws sweep report``'s reading of the run folders.
Per score: every seed, mean ± sample standard deviation (ddof 1), min and max; and, with ``--reference``
(the recipe's real_voices result JSON: the figures of the reference bundle's run), whether the reference
figure lies within the seeds' range and within one standard deviation of their mean.

Run:   .venv/bin/python benchmarks/sweep_reference.py --sweep SWEEP --recipe RECIPE.toml --work RV_WORK \\
           --reference benchmarks/results/real_voices.json --out benchmarks/results/sweep_NAME.json
Writes OUT (.json) and the .md beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import command_line, load_average, machine, write_results
from real_voices import Bench, _default_real, load_recipe, score_synthetic_only

from edgekws.toolkit.sweep._report import collect
from edgekws.toolkit.train import load_run, read_metrics


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def against(reference: float, s: dict[str, Any]) -> dict[str, Any]:
    """Where a reference figure lies against the seeds: inside their range, within one std of their mean."""
    std = s["std"]
    return {
        "reference": reference,
        "in_range": s["min"] <= reference <= s["max"],
        "within_1_std": std is not None and abs(reference - s["mean"]) <= std,
        "z": None if not std else (reference - s["mean"]) / std,
    }


def trial_timing(run_dir: Path) -> dict[str, Any]:
    seconds = [float(h["seconds"]) for h in read_metrics(run_dir) if "seconds" in h]
    return {
        "epochs": len(seconds),
        "train_seconds": round(sum(seconds), 1),
        "median_epoch_seconds": round(statistics.median(seconds), 2) if seconds else None,
    }


def same_parameters(a: str | Path, b: str | Path) -> bool:
    """Whether two runs selected bit-identical parameters (their ``best.npz`` arrays)."""
    with np.load(Path(a) / "best.npz") as za, np.load(Path(b) / "best.npz") as zb:
        return sorted(za.files) == sorted(zb.files) and all(np.array_equal(za[k], zb[k]) for k in za.files)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _ms(s: dict[str, Any]) -> str:
    std = "" if s["std"] is None else f" ± {100 * s['std']:.1f}"
    return f"**{100 * s['mean']:.1f}{std} %** ({_pct(s['min'])} – {_pct(s['max'])})"


def markdown(doc: dict[str, Any]) -> str:
    r = doc["results"]
    columns = ["val_accuracy", *r["blocks"]]
    lines = [
        f"# Seed sweep of the reference recipe `{doc['recipe']['name']}` (task {doc['recipe']['task']})",
        "",
        f"Sweep `{doc['sweep']['name']}` ({doc['sweep']['spec_file']}): the recipe's `[train]` "
        f"({json.dumps(doc['sweep']['train'])}, TrainConfig defaults otherwise: 128 → 256 rec → "
        f"{len(doc['classes'])}, cosine schedule), seeds {doc['sweep']['seeds']}, no search space, no early "
        f"stopping. Trained on the recipe's synthetic corpus only ({doc['corpus']['task']}: "
        f"{', '.join(doc['corpus']['engines'])}; {doc['corpus']['per_class']} per class, corpus seed "
        f"{doc['corpus']['seed']}, the recipe's augmentation; {doc['corpus']['splits']['train']} training "
        "clips of the train voices); each seed's parameters are those of its best validation epoch "
        f"(validation: {doc['corpus']['splits']['val']} clips of the synthetic validation voices). Scored "
        "with the float model. Real speech: FSDD (CC BY-SA 4.0, Z. Jackson et al.) and a Speech Commands "
        "v0.01 sample (CC BY 4.0, P. Warden), none of whose speakers any model heard.",
        "",
        f"Scored by: `{doc['command']}` on {doc['machine']['cpu']}, {doc['machine']['cores']} cores "
        f"(shared), load average {doc['machine']['load_average_1min']} at the start and "
        f"{doc['load_average_1min_at_end']} at the end, {doc['seconds']:.0f} s.",
        "",
        "| tested on | samples | "
        + " | ".join(f"seed {t['seed']}" for t in r["trials"])
        + " | mean ± std (min – max) | reference bundle's run | inside the range? | within 1 std? |",
        "| --- | --- | " + " | ".join("---" for _ in r["trials"]) + " | --- | --- | --- | --- |",
    ]
    for key in columns:
        first = r["trials"][0]
        tested = "synthetic validation voices (selects the epoch)" if key == "val_accuracy" else (
            r["blocks"][key]["tested_on"])  # fmt: skip
        samples = doc["corpus"]["splits"]["val"] if key == "val_accuracy" else first["scores"][key]["samples"]
        values = [
            t["val_accuracy"] if key == "val_accuracy" else t["scores"][key]["accuracy"] for t in r["trials"]
        ]
        ref = r["reference"].get(key)
        row = [tested, str(samples), *map(_pct, values), _ms(r["summary"][key])]
        if ref is None:
            row += ["–", "–", "–"]
        else:
            z = ref["z"]
            within = "–" if z is None else "yes" if ref["within_1_std"] else f"no (z = {z:+.1f})"
            row += [_pct(ref["reference"]), "yes" if ref["in_range"] else "no", within]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| seed | trial | status | epochs | best epoch | training s (median s/epoch) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in r["trials"]:
        tm = t["timing"]
        lines.append(
            f"| {t['seed']} | {t['name']} | {t['status']} | {t['epochs_done']}/{t['epochs']} "
            f"| {t['best_epoch']} | {tm['train_seconds']:.0f} ({tm['median_epoch_seconds']}) |"
        )
    fsdd = [t["scores"]["fsdd"].get("per_speaker_accuracy", {}) for t in r["trials"] if "fsdd" in t["scores"]]
    if fsdd and all(fsdd) and "zero" in doc["classes"]:  # a task without digits hears FSDD as _unknown_
        per = {k: spread([f[k]["accuracy"] for f in fsdd]) for k in sorted(fsdd[0])}
        lines += ["", "FSDD per speaker over the seeds: " + ", ".join(
            f"{k} {100 * v['mean']:.1f}" + ("" if v["std"] is None else f" ± {100 * v['std']:.1f}") + " %"
            for k, v in per.items()) + "."]  # fmt: skip
    ref_run = r.get("reference_run")
    if ref_run:
        same = ref_run["same_parameters_as"]
        lines += [
            "",
            f"The reference bundle's run ({ref_run['path']}, seed {ref_run['seed']}): best epoch "
            f"{ref_run['best_epoch']}, validation {_pct(ref_run['val_accuracy'])}; its test figures are "
            f"{doc['reference_file']}'s. "
            + (
                f"Its selected parameters (best.npz) are bit-identical to trial {', '.join(same)}'s."
                if same
                else "No trial selected bit-identical parameters."
            ),
        ]
    if doc["unfinished_trials"]:
        lines += ["", f"Not finished, not scored above: {', '.join(doc['unfinished_trials'])}."]
    if doc.get("note"):
        lines += ["", doc["note"]]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep", type=Path, required=True, help="the finished sweep folder")
    parser.add_argument(
        "--recipe", type=Path, required=True, help="the real_voices recipe the sweep reproduces"
    )
    parser.add_argument("--work", type=Path, required=True, help="the recipe's real_voices work folder")
    parser.add_argument(
        "--real", type=Path, default=None, help="shared/data/real-speech (imports if missing)"
    )
    parser.add_argument("--reference", type=Path, default=None, help="the recipe's real_voices result JSON")
    parser.add_argument("--spec-file", default="", help="the sweep spec's path, for the report")
    parser.add_argument("--note", default="", help="a paragraph for the .md (how the sweep was run)")
    parser.add_argument("--out", type=Path, required=True, help="result JSON path (the .md goes beside it)")
    parser.add_argument(
        "--partial", action="store_true", help="score the finished trials of an unfinished sweep"
    )
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, tiny=False)
    start, info = time.perf_counter(), machine()
    bench = Bench(recipe, args.real or _default_real(), args.work, workers=1)
    corpus = bench.synth("all")
    spec, trials = collect(args.sweep)
    unfinished = [
        f"{t.name} ({t.status}, {t.epochs_done}/{t.epochs} epochs)" for t in trials if t.status != "finished"
    ]
    if unfinished and not args.partial:
        sys.exit(f"{args.sweep}: trials not finished: {', '.join(unfinished)} (--partial scores the others)")
    trials = [t for t in trials if t.status == "finished"]
    if not trials:
        sys.exit(f"{args.sweep}: no trial has finished")
    rows = []
    for t in trials:
        print(f"scoring {t.name}", file=sys.stderr, flush=True)
        scores = score_synthetic_only(bench, load_run(t.run), corpus)
        rows.append({
            "name": t.name, "seed": t.seed, "status": t.status, "epochs": t.epochs,
            "epochs_done": t.epochs_done, "best_epoch": t.best_epoch, "val_accuracy": t.best_val_accuracy,
            "run": t.run, "timing": trial_timing(Path(t.run)), "scores": scores,
        })  # fmt: skip
    keys = list(rows[0]["scores"])
    summary = {"val_accuracy": spread([float(r["val_accuracy"]) for r in rows])}
    summary.update({k: spread([r["scores"][k]["accuracy"] for r in rows]) for k in keys})
    blocks = {k: {f: rows[0]["scores"][k][f] for f in ("trained_on", "tested_on")} for k in keys}
    reference: dict[str, Any] = {}
    reference_run = None
    if args.reference is not None:
        given = json.loads(args.reference.read_text())["results"]["synthetic"]
        reference = {k: against(given[k]["accuracy"], summary[k]) for k in keys if k in given}
        ref_dir = args.work / "runs" / "synthetic"
        history = [h for h in read_metrics(ref_dir) if h.get("val_accuracy") is not None]
        if history:
            best = max(history, key=lambda h: h["val_accuracy"])
            config = json.loads((ref_dir / "run.json").read_text())["config"]
            same = [r["name"] for r in rows if same_parameters(ref_dir, r["run"])]
            reference_run = {"path": str(ref_dir), "seed": config["seed"], "best_epoch": best["epoch"],
                             "val_accuracy": best["val_accuracy"], "same_parameters_as": same}  # fmt: skip
            reference["val_accuracy"] = against(best["val_accuracy"], summary["val_accuracy"])
    manifest = json.loads((corpus / "manifest.json").read_text())
    doc = {
        "benchmark": "sweep_reference",
        "command": command_line(without=["--note"]),
        "machine": info,
        "load_average_1min_at_end": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
        "recipe": recipe,
        "classes": bench.classes,
        "corpus": {k: manifest[k] for k in ("task", "engines", "per_class", "seed", "splits")}
        | {"path": str(corpus)},
        "sweep": {
            "path": str(args.sweep),
            "name": spec.name,
            "spec_file": args.spec_file,
            "seeds": list(spec.seeds),
            "train": spec.train,
        },
        "results": {
            "trials": rows,
            "blocks": blocks,
            "summary": summary,
            "reference": reference,
            "reference_run": reference_run,
        },
        "unfinished_trials": unfinished,
        "reference_file": None if args.reference is None else str(args.reference),
        "note": args.note,
    }
    write_results(args.out, doc, markdown(doc))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

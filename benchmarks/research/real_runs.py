"""Issue #12 round-2 runs: one SNN on a synthetic corpus (+ FSDD speakers), scored on real people.

An experiment tool beside ``benchmarks/real_voices.py`` (which runs the issue's fixed protocols for a recipe):
it trains one Eventprop network with the project's own trainer on an ``edgekws data synth`` corpus, optionally
with FSDD speakers added to training (``fsdd_train``) or used for validation (``fsdd_val``), and scores it on
the FSDD speakers it did not see, on the corpus's unseen test voices and on the Speech Commands v0.01 sample
(all clips, and its digit words). The SC v0.02 test set is never touched.

```
P=.venv/bin/python; R=benchmarks/research/real_runs.py
taskset -c 1 $P $R synth RECIPE.toml runs/rv/work/synth/NAME        # the recipe's corpus (real_voices.py's)
taskset -c 1 $P $R train NAME CORPUS '{"train": {"epochs": 60}}'   # TrainConfig keys; fsdd_train, fsdd_val,
                                                                    # real_train (a data import folder),
                                                                    # init_in ([mean, sd] of input weights),
                                                                    # delay_taps_ms (the front-end's taps)
taskset -c 1 $P $R epochs RUN CORPUS   # every checkpoint on FSDD per speaker: epoch selection rules compared
taskset -c 1 $P $R merge NAME CORPUS RUN1 RUN2 ...   # runs of results.jsonl merged (edgekws train merge),
                                                     # scored the same way, FSDD also in 8-bit fixed point
$P $R report OUT NAME[=LABEL] ...       # runs of results.jsonl side by side: OUT.{md,json,png}
```

Runs go to ``runs/rv/work/runs/NAME``, one JSON line per run to ``runs/rv/results.jsonl``.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine  # benchmarks/ is on the path from here on

WORK = Path("runs/rv/work")
RESULTS = Path("runs/rv/results.jsonl")  # one JSON line per trained run
KNOWN_CONF = {"train", "fsdd_train", "fsdd_val", "real_train", "init_in", "delay_taps_ms"}
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-speech" / "labels.csv"


def synth(recipe_path: Path, out: Path, workers: int = 2) -> None:
    from real_voices import _spec, load_recipe

    from edgekws.toolkit.data import synthesize

    recipe = load_recipe(recipe_path, False)
    start = time.time()
    manifest = synthesize(
        out, recipe["task"], spec=_spec(recipe), workers=workers, force=True, **recipe["synth"]
    )
    print(f"{len(manifest['utterances'])} utterances in {time.time() - start:.0f} s")


def _real(name: str, source: str, classes: list[str], spec: Any = None) -> Path:
    """The recordings of ``source``, imported once with the front-end ``spec`` (its delay taps left out:
    they are added to the spikes later); another spec than the default gets a folder of its own."""
    import hashlib
    from dataclasses import replace

    from edgekws.agent import FrontendSpec
    from edgekws.toolkit.data import import_recordings

    spec = replace(spec or FrontendSpec(), delay_taps_ms=(0.0,))
    if spec != FrontendSpec():
        name += "-fe" + hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    out = WORK / "real" / name
    if not (out / "manifest.json").is_file():
        labels = REAL if REAL.is_file() else Path("/work/shared/data/real-speech/labels.csv")
        import_recordings(
            [labels],
            out,
            classes,
            task="en-digits",
            only={"source": {source}},
            rest="test",
            workers=1,
            force=True,
            spec=spec,
        )
    return out


def train(name: str, corpus: Path, conf: dict[str, Any]) -> dict[str, Any]:
    from edgekws.toolkit.data import SpikeDataset, read_shd
    from edgekws.toolkit.train import TrainConfig, load_run
    from edgekws.toolkit.train import train as run_training

    unknown = sorted(set(conf) - KNOWN_CONF)
    if unknown:  # e.g. round 7's probe rows' "delays_ms", from a script that was folded into the front-end
        sys.exit(f"unknown conf key(s) {unknown}; known: {sorted(KNOWN_CONF)}")
    fsdd, sc, synth_test = _test_sets(corpus)
    speaker = fsdd.metadata("speaker")
    assert speaker is not None
    fsdd_train = [f"fsdd-{s}" for s in conf.get("fsdd_train", [])]
    fsdd_val = [f"fsdd-{s}" for s in conf.get("fsdd_val", [])]
    train_data, val_data = read_shd(corpus / "train.h5"), read_shd(corpus / "val.h5")
    if fsdd_train:
        train_data = SpikeDataset.concat(
            [train_data, fsdd.subset(np.flatnonzero(np.isin(speaker, fsdd_train)))]
        )
    if conf.get("real_train"):  # an `edgekws data import` folder (e.g. with --copies): its train split
        extra = read_shd(Path(conf["real_train"]) / "train.h5")
        fsdd_train += sorted(set(extra.metadata("speaker").tolist()))
        train_data = SpikeDataset.concat([train_data, extra])
    if fsdd_val:
        val_data = fsdd.subset(np.flatnonzero(np.isin(speaker, fsdd_val)))
    tested = ~np.isin(speaker, fsdd_train + fsdd_val)
    if conf.get("delay_taps_ms"):  # round 7: the front-end's delay taps, added to the plain spikes
        train_data, val_data, fsdd, sc, synth_test = (
            d.with_delay_taps(conf["delay_taps_ms"]) for d in (train_data, val_data, fsdd, sc, synth_test)
        )
    out = WORK / "runs" / name
    if conf.get("init_in"):  # probe only: the input weights' initial (mean, sd) in mlGeNN units
        from edgekws.toolkit.train import _model

        _model._INIT_IN = tuple(conf["init_in"])
    start = time.time()
    config = TrainConfig.from_dict({"epochs": 15, "silent_boost": 0.02, **conf.get("train", {})})
    result = run_training(
        train_data,
        out,
        config,
        val_data=val_data,
        progress=False,
        kernel="auto",  # the trainer's placement: sparse Eventprop on the CPU, dense for BPTT
        device="cpu",
    )
    train_s = round(time.time() - start)  # training only (rows before round 19 also timed the FSDD scoring)
    line = {
        "name": name,
        "corpus": str(corpus),
        "conf": conf,
        "train_samples": len(train_data),
        "best_epoch": result.best_epoch,
        "train_s": train_s,
        **_scores(load_run(out), fsdd.subset(np.flatnonzero(tested)), synth_test, sc),
    }
    return _record(line)


def _test_sets(corpus: Path) -> tuple[Any, Any, Any]:
    """What every run on ``corpus`` is scored on, plain (no delay taps): all of FSDD, the Speech Commands
    sample (both imported with the corpus's front-end) and the corpus's unseen synthetic test voices."""
    from edgekws.agent import FrontendSpec
    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.data._synth import class_names

    classes = class_names("en-digits")
    spec = FrontendSpec.from_dict(json.loads((corpus / "manifest.json").read_text())["frontend"])
    fsdd = read_shd(_real("fsdd-all", "fsdd", classes, spec) / "test.h5")
    sc = read_shd(_real("sc-sample", "speech-commands-v0.01", classes, spec) / "test.h5")
    return fsdd, sc, read_shd(corpus / "test.h5")


def _scores(run: Any, fsdd: Any, synth_test: Any, sc: Any, backends: tuple[str, ...] = ("float",)) -> dict:
    """A run on the FSDD speakers it did not hear, the corpus's unseen synthetic voices and the SC sample
    (all of it, and its digits), float; FSDD also on each of ``backends`` after the first."""
    from edgekws.toolkit.train import evaluate

    on_fsdd = evaluate(run, fsdd)
    names = np.asarray(sc.class_names)[sc.labels]
    digits = np.flatnonzero(~np.isin(names, ["_unknown_", "_silence_"]))
    return {
        "fsdd_tested": sorted(set(fsdd.metadata("speaker"))),
        "fsdd": round(on_fsdd["accuracy"], 4),
        "fsdd_per_speaker": {k: round(v["accuracy"], 3) for k, v in on_fsdd["per_speaker_accuracy"].items()},
        "fsdd_per_class": {k: v for k, v in on_fsdd["per_class_accuracy"].items() if v is not None},
        **{f"fsdd_{b}": round(evaluate(run, fsdd, backend=b)["accuracy"], 4) for b in backends[1:]},
        "synth_test": round(evaluate(run, synth_test)["accuracy"], 4),
        "sc_sample_all": round(evaluate(run, sc)["accuracy"], 4),
        "sc_digits": round(evaluate(run, sc.subset(digits))["accuracy"], 4),
        "sc_digits_n": len(digits),
    }


def _record(line: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(line), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def merge(name: str, corpus: Path, members: list[str]) -> dict[str, Any]:
    """Merge runs of ``results.jsonl`` (``edgekws train merge``: one network, the members' mean readout) into
    ``runs/NAME`` and score it as :func:`train` scores a run, FSDD also in 8-bit fixed point (the emulator).
    The members must have trained on ``corpus`` without FSDD speakers (protocol (a))."""
    from edgekws.toolkit.train import load_run, merge_runs

    lines = _lines(RESULTS)
    missing = [m for m in members if m not in lines]
    if missing:
        sys.exit(f"no run {missing} in {RESULTS}; train them first (real_runs.py train NAME CORPUS CONF)")
    confs = [lines[m]["conf"] for m in members]
    if (WORK / "runs" / name).exists():
        sys.exit(f"{WORK / 'runs' / name} exists; choose another NAME or delete that folder")
    elsewhere = [m for m in members if Path(lines[m]["corpus"]).resolve() != corpus.resolve()]
    if elsewhere:
        sys.exit(f"{elsewhere} trained on another corpus than {corpus}: their unseen test voices differ")
    if any(c.get("fsdd_train") or c.get("fsdd_val") or c.get("real_train") for c in confs):
        sys.exit(
            "merge scores protocol (a) runs only: a member heard FSDD speakers in training or validation"
        )
    taps = {json.dumps(c.get("delay_taps_ms")) for c in confs}
    if len(taps) > 1:
        sys.exit(f"the members were trained with different delay taps: {sorted(taps)}")
    fsdd, sc, synth_test = _test_sets(corpus)
    if confs[0].get("delay_taps_ms"):
        fsdd, sc, synth_test = (d.with_delay_taps(confs[0]["delay_taps_ms"]) for d in (fsdd, sc, synth_test))
    out = merge_runs([WORK / "runs" / m for m in members], WORK / "runs" / name)
    line = {
        "name": name,
        "corpus": str(corpus),
        "conf": {
            "merge": members,
            **({"delay_taps_ms": confs[0]["delay_taps_ms"]} if confs[0].get("delay_taps_ms") else {}),
        },
        "train_samples": lines[members[0]]["train_samples"],
        "best_epoch": None,
        "train_s": sum(lines[m]["train_s"] for m in members),
        **_scores(load_run(out), fsdd, synth_test, sc, backends=("float", "emulator")),
    }
    return _record(line)


def _lines(results: Path) -> dict[str, dict[str, Any]]:
    """The last line of each run name in ``results``."""
    lines = {}
    for raw in results.read_text().splitlines():
        if raw.strip():
            row = json.loads(raw)
            lines[row["name"]] = row
    return lines


def epochs(run_dir: Path, corpus: Path) -> dict[str, Any]:
    """Epoch selection, measured: every checkpoint of a run scored on the corpus's validation voices and on
    each FSDD speaker, then which epoch each rule picks and what it scores on the speakers it did not use --
    the synthetic validation voices (the trainer's rule), one held-out FSDD speaker (each in turn, scored on
    the other five), and the best epoch on all six (an oracle, for scale)."""
    from dataclasses import replace

    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.data._synth import class_names
    from edgekws.toolkit.train import evaluate, load_run

    fsdd = read_shd(_real("fsdd-all", "fsdd", class_names("en-digits")) / "test.h5")
    val = read_shd(corpus / "val.h5")
    base = load_run(run_dir)
    rows = []
    for path in sorted((run_dir / "checkpoints").glob("epoch_*.npz")):
        with np.load(path) as z:
            params = {
                k.removeprefix("param/"): np.asarray(z[k], np.float32)
                for k in z.files
                if k.startswith("param/")
            }
        run = replace(base, params=params)
        on_fsdd = evaluate(run, fsdd)
        per_speaker = {k: v["accuracy"] for k, v in on_fsdd["per_speaker_accuracy"].items()}
        rows.append({"epoch": int(path.stem.split("_")[1]), "val": round(evaluate(run, val)["accuracy"], 4),
                     "fsdd": round(on_fsdd["accuracy"], 4), "speakers": per_speaker})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    speakers = sorted(rows[0]["speakers"])

    def others(row: dict[str, Any], held: str) -> float:
        return float(np.mean([row["speakers"][s] for s in speakers if s != held]))

    by_val = max(rows, key=lambda r: r["val"])
    rules = {"synthetic validation": {"epoch": by_val["epoch"], "fsdd": by_val["fsdd"]}}
    picks = {}
    for held in speakers:
        pick = max(rows, key=lambda r: r["speakers"][held])
        picks[held] = {"epoch": pick["epoch"], "other five": round(others(pick, held), 4),
                       "synthetic rule on the same five": round(others(by_val, held), 4)}  # fmt: skip
    rules["one FSDD speaker (each in turn)"] = picks
    oracle = max(rows, key=lambda r: r["fsdd"])
    rules["oracle (all six)"] = {"epoch": oracle["epoch"], "fsdd": oracle["fsdd"]}
    out = {"run": str(run_dir), "corpus": str(corpus), "machine": machine(), "rows": rows, "rules": rules}
    Path("runs/rv").mkdir(parents=True, exist_ok=True)
    path = Path("runs/rv") / f"epochs_{run_dir.name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(rules, indent=1))
    print(epochs_report(path))
    return out


def epochs_report(path: Path, out: Path = Path("benchmarks/results/epoch_selection")) -> Path:
    """``epoch_selection.{json,md,png}`` from an :func:`epochs` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(path.read_text())
    doc.setdefault("machine", machine())  # epochs() records it with the rows; older files get this one
    rows, rules = doc["rows"], doc["rules"]
    turns = rules["one FSDD speaker (each in turn)"]
    real = float(np.mean([v["other five"] for v in turns.values()]))
    synth = float(np.mean([v["synthetic rule on the same five"] for v in turns.values()]))
    doc["summary"] = {"one FSDD speaker, mean over the six": round(real, 4),
                      "synthetic rule on the same speakers, mean": round(synth, 4)}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "# Epoch selection: synthetic validation voices or a held-out real speaker",
        "",
        f"Run `{doc['run']}` (its corpus `{doc['corpus']}`), every epoch's checkpoint scored on the corpus's",
        "synthetic validation voices and on each FSDD speaker (12-way decision, float model); machine: "
        f"{doc['machine']['cpu']}. Made by `python benchmarks/research/real_runs.py epochs RUN CORPUS`.",
        "",
        "| rule | epoch picked | accuracy on the FSDD speakers it did not use | synthetic rule, same ones |",
        "| --- | --- | --- | --- |",
        f"| synthetic validation voices (the trainer's) | {rules['synthetic validation']['epoch']} "
        f"| {rules['synthetic validation']['fsdd']:.1%} (all 6) | |",
    ]
    for held, v in turns.items():
        lines.append(f"| {held} alone | {v['epoch']} | {v['other five']:.1%} (other 5) "
                     f"| {v['synthetic rule on the same five']:.1%} |")  # fmt: skip
    lines += [
        f"| one FSDD speaker, mean over the six | | **{real:.1%}** | **{synth:.1%}** |",
        f"| oracle: best epoch on all six (for scale) | {rules['oracle (all six)']['epoch']} "
        f"| {rules['oracle (all six)']['fsdd']:.1%} (all 6) | |",
        "",
        "| epoch | synthetic validation | FSDD all 6 | " + " | ".join(sorted(rows[0]["speakers"])) + " |",
        "| --- " * (3 + len(rows[0]["speakers"])) + "|",
    ]
    for r in rows:
        per = " | ".join(f"{r['speakers'][k]:.1%}" for k in sorted(r["speakers"]))
        lines.append(f"| {r['epoch']} | {r['val']:.1%} | {r['fsdd']:.1%} | {per} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    ep = [r["epoch"] for r in rows]
    for k in sorted(rows[0]["speakers"]):
        ax.plot(ep, [r["speakers"][k] * 100 for r in rows], color="tab:gray", linewidth=0.7, alpha=0.6)
    ax.plot(ep, [r["fsdd"] * 100 for r in rows], color="tab:blue", linewidth=2, label="FSDD, all 6 speakers")
    ax.plot(ep, [r["val"] * 100 for r in rows], color="tab:orange", linewidth=2, label="synthetic validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Epoch selection: grey lines are the six FSDD speakers one by one")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    return out.with_suffix(".md")


def _training(conf: dict[str, Any]) -> str:
    """A run's conf in one cell: its TrainConfig keys, then the other keys (delay taps, real speakers...)."""
    return json.dumps(conf.get("train", {})) + "".join(
        f", {k}={json.dumps(v)}" for k, v in conf.items() if k != "train"
    )


def _cell(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def report(out: Path, names: list[str], results: Path = RESULTS) -> Path:
    """``OUT.{md,json,png}``: the runs ``NAME[=LABEL]`` of ``results.jsonl`` (the last line of each name) side
    by side, with their training curves from the run folders' ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekws.toolkit.train import read_metrics

    lines = _lines(results)
    rows = []
    for item in names:
        name, _, label = item.partition("=")
        if name not in lines:
            sys.exit(f"no run {name!r} in {results}; train it first (real_runs.py train {name} CORPUS CONF)")
        metrics = read_metrics(WORK / "runs" / name)  # none for a merge (real_runs.py merge)
        last = metrics[-1] if metrics else None
        rows.append({**lines[name], "label": label or name, "curve": metrics,
                     "train_accuracy_last": round(last["train_accuracy"], 4) if last else None,
                     "hidden_rate_hz_last": round(last["hidden_rate_hz"], 1) if last else None,
                     "silent_neurons_last": last["silent_neurons"] if last else None,
                     "epoch_s_mean": round(float(np.mean([m["seconds"] for m in metrics])), 1)
                     if last else None})  # fmt: skip
    doc = {"machine": machine(), "command": "python benchmarks/research/real_runs.py report " + " ".join(
        shlex.quote(a) for a in [str(out), *names]), "rows": rows}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    speakers = sorted({k for r in rows for k in r["fsdd_per_speaker"]})
    md = [
        f"# Runs side by side: `{out.stem}`",
        "",
        "Each run: the project's trainer on the corpus named, best epoch on its synthetic validation voices, "
        "scored on the FSDD speakers it did not train on (12-way decision, float model), the corpus's unseen "
        "synthetic test voices and the Speech Commands v0.01 sample (its 78 digit clips, and all 249 clips "
        f"with other words as `_unknown_`). Machine: {doc['machine']['cpu']}. Reproduce: `{doc['command']}` "
        "after the `real_runs.py train` commands in the JSON's `conf` of each row (`real_runs.py merge` for "
        "a row whose `conf` is a `merge`; scored in float, and in 8-bit fixed point where the FSDD cell "
        "says).",
        "",
        "| run | training | FSDD (tested) | "
        + " | ".join(s.removeprefix("fsdd-") for s in speakers)
        + " | synthetic test voices | SC digits | SC all | train acc (last) | best epoch "
        "| hidden rate (Hz, last) | silent (last) | s / epoch |",
        "| --- " * (12 + len(speakers)) + "|",
    ]
    for r in rows:
        fixed = f" ({r['fsdd_emulator']:.1%} 8-bit)" if "fsdd_emulator" in r else ""
        per = " | ".join(
            f"{r['fsdd_per_speaker'][s]:.1%}" if s in r["fsdd_per_speaker"] else "–" for s in speakers
        )
        md.append(
            f"| {r['label']} | `{_training(r['conf'])}` | **{r['fsdd']:.1%}**{fixed} | {per} "
            f"| {r['synth_test']:.1%} | {r['sc_digits']:.1%} | {r['sc_sample_all']:.1%} "
            f"| {_cell(r['train_accuracy_last'], '.3f')} | {_cell(r['best_epoch'])} "
            f"| {_cell(r['hidden_rate_hz_last'])} | {_cell(r['silent_neurons_last'])} "
            f"| {_cell(r['epoch_s_mean'])} |"
        )
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    for i, r in enumerate(rows):
        ep = [m["epoch"] for m in r["curve"]]
        ax1.plot(
            ep, [m["train_accuracy"] * 100 for m in r["curve"]], color=f"C{i}", linestyle="--", linewidth=1
        )
        ax1.plot(ep, [m["val_accuracy"] * 100 for m in r["curve"]], color=f"C{i}", label=r["label"])
        ax2.plot(ep, [m["hidden_rate_hz"] for m in r["curve"]], color=f"C{i}", label=r["label"])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("accuracy (%)")
    ax1.set_title("synthetic validation (solid), training (dashed)", fontsize=9)
    ax1.legend(fontsize=7, loc="lower right")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("mean hidden rate (Hz)")
    ax2.set_title("hidden activity", fontsize=9)
    y = np.arange(len(rows))[::-1]
    ax3.barh(y, [r["fsdd"] * 100 for r in rows], color=[f"C{i}" for i in range(len(rows))])
    ax3.set_yticks(y, [textwrap.fill(r["label"], 26) for r in rows], fontsize=7)
    for yy, r in zip(y, rows, strict=True):
        ax3.text(r["fsdd"] * 100 + 1, yy, f"{r['fsdd']:.1%}", va="center", fontsize=7)
    ax3.set_xlim(0, 100)
    ax3.set_xlabel("accuracy (%)")
    ax3.set_title("FSDD, speakers not trained on", fontsize=9)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    return out.with_suffix(".md")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "synth":
        synth(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    elif len(sys.argv) == 4 and sys.argv[1] == "epochs":
        epochs(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "epochs-report":
        print(epochs_report(Path(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        print(report(Path(sys.argv[2]), sys.argv[3:]))
    elif len(sys.argv) >= 6 and sys.argv[1] == "merge":
        merge(sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "train":
        train(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
    else:
        sys.exit(__doc__)

"""The sweep's results table from its run folders: validation accuracy per point, mean ± spread over seeds.

Every number comes from the trials' run folders (``metrics.jsonl``: a trial's accuracy is its best validation
accuracy, the epoch its run selected); ``trials.json`` adds only what the runs cannot know: whether a trial
that did not train all its epochs was stopped early by ASHA, failed, or is waiting for ``--resume``. With a
held-out test set each trial's selected parameters are also scored on it; test accuracy is reported beside
validation accuracy and never used to pick anything.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import atomic_path
from edgekws.toolkit.sweep._folder import RUNS, read_sweep_info, read_trials, write_json
from edgekws.toolkit.sweep._spec import SweepError, SweepSpec, format_point

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"


@dataclass(frozen=True)
class TrialResult:
    name: str
    point: dict[str, Any]
    seed: int
    status: str  # finished / stopped / error / running / pending / interrupted
    epochs_done: int
    epochs: int
    best_val_accuracy: float | None  # None: no epoch finished yet
    best_epoch: int | None
    run: str
    test_accuracy: float | None = None  # with a test set: the run's best.npz scored on it


@dataclass(frozen=True)
class PointResult:
    point: dict[str, Any]
    label: str
    trials: int
    finished: int
    stopped: int
    mean: float | None  # over the finished trials (over all with an epoch if none finished)
    std: float | None  # sample standard deviation (ddof 1); None for fewer than two trials
    min: float | None
    max: float | None
    over: str  # "finished" or "unfinished": which trials the statistics are over
    test_mean: float | None = None  # the same trials' test accuracy, with a test set
    test_std: float | None = None


def collect(sweep_dir: str | os.PathLike[str]) -> tuple[SweepSpec, list[TrialResult]]:
    """Every trial of the sweep with its numbers from its run folder (ordered by trial name)."""
    from edgekws.toolkit.train import read_metrics

    sweep_dir = Path(sweep_dir)
    spec = SweepSpec.from_dict(read_sweep_info(sweep_dir)["spec"])
    table = read_trials(sweep_dir)
    names = sorted(set(table) | {p.name for p in (sweep_dir / RUNS).glob("*") if (p / "run.json").is_file()})
    trials = []
    for name in names:
        entry = table.get(name, {})
        run_dir = sweep_dir / RUNS / name
        history = read_metrics(run_dir)
        scored = [h for h in history if h.get("val_accuracy") is not None]
        best = max(scored, key=lambda h: h["val_accuracy"]) if scored else None  # first of equals, as train()
        if "point" in entry:
            point, seed, epochs = dict(entry["point"]), int(entry["seed"]), int(entry["epochs"])
        else:  # a run folder trials.json does not list (copied in by hand): read its config
            config = json.loads((run_dir / "run.json").read_text())["config"]
            point = {d.key: config[d.key] for d in spec.space}
            seed, epochs = int(config["seed"]), int(config["epochs"])
        done = history[-1]["epoch"] if history else 0
        status = entry.get("status") or ("finished" if done >= epochs else "interrupted")
        trials.append(
            TrialResult(
                name=name,
                point=point,
                seed=seed,
                status=status,
                epochs_done=done,
                epochs=epochs,
                best_val_accuracy=None if best is None else float(best["val_accuracy"]),
                best_epoch=None if best is None else int(best["epoch"]),
                run=str(run_dir),
            )
        )
    return spec, trials


def summarize(trials: list[TrialResult]) -> list[PointResult]:
    """One row per point, in the order the points first appear, with mean ± spread over its seeds."""
    groups: dict[str, list[TrialResult]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t.point, sort_keys=True), []).append(t)
    rows = []
    for members in groups.values():
        finished = [t for t in members if t.status == "finished" and t.best_val_accuracy is not None]
        pool = finished or [t for t in members if t.best_val_accuracy is not None]
        values = np.array([t.best_val_accuracy for t in pool], dtype=np.float64)
        tests = np.array([t.test_accuracy for t in pool if t.test_accuracy is not None], dtype=np.float64)
        rows.append(
            PointResult(
                point=members[0].point,
                label=format_point(members[0].point) or "(the [train] recipe)",
                trials=len(members),
                finished=sum(t.status == "finished" for t in members),
                stopped=sum(t.status == "stopped" for t in members),
                mean=float(values.mean()) if len(values) else None,
                std=float(values.std(ddof=1)) if len(values) > 1 else None,
                min=float(values.min()) if len(values) else None,
                max=float(values.max()) if len(values) else None,
                over="finished" if finished else "unfinished",
                test_mean=float(tests.mean()) if len(tests) else None,
                test_std=float(tests.std(ddof=1)) if len(tests) > 1 else None,
            )
        )
    return rows


def best_trial(trials: list[TrialResult]) -> TrialResult | None:
    """The finished trial with the highest validation accuracy (else the best of any trial); ``None`` if no
    trial finished an epoch."""
    scored = [t for t in trials if t.best_val_accuracy is not None]
    pool = [t for t in scored if t.status == "finished"] or scored
    return max(pool, key=lambda t: t.best_val_accuracy or 0.0) if pool else None


def score_on_test(
    trials: list[TrialResult], test: str | os.PathLike[str], progress: bool
) -> list[TrialResult]:
    """Each trial with an epoch behind it, with its selected parameters' accuracy on the test set (float)."""
    from dataclasses import replace

    from edgekws.toolkit._progress import progress_bar
    from edgekws.toolkit.data import DatasetError, read_shd
    from edgekws.toolkit.train import EvalError, RunError, evaluate, load_run

    try:
        data = read_shd(test)
    except DatasetError as exc:
        raise SweepError(str(exc)) from exc
    scored = []
    with progress_bar("test set", disable=not progress) as update:
        for i, t in enumerate(trials):
            if t.best_val_accuracy is not None:
                try:
                    t = replace(t, test_accuracy=float(evaluate(load_run(t.run), data)["accuracy"]))
                except (EvalError, RunError) as exc:
                    raise SweepError(f"{test}: cannot score trial {t.name}: {exc}") from exc
            scored.append(t)
            update(i + 1, len(trials))
    return scored


def write_report(
    sweep_dir: str | os.PathLike[str], test: str | os.PathLike[str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into the sweep folder; returns the JSON.
    With ``test`` (an SHD-layout file) every trial is also scored on that held-out set."""
    sweep_dir = Path(sweep_dir)
    spec, trials = collect(sweep_dir)
    if not trials:
        raise SweepError(f"{sweep_dir}: no trial has started yet; nothing to report")
    if test is not None:
        trials = score_on_test(trials, test, progress)
    points = summarize(trials)
    best = best_trial(trials)
    info = read_sweep_info(sweep_dir)
    doc = {
        "sweep": str(sweep_dir),
        "name": spec.name,
        "status": info.get("status"),
        "data": {
            "train": spec.data,
            "val": spec.val,
            "test": None if test is None else str(Path(test).resolve()),
        },
        "metric": "best validation accuracy of each trial (its run's selected epoch)",
        "swept": [d.key for d in spec.space],
        "seeds": list(spec.seeds),
        "trials_planned": spec.num_trials,
        "points": [asdict(p) for p in sorted(points, key=_rank)],
        "trials": [asdict(t) for t in trials],
        "best_trial": None if best is None else asdict(best),
        "plot": str(sweep_dir / REPORT_PNG),
    }
    write_json(sweep_dir / REPORT_JSON, doc)
    (sweep_dir / REPORT_MD).write_text(markdown(doc))
    plot(spec, trials, points, sweep_dir / REPORT_PNG)
    return doc


def _rank(p: PointResult) -> tuple[int, float]:
    return (0 if p.over == "finished" else 1, -(p.mean if p.mean is not None else -1.0))


def mean_spread(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Sweep {doc['name']}",
        "",
        f"{doc['sweep']} ({doc['status']}); trained on {doc['data']['train']}, selected and scored on "
        f"{doc['data']['val']}. Accuracy: {doc['metric']}; mean ± sample standard deviation over seeds "
        f"{doc['seeds']} (finished trials; a point with none shows its stopped ones).",
        "",
    ]
    test = doc["data"]["test"]
    if test:
        lines += [f"Test accuracy: the same trials' selected parameters on {test} (float model; not used for "
                  "selection).", ""]  # fmt: skip
    tested = " | test accuracy mean ± spread" if test else ""
    lines += [
        f"| point | trials | finished | stopped early | val accuracy mean ± spread | min – max{tested} |",
        "|---|---|---|---|---|---|" + ("---|" if test else ""),
    ]
    for p in doc["points"]:
        mm = "-" if p["min"] is None else f"{p['min']:.4f} – {p['max']:.4f}"
        over = "" if p["over"] == "finished" else " (no trial finished)"
        extra = f" | {mean_spread(p['test_mean'], p['test_std'])}" if test else ""
        lines.append(
            f"| {p['label']} | {p['trials']} | {p['finished']} | {p['stopped']} | "
            f"{mean_spread(p['mean'], p['std'])}{over} | {mm}{extra} |"
        )
    best = doc["best_trial"]
    tested = " | test accuracy" if test else ""
    lines += ["", f"| trial | status | epochs | best val accuracy (epoch){tested} |"]
    lines += ["|---|---|---|---|" + ("---|" if test else "")]
    for t in doc["trials"]:
        acc = "-" if t["best_val_accuracy"] is None else f"{t['best_val_accuracy']:.4f} ({t['best_epoch']})"
        extra = "" if not test else " | -" if t["test_accuracy"] is None else f" | {t['test_accuracy']:.4f}"
        lines.append(f"| {t['name']} | {t['status']} | {t['epochs_done']}/{t['epochs']} | {acc}{extra} |")
    if best is not None:
        lines += [
            "",
            f"Best trial: {best['name']}, {best['best_val_accuracy']:.4f} at epoch {best['best_epoch']}",
        ]
        lines += [f"(run folder {best['run']})."]
    lines += ["", f"![validation accuracy against each swept key]({REPORT_PNG})", ""]
    return "\n".join(lines)


def plot(spec: SweepSpec, trials: list[TrialResult], points: list[PointResult], path: Path) -> Path:
    """Validation accuracy against each swept key: one dot per trial, each point's mean ± spread."""
    fig = figure(spec, trials, points)  # selects the Agg backend before pyplot loads
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def figure(spec: SweepSpec, trials: list[TrialResult], points: list[PointResult]) -> Any:
    """The report's matplotlib figure: a panel per swept key (a trial's value on x), or with no swept key
    one panel of the seeds, in the spec's order, with the recipe's mean ± spread as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [d.key for d in spec.space] or ["seed"]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        dim = None if key == "seed" else spec.dimension(key)
        values = [t.seed if dim is None else t.point[key] for t in trials]
        # seeds are names, not magnitudes: categories in the spec's order (1234, 1, 2 is not an axis)
        numeric = dim is not None and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        )
        if dim is None:
            order = list(dict.fromkeys(json.dumps(v) for v in [*spec.seeds, *values]))
        else:
            order = sorted({json.dumps(v) for v in values}, key=lambda s: json.loads(s) if numeric else s)

        def x_of(value: Any, numeric: bool = numeric, order: list[str] = order) -> float:
            return float(value) if numeric else float(order.index(json.dumps(value)))

        for finished, marker, label in (
            (True, "o", "trial"),
            (False, "x", "trial stopped early or unfinished"),
        ):
            shown = [
                t for t in trials if t.best_val_accuracy is not None and (t.status == "finished") == finished
            ]
            if shown:
                xs = [x_of(t.seed if dim is None else t.point[key]) for t in shown]
                ax.scatter(xs, [t.best_val_accuracy for t in shown], marker=marker, alpha=0.6, label=label)
        if dim is not None:
            for p in points:
                if p.mean is not None:
                    ax.errorbar(
                        x_of(p.point[key]),
                        p.mean,
                        yerr=p.std or 0.0,
                        fmt="_",
                        color="k",
                        capsize=4,
                        markersize=14,
                    )
        else:  # no swept key: one point, the recipe; its mean ± spread over the seeds as a band
            for p in points:
                if p.mean is not None:
                    ax.axhline(p.mean, color="k", lw=1, label="mean ± spread")
                    if p.std:
                        ax.axhspan(p.mean - p.std, p.mean + p.std, color="k", alpha=0.12)
        if dim is not None and dim.is_log():
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(
                range(len(order)), [json.loads(s) if isinstance(json.loads(s), str) else s for s in order]
            )
        ax.set_xlabel(key)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize=8)
    fig.suptitle(
        f"{spec.name}: best validation accuracy per trial\n{'bars' if spec.space else 'band'}: mean ± spread "
        "over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig

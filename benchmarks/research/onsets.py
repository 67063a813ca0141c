"""Where the word sits in its 1 s window, by source, and what that costs commands runs: ``OUT.{md,json,png}``.

A clip's *onset* is the time by which 3 % of its input spikes have arrived, its *end* the time by which 97 %
have (plain front-end spikes, no delay taps; the front-end codes quiet as few spikes, docs/frontend.md), its
*duration* the time between. Percentiles (10 / 50 / 90) of the three are given for each data set and, for
synthetic corpora, each engine.

For each ``LABEL=RUN`` the Speech Commands sample is also scored with its clips moved earlier so that the
onset sits at most at each ``--align`` time (a clip whose onset is already earlier is left as recorded;
spikes moved before 0 s are dropped). This is a *diagnostic* of how much the word's place in the window
costs a run: the alignment looks at the clip's own spikes, which a streaming detector cannot do (its lanes
start every 50 ms instead, docs/agent.md). Issue #12 round 15 (docs/training.md):

```
.venv/bin/python benchmarks/research/onsets.py benchmarks/results/onsets_commands \
    --data 'SC sample=runs/r12/ep/real/sc-sample/test.h5' 'FSDD=runs/r12/ep/real/fsdd-all/test.h5' \
    'synthetic test voices=runs/r12/ep/synth/all/test.h5' \
    'synthetic training voices=runs/r12/ep/synth/all/train.h5' \
    --sc runs/r12/ep/real/sc-sample/test.h5 --align 0.15,0.10 \
    --runs 'round 12, seed 1234=runs/r12/ep/runs/synthetic' 'round 12, seed 1=runs/r12/ep-s1/runs/synthetic'
```

``--by-duration LABEL=DATA.h5`` scores each run on that set's task words in ``--parts`` groups of equal
size, from its shortest words to its longest: whether a run misses words spoken faster than its training
voices spoke them. A synthetic corpus's ``--data`` set (its ``manifest.json`` beside it) also gets the row
of its task words mixed at ``--quiet-db`` or more: in noisier clips the noise's own spikes stretch onset and
end towards the window's edges. Issue #12 round 18:

```
W=runs/rv/work/runs
.venv/bin/python benchmarks/research/onsets.py benchmarks/results/durations_digits \
    --data FSDD=runs/rv/work/real/fsdd-all/test.h5 \
    'synthetic training voices=runs/r11/synth/kokoro/train.h5' \
    --by-duration FSDD=runs/rv/work/real/fsdd-all/test.h5 \
    --runs "A, seed 1234=$W/R18_A_s1234" "B, seed 1234=$W/R18_B_s1234" ...
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import command_line, machine, write_results  # benchmarks/ is on the path from here on
from sc_rejection import counts, heard, taps_of  # its folder is the script's: on the path

from edgekws.toolkit.data import SpikeDataset, read_shd
from edgekws.toolkit.data._synth import SILENCE_CLASS, UNKNOWN_CLASS
from edgekws.toolkit.train import load_run

ONSET_Q = 0.03
END_Q = 0.97


def clip_bounds(data: SpikeDataset) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's onset and end (s), in the data's order; NaN for a clip without spikes."""
    onset = np.array([np.quantile(t, ONSET_Q) if len(t) else np.nan for t in data.times])
    end = np.array([np.quantile(t, END_Q) if len(t) else np.nan for t in data.times])
    return onset, end


def bounds(data: SpikeDataset) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's onset and end (s); clips without spikes are left out."""
    onset, end = clip_bounds(data)
    spoken = ~np.isnan(onset)
    return onset[spoken], end[spoken]


def _percentiles(x: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(x, [10, 50, 90])] if len(x) else []


def snr_db(data: SpikeDataset, path: Path) -> np.ndarray | None:
    """Each clip's drawn SNR (dB) from the ``manifest.json`` beside ``path`` (an ``edgekws data synth``
    corpus's: its clips' ``utterance`` index it); None where the data do not say."""
    import json

    manifest = path.parent / "manifest.json"
    utterance = data.extra.get("utterance")
    if utterance is None or not manifest.is_file():
        return None
    rows = json.loads(manifest.read_text()).get("utterances", [])
    if not rows or "snr_db" not in rows[0]:
        return None
    return np.array([rows[int(i)].get("snr_db", np.nan) for i in utterance], dtype=float)


def placement(data: SpikeDataset, snr: np.ndarray | None = None, quiet_db: float = 35.0) -> dict[str, Any]:
    """Onset, end and duration percentiles of the whole set, of its filler classes apart, per synthetic
    engine and, where ``snr`` is known, of the task words mixed at ``quiet_db`` dB or more (the noise's own
    spikes spread a noisy clip's onset and end towards the window's edges)."""
    names = np.asarray(data.class_names)[data.labels]
    filler = np.isin(names, [UNKNOWN_CLASS, SILENCE_CLASS])
    groups = {"all": np.arange(len(data)), "task words": np.flatnonzero(~filler)}
    if snr is not None:
        groups[f"task words, SNR >= {quiet_db:g} dB"] = np.flatnonzero(~filler & (snr >= quiet_db))
    if (names == UNKNOWN_CLASS).any():
        groups["other words (_unknown_)"] = np.flatnonzero(names == UNKNOWN_CLASS)
    sources = data.metadata("source")
    if sources is not None and len(set(sources.tolist())) > 1:
        for source in sorted(set(sources.tolist())):
            groups[f"engine {source}"] = np.flatnonzero((sources == source) & ~filler)
    out = {}
    for name, index in groups.items():
        onset, end = bounds(data.subset(index))
        if len(onset):
            out[name] = {
                "clips": len(onset),
                "onset_s": _percentiles(onset),
                "end_s": _percentiles(end),
                "duration_s": _percentiles(end - onset),
            }
    return out


def aligned(data: SpikeDataset, at: float | None) -> SpikeDataset:
    """``data`` with each clip moved earlier so its onset is at most ``at`` s (None: as recorded)."""
    if at is None:
        return data
    times, units = [], []
    for t, u in zip(data.times, data.units, strict=True):
        move = max(0.0, float(np.quantile(t, ONSET_Q)) - at) if len(t) else 0.0
        keep = t - move >= 0
        times.append(t[keep] - move)
        units.append(u[keep])
    return SpikeDataset(
        times=times,
        units=units,
        labels=data.labels,
        num_channels=data.num_channels,
        class_names=list(data.class_names),
        extra=dict(data.extra),
        attrs=dict(data.attrs),
    )


def run_rows(runs: dict[str, Path], sc: Path, align: list[float]) -> dict[str, Any]:
    plain = read_shd(sc)
    rows: dict[str, Any] = {}
    for label, path in runs.items():
        run = load_run(path)
        rows[label] = {"run": str(path)}
        for at in [None, *align]:
            data = heard(aligned(plain, at), taps_of(run))
            rows[label]["as recorded" if at is None else f"onset <= {at:.2f} s"] = counts(run, data)
        print(label, rows[label], flush=True)
    return rows


def duration_rows(runs: dict[str, Path], path: Path, parts: int) -> tuple[list[str], dict[str, Any]]:
    """Each run's task words right on ``path`` by how long the word lasts (end - onset): its task words
    (not ``_unknown_`` or ``_silence_``, not clips without spikes) sorted by duration and dealt into ``parts``
    groups of equal size (within one clip), from the shortest to the longest; the groups' names (their
    duration ranges) and a row a run."""
    plain = read_shd(path)
    onset, end = clip_bounds(plain)
    duration = end - onset
    names = np.asarray(plain.class_names)[plain.labels]
    words = np.flatnonzero(~np.isnan(duration) & ~np.isin(names, [UNKNOWN_CLASS, SILENCE_CLASS]))
    if len(words) < parts:
        raise SystemExit(f"{path}: {len(words)} task words with spikes, too few for {parts} duration groups")
    groups = np.array_split(words[np.argsort(duration[words], kind="stable")], parts)
    labels = [f"{duration[g].min():.2f}-{duration[g].max():.2f} s" for g in groups]
    labels = [f"{k + 1}: {label}" if labels.count(label) > 1 else label for k, label in enumerate(labels)]
    rows: dict[str, Any] = {}
    for label, run_path in runs.items():
        run = load_run(run_path)
        data = heard(plain, taps_of(run))
        rows[label] = {"run": str(run_path), "all": counts(run, data.subset(words))}
        for name, group in zip(labels, groups, strict=True):
            rows[label][name] = counts(run, data.subset(group))
        print(label, rows[label], flush=True)
    return labels, rows


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Where the word sits in its window",
        "",
        f"Reproduce: `{doc['command']}`. Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores. "
        f"Onset: the time by which {ONSET_Q:.0%} of a clip's input spikes have arrived; end: {END_Q:.0%} "
        "(plain front-end, no delay taps); duration: the time between. Percentiles 10 / 50 / 90 over the "
        "clips.",
        "",
        "| data set | clips | onset p10 / p50 / p90 (s) | end p10 / p50 / p90 (s) "
        "| duration p10 / p50 / p90 (s) |",
        "|---|---|---|---|---|",
    ]
    for name, groups in doc["placement"].items():
        for group, p in groups.items():
            onset = " / ".join(f"{v:.2f}" for v in p["onset_s"])
            end = " / ".join(f"{v:.2f}" for v in p["end_s"])
            duration = " / ".join(f"{v:.2f}" for v in p.get("duration_s", []))  # older files lack it
            lines.append(f"| {name}: {group} | {p['clips']} | {onset} | {end} | {duration} |")
    if doc["runs"]:
        lines += [
            "",
            "The Speech Commands sample scored with its clips moved earlier (a diagnostic: the alignment "
            "reads the clip's own spikes, which a detector cannot):",
            "",
            "| run | alignment | SC command words right | SC all clips right |",
            "|---|---|---|---|",
        ]
        for label, row in doc["runs"].items():
            for how, s in row.items():
                if how == "run":
                    continue
                lines.append(
                    f"| {label} | {how} | {s['words_right']}/{s['words']} "
                    f"({100 * s['words_right'] / s['words']:.1f} %) | {s['right']}/{s['clips']} "
                    f"({100 * s['right'] / s['clips']:.1f} %) |"
                )
    if doc.get("durations"):
        by = doc["durations"]
        groups = by["groups"]
        lines += [
            "",
            f"{by['data']}'s task words by how long they last (end - onset; groups of equal size), right:",
            "",
            "| run | all | " + " | ".join(groups) + " |",
            "|---|---|" + "---|" * len(groups),
        ]
        for label, row in by["runs"].items():
            cells = [
                f"{100 * row[g]['words_right'] / row[g]['words']:.1f} % ({row[g]['words']})"
                for g in ["all", *groups]
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.45 * sum(len(g) for g in doc["placement"].values()) + 1.2))
    labels: list[str] = []
    for name, groups in doc["placement"].items():
        for group, p in groups.items():
            y = len(labels)
            labels.append(f"{name}: {group}")
            if p["onset_s"]:
                o10, o50, o90 = p["onset_s"]
                e10, e50, e90 = p["end_s"]
                ax.plot([o10, o90], [y, y], color="tab:blue", lw=6, alpha=0.35)
                ax.plot([e10, e90], [y, y], color="tab:orange", lw=6, alpha=0.35)
                ax.plot([o50, e50], [y, y], color="black", lw=1)
                ax.plot([o50], [y], "o", color="tab:blue")
                ax.plot([e50], [y], "o", color="tab:orange")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("time in the 1 s window (s)")
    ax.set_title("onset (blue) and end (orange) of the word: p10-p90 bars, median dots", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pairs(items: list[str], parser: argparse.ArgumentParser) -> dict[str, Path]:
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected LABEL=PATH")
        out[label] = Path(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="results path without suffix")
    parser.add_argument("--data", nargs="+", required=True, help="LABEL=DATA.h5 (plain front-end spikes)")
    parser.add_argument("--sc", type=Path, help="the Speech Commands sample's test.h5 (plain), for --runs")
    parser.add_argument("--align", default="0.15,0.10", help="onset times (s) to score the sample at")
    parser.add_argument("--runs", nargs="*", default=[], help="LABEL=RUN")
    parser.add_argument(
        "--by-duration", metavar="LABEL=DATA.h5", help="score --runs on this set by how long its words last"
    )
    parser.add_argument("--parts", type=int, default=3, help="duration groups for --by-duration")
    parser.add_argument(
        "--quiet-db", type=float, default=35.0, help="a synthetic corpus's quiet clips: SNR at least this"
    )
    args = parser.parse_args()
    runs = _pairs(args.runs, parser)
    if runs and args.sc is None and args.by_duration is None:
        parser.error("--runs needs --sc or --by-duration")
    if args.by_duration is not None and not runs:
        parser.error("--by-duration scores runs: give --runs")
    if args.parts < 1:
        parser.error(f"--parts must be at least 1, got {args.parts}")
    align = [float(a) for a in args.align.split(",") if a]
    placements = {}
    for label, path in _pairs(args.data, parser).items():
        data = read_shd(path)
        placements[label] = placement(data, snr_db(data, path), args.quiet_db)
    doc = {
        "command": command_line(),
        "machine": machine(),
        "placement": placements,
        "runs": run_rows(runs, args.sc, align) if runs and args.sc is not None else {},
    }
    if args.by_duration is not None:
        ((label, path),) = _pairs([args.by_duration], parser).items()
        groups, rows = duration_rows(runs, path, args.parts)
        doc["durations"] = {"data": label, "groups": groups, "runs": rows}
    write_results(args.out.with_suffix(".json"), doc, markdown(doc))
    plot(doc, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Summaries of keyword data sets: an SHD-layout .h5 file, a corpus folder, or labelled recordings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data import _recordings as rec
from edgekws.toolkit.data import _synth
from edgekws.toolkit.data._shd import read_shd
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset

DEFAULT_SAMPLE = 32  # recordings per split encoded for the spike statistics of a folder or CSV manifest


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": 0.0, "min": 0.0, "p5": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    v = np.asarray(values, dtype=np.float64)
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {
        "mean": round(float(v.mean()), 4),
        "min": round(float(v.min()), 4),
        "p5": round(float(p5), 4),
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
        "max": round(float(v.max()), 4),
    }


def describe(ds: SpikeDataset, duration: float | None = None) -> dict[str, Any]:
    """Counts per class and spike statistics of a data set.

    ``duration`` is the length of every sample in seconds (the clip length for encoded audio); when
    unknown (published SHD/SSC files) each sample's last spike time stands in for it.
    """
    duration = duration if duration is not None else ds.attrs.get("duration_s")
    counts = np.array([len(t) for t in ds.times], dtype=np.int64)
    active = np.array([len(np.unique(u)) for u in ds.units], dtype=np.int64)
    last = ds.durations()
    lengths = np.full(len(ds), float(duration)) if duration else last
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(lengths > 0, counts / (ds.num_channels * lengths), 0.0)
    used = np.zeros(ds.num_channels, dtype=bool)
    for u in ds.units:
        used[np.asarray(u, dtype=np.int64)] = True
    per_class = np.bincount(ds.labels, minlength=ds.num_classes) if len(ds) else np.zeros(ds.num_classes, int)
    out: dict[str, Any] = {
        "samples": len(ds),
        "num_channels": ds.num_channels,
        "num_classes": ds.num_classes,
        "per_class": {name: int(n) for name, n in zip(ds.class_names, per_class, strict=True)},
        "duration_s": float(duration) if duration else None,
        "last_spike_s": _stats(last),
        "spikes_per_sample": _stats(counts),
        "active_channels_per_sample": _stats(active),
        "channels_used": int(used.sum()),
        "rate_hz_per_channel": _stats(rate),
        "silent_samples": int((counts == 0).sum()),
    }
    if "speaker" in ds.extra:
        out["speakers"] = len(np.unique(ds.extra["speaker"]))
    return out


def info(path: str | os.PathLike[str], sample: int = DEFAULT_SAMPLE) -> dict[str, Any]:
    """Summarise any supported data set at ``path``; the kind is detected from what is there."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _recordings_info(path, sample)
    if path.is_file():
        ds = read_shd(path)
        return {
            "kind": "shd",
            "path": str(path),
            "classes": ds.class_names,
            "splits": {path.stem: describe(ds)},
            "attrs": {
                k: v for k, v in ds.attrs.items() if k in ("format", "task", "split", "seed", "frontend")
            },
        }
    if _synth.is_corpus(path):
        return _synth_info(path)
    if rec.is_recordings(path):
        return _recordings_info(path, sample)
    raise DatasetError(
        f"{path}: not a supported data set; pass an SHD-layout .h5 file, a folder made by "
        "`edgekws data synth` or `data import`, a Speech Commands-style folder (root/<word>/*.wav), a "
        "folder of clips named like '{label}_{speaker}_{take}.flac', or a CSV manifest"
    )


def _synth_info(path: Path) -> dict[str, Any]:
    manifest = _synth.load_manifest(path)
    splits = {}
    for split, name in manifest["files"].items():
        splits[split] = describe(read_shd(path / name), manifest["duration_s"])
    if manifest["format"] == rec.FORMAT:
        rows = manifest["recordings"]
        return {
            "kind": "import",
            "path": str(path),
            "task": manifest["task"],
            "classes": manifest["classes"],
            "sources": sorted({r["source"] for r in rows}),
            "speakers_per_split": {s: len(v) for s, v in manifest["speakers"].items()},
            "recordings": len(rows),
            "audio_s": _stats(np.array([r["audio_s"] for r in rows])),
            "frontend": manifest["frontend"],
            "splits": splits,
        }
    utts = manifest["utterances"]
    speech = np.array([u.get("speech_s", 0.0) for u in utts])
    return {
        "kind": "synth",
        "path": str(path),
        "task": manifest["task"],
        "seed": manifest["seed"],
        "classes": [c["name"] for c in manifest["classes"]],
        "speakers_per_split": {
            s: len({u["speaker"] for u in utts if u["split"] == s}) for s in manifest["files"]
        },
        "utterances": len(utts),
        "speech_s": _stats(speech),
        "snr_db": _stats(np.array([u["snr_db"] for u in utts])),
        "frontend": manifest["frontend"],
        "splits": splits,
    }


def _recordings_info(path: Path, sample: int) -> dict[str, Any]:

    from edgekws.agent import FrontendSpec

    spec = FrontendSpec()
    recordings = [r for r in rec.scan(path) if r.label != rec.BACKGROUND]
    words = rec.default_classes(recordings)
    splits: dict[str, Any] = {}
    for split in rec.SPLITS:
        files = [r for r in recordings if (r.split or "train") == split]
        if not files:
            continue
        seconds = [rec.audio_seconds(r.path) for r in files]
        labels = [rec.normalise_label(r.label) for r in files]
        summary: dict[str, Any] = {
            "samples": len(files),
            "per_class": {w: labels.count(w) for w in words},
            "speakers": len({r.speaker for r in files}),
            "sources": sorted({r.source for r in files}),
            "audio_s": _stats(np.array(seconds)),
        }
        if sample > 0:
            picks = np.linspace(0, len(files) - 1, min(sample, len(files))).round().astype(int)
            chosen = [files[i] for i in sorted(set(picks.tolist()))]
            encoded, _ = rec.encode_recordings(chosen, words, spec)
            summary["spikes"] = describe(encoded, 1.0)
            summary["spikes"]["encoded_files"] = len(chosen)
        splits[split] = summary
    return {"kind": "recordings", "path": str(path), "classes": words, "splits": splits}


def format_info(summary: dict[str, Any]) -> str:
    """The summary as aligned text for people (``--json`` gives the dictionary itself)."""
    lines = [f"{summary['kind']} data set: {summary['path']}"]
    if summary["kind"] == "import":
        lines.append(
            f"task {summary['task']}, {summary['recordings']} recordings from "
            f"{', '.join(summary['sources'])}, "
            f"speakers per split {summary['speakers_per_split']}"
        )
    if summary["kind"] == "synth":
        lines.append(
            f"task {summary['task']}, seed {summary['seed']}, {summary['utterances']} utterances, "
            f"speakers per split {summary['speakers_per_split']}"
        )
        sp = summary["speech_s"]
        lines.append(f"speech length s: mean {sp['mean']:.3f}  p5 {sp['p5']:.3f}  p95 {sp['p95']:.3f}")
    splits = summary["splits"]
    names = list(splits)
    classes = summary["classes"]
    width = max([len(c) for c in classes] + [5])
    lines.append("")
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>8}" for s in names))
    for c in classes:
        lines.append(f"{c:<{width}}  " + "  ".join(f"{splits[s]['per_class'].get(c, 0):>8}" for s in names))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{splits[s]['samples']:>8}" for s in names))
    for s in names:
        d = splits[s].get("spikes", splits[s])
        if "spikes_per_sample" not in d:
            continue
        lines.append("")
        extra = f", {d['encoded_files']} files encoded" if "encoded_files" in d else ""
        dur = f"{d['duration_s']:.3f} s per sample" if d.get("duration_s") else "length = last spike"
        lines.append(f"[{s}] {d['num_channels']} channels, {dur}{extra}")
        if "audio_s" in splits[s]:
            a = splits[s]["audio_s"]
            lines.append(
                f"  audio s           mean {a['mean']:>9.3f}  min {a['min']:.3f}  max {a['max']:.3f}, "
                f"speakers {splits[s]['speakers']}"
            )
        for key, label in (
            ("spikes_per_sample", "spikes/sample"),
            ("active_channels_per_sample", "active channels"),
            ("rate_hz_per_channel", "rate Hz/channel"),
            ("last_spike_s", "last spike s"),
        ):
            v = d[key]
            lines.append(
                f"  {label:<17} mean {v['mean']:>9.2f}  p5 {v['p5']:>9.2f}  p50 {v['p50']:>9.2f}  "
                f"p95 {v['p95']:>9.2f}  max {v['max']:>9.2f}"
            )
        lines.append(
            f"  channels used {d['channels_used']}/{d['num_channels']}, silent samples {d['silent_samples']}"
            + (f", speakers {d['speakers']}" if "speakers" in d else "")
        )
    return "\n".join(lines)

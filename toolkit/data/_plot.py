"""Plot one sample: its spike raster, and its waveform above it where the audio is known."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekws.toolkit.data import _recordings as rec
from edgekws.toolkit.data import _synth
from edgekws.toolkit.data._shd import read_shd
from edgekws.toolkit.data._spikes import DatasetError

SPLIT_ALIASES = rec.SPLIT_ALIASES


@dataclass
class Sample:
    title: str
    times: np.ndarray  # seconds
    units: np.ndarray
    num_channels: int
    audio: np.ndarray | None = None  # float mono
    sample_rate: int = 16000


def load_sample(path: str | os.PathLike[str], index: int, split: str = "train") -> Sample:
    """Sample ``index`` of the data set at ``path`` (``split`` picks the file of a corpus folder)."""
    path = Path(path)
    if path.is_dir() and _synth.is_corpus(path):
        split = SPLIT_ALIASES.get(split, split)
        manifest = _synth.load_manifest(path)
        if split not in manifest["files"]:
            raise DatasetError(f"{path}: no split {split!r}; the corpus has {', '.join(manifest['files'])}")
        return load_sample(path / manifest["files"][split], index)
    if rec.is_recordings(path):
        return _recording_sample(path, index, split)
    ds = read_shd(path)
    if not 0 <= index < len(ds):
        raise DatasetError(f"{path}: index must be in 0..{len(ds) - 1}, got {index}")
    label = ds.class_names[int(ds.labels[index])]
    title = f"{path.name} #{index}: {label}"
    audio, rate = None, 16000
    speakers = ds.metadata("speaker")
    if speakers is not None:
        title += f", {speakers[index]}"
    if _synth.is_corpus(path.parent) and "utterance" in ds.extra:
        from edgekws.agent import load_audio

        utt = _synth.load_manifest(path.parent)["utterances"][int(ds.extra["utterance"][index])]
        title = f"{path.name} #{index}: {label} ({utt['speaker']}, {utt['snr_db']:.0f} dB SNR)"
        audio, rate = load_audio(path.parent / utt["wav"])
    return Sample(title, ds.times[index], ds.units[index], ds.num_channels, audio, rate)


def _recording_sample(root: Path, index: int, split: str) -> Sample:
    from edgekws.agent import load_audio

    split = SPLIT_ALIASES.get(split, split)
    recordings = [r for r in rec.scan(root) if r.label != rec.BACKGROUND and (r.split or "train") == split]
    if not 0 <= index < len(recordings):
        raise DatasetError(
            f"{root}: index must be in 0..{len(recordings) - 1} for split {split!r}, got {index}"
        )
    r = recordings[index]
    encoded, _ = rec.encode_recordings([r], [rec.normalise_label(r.label)])
    audio, rate = load_audio(r.path)
    title = f"{r.file}: {rec.normalise_label(r.label)} ({r.speaker})"
    return Sample(title, encoded.times[0], encoded.units[0], encoded.num_channels, audio, rate)


def plot_sample(
    path: str | os.PathLike[str], index: int, out: str | os.PathLike[str], split: str = "train"
) -> Path:
    """Write a PNG of sample ``index``: the waveform (when known) above the spike raster."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sample = load_sample(path, index, split)
    audio = sample.audio
    fig = Figure(figsize=(10, 6.5 if audio is not None else 5), dpi=110)
    FigureCanvasAgg(fig)
    if audio is not None:
        grid = fig.add_gridspec(2, 1, height_ratios=(1, 3), hspace=0.08)
        ax_wave = fig.add_subplot(grid[0])
        ax = fig.add_subplot(grid[1], sharex=ax_wave)
        ax_wave.plot(np.arange(len(audio)) / sample.sample_rate, audio, lw=0.5, color="0.2")
        ax_wave.set_ylabel("audio")
        ax_wave.tick_params(labelbottom=False)
        ax_wave.set_title(sample.title)
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_title(sample.title)
    ax.scatter(sample.times, sample.units, s=1.5, marker="|", color="k", linewidths=0.6)
    end = max(float(np.max(sample.times)) if len(sample.times) else 0.0, 1.0)
    if audio is not None:
        end = max(end, len(audio) / sample.sample_rate)
    ax.set_xlim(0, end)
    ax.set_ylim(-0.5, sample.num_channels - 0.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"channel (0..{sample.num_channels - 1})")
    ax.text(
        0.99, 0.98, f"{len(sample.times)} spikes", transform=ax.transAxes, ha="right", va="top", fontsize=8
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", format="png")  # a name without .png stays as given
    return out

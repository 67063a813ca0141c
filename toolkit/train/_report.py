"""Figures of a run: training curves from ``metrics.jsonl`` and a raster of hidden spikes for one sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import atomic_path
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train._run import LoadedRun, read_metrics


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    _pyplot().close(fig)
    return path


def plot_curves(run_dir: Path, path: Path) -> Path | None:
    """Loss, accuracy, learning rate and hidden firing rate per epoch; ``None`` without metrics."""
    history = read_metrics(run_dir)
    if not history:
        return None
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0, 0]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax.plot(epochs, [h.get("val_loss") for h in history], label="validation (cross-entropy)")
    ax.set_title("loss")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(epochs, [h["train_accuracy"] for h in history], label="train (augmented)")
    if any(h.get("val_accuracy") is not None for h in history):
        ax.plot(epochs, [h.get("val_accuracy") for h in history], label="validation")
    ax.set_title("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    axes[1, 0].plot(epochs, [h["lr"] for h in history])
    axes[1, 0].set_title("learning rate (end of epoch)")
    axes[1, 1].plot(epochs, [h["hidden_rate_hz"] for h in history])
    axes[1, 1].set_title("mean hidden firing rate (Hz)")
    for a in axes.ravel():
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    return _save(fig, path)


def plot_raster(run: LoadedRun, data: SpikeDataset, index: int, path: Path) -> Path:
    """Input spikes, hidden spikes and readout trace of sample ``index`` through the float model."""
    import jax.numpy as jnp

    from edgekws.toolkit.train._model import simulate

    spec = run.spec
    if not 0 <= index < len(data):
        raise IndexError(f"sample {index} is outside the data set (0..{len(data) - 1})")
    x = data.bin(spec.dt_ms / 1000.0, spec.num_steps, [index])
    out = simulate({k: jnp.asarray(v) for k, v in run.params.items()}, jnp.asarray(x, jnp.float32), spec)
    hidden = [np.asarray(s)[0] for s in out.hidden_spikes]
    readout = np.asarray(out.readout)[0]
    plt = _pyplot()
    rows = 2 + len(hidden)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows + 1), sharex=True)
    t_ms = np.arange(spec.num_steps) * spec.dt_ms
    steps, chans = np.nonzero(x[0])
    axes[0].scatter(steps * spec.dt_ms, chans, s=0.5, c="k")
    axes[0].set_ylabel("input channel")
    for i, s in enumerate(hidden):
        st, nu = np.nonzero(s)
        axes[1 + i].scatter(st * spec.dt_ms, nu, s=0.5, c="tab:blue")
        axes[1 + i].set_ylabel(f"hidden {i} neuron")
    names = list(spec.class_names or data.class_names)
    label = int(data.labels[index])
    for k in range(readout.shape[1]):
        lw, alpha = (2.0, 1.0) if k == label else (0.8, 0.5)
        axes[-1].plot(t_ms, readout[:, k], lw=lw, alpha=alpha, label=names[k] if k == label else None)
    axes[-1].set_ylabel("readout V")
    axes[-1].set_xlabel("time (ms)")
    axes[-1].legend(loc="upper left")
    fig.suptitle(f"sample {index}, class {names[label]!r}")
    fig.tight_layout()
    return _save(fig, path)

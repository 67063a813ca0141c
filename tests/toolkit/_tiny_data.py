"""A tiny two-class spike data set and training config (8 channels, 50 steps): training runs in seconds,
for the CLI tests that need a real run folder."""

from __future__ import annotations

from pathlib import Path

from _spikes import C as C
from _spikes import T as T
from _spikes import two_class_data

from edgekws.toolkit.data import write_shd

TINY_TOML = (
    'hidden = [16]\nbatch_size = 8\nlearning_rate = 0.01\nease_in = false\naugment = "none"\n'
    'method = "bptt"\neval_batch_size = 16\n'
)


def tiny_data(path: Path, n: int, seed: int) -> Path:
    """``n`` samples of :func:`_spikes.two_class_data` (classes yes/no), written as an SHD-style HDF5 file."""
    return write_shd(two_class_data(n, seed, ("yes", "no")), path)

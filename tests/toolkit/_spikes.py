"""Spike data sets the toolkit tests build: tiny, separable, with the attrs `edgekws train` reads."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekws.toolkit.data import SpikeDataset

C, T = 8, 50  # channels, steps of 1 ms


def two_class_data(
    n: int, seed: int, class_names: tuple[str, str] = ("low", "high"), **attrs: Any
) -> SpikeDataset:
    """Class 0 fires on channels 0-3, class 1 on channels 4-7 (linearly separable: a 16-neuron BPTT network
    with a learning rate of 0.01 separates them in one epoch). ``attrs`` are added to ``dt``/``num_steps``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rasters = []
    for label in labels:
        r = np.zeros((T, C), np.uint8)
        r[:, 4 * int(label) : 4 * int(label) + 4] = rng.random((T, 4)) < 0.25
        rasters.append(r)
    return SpikeDataset.from_raster(
        rasters, labels, 0.001, list(class_names), attrs={"dt": 0.001, "num_steps": T, **attrs}
    )

"""Training-time augmentation of spike data sets: channel shift and same-class blend (seed paper §1), and a
random delay for streaming use.

Both work on the sparse events of a :class:`SpikeDataset` and are pure functions of the data and a
``numpy.random.Generator``, so an epoch's augmented data are fixed by the run's seed and the epoch.
"""

from __future__ import annotations

import numpy as np

from edgekws.toolkit.data import SpikeDataset


def shift_channels(
    data: SpikeDataset, max_shift: int, rng: np.random.Generator, stride: int = 1
) -> SpikeDataset:
    """Move every event of each sample by one random offset of ``stride * k`` channels, ``k`` in
    ``[-max_shift, max_shift)``.

    The offset is drawn per sample as ``np.random.randint(-max_shift, max_shift)`` in the paper (SHD's 700
    channels lie on one tonotopic axis, ``stride`` 1). edgekws' front-end interleaves ``stride`` level units
    per band (channel ``band * stride + level``), so a shift moves whole bands and keeps each event's level.
    Events shifted outside ``0..num_channels-1`` are dropped.
    """
    if max_shift <= 0:
        return data
    offsets = rng.integers(-max_shift, max_shift, size=len(data)) * int(stride)
    times, units = [], []
    for t, u, off in zip(data.times, data.units, offsets, strict=True):
        shifted = u.astype(np.int64) + int(off)
        keep = (shifted >= 0) & (shifted < data.num_channels)
        times.append(t[keep])
        units.append(shifted[keep].astype(np.uint16))
    return _with_events(data, times, units, data.labels)


def blend_same_class(
    data: SpikeDataset, count: int, p: float, rng: np.random.Generator, dt: float
) -> SpikeDataset:
    """``count`` new samples, each a blend of two random samples of the same class.

    As mlGeNN's ``shift-blend``: the two sources are moved so that their centres of mass in channel
    and time coincide (at the mean of the two, in whole channels and whole steps of ``dt`` seconds), then
    every spike of the first is kept with probability ``p`` and every spike of the second with ``1 - p``.
    Events moved out of range (a negative time or a channel outside the front-end) are dropped.
    """
    by_class = [np.flatnonzero(data.labels == k) for k in range(data.num_classes)]
    usable = [k for k, members in enumerate(by_class) if len(members) >= 1]
    times, units, labels = [], [], []
    for _ in range(count):
        k = usable[int(rng.integers(len(usable)))]
        a, b = (int(i) for i in rng.choice(by_class[k], size=2, replace=True))
        sources = [
            (data.times[a], data.units[a].astype(np.int64)),
            (data.times[b], data.units[b].astype(np.int64)),
        ]
        nonempty = [(t, u) for t, u in sources if len(t)]
        mean_ch = np.mean([u.mean() for _, u in nonempty]) if nonempty else 0.0
        mean_t = np.mean([t.mean() for t, _ in nonempty]) if nonempty else 0.0
        parts_t, parts_u = [], []
        for (t, u), keep_p in zip(sources, (p, 1.0 - p), strict=True):
            if not len(t):
                continue
            du = int(mean_ch - u.mean())
            dt_steps = int((mean_t - t.mean()) / dt)
            tt = t.astype(np.float64) + dt_steps * dt
            uu = u + du
            keep = (rng.random(len(t)) < keep_p) & (tt >= 0) & (uu >= 0) & (uu < data.num_channels)
            parts_t.append(tt[keep])
            parts_u.append(uu[keep])
        t_all = np.concatenate(parts_t) if parts_t else np.zeros(0)
        u_all = np.concatenate(parts_u) if parts_u else np.zeros(0, dtype=np.int64)
        order = np.argsort(t_all, kind="stable")
        times.append(t_all[order].astype(np.float32))
        units.append(u_all[order].astype(np.uint16))
        labels.append(k)
    return _with_events(data, times, units, np.asarray(labels, dtype=np.int64))


def delay_samples(
    data: SpikeDataset,
    max_steps: int,
    rng: np.random.Generator,
    dt: float,
    only: np.ndarray | None = None,
) -> SpikeDataset:
    """Delay every event of each sample by one random whole number of steps in ``[0, max_steps]``.

    A streaming spotter's 1 s windows meet a word anywhere in them, not only at the corpus' onsets; the
    delay moves the word later in the window (events pushed past the sample's end are dropped when the
    data are binned). ``only`` (one bool a sample) keeps the samples where it is False in place; the
    others get the delays they would get without it (every sample's delay is drawn either way).
    """
    if max_steps <= 0:
        return data
    delays = rng.integers(0, max_steps + 1, size=len(data))
    if only is not None:
        if len(only) != len(data):
            raise ValueError(f"only has {len(only)} entries for {len(data)} samples")
        delays = np.where(np.asarray(only, dtype=bool), delays, 0)
    times = [
        (t.astype(np.float64) + int(d) * dt).astype(np.float32)
        for t, d in zip(data.times, delays, strict=True)
    ]
    return _with_events(data, times, list(data.units), data.labels)


def drop_events(data: SpikeDataset, p: float, rng: np.random.Generator) -> SpikeDataset:
    """Drop every input event independently with probability ``p`` (input-spike dropout)."""
    if p <= 0:
        return data
    times, units = [], []
    for t, u in zip(data.times, data.units, strict=True):
        keep = rng.random(len(t)) >= p
        times.append(t[keep])
        units.append(u[keep])
    return _with_events(data, times, units, data.labels)


def augment_epoch(
    data: SpikeDataset,
    mode: str,
    max_shift: int,
    blend_fraction: float,
    blend_p: float,
    rng: np.random.Generator,
    dt: float,
    stride: int = 1,
    max_delay_steps: int = 0,
    drop_p: float = 0.0,
    delay_only: np.ndarray | None = None,
) -> SpikeDataset:
    """The training set of one epoch: the originals (plus blends for ``shift-blend``), then shifted, then
    delayed (``max_delay_steps`` > 0; only the samples where ``delay_only`` is True when it is given, which
    blends cannot take), then thinned (``drop_p`` > 0)."""
    if mode != "none":
        if mode == "shift-blend" and blend_fraction > 0:
            if delay_only is not None:
                raise ValueError("delay_only picks original samples; shift-blend's blends mix two of them")
            blends = blend_same_class(data, round(blend_fraction * len(data)), blend_p, rng, dt)
            data = _concat(data, blends)
        data = shift_channels(data, max_shift, rng, stride)
    return drop_events(delay_samples(data, max_delay_steps, rng, dt, delay_only), drop_p, rng)


def _with_events(
    data: SpikeDataset, times: list[np.ndarray], units: list[np.ndarray], labels: np.ndarray
) -> SpikeDataset:
    return SpikeDataset(
        times=times,
        units=units,
        labels=labels,
        num_channels=data.num_channels,
        class_names=list(data.class_names),
        attrs=dict(data.attrs),
    )


def _concat(a: SpikeDataset, b: SpikeDataset) -> SpikeDataset:
    return SpikeDataset(
        times=[*a.times, *b.times],
        units=[*a.units, *b.units],
        labels=np.concatenate([a.labels, b.labels]),
        num_channels=a.num_channels,
        class_names=list(a.class_names),
        attrs=dict(a.attrs),
    )

"""One in-memory representation for spike data sets, and binning to a time step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A data set file or array is malformed; the message says what and how to fix it."""


def events_of(raster: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The events of a ``(steps, channels)`` spike raster: times ``step * dt`` (float32 seconds) and
    channels (uint16), sorted by (step, channel), so that binning at ``dt`` gives the raster again."""
    steps, chans = np.nonzero(np.asarray(raster))
    order = np.lexsort((chans, steps))
    return (steps[order].astype(np.int64) * dt).astype(np.float32), chans[order].astype(np.uint16)


@dataclass
class SpikeDataset:
    """Spike trains of labelled samples: the common currency of every reader, writer and trainer.

    Sample ``i`` has events ``(times[i][k], units[i][k])``: a spike on channel ``units[i][k]``
    at ``times[i][k]`` seconds from the start of the sample. This is the SHD/SSC convention.
    """

    times: list[np.ndarray]  # float32 seconds, one array per sample, sorted ascending
    units: list[np.ndarray]  # uint16 channel index per event, same lengths as ``times``
    labels: np.ndarray  # int64 class index per sample
    num_channels: int
    class_names: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample arrays: speaker, keys, ...
    attrs: dict[str, Any] = field(default_factory=dict)  # data-set metadata: front-end spec, seed, ...

    def __post_init__(self) -> None:
        problems: list[str] = []
        n = len(self.labels)
        if len(self.times) != n or len(self.units) != n:
            problems.append(
                f"times, units and labels must have one entry per sample, got {len(self.times)}, "
                f"{len(self.units)} and {n}"
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        for i, (t, u) in enumerate(zip(self.times, self.units, strict=False)):
            if len(t) != len(u):
                problems.append(f"sample {i}: {len(t)} spike times but {len(u)} units")
            elif len(u) and (int(np.max(u)) >= self.num_channels or int(np.min(u)) < 0):
                problems.append(f"sample {i}: unit outside 0..{self.num_channels - 1}")
            if len(t) and not np.all(np.isfinite(t)):
                problems.append(f"sample {i}: non-finite spike time")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            problems.append(
                f"labels must lie in 0..{len(self.class_names) - 1} (one per class name), "
                f"got {self.labels.min()}..{self.labels.max()}"
            )
        for key, arr in self.extra.items():
            if len(arr) != n:
                problems.append(f"extra/{key} has {len(arr)} entries for {n} samples")
        if problems:
            raise DatasetError("invalid spike data set:\n  " + "\n  ".join(problems))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def durations(self) -> np.ndarray:
        """Time of the last spike of each sample (0 for a silent sample), in seconds."""
        return np.array([float(t[-1]) if len(t) else 0.0 for t in self.times])

    def subset(self, index: Sequence[int] | np.ndarray) -> SpikeDataset:
        """A new data set holding the samples at ``index`` (metadata kept)."""
        idx = np.asarray(index, dtype=np.int64)
        return SpikeDataset(
            times=[self.times[i] for i in idx],
            units=[self.units[i] for i in idx],
            labels=self.labels[idx],
            num_channels=self.num_channels,
            class_names=list(self.class_names),
            extra={k: np.asarray(v)[idx] for k, v in self.extra.items()},
            attrs=dict(self.attrs),
        )

    def metadata(self, column: str) -> np.ndarray | None:
        """Per-sample strings of ``column`` ("speaker", "source", "voice", "gender", "accent", "augment"),
        or None where the data do not say.

        Taken from the string extra of that name (``speaker_name`` for the speaker: what ``edgekws data
        import`` and ``data synth`` write); for ``speaker`` else from ``extra["speaker"]`` indexing
        ``attrs["speakers"]``, or the voice+variant of ``attrs["meta_info"]`` (older synthetic corpora),
        or the bare speaker id (SHD).
        """
        values = self.extra.get("speaker_name" if column == "speaker" else column)
        if values is not None and np.asarray(values).dtype.kind in "US":
            return np.asarray(values).astype(str)
        if column != "speaker" or "speaker" not in self.extra:
            return None
        ids = np.asarray(self.extra["speaker"], dtype=np.int64)
        names = self.attrs.get("speakers")
        meta = self.attrs.get("meta_info") or {}
        if names is None and meta.get("voice") is not None and meta.get("variant") is not None:
            names = [f"{v}+{w}" for v, w in zip(meta["voice"], meta["variant"], strict=False)]
        if names is not None and (len(ids) == 0 or int(ids.max()) < len(names)):
            return np.array([names[i] for i in ids], dtype=str)
        return np.array([f"speaker {i}" for i in ids], dtype=str)

    @classmethod
    def concat(cls, parts: Sequence[SpikeDataset]) -> SpikeDataset:
        """One data set holding the samples of ``parts`` in order (same classes, channels and front-end).

        Per-sample string columns (see :meth:`metadata`) are kept, "" where a part lacks one; numeric
        extras are kept where every part has them; ``extra["speaker"]`` is rebuilt to index
        ``attrs["speakers"]``, the sorted speaker names of all parts.
        """
        if not parts:
            raise DatasetError("concat needs at least one data set")
        first = parts[0]
        problems = []
        for k, p in enumerate(parts[1:], start=1):
            if p.class_names != first.class_names:
                problems.append(f"part {k} has classes {p.class_names}, part 0 {first.class_names}")
            if p.num_channels != first.num_channels:
                problems.append(f"part {k} has {p.num_channels} channels, part 0 {first.num_channels}")
            if p.attrs.get("frontend") != first.attrs.get("frontend"):
                problems.append(f"part {k} was encoded with another front-end than part 0")
        if problems:
            raise DatasetError("cannot concatenate: " + "; ".join(problems) + "; encode them alike")
        columns = ("speaker", "source", "voice", "gender", "accent", "augment")
        extra: dict[str, np.ndarray] = {}
        for column in columns:
            got = [p.metadata(column) for p in parts]
            if any(g is not None for g in got):
                extra[column] = np.concatenate(
                    [
                        g if g is not None else np.full(len(p), "", dtype=str)
                        for g, p in zip(got, parts, strict=True)
                    ]
                ).astype(str)
        numeric = set.intersection(
            *[{k for k, v in p.extra.items() if np.asarray(v).dtype.kind not in "US"} for p in parts]
        ) - {"speaker"}
        for key in sorted(numeric):
            extra[key] = np.concatenate([np.asarray(p.extra[key]) for p in parts])
        attrs = {k: v for k, v in first.attrs.items() if k in ("frontend", "dt", "num_steps", "duration_s")}
        if "speaker" in extra:
            names = sorted(set(extra["speaker"].tolist()))
            index = {n: i for i, n in enumerate(names)}
            attrs["speakers"] = names
            extra["speaker_name"] = extra.pop("speaker")
            extra["speaker"] = np.array([index[n] for n in extra["speaker_name"]], dtype=np.int64)
        return cls(
            times=[t for p in parts for t in p.times],
            units=[u for p in parts for u in p.units],
            labels=np.concatenate([p.labels for p in parts]),
            num_channels=first.num_channels,
            class_names=list(first.class_names),
            extra=extra,
            attrs=attrs,
        )

    def bin(
        self,
        dt: float,
        num_steps: int,
        index: Sequence[int] | np.ndarray | None = None,
        binary: bool = True,
    ) -> np.ndarray:
        """Dense ``(batch, num_steps, num_channels)`` uint8 raster with time step ``dt`` seconds.

        Event at time t lands in step ``floor(t / dt)``; events at or after ``num_steps * dt`` are
        dropped (SHD's CropTime). With ``binary`` (the paper's ``histogram_thresh=1``) a bin holding
        one or more events is a single spike; otherwise it holds the count (saturating at 255).
        """
        if dt <= 0 or num_steps <= 0:
            raise DatasetError(f"dt and num_steps must be positive, got dt={dt}, num_steps={num_steps}")
        idx = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        out = np.zeros((len(idx), num_steps, self.num_channels), dtype=np.uint8)
        for row, i in enumerate(idx):
            steps, units = self.event_steps(int(i), dt, num_steps)
            if binary:
                out[row, steps, units] = 1
            else:
                counts = np.zeros((num_steps, self.num_channels), dtype=np.int64)
                np.add.at(counts, (steps, units), 1)
                out[row] = np.minimum(counts, 255)
        return out

    def event_steps(self, i: int, dt: float, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The (step, unit) pairs of sample ``i`` binned at ``dt`` and cropped to ``num_steps``.

        The sparse form of :meth:`bin`, for trainers that scatter events themselves.
        """
        # The epsilon (a thousandth of a step) keeps times written as k*dt in float32 in bin k.
        steps = np.floor(np.asarray(self.times[i], dtype=np.float64) / dt + 1e-3).astype(np.int64)
        keep = (steps >= 0) & (steps < num_steps)
        return steps[keep], np.asarray(self.units[i], dtype=np.int64)[keep]

    def with_delay_taps(self, delay_taps_ms: Sequence[float]) -> SpikeDataset:
        """The spikes a front-end with ``delay_taps_ms`` would have made of the same audio.

        Delay taps are a pure function of the plain front-end's spikes (docs/frontend.md), so a data set
        encoded without them gains them here, bit for bit as re-encoding would give (a tested identity):
        unit ``u``'s spike at step ``s`` appears on channel ``u * K + k`` at step ``s + tap_steps[k]``,
        cropped at the data set's ``num_steps``. The result records the tapped front-end spec.
        """
        from edgekws.agent import FrontendSpec, FrontendSpecError

        frontend = self.attrs.get("frontend")
        if isinstance(frontend, str):
            frontend = json.loads(frontend)
        if not isinstance(frontend, dict):
            raise DatasetError(
                "delay taps need the edgekws front-end's channels, and this data set records no front-end "
                "spec (SHD/SSC data?): encode the audio with `edgekws data synth` or `data import`"
            )
        spec = FrontendSpec.from_dict(frontend)
        if spec.delay_taps_ms != (0.0,):
            raise DatasetError(
                f"this data set already has delay taps {list(spec.delay_taps_ms)} ({self.num_channels} "
                f"channels): add taps to the plain front-end's spikes ({spec.num_units} channels)"
            )
        if self.num_channels != spec.num_units:
            raise DatasetError(
                f"this data set has {self.num_channels} channels but its front-end spec makes "
                f"{spec.num_units}: it was not encoded by that front-end, so its taps cannot be added"
            )
        try:
            tapped = replace(spec, delay_taps_ms=tuple(delay_taps_ms))
        except FrontendSpecError as e:
            raise DatasetError(str(e)) from None
        dt = spec.dt_ms / 1000.0
        if "num_steps" in self.attrs:
            num_steps = int(self.attrs["num_steps"])
        elif "duration_s" in self.attrs:
            num_steps = round(float(self.attrs["duration_s"]) / dt)
        else:  # the clip length decides which delayed spikes stay: never guess it from the last spike
            raise DatasetError(
                "delay taps need the clips' length, and this data set records neither num_steps nor "
                "duration_s: re-encode it with `edgekws data synth` or `data import`"
            )
        delays = np.asarray(tapped.tap_steps, dtype=np.int64)[:, None]
        lanes = np.arange(len(delays), dtype=np.int64)[:, None]
        times, units = [], []
        for i in range(len(self)):
            steps, unit = self.event_steps(i, dt, num_steps)
            s = (steps[None, :] + delays).ravel()
            u = (unit[None, :] * len(delays) + lanes).ravel()
            keep = s < num_steps
            s, u = s[keep], u[keep]
            order = np.lexsort((u, s))
            times.append((s[order] * dt).astype(np.float32))
            units.append(u[order].astype(np.uint16))
        attrs = {**self.attrs, "frontend": tapped.to_dict(), "num_channels": tapped.num_channels}
        return SpikeDataset(
            times=times,
            units=units,
            labels=self.labels.copy(),
            num_channels=tapped.num_channels,
            class_names=list(self.class_names),
            extra=dict(self.extra),
            attrs=attrs,
        )

    @classmethod
    def from_raster(
        cls,
        rasters: Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        dt: float,
        class_names: list[str],
        extra: dict[str, np.ndarray] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> SpikeDataset:
        """Build a data set from per-sample ``(steps, channels)`` spike rasters at time step ``dt``.

        A spike in step k is placed at time ``k * dt``, so ``bin(dt, ...)`` returns the raster again.
        """
        if not rasters:
            raise DatasetError("from_raster needs at least one raster")
        num_channels = int(rasters[0].shape[1])
        times, units = [], []
        for r in rasters:
            if r.ndim != 2 or r.shape[1] != num_channels:
                raise DatasetError(f"every raster must be (steps, {num_channels}), got {tuple(r.shape)}")
            t, u = events_of(r, dt)
            times.append(t)
            units.append(u)
        return cls(
            times=times,
            units=units,
            labels=np.asarray(labels, dtype=np.int64),
            num_channels=num_channels,
            class_names=list(class_names),
            extra=dict(extra or {}),
            attrs=dict(attrs or {}),
        )

"""Stream-training data: long labelled stretches encoded by the front-end (`edgekws data stretches`).

A network that listens all day is trained on what it will hear (docs/training.md, "Stream training"):
stretches of tens of seconds composed by :func:`edgekws.toolkit.data._stream.compose` from keyword and
distractor pools (a synthetic corpus' clips, labelled recordings of real people, or both), with silence,
noise of several kinds at 5-30 dB SNR and words at different levels, each encoded whole by one front-end
(its adaptation runs across the words as on a device). The data set is an SHD-layout file like any other:
one sample per stretch, classes = the keywords + ``_background_``, and in its attributes the keyword spans
of every stretch (``attrs["stream"]["spans"]``: ``[class index, start s, end s]``), from which the trainer
makes time-resolved targets (:func:`edgekws.toolkit.train._targets.frame_targets`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.packaging import BACKGROUND_LABEL
from edgekws.toolkit.data._output import folder_in_place
from edgekws.toolkit.data._shd import write_shd
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset, events_of
from edgekws.toolkit.data._stream import RATE, Pools, StreamError, compose

FORMAT = "edgekws-stretches"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class StretchPlan:
    """What each stretch holds: its length, the chances of each event and noise kind, SNRs, word levels."""

    seconds: float = 30.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    event_p: Mapping[str, float] = field(
        default_factory=lambda: {"keyword": 0.45, "distractor": 0.35, "silence": 0.2}
    )
    noise_p: Mapping[str, float] = field(
        default_factory=lambda: {"white": 0.2, "pink": 0.2, "brown": 0.1, "babble": 0.3, "none": 0.2}
    )
    word_gain_db: tuple[float, float] = (-12.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v

        return {k: plain(v) for k, v in asdict(self).items()}


def is_stream_set(data: SpikeDataset) -> bool:
    """Whether ``data`` holds training stretches (with keyword spans), not clips."""
    return isinstance(data.attrs.get("stream"), dict) and "spans" in data.attrs["stream"]


def stream_spans(data: SpikeDataset) -> list[list[tuple[int, float, float]]]:
    """Per stretch, its keywords as ``(class index, start s, end s)``; a DatasetError if ``data`` has none."""
    if not is_stream_set(data):
        raise DatasetError(
            "this data set holds clips, not stretches with keyword spans; make them with "
            "`edgekws data stretches`"
        )
    spans = data.attrs["stream"]["spans"]
    if len(spans) != len(data):
        raise DatasetError(f"the data set lists keyword spans for {len(spans)} of its {len(data)} stretches")
    return [[(int(c), float(a), float(b)) for c, a, b in sample] for sample in spans]


def background_index(data: SpikeDataset) -> int:
    """The class index of ``_background_`` in a stretch set."""
    if BACKGROUND_LABEL not in data.class_names:
        raise DatasetError(f"a stretch set needs the class {BACKGROUND_LABEL!r}; it has {data.class_names}")
    return data.class_names.index(BACKGROUND_LABEL)


def _job(job: tuple[Pools, list[str], dict[str, Any], StretchPlan, int, str, int]) -> dict[str, Any]:
    """Compose and encode one stretch (runs in a worker process)."""
    from edgekws.agent import FrontendSpec, encode

    pools, keywords, spec_dict, plan, seed, split, index = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))
    stream = compose(
        pools,
        plan.seconds,
        rng,
        split=split,
        snr_db=plan.snr_db,
        event_p=dict(plan.event_p),
        noise_p=dict(plan.noise_p),
        word_gain_db=plan.word_gain_db,
    )
    spec = FrontendSpec.from_dict(spec_dict)
    raster = np.asarray(encode(stream.audio, RATE, spec))
    times, units = events_of(raster, spec.dt_ms / 1000.0)
    spans = [[keywords.index(k.label), round(k.start_s, 4), round(k.end_s, 4)] for k in stream.truth()]
    return {
        "times": times,
        "units": units,
        "spans": spans,
        "speakers": sorted({s.speaker for s in stream.segments if s.speaker}),
        "composition": stream.composition(),
    }


def encode_stretches(
    pools: Pools,
    keywords: Sequence[str],
    frontend: dict[str, Any],
    count: int,
    plan: StretchPlan,
    seed: int,
    split: str,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> SpikeDataset:
    """``count`` stretches of ``split`` made from ``pools`` and encoded with the front-end spec ``frontend``
    (a ``FrontendSpec.to_dict()``), deterministic for ``(seed, split, index)`` whatever ``workers``."""
    if split not in SPLITS:
        raise StreamError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    names = [*keywords, BACKGROUND_LABEL]
    missing = sorted({c.label for c in pools.keywords} - set(keywords))
    if missing:
        raise StreamError(f"the keyword pool holds {missing}, not among the keywords {list(keywords)}")
    jobs = [(pools, list(keywords), frontend, plan, seed, split, i) for i in range(count)]
    results: list[dict[str, Any]] = []
    if workers > 1 and count > 1:
        import multiprocessing

        # spawn, not fork: the caller may have started JAX's threads (a forked child can deadlock on them)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for r in pool.map(_job, jobs):
                results.append(r)
                if progress:
                    progress(len(results), count)
    else:
        for job in jobs:
            results.append(_job(job))
            if progress:
                progress(len(results), count)
    from edgekws.agent import FrontendSpec

    dt = FrontendSpec.from_dict(frontend).dt_ms / 1000.0
    steps = round(plan.seconds / dt)
    return SpikeDataset(
        times=[r["times"] for r in results],
        units=[r["units"] for r in results],
        labels=np.full(count, len(names) - 1, np.int64),  # a stretch has no one label: background
        num_channels=FrontendSpec.from_dict(frontend).num_channels,
        class_names=names,
        extra={"speaker_name": np.array([",".join(r["speakers"]) for r in results], dtype=str)},
        attrs={
            "format": FORMAT,
            "split": split,
            "seed": seed,
            "dt": dt,
            "num_steps": steps,
            "duration_s": plan.seconds,
            "frontend": frontend,
            "stream": {
                "format_version": FORMAT_VERSION,
                "spans": [r["spans"] for r in results],
                "plan": plan.to_dict(),
                "compositions": [r["composition"] for r in results],
            },
        },
    )


def make_stretches(
    out: Path,
    pools: Mapping[str, Pools],
    keywords: Sequence[str],
    frontend: dict[str, Any],
    counts: Mapping[str, int],
    plan: StretchPlan,
    seed: int,
    *,
    sources: Mapping[str, Any] | None = None,
    workers: int = 2,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``OUT/{split}.h5`` for every split in ``counts`` and ``OUT/manifest.json`` (what went in:
    the sources, speakers of each split, the plan, the seed); the folder appears whole or not at all."""
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise StreamError(f"splits are {', '.join(SPLITS)}, got {unknown}")
    with folder_in_place(Path(out), force, StreamError) as tmp:
        summary: dict[str, Any] = {}
        for split, count in counts.items():
            if count <= 0:
                continue
            if split not in pools:
                raise StreamError(f"no {split} pools to make {count} {split} stretches from")

            def tick(done: int, total: int, split: str = split) -> None:
                if progress:
                    progress(split, done, total)

            data = encode_stretches(pools[split], keywords, frontend, count, plan, seed, split, workers, tick)
            write_shd(data, tmp / f"{split}.h5")
            comps = data.attrs["stream"]["compositions"]
            summary[split] = {
                "stretches": count,
                "seconds": round(count * plan.seconds, 1),
                "keywords": int(sum(c["keywords"] for c in comps)),
                "distractors": int(sum(c["distractors"] for c in comps)),
                "keyword_clips": len(pools[split].keywords),
                "distractor_clips": len(pools[split].distractors),
                "speakers": sorted({s for c in comps for s in c["speakers"]}),
            }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "keywords": list(keywords),
            "classes": [*keywords, BACKGROUND_LABEL],
            "plan": plan.to_dict(),
            "frontend": frontend,
            "sources": dict(sources or {}),
            "splits": summary,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest

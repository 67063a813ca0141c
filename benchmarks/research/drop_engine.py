"""A copy of an ``edgekws data synth`` corpus whose train split leaves out one engine's clips (all, or a share
of each class), optionally with other corpora's clips in their place, for ablations where only those training
clips differ (issue #12 round 10: the corpus with and without Piper's joe; round 13: half of Kokoro's
training clips swapped for blends of the same training persons).

```
.venv/bin/python benchmarks/research/drop_engine.py runs/r10/synth/piper piper runs/r10/synth/nopiper
.venv/bin/python benchmarks/research/drop_engine.py runs/r12/ep/synth/all kokoro runs/r13/swap/synth/all \
    --fraction 0.5 --add runs/r13/blends
```

``--fraction F`` leaves out that share of the engine's training clips of every class (drawn by ``--seed``);
``--add CORPUS`` appends every clip of that corpus (all its splits: they are training clips here, so its
voices must be the source's training persons; the caller chooses them so). ``val.h5``, ``test.h5`` and
``manifest.json`` are linked to the source's (the manifest still lists the engine's utterances: the spike sets
are what differs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def drop_engine(
    src: Path, engine: str, out: Path, fraction: float = 1.0, add: tuple[Path, ...] = (), seed: int = 0
) -> int:
    from edgekws.toolkit.data import SpikeDataset, read_shd, write_shd

    if not 0.0 < fraction <= 1.0:
        sys.exit(f"--fraction must be in (0, 1], got {fraction}")
    out.mkdir(parents=True, exist_ok=True)
    train = read_shd(src / "train.h5")
    source = train.metadata("source")
    if source is None:
        sys.exit(f"{src / 'train.h5'} names no engine per clip (no 'source' column); is it a synth corpus?")
    rng = np.random.default_rng(seed)
    drop = []
    for label in np.unique(train.labels):
        of_engine = np.flatnonzero((source == engine) & (train.labels == label))
        drop += rng.permutation(of_engine)[: round(fraction * len(of_engine))].tolist()
    if not drop:
        sys.exit(f"{src / 'train.h5'} has no clip of engine {engine!r}")
    keep = np.setdiff1d(np.arange(len(train)), drop)
    extra = [read_shd(corpus / f"{split}.h5") for corpus in add for split in ("train", "val", "test")]
    merged = SpikeDataset.concat([train.subset(keep), *extra]) if extra else train.subset(keep)
    write_shd(merged, out / "train.h5")
    for name in ("val.h5", "test.h5", "manifest.json"):
        if not ((out / name).is_symlink() or (out / name).exists()):
            os.symlink((src / name).resolve(), out / name)
    added = len(merged) - len(keep)
    print(f"{len(train)} train clips, {len(drop)} of {engine} left out, {added} added: {len(merged)}, {out}")
    return len(drop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path, help="the corpus folder (train.h5, val.h5, test.h5, manifest.json)")
    parser.add_argument("engine", help="the engine whose training clips are left out")
    parser.add_argument("out", type=Path, help="the new corpus folder")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each class's to leave out")
    parser.add_argument("--add", type=Path, action="append", default=[], help="a corpus whose clips to add")
    parser.add_argument("--seed", type=int, default=0, help="which clips --fraction leaves out")
    args = parser.parse_args()
    drop_engine(args.src, args.engine, args.out, args.fraction, tuple(args.add), args.seed)

"""A copy of an ``edgekws data synth`` corpus whose train split leaves out one engine's clips, for ablations
where only that engine's training clips differ (issue #12 round 10: the corpus with and without Piper's joe).

```
.venv/bin/python benchmarks/research/drop_engine.py runs/r10/synth/piper piper runs/r10/synth/nopiper
```

``val.h5``, ``test.h5`` and ``manifest.json`` are linked to the source's (the manifest still lists the
engine's utterances: the spike sets are what differs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


def drop_engine(src: Path, engine: str, out: Path) -> int:
    from edgekws.toolkit.data import read_shd, write_shd

    out.mkdir(parents=True, exist_ok=True)
    train = read_shd(src / "train.h5")
    source = train.metadata("source")
    if source is None:
        sys.exit(f"{src / 'train.h5'} names no engine per clip (no 'source' column); is it a synth corpus?")
    keep = np.flatnonzero(source != engine)
    if len(keep) == len(train):
        sys.exit(f"{src / 'train.h5'} has no clip of engine {engine!r}")
    write_shd(train.subset(keep), out / "train.h5")
    for name in ("val.h5", "test.h5", "manifest.json"):
        if not ((out / name).is_symlink() or (out / name).exists()):
            os.symlink((src / name).resolve(), out / name)
    print(f"{len(train)} train clips, {len(train) - len(keep)} of {engine} left out: {out}")
    return len(train) - len(keep)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    drop_engine(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))

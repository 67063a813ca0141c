"""Re-encode a synthetic corpus's WAVs with another front-end spec (issue #12/#13 front-end probes).

``edgekws data synth`` keeps every clip's WAV beside its spike sets; this script encodes those WAVs again
with the corpus's front-end spec changed by the JSON overrides given, and writes a corpus folder that reads
like the original (``manifest.json`` with the new ``frontend``, ``{train,val,test}.h5`` with the same
samples, labels and metadata in the same order, ``wavs`` linked to the original's). Nothing is rendered
again, so the two corpora differ only in the front-end.

```
.venv/bin/python benchmarks/research/reencode.py runs/r4d/synth/all runs/nf/synth/all \
    '{"noise_floor_rise_db_per_s": 10.0}'
```
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from edgekws.agent import FrontendSpec, encode
from edgekws.toolkit.data import SpikeDataset, read_shd, write_shd
from edgekws.toolkit.data._output import manifest_text
from edgekws.toolkit.data._spikes import events_of
from edgekws.toolkit.data._synth import SAMPLE_RATE, num_steps


def reencode(src: Path, out: Path, overrides: dict[str, object]) -> None:
    manifest = json.loads((src / "manifest.json").read_text())
    spec = replace(FrontendSpec.from_dict(manifest["frontend"]), **overrides)  # type: ignore[arg-type]
    wav_of = {u["index"]: src / u["wav"] for u in manifest["utterances"]}
    out.mkdir(parents=True, exist_ok=False)
    start = time.time()
    for split in ("train", "val", "test"):
        data = read_shd(src / f"{split}.h5")
        times, units = [], []
        for i, index in enumerate(data.extra["utterance"]):
            pcm, rate = sf.read(wav_of[int(index)], dtype="float32")
            assert rate == SAMPLE_RATE, (wav_of[int(index)], rate)
            raster = np.asarray(encode(pcm, rate, spec, resample=False))
            t, u = events_of(raster[: num_steps(spec)], spec.dt_ms / 1000.0)
            times.append(t)
            units.append(u)
            if i % 1000 == 999:
                print(f"{split}: {i + 1}/{len(data)} ({time.time() - start:.0f} s)", flush=True)
        attrs = {**data.attrs, "frontend": spec.to_dict()}
        write_shd(
            SpikeDataset(
                times, units, data.labels, spec.num_channels, list(data.class_names), dict(data.extra), attrs
            ),
            out / f"{split}.h5",
        )
    manifest["frontend"] = spec.to_dict()
    manifest["reencoded_from"] = str(src)
    (out / "manifest.json").write_text(manifest_text(manifest, "utterances"))
    (out / "wavs").symlink_to((src / "wavs").resolve())
    print(f"{out}: {sum(manifest['splits'].values())} clips in {time.time() - start:.0f} s")


if __name__ == "__main__":
    reencode(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))

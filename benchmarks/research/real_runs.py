"""Issue #12 round-2 runs: one SNN on a synthetic corpus (+ FSDD speakers), scored on real people.

An experiment tool beside ``benchmarks/real_voices.py`` (which runs the issue's fixed protocols for a recipe):
it trains one Eventprop network with the project's own trainer on an ``edgekws data synth`` corpus, optionally
with FSDD speakers added to training (``fsdd_train``) or used for validation (``fsdd_val``), and scores it on
the FSDD speakers it did not see, on the corpus's unseen test voices and on the Speech Commands v0.01 sample
(all clips, and its digit words). The SC v0.02 test set is never touched.

```
P=.venv/bin/python; R=benchmarks/research/real_runs.py
taskset -c 1 $P $R synth RECIPE.toml runs/rv/work/synth/NAME        # the recipe's corpus (real_voices.py's)
taskset -c 1 $P $R train NAME CORPUS '{"train": {"epochs": 60}}'   # TrainConfig keys; fsdd_train, fsdd_val,
                                                                    # real_train (a data import folder)
```

Runs go to ``runs/rv/work/runs/NAME``, one JSON line per run to ``runs/rv/results.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK = Path("runs/rv/work")
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-speech" / "labels.csv"


def synth(recipe_path: Path, out: Path, workers: int = 2) -> None:
    from real_voices import _spec, load_recipe

    from edgekws.toolkit.data import synthesize

    recipe = load_recipe(recipe_path, False)
    start = time.time()
    manifest = synthesize(
        out, recipe["task"], spec=_spec(recipe), workers=workers, force=True, **recipe["synth"]
    )
    print(f"{len(manifest['utterances'])} utterances in {time.time() - start:.0f} s")


def _real(name: str, source: str, classes: list[str]) -> Path:
    from edgekws.toolkit.data import import_recordings

    out = WORK / "real" / name
    if not (out / "manifest.json").is_file():
        labels = REAL if REAL.is_file() else Path("/work/shared/data/real-speech/labels.csv")
        import_recordings(
            [labels],
            out,
            classes,
            task="en-digits",
            only={"source": {source}},
            rest="test",
            workers=1,
            force=True,
        )
    return out


def train(name: str, corpus: Path, conf: dict[str, Any]) -> dict[str, Any]:
    from edgekws.toolkit.data import SpikeDataset, read_shd
    from edgekws.toolkit.data._synth import class_names
    from edgekws.toolkit.train import TrainConfig, evaluate, load_run
    from edgekws.toolkit.train import train as run_training

    classes = class_names("en-digits")
    fsdd = read_shd(_real("fsdd-all", "fsdd", classes) / "test.h5")
    sc = read_shd(_real("sc-sample", "speech-commands-v0.01", classes) / "test.h5")
    speaker = fsdd.metadata("speaker")
    assert speaker is not None
    fsdd_train = [f"fsdd-{s}" for s in conf.get("fsdd_train", [])]
    fsdd_val = [f"fsdd-{s}" for s in conf.get("fsdd_val", [])]
    train_data, val_data = read_shd(corpus / "train.h5"), read_shd(corpus / "val.h5")
    if fsdd_train:
        train_data = SpikeDataset.concat(
            [train_data, fsdd.subset(np.flatnonzero(np.isin(speaker, fsdd_train)))]
        )
    if conf.get("real_train"):  # an `edgekws data import` folder (e.g. with --copies): its train split
        extra = read_shd(Path(conf["real_train"]) / "train.h5")
        fsdd_train += sorted(set(extra.metadata("speaker").tolist()))
        train_data = SpikeDataset.concat([train_data, extra])
    if fsdd_val:
        val_data = fsdd.subset(np.flatnonzero(np.isin(speaker, fsdd_val)))
    tested = ~np.isin(speaker, fsdd_train + fsdd_val)
    out = WORK / "runs" / name
    start = time.time()
    config = TrainConfig.from_dict({"epochs": 15, "silent_boost": 0.02, **conf.get("train", {})})
    result = run_training(
        train_data, out, config, val_data=val_data, progress=False, kernel="sparse", device="cpu"
    )
    run = load_run(out)
    on_fsdd = evaluate(run, fsdd.subset(np.flatnonzero(tested)))
    names = np.asarray(sc.class_names)[sc.labels]
    digits = np.flatnonzero(~np.isin(names, ["_unknown_", "_silence_"]))
    line = {
        "name": name,
        "corpus": str(corpus),
        "conf": conf,
        "train_samples": len(train_data),
        "best_epoch": result.best_epoch,
        "train_s": round(time.time() - start),
        "fsdd_tested": sorted(set(speaker[tested])),
        "fsdd": round(on_fsdd["accuracy"], 4),
        "fsdd_per_speaker": {k: round(v["accuracy"], 3) for k, v in on_fsdd["per_speaker_accuracy"].items()},
        "fsdd_per_class": {k: v for k, v in on_fsdd["per_class_accuracy"].items() if v is not None},
        "synth_test": round(evaluate(run, read_shd(corpus / "test.h5"))["accuracy"], 4),
        "sc_sample_all": round(evaluate(run, sc)["accuracy"], 4),
        "sc_digits": round(evaluate(run, sc.subset(digits))["accuracy"], 4),
        "sc_digits_n": len(digits),
    }
    print(json.dumps(line), flush=True)
    with open("runs/rv/results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "synth":
        synth(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    elif len(sys.argv) >= 4 and sys.argv[1] == "train":
        train(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
    else:
        sys.exit(__doc__)

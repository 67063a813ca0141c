"""The two models `kws_stream.py` compares on real speech, trained on voices the benchmark never tests on.

Both hear the same data: a synthetic `en-digits` corpus (espeak-ng, flite, festival, the default
augmentations) and the real development recordings of the **train** speakers of
:func:`kws_stream.speaker_splits` (FSDD's george, jackson, nicolas and yweweler and 40 % of the Speech
Commands sample's speakers); the **val** speakers (FSDD's lucas, 20 % of the sample) select the epoch; the
**test** speakers (FSDD's theo, 40 % of the sample) are never read here.

- **K-lane** (``lanes-1.0.0.ekb``): 128 -> 256 recurrent -> 12 (zero..nine, _unknown_, _silence_) on 1 s
  clips of the corpus and the train speakers' recordings, words delayed by up to 300 ms (the demo's recipe);
- **always-on** (``always-on-1.0.0.ekb``): that network trained further on stretches (``--seconds`` long) of
  the same clips with silence and noise, never reset, time-resolved targets (docs/training.md, "Stream
  training"); its decision settings tuned on validation stretches of the val speakers by the bundle builder.

Run (about 30 minutes on one busy core):
    .venv/bin/python benchmarks/kws_stream_models.py --out /tmp/kws-stream-models
(``--corpus DIR`` trains on an existing en-digits corpus instead, e.g. round 4's;
``--delay-taps-ms 0,25,50,100`` gives both models the front-end's delay taps, docs/frontend.md;
``--real-copies N --real-augment POLICY.toml`` adds N augmented copies of the train speakers' recordings,
babble from their other words where the policy asks for it, docs/datasets.md)
then
    M=/tmp/kws-stream-models; .venv/bin/python benchmarks/kws_stream.py --lanes-bundle $M/lanes-1.0.0.ekb \\
        --always-on-bundle $M/always-on-1.0.0.ekb --trust $M/keys/bench.pub
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from kws_stream import DIGITS, REAL_SPEECH, speaker_splits

from edgekws.agent import FrontendSpec
from edgekws.packaging import write_keypair
from edgekws.toolkit._bundle_build import build_run_bundle
from edgekws.toolkit._progress import progress_bar
from edgekws.toolkit.data import (
    Pools,
    SpikeDataset,
    StretchPlan,
    corpus_pools,
    make_stretches,
    read_shd,
    recording_pools,
    synthesize,
    write_shd,
)
from edgekws.toolkit.data._cli import _augment_option  # a preset, or a .toml/.json policy file
from edgekws.toolkit.data._recordings import import_recordings, scan
from edgekws.toolkit.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--recordings", type=Path, default=REAL_SPEECH)
    ap.add_argument("--per-class", type=int, default=60, help="synthetic utterances per class")
    ap.add_argument(
        "--corpus", type=Path, default=None, help="an existing en-digits corpus instead of synthesizing one"
    )
    ap.add_argument(
        "--delay-taps-ms", default="", help="front-end delay taps for both models, e.g. 0,25,50,100"
    )
    ap.add_argument("--epochs", type=int, default=15, help="clip-model epochs")
    ap.add_argument("--stream-epochs", type=int, default=6, help="always-on epochs (from the clip model)")
    ap.add_argument("--stream-lr", type=float, default=2e-4, help="always-on learning rate")
    ap.add_argument("--stretches", type=int, default=96, help="training stretches")
    ap.add_argument("--val-stretches", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of a stretch")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reuse-clip-model", action="store_true", help="keep OUT/train_lanes if it finished (same args)"
    )
    ap.add_argument(
        "--real-copies", type=int, default=0, help="augmented copies of the train speakers' recordings"
    )
    ap.add_argument(
        "--real-augment", default="recordings", help="their policy: a preset, or a .toml/.json of settings"
    )
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    recordings = scan(args.recordings)
    splits = speaker_splits(recordings, args.seed)
    log["speakers"] = {"train": splits["train"], "val": splits["val"], "test (never read)": splits["test"]}
    t0 = time.perf_counter()

    corpus = args.corpus or out / "corpus"
    if args.corpus is None and not (corpus / "manifest.json").is_file():
        with progress_bar("synth en-digits") as update:
            synthesize(corpus, "en-digits", args.per_class, args.seed, force=True, progress=update)
    manifest = json.loads((corpus / "manifest.json").read_text())
    if manifest["task"] != "en-digits":
        raise SystemExit(f"--corpus {corpus} is a {manifest['task']!r} corpus; the streams need en-digits")
    taps = tuple(float(t) for t in args.delay_taps_ms.split(",") if t.strip())
    frontend = dict(manifest["frontend"])
    if taps:  # the clip sets gain the taps (bit for bit the tapped front-end's spikes); stretches encode them
        frontend = replace(FrontendSpec.from_dict(frontend), delay_taps_ms=taps).to_dict()

    def tapped(data: SpikeDataset) -> SpikeDataset:
        return data.with_delay_taps(taps) if taps else data

    classes = [c["name"] for c in manifest["classes"]]
    real = out / "real"
    policy = _augment_option(args.real_augment) if args.real_copies else None
    if not (real / "manifest.json").is_file():
        with progress_bar("import train/val speakers") as update:
            import_recordings(
                [args.recordings], real, classes, task="en-digits", train_speakers=splits["train"],
                val_speakers=splits["val"], test_speakers=splits["test"], rest="test", seed=args.seed,
                force=True, progress=update, spec=FrontendSpec.from_dict(manifest["frontend"]),
                copies=args.real_copies, augment=policy,
            )  # fmt: skip
    clips = out / "clips"
    clips.mkdir(exist_ok=True)
    write_shd(
        SpikeDataset.concat([tapped(read_shd(corpus / "train.h5")), tapped(read_shd(real / "train.h5"))]),
        clips / "train.h5",
    )
    write_shd(tapped(read_shd(real / "val.h5")), clips / "val.h5")
    log["clips"] = {s: len(read_shd(clips / f"{s}.h5")) for s in ("train", "val")}
    log["seconds_data"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    lanes_run = out / "train_lanes"
    if args.reuse_clip_model and (lanes_run / "best.npz").is_file():  # the caller vouches it finished
        log["lanes"] = {"reused": str(lanes_run)}
    else:
        shutil.rmtree(lanes_run, ignore_errors=True)
        clip_config = TrainConfig(
            hidden=(args.hidden,), epochs=args.epochs, seed=args.seed, silent_boost=0.02, time_shift_ms=300.0
        )
        result = train(
            read_shd(clips / "train.h5"), lanes_run, clip_config, val_data=read_shd(clips / "val.h5"),
            data_paths={"train": clips / "train.h5", "val": clips / "val.h5"},
        )  # fmt: skip
        log["lanes"] = {"best_epoch": result.best_epoch, "seconds": round(time.perf_counter() - t0, 1)}

    t0 = time.perf_counter()
    stretches = out / "stretches"
    train_recs = [r for r in recordings if r.speaker in set(splits["train"])]
    val_recs = [r for r in recordings if r.speaker in set(splits["val"])]
    pools = {
        "train": _joined(
            corpus_pools(corpus, "train", "unknown"),
            recording_pools(train_recs, list(DIGITS), splits["train"]),
        ),
        "val": recording_pools(val_recs, list(DIGITS), splits["val"]),
    }
    with progress_bar("stretches") as update:
        make_stretches(
            stretches, pools, list(DIGITS), frontend,
            {"train": args.stretches, "val": args.val_stretches}, StretchPlan(seconds=args.seconds),
            args.seed,
            sources={"corpus": str(corpus), "recordings": str(args.recordings), "speakers": splits["train"]},
            force=True, progress=lambda split, done, total: update(done, total),
        )  # fmt: skip
    on_run = out / "train_always_on"
    shutil.rmtree(on_run, ignore_errors=True)
    stream_config = TrainConfig(
        hidden=(args.hidden,), epochs=args.stream_epochs, batch_size=8, seed=args.seed,
        learning_rate=args.stream_lr, ease_in=False, silent_boost=0.02, init_from=str(lanes_run),
    )  # fmt: skip
    result = train(
        read_shd(stretches / "train.h5"), on_run, stream_config, val_data=read_shd(stretches / "val.h5"),
        data_paths={"train": stretches / "train.h5", "val": stretches / "val.h5"},
    )  # fmt: skip
    log["always_on"] = {"best_epoch": result.best_epoch, "seconds": round(time.perf_counter() - t0, 1)}

    if not (out / "keys" / "bench.key").is_file():
        write_keypair(out / "keys", "bench")
    for run_dir, name in ((lanes_run, "lanes"), (on_run, "always-on")):
        built = build_run_bundle(
            run_dir, name, "1.0.0", out / "keys" / "bench.key", out / f"{name}-1.0.0.ekb", force=True
        )
        log[f"bundle_{name}"] = {"path": str(built.path), "metrics": built.manifest["metrics"]}
    (out / "models.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log, indent=2))


def _joined(a: Pools, b: Pools) -> Pools:
    return Pools([*a.keywords, *b.keywords], [*a.distractors, *b.distractors])


if __name__ == "__main__":
    main()

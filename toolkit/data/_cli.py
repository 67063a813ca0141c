"""`edgekws data …`: synthesize, inspect and plot keyword data sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from edgekws.toolkit._progress import progress_bar
from edgekws.toolkit.data import _synth
from edgekws.toolkit.data._spikes import DatasetError


@click.group()
def data() -> None:
    """Make and inspect keyword data sets.

    Example:

        edgekws data synth --task digits --out data/digits
    """


@data.command()
@click.option("--task", type=click.Choice(["digits", "commands"]), default="digits", show_default=True,
              help="digits: 20 classes, English zero..nine and German null..neun (like SHD); "
                   "commands: the 35 Speech Commands words (like SSC).")  # fmt: skip
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to create.")
@click.option("--per-class", type=click.IntRange(min=1), default=None,
              help="Utterances per class [default: 300 for digits, 100 for commands].")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same corpus, byte for byte.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes running espeak-ng and the front-end.")  # fmt: skip
@click.option("--classes", default=None, help="Comma-separated subset of class names (default: all).")
@click.option("--fillers", is_flag=True,
              help="Add the classes _unknown_ (other words) and _silence_ (noise alone), --per-class each: "
                   "what a streaming spotter needs to learn what is not a keyword.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
def synth(
    task: str,
    out: Path,
    per_class: int | None,
    seed: int,
    workers: int,
    classes: str | None,
    fillers: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Synthesize a spoken-keyword corpus with espeak-ng and encode it to spikes.

    Speakers are espeak-ng voice+variant pairs, split 70/10/20 into train/val/test so that no test
    speaker is heard in training; rate, pitch, amplitude, onset and noise (SNR) vary per utterance.
    Every clip is 1.0 s at 16 kHz (1000 steps at 1 ms). Writes OUT/wavs/ (a Speech Commands-style
    folder), OUT/manifest.json and OUT/{train,val,test}.h5 in the SHD layout.

    Example:

        edgekws data synth --task digits --out data/digits --seed 1

        edgekws data synth --task digits --out data/digits-kws --fillers
    """
    subset = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    start = time.perf_counter()
    with progress_bar(f"synth {task}", disable=as_json) as progress:
        try:
            manifest = _synth.synthesize(
                out,
                task,
                per_class,
                seed,
                workers=workers,
                force=force,
                classes=subset,
                progress=progress,
                fillers=fillers,
            )
        except (_synth.SynthError, DatasetError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    seconds = time.perf_counter() - start
    summary = {
        "out": str(out),
        "task": task,
        "seed": seed,
        "utterances": len(manifest["utterances"]),
        "splits": manifest["splits"],
        "speakers": {s: sum(sp["split"] == s for sp in manifest["speakers"]) for s in _synth.SPLITS},
        "seconds": round(seconds, 1),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"wrote {summary['utterances']} utterances to {out} in {seconds:.1f} s: "
        + ", ".join(f"{s} {n}" for s, n in manifest["splits"].items())
    )


@data.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--sample", type=click.IntRange(min=0), default=32, show_default=True,
              help="Speech Commands folders: WAVs per split encoded for the spike statistics.")  # fmt: skip
def info(path: Path, as_json: bool, sample: int) -> None:
    """Summarise a data set: classes, counts per class and split, durations, spike statistics.

    PATH is an SHD/SSC-layout .h5 file, a folder made by `edgekws data synth`, or a Speech
    Commands-style folder.

    Example:

        edgekws data info data/digits

        edgekws data info data/digits/test.h5 --json
    """
    from edgekws.toolkit.data._info import format_info
    from edgekws.toolkit.data._info import info as summarise

    try:
        summary = summarise(path, sample=sample)
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@data.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Sample to plot.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")
@click.option(
    "--split", default="train", show_default=True, help="Split of a corpus or Speech Commands folder."
)
def plot(path: Path, index: int, out: Path, split: str) -> None:
    """Plot one sample's spike raster, with its waveform above it where the audio is known.

    Example:

        edgekws data plot data/digits --split test --index 3 --out sample.png
    """
    from edgekws.toolkit.data._plot import plot_sample

    try:
        written = plot_sample(path, index, out, split=split)
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {written}")


@data.command()
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="WAV file to write; the ground truth goes next to it as .json.")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Which speakers' utterances are the keywords.")  # fmt: skip
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Length of the stream.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same stream.")
@click.option("--snr-db", nargs=2, type=float, default=(10.0, 30.0), show_default=True,
              help="Range of the background noise's SNR per noise segment.")  # fmt: skip
@click.option("--no-noise", is_flag=True, help="No background noise (the same words at the same times).")
@click.option("--no-distractors", is_flag=True, help="Only keywords and silence, no other words.")
@click.option("--json", "as_json", is_flag=True, help="Print the stream's composition as JSON.")
def stream(
    corpus: Path,
    out: Path,
    split: str,
    minutes: float,
    seed: int,
    snr_db: tuple[float, float],
    no_noise: bool,
    no_distractors: bool,
    as_json: bool,
) -> None:
    """Make a labelled keyword stream: a split's utterances among distractor words, silence and noise.

    For testing a streaming spotter (edgekws-agent run with a [source] of type "wav") against a ground
    truth: OUT is a 16 kHz 16-bit WAV and OUT with .json lists every keyword's label and speech span,
    the distractors, silences and noise segments. CORPUS is a folder made by `edgekws data synth`.

    Example:

        edgekws data stream data/digits --split test --minutes 2 --out stream.wav
    """
    from edgekws.toolkit.data._stream import EVENT_P, StreamError, build_stream, write_stream

    event_p = {k: p for k, p in EVENT_P.items() if k != "distractor"} if no_distractors else None
    try:
        made = build_stream(corpus, split, minutes, seed, snr_db, background=not no_noise, event_p=event_p)
        truth = write_stream(made, out)
    except (StreamError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = made.composition()
    if as_json:
        click.echo(json.dumps({"wav": str(out), "truth": str(truth), **summary}, indent=2))
        return
    click.echo(
        f"wrote {out} ({summary['duration_s']} s: {summary['keywords']} keywords of "
        f"{summary['keyword_classes']} classes by {summary['keyword_speakers']} speakers, "
        f"{summary['distractors']} distractors) and its ground truth {truth}"
    )

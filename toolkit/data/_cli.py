"""`edgekws data …`: synthesize, import, inspect and plot keyword data sets."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from edgekws.packaging import artifact_path
from edgekws.toolkit._interrupt import sigterm_as_ctrl_c
from edgekws.toolkit._progress import progress_bar
from edgekws.toolkit._shrink import limit, shrink
from edgekws.toolkit.data import _augment, _synth
from edgekws.toolkit.data._spikes import DatasetError


@click.group()
def data() -> None:
    """Make and inspect keyword data sets.

    Example:

        edgekws data synth --task en-digits --out data/en-digits
    """


def _names(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise click.BadParameter(f"expected ENGINE=WEIGHT,..., got {item!r}") from exc
    return out


def _frontend_option(taps: str | None, noise_floor: float | None = None) -> Any:
    """The front-end spec of ``--delay-taps-ms`` and ``--noise-floor`` (None: neither given)."""
    if taps is None and noise_floor is None:
        return None
    from edgekws.agent import FrontendSpec, FrontendSpecError

    if noise_floor is not None and not math.isfinite(noise_floor):
        raise click.BadParameter(
            f"must be a finite rise in dB/s such as 10, got {noise_floor}", param_hint="--noise-floor"
        )

    try:
        delays = [float(t) for t in taps.split(",") if t.strip()] if taps is not None else [0.0]
        return FrontendSpec(delay_taps_ms=tuple(delays), noise_floor_rise_db_per_s=noise_floor or 0.0)
    except (ValueError, FrontendSpecError) as exc:
        raise click.BadParameter(
            f"{exc} (expected comma-separated milliseconds such as 0,25,50,100)", param_hint="--delay-taps-ms"
        ) from None


_TAPS_HELP = (
    "Front-end delay taps: every unit's spikes also on one input line per delay, comma-separated ms "
    "(e.g. 0,25,50,100: 512 channels; docs/frontend.md) [default: none, 128 channels]."
)
_NOISE_FLOOR_HELP = (
    "Front-end noise floor: each band tracks its steady noise, rising at most this many dB/s (e.g. 10), and "
    "codes only what stands above it: for noisy, always-on deployments (docs/frontend.md) [default: off]."
)


def _augment_option(value: str | None) -> Any:
    """A preset name, or a JSON/TOML file of AugmentPolicy fields over the default preset."""
    if value is None or value in _augment.PRESETS:
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(
            f"--augment takes {', '.join(_augment.PRESETS)} or a .json/.toml file, got {value!r}"
        )
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from exc


@data.command()
@click.option(
    "--task",
    type=click.Choice(list(_synth.TASKS)),
    default="en-digits",
    show_default=True,
    help="en-digits: zero..nine + _unknown_ + _silence_; en-commands: yes, no, up, down, left, right, "
    "on, off, stop, go + _unknown_ + _silence_ (the Speech Commands 12-class task); digits: 20 "
    "classes, English and German digits (like SHD); commands: the 35 Speech Commands words.",
)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to create.")
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Utterances per class [default: 300; 100 for commands].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same corpus, byte for byte.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Processes running the synthesizers, augmentations and the front-end.",
)
@click.option("--classes", default=None, help="Comma-separated subset of keyword classes (default: all).")
@click.option(
    "--fillers",
    is_flag=True,
    help="Add the classes _unknown_ (other words) and _silence_ (noise alone), --per-class each: "
    "what a streaming spotter needs to learn what is not a keyword (always on for en-*).",
)
@click.option(
    "--engines",
    default=None,
    help="Comma-separated engines: espeak-ng, flite, festival, hibari, piper (those two neural: one voice "
    "each as 12 speakers, one person), kokoro (neural: 27 English voices, each a person; needs `edgekws "
    "data fetch-voices` once), kokoro-mix (every pair of kokoro's voices blended, each in its persons' "
    "split; needs kokoro) [default: espeak-ng, flite, festival for en-*, espeak-ng for "
    "digits/commands].",
)
@click.option(
    "--exclude",
    default=None,
    help="Comma-separated engines, voices (flite-slt, en-gb+f3, cmu_us_slt_arctic_hts) or persons "
    "(kal, slt) to leave out: leave-one-engine-out training.",
)
@click.option(
    "--engine-weights",
    default=None,
    help="ENGINE=WEIGHT,... share of the utterances each engine speaks [default: equal].",
)
@click.option(
    "--augment",
    default=None,
    help="Augmentation policy: none, default, or a .json/.toml file of settings over default "
    "[default: default for en-*, none for digits/commands].",
)
@click.option("--delay-taps-ms", "delay_taps", default=None, help=_TAPS_HELP)
@click.option("--noise-floor", type=click.FloatRange(min=0.0), default=None, metavar="DB_PER_S",
              help=_NOISE_FLOOR_HELP)  # fmt: skip
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
    engines: str | None,
    exclude: str | None,
    engine_weights: str | None,
    augment: str | None,
    delay_taps: str | None,
    noise_floor: float | None,
    force: bool,
    as_json: bool,
) -> None:
    """Synthesize a spoken-keyword corpus with espeak-ng, flite, festival (hibari, piper, kokoro) as spikes.

    Speakers are engine voices (espeak-ng voice+variant pairs, flite and festival voices, the derived
    speakers of hibari's and piper's neural voices), split 70/10/20 by person into train/val/test so that
    no test speaker is heard in training; tempo, pitch, amplitude, onset, noise (white, pink, babble at an
    SNR) and the augmentations (formants, pitch, tempo, room, band limit, EQ, gain, clipping) vary per
    utterance and are recorded in the manifest. Every clip is 1.0 s at 16 kHz (1000 steps at 1 ms). Writes
    OUT/wavs/ (a Speech Commands-style folder), OUT/manifest.json and OUT/{train,val,test}.h5 in the SHD
    layout.

    Example:

    \b
        edgekws data synth --task en-digits --out data/en-digits --seed 1
        edgekws data synth --task en-digits --out data/no-festival --exclude festival
        edgekws data synth --task en-digits --out data/neural --engines espeak-ng,flite,festival,hibari
        edgekws data synth --task digits --out data/digits-kws --fillers
    """
    per_class = shrink("per-class", per_class or _synth.DEFAULT_PER_CLASS[task])
    spec = _frontend_option(delay_taps, noise_floor)
    start = time.perf_counter()
    with progress_bar(f"synth {task}", disable=as_json) as progress, sigterm_as_ctrl_c():
        try:
            manifest = _synth.synthesize(
                out,
                task,
                per_class,
                seed,
                workers=workers,
                force=force,
                classes=_names(classes),
                progress=progress,
                fillers=fillers,
                engines=_names(engines),
                exclude=_names(exclude) or (),
                engine_weights=_weights(engine_weights),
                augment=_augment_option(augment),
                spec=spec,
            )
        except (_synth.SynthError, DatasetError, _augment.AugmentError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    seconds = time.perf_counter() - start
    summary = {
        "out": str(out),
        "task": task,
        "seed": seed,
        "utterances": len(manifest["utterances"]),
        "splits": manifest["splits"],
        "speakers": {s: sum(sp["split"] == s for sp in manifest["speakers"]) for s in _synth.SPLITS},
        "engines": {e: sum(u["engine"] == e for u in manifest["utterances"]) for e in manifest["engines"]},
        "seconds": round(seconds, 1),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"wrote {summary['utterances']} utterances to {out} in {seconds:.1f} s: "
        + ", ".join(f"{s} {n}" for s, n in manifest["splits"].items())
        + " ("
        + ", ".join(f"{e} {n}" for e, n in summary["engines"].items())
        + ")"
    )


@data.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to create.")
@click.option(
    "--task",
    type=click.Choice(list(_synth.TASKS)),
    default=None,
    help="Map the labels onto this task's classes (as `data synth` makes them).",
)
@click.option(
    "--classes",
    default=None,
    help="Comma-separated class names instead of --task [default: the labels found].",
)
@click.option(
    "--unknown",
    type=click.Choice(["map", "drop", "error"]),
    default="map",
    show_default=True,
    help="Words outside the classes: map to _unknown_, drop them, or stop with an error.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="FIELD=V1,V2",
    help="Keep recordings whose source, speaker, label, gender, accent or split is one of the "
    "values; repeat for more fields (e.g. --only source=fsdd).",
)
@click.option(
    "--speaker-rule",
    default=None,
    help="Speakers (and labels) from file names: fsdd, speech-commands, or a template such as "
    "'{label}_{speaker}_{take}' [default: the speaker column, else the rule every name fits].",
)
@click.option("--train-speakers", default=None, help="Comma-separated speakers for the train split.")
@click.option("--val-speakers", default=None, help="Comma-separated speakers for the val split.")
@click.option("--test-speakers", default=None, help="Comma-separated speakers for the test split.")
@click.option(
    "--fractions",
    nargs=3,
    type=float,
    default=None,
    metavar="TRAIN VAL TEST",
    help="Split the speakers at random (--seed) in these proportions.",
)
@click.option(
    "--rest",
    type=click.Choice(["train", "val", "test", "drop"]),
    default="test",
    show_default=True,
    help="Split of the speakers no option (nor the source's own split lists) places.",
)
@click.option(
    "--silence",
    type=click.IntRange(min=0),
    default=None,
    help="_silence_ clips per split cut from _background_noise_ [default: as many as the median class].",
)
@click.option(
    "--lead-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Silence put before each clip (real clips are often trimmed to the word).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of --fractions and the silence cuts."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Processes reading and encoding.",
)
@click.option(
    "--augment",
    default=None,
    help="Augmentation policy for --copies: recordings (default without babble), or a .json/.toml file "
    "of settings over default (white/pink noise only).",
)
@click.option(
    "--copies",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Augmented copies of every train-split clip, added beside it (val and test stay as recorded).",
)
@click.option("--delay-taps-ms", "delay_taps", default=None, help=_TAPS_HELP)
@click.option("--noise-floor", type=click.FloatRange(min=0.0), default=None, metavar="DB_PER_S",
              help=_NOISE_FLOOR_HELP)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
def import_cmd(
    sources: tuple[Path, ...],
    out: Path,
    task: str | None,
    classes: str | None,
    unknown: str,
    only: tuple[str, ...],
    speaker_rule: str | None,
    train_speakers: str | None,
    val_speakers: str | None,
    test_speakers: str | None,
    fractions: tuple[float, float, float] | None,
    rest: str,
    silence: int | None,
    lead_s: float,
    seed: int,
    workers: int,
    augment: str | None,
    copies: int,
    delay_taps: str | None,
    noise_floor: float | None,
    force: bool,
    as_json: bool,
) -> None:
    """Encode labelled recordings into spike data sets, split by speaker.

    SOURCES are CSV manifests (columns file,label and optionally speaker,source,sample_rate,gender,
    accent,split) or folders: the Speech Commands layout (root/<label>/*.wav, its split lists and
    _background_noise_) or flat folders of clips named like FSDD's {label}_{speaker}_{take}.flac. WAV or
    FLAC, any sample rate, mono or stereo. Every clip goes through the same front-end as `data synth`,
    1.0 s long. Writes OUT/{train,val,test}.h5 (SHD layout, with source, speaker, gender and accent per
    sample) and OUT/manifest.json. No speaker is in two splits (checked).

    Example:

    \b
        edgekws data import ../shared/data/real-speech/labels.csv --only source=fsdd --task en-digits \\
            --out data/fsdd
        edgekws data import labels.csv --only source=fsdd --task en-digits --out data/fsdd-ft \\
            --train-speakers fsdd-george,fsdd-jackson,fsdd-nicolas,fsdd-yweweler --rest test \\
            --augment recordings --copies 4

    With --copies N every train-split clip also goes in N times augmented (voice: formant, pitch, tempo;
    room; white/pink noise; channel: band, EQ, gain, clipping; as `data synth`'s policies), each copy's
    parameters in the manifest row; a few real speakers then sound like many.
    """
    from edgekws.toolkit.data._recordings import import_recordings

    if task and classes:
        raise click.UsageError("pass --task or --classes, not both")
    if copies and augment is None:
        raise click.UsageError("--copies needs --augment (a preset name or a policy file)")
    filters: dict[str, set[str]] = {}
    for item in only:
        field, sep, values = item.partition("=")
        if not sep or not values:
            raise click.BadParameter(f"expected FIELD=VALUE[,VALUE...], got {item!r}", param_hint="--only")
        filters.setdefault(field.strip(), set()).update(_names(values) or [])
    spec = _frontend_option(delay_taps, noise_floor)
    start = time.perf_counter()
    try:
        names = _synth.class_names(task) if task else _names(classes)
        if names is None:
            from edgekws.toolkit.data._recordings import default_classes, scan

            names = default_classes([r for s in sources for r in scan(s, speaker_rule)])
        with progress_bar("import", disable=as_json) as progress:
            manifest = import_recordings(
                sources,
                out,
                names,
                task=task,
                speaker_rule=speaker_rule,
                only=filters,
                unknown=unknown,
                train_speakers=_names(train_speakers),
                val_speakers=_names(val_speakers),
                test_speakers=_names(test_speakers),
                fractions=fractions,
                rest=rest,
                silence=silence,
                lead_s=lead_s,
                seed=seed,
                workers=workers,
                force=force,
                progress=progress,
                per_speaker_label=limit("recordings"),
                augment=_augment_option(augment) if copies else None,
                copies=copies,
                spec=spec,
            )
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {
        "out": str(out),
        "classes": manifest["classes"],
        "splits": manifest["splits"],
        "speakers": manifest["speakers"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"wrote {sum(manifest['splits'].values())} recordings to {out} in {summary['seconds']} s: "
        + ", ".join(
            f"{s} {n} ({len(manifest['speakers'][s])} speakers)" for s, n in manifest["splits"].items()
        )
    )


@data.command("fetch-voices")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the voice files [default: $EDGEKWS_KOKORO_VOICES, else "
              "~/.cache/edgekws/kokoro-js-1.2.1].")  # fmt: skip
@click.option("--from", "tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A local copy of kokoro-js-1.2.1.tgz (e.g. from `npm pack kokoro-js@1.2.1`) instead of "
              "the registry; checked the same way.")  # fmt: skip
def fetch_voices(dest: Path | None, tarball: Path | None) -> None:
    """Fetch the kokoro engine's 27 English voices (npm's kokoro-js 1.2.1, Apache-2.0) once.

    The tarball comes from registry.npmjs.org (or --from) and is checked against npm's SHA-512 integrity;
    only the voice files are kept, with their checksums, which every load checks against the ones this
    version of edgekws expects. Nothing is fetched when they are there and intact. Synthesis reads them
    from $EDGEKWS_KOKORO_VOICES, else the cache folder.

    Example:

        edgekws data fetch-voices
    """
    from edgekws.toolkit.data._kokoro import fetch_voices as fetch

    download = (lambda url: tarball.read_bytes()) if tarball is not None else None
    try:
        fetch(dest, download=download, log=click.echo)
    except (_synth.SynthError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


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
@click.option("--out", "out", type=click.Path(), required=True,
              help="PNG file to write, or a folder (ending in / or existing) for "
                   "NAME[-SPLIT]-INDEX.png.")  # fmt: skip
@click.option(
    "--split", default="train", show_default=True, help="Split of a corpus or Speech Commands folder."
)
def plot(path: Path, index: int, out: str, split: str) -> None:
    """Plot one sample's spike raster, with its waveform above it where the audio is known.

    Example:

        edgekws data plot data/digits --split test --index 3 --out sample.png
    """
    from edgekws.toolkit.data._plot import plot_sample

    name = f"{path.stem}-{index}.png" if path.is_file() else f"{path.resolve().name}-{split}-{index}.png"
    try:
        written = plot_sample(path, index, artifact_path(out, name), split=split)
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {written}")


@data.command()
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(), required=True,
              help="WAV file to write, or a folder (ending in / or existing) for stream-SPLIT-SEED.wav; "
                   "the ground truth goes next to it as .json.")  # fmt: skip
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
    out: str,
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
    from edgekws.toolkit.data._stream import EVENT_P, build_stream, write_stream

    event_p = {k: p for k, p in EVENT_P.items() if k != "distractor"} if no_distractors else None
    try:
        wav = artifact_path(out, f"stream-{split}-{seed}.wav")
        made = build_stream(corpus, split, minutes, seed, snr_db, background=not no_noise, event_p=event_p)
        truth = write_stream(made, wav)
    except (OSError, ValueError) as exc:  # StreamError is a ValueError
        raise click.ClickException(str(exc)) from exc
    summary = made.composition()
    if as_json:
        click.echo(json.dumps({"wav": str(wav), "truth": str(truth), **summary}, indent=2))
        return
    click.echo(
        f"wrote {wav} ({summary['duration_s']} s: {summary['keywords']} keywords of "
        f"{summary['keyword_classes']} classes by {summary['keyword_speakers']} speakers, "
        f"{summary['distractors']} distractors) and its ground truth {truth}"
    )


@data.command()
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A corpus of `edgekws data synth`: its keyword, _unknown_ clips per split.")  # fmt: skip
@click.option("--recordings", type=click.Path(exists=True, path_type=Path), default=None,
              help="Labelled recordings (CSV manifest or folder, as `data import`): keyword clips and other "
              "words of each split's speakers.")  # fmt: skip
@click.option("--keywords", default=None,
              help="Comma-separated keyword classes [default: the corpus' non-filler classes].")  # fmt: skip
@click.option("--train-speakers", default=None, help="Recordings: comma-separated training speakers.")
@click.option("--val-speakers", default=None, help="Recordings: comma-separated validation speakers.")
@click.option("--test-speakers", default=None, help="Recordings: comma-separated test speakers.")
@click.option("--rest", type=click.Choice(["train", "drop"]), default="drop", show_default=True,
              help="Recordings: where speakers in none of the lists go.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to create: train.h5, val.h5 (test.h5) and manifest.json.")  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training stretches.")  # fmt: skip
@click.option("--val-count", type=click.IntRange(min=0), default=20, show_default=True,
              help="Validation stretches.")  # fmt: skip
@click.option("--test-count", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test stretches.")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(min=2.0), default=30.0, show_default=True,
              help="Length of each stretch.")  # fmt: skip
@click.option("--snr-db", nargs=2, type=float, default=(5.0, 30.0), show_default=True,
              help="Range of the background noise's SNR per noise segment.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same stretches.")
@click.option("--delay-taps-ms", "delay_taps", default=None,
              help=_TAPS_HELP.replace("none, 128 channels", "the corpus' own"))  # fmt: skip
@click.option("--noise-floor", type=click.FloatRange(min=0.0), default=None, metavar="DB_PER_S",
              help=_NOISE_FLOOR_HELP.replace("[default: off]", "[default: the corpus' own]"))  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes composing and encoding stretches.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def stretches(
    corpus: Path | None,
    recordings: Path | None,
    keywords: str | None,
    train_speakers: str | None,
    val_speakers: str | None,
    test_speakers: str | None,
    rest: str,
    out: Path,
    count: int,
    val_count: int,
    test_count: int,
    seconds: float,
    snr_db: tuple[float, float],
    seed: int,
    delay_taps: str | None,
    noise_floor: float | None,
    workers: int,
    force: bool,
    as_json: bool,
) -> None:
    """Make stream-training data: long stretches of keywords, other words, silence and noise.

    Each stretch (--seconds long) is composed from the clips of one split, with silence, white, pink,
    brown and babble noise at --snr-db and words at different levels, and encoded whole by the corpus'
    front-end (its adaptation running across words as on a device). Classes are the keywords plus
    _background_; every keyword's span is recorded, from which `edgekws train` makes time-resolved targets
    (a data set of stretches trains an always-on model; docs/training.md, "Stream training").

    Example:

        edgekws data stretches --corpus data/en-digits --out data/en-digits-stretches --count 300

        edgekws data stretches --corpus data/en-digits --recordings ../shared/data/real-speech/labels.csv \\
            --train-speakers fsdd-george,fsdd-jackson --val-speakers fsdd-lucas --out data/mixed
    """
    from edgekws.agent import FrontendSpec
    from edgekws.toolkit._progress import progress_bar
    from edgekws.toolkit.data._recordings import assign_splits, scan
    from edgekws.toolkit.data._stream import Pools, StreamError, corpus_pools, recording_pools
    from edgekws.toolkit.data._stretches import StretchPlan, make_stretches

    if corpus is None and recordings is None:
        raise click.UsageError("give --corpus, --recordings or both: where the words come from")
    tapped = _frontend_option(delay_taps, noise_floor)
    counts = {"train": count, "val": val_count, "test": test_count}
    sources: dict[str, object] = {}
    try:
        manifest = json.loads((corpus / "manifest.json").read_text()) if corpus else None
        if keywords:
            words = [w.strip() for w in keywords.split(",") if w.strip()]
        elif manifest is not None:
            words = [c["name"] for c in manifest["classes"] if not c["name"].startswith("_")]
        else:
            raise click.UsageError("--keywords is needed without a --corpus")
        frontend = manifest["frontend"] if manifest is not None else FrontendSpec().to_dict()
        if delay_taps is not None:  # the corpus' front-end with these taps (a model's input layer must match)
            frontend = replace(FrontendSpec.from_dict(frontend), delay_taps_ms=tapped.delay_taps_ms).to_dict()
        if noise_floor is not None:  # and with this noise floor
            spec = replace(FrontendSpec.from_dict(frontend), noise_floor_rise_db_per_s=noise_floor)
            frontend = spec.to_dict()
        per_split: dict[str, list[Pools]] = {s: [] for s in counts}
        if corpus is not None:
            sources["corpus"] = str(corpus)
            for split in counts:
                per_split[split].append(corpus_pools(corpus, split, "unknown"))
        if recordings is not None:
            found = assign_splits(
                scan(recordings),
                _names(train_speakers),
                _names(val_speakers),
                _names(test_speakers),
                rest=rest,
            )
            sources["recordings"] = str(recordings)
            for split in counts:
                speakers = sorted({r.speaker for r in found if r.split == split})
                sources[f"{split}_speakers"] = speakers
                if speakers and counts[split]:
                    per_split[split].append(
                        recording_pools([r for r in found if r.split == split], words, speakers)
                    )
        pools = {
            s: Pools([c for p in ps for c in p.keywords], [c for p in ps for c in p.distractors])
            for s, ps in per_split.items()
            if ps
        }
        plan = StretchPlan(seconds=seconds, snr_db=snr_db)
        with progress_bar("stretches", disable=as_json) as update:
            made = make_stretches(
                out,
                pools,
                words,
                frontend,
                counts,
                plan,
                seed,
                sources=sources,
                workers=workers,
                force=force,
                progress=lambda split, done, total: update(done, total),
            )
    except (StreamError, DatasetError, OSError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(made, indent=2))
        return
    for split, s in made["splits"].items():
        click.echo(
            f"{split}: {s['stretches']} stretches, {s['seconds']:.0f} s, {s['keywords']} keywords and "
            f"{s['distractors']} other words by {len(s['speakers'])} speakers"
        )
    click.echo(f"wrote {out}")

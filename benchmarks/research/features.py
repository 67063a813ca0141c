"""What the front-end keeps of speaker-invariant word identity (issue #12 diagnosis): one simple classifier,
many features, side by side.

The same logistic regression on the same time-binned features of the same clips, for

- ``spike``: the agent's spike front-end (:mod:`edgekws.agent._frontend`) and variants of it, spike counts
  per channel in time bins (``log1p``);
- ``level``: the front-end's continuous band levels before the spiking units (dB; ``rel`` relative to the
  AGC's reference), which separates what the filterbank keeps from what the level units and rates keep;
- ``logmel`` / ``mfcc``: librosa's log-mel spectrogram and MFCCs (25 ms windows, 10 ms hop), the field's
  conventional features, optionally with per-utterance mean normalisation (CMN).

Protocols (accuracy over the ten digits):

- ``fsdd``: FSDD 4 speakers -> the other 2, all 15 pairs (mean, min, max);
- ``synth``: a synthetic corpus (``edgekws data synth`` folder: its WAVs, train+val splits, the ten digit
  classes) -> every FSDD speaker, and -> the corpus's test voices;
  ``engines`` (a list) keeps only those engines' training clips, ``subsample`` N a random N of them;
- ``h5``: the CNN on spike files instead of audio (``{"h5": {"train": [...], "tests": {...}}}``), e.g. the
  SNN's own training sets with their augmented copies;
- ``synth+fsdd``: that corpus + 4 FSDD speakers -> the other 2, ``benchmarks/real_voices.py``'s three
  rotations (its protocol (c), without the augmented copies); runs ``synth`` too.

Clips are 1 s at 16 kHz as the trainer sees them; FSDD words are placed 0.1 s into 1 s of silence. Bins:
``span`` (``B`` equal bins over the word's known span: what the words carry, time-normalised) or ``fixed``
(``B`` equal bins over the whole second: what a network that sees the clip as a whole must cope with).

```
P=.venv/bin/python; F=benchmarks/research/features.py
taskset -c 1 $P $F run NAME '{"feat": "spike", "spec": {"f_min_hz": 200}, "protocols": ["fsdd"]}'
taskset -c 1 $P $F run NAME '{"feat": "logmel", "n_mels": 40, "fmax": 4000, "cmn": true}'
taskset -c 1 $P $F run NAME '{"feat": "spike", "model": "cnn", "protocols": ["synth+fsdd"], "corpus": "C"}'
$P $F table
$P $F plot     # benchmarks/results/snn_vs_cnn.png from snn_vs_cnn.json
$P $F snn RUN DATA.h5   # a trained SNN run on DATA's digit clips: 12-way and digits-only decisions
```

Results go to ``runs/diag/features_results.jsonl``.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edgekws.agent import FrontendSpec, resample
from edgekws.agent import _frontend as fe

OUT = Path("runs/diag")
REAL = Path("/work/shared/data/real-speech")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SR = 16000
TOTAL = SR
LEAD = 1600  # FSDD words 0.1 s into their clip


# ----------------------------------------------------------------------------------------------- clips


def fsdd_clips() -> list[dict[str, Any]]:
    out = []
    with open(REAL / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["source"] != "fsdd":
                continue
            a, sr = sf.read(REAL / r["file"], dtype="float64")
            x = resample(a, int(sr), SR)[: TOTAL - LEAD]
            clip = np.zeros(TOTAL)
            clip[LEAD : LEAD + len(x)] = x
            out.append({"audio": clip, "label": DIGITS.index(r["label"]), "speaker": r["speaker"],
                        "span": (LEAD, LEAD + len(x))})  # fmt: skip
    return out


def synth_clips(corpus: Path, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    out = []
    for u in manifest["utterances"]:
        if u["split"] not in splits or u["class"] not in DIGITS:
            continue
        a, _sr = sf.read(corpus / u["wav"], dtype="float64")
        lead = round(u["lead_silence_s"] * SR)
        n = round(u["speech_s"] * SR)
        out.append({"audio": a, "label": DIGITS.index(u["class"]), "speaker": u["speaker"],
                    "span": (lead, min(TOTAL, lead + n)), "engine": u["engine"]})  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------- features


def band_levels(x: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """The front-end's smoothed band levels ``L[b, t]`` in dB (stages 1-2), shape (bands, steps)."""
    f = fe.Frontend(spec)
    d, nb, sps = f._d, spec.num_bands, spec.samples_per_step
    k = len(x) // sps
    y = np.empty((nb, k * sps))
    y[:] = x[: k * sps]
    for b, sos in enumerate(d.band_sos):
        fe._sosfilt_inplace(sos, y[b : b + 1], f._band_zi[b])
    np.square(y, out=y)
    power = y.reshape(nb, k, sps).mean(axis=2)
    fe._sosfilt_inplace(d.smooth_sos, power, f._smooth_zi)
    return 10.0 * np.log10(np.maximum(power, 0.0) + fe._POWER_FLOOR)


def agc_relative(level: np.ndarray, spec: FrontendSpec, opts: dict[str, Any]) -> np.ndarray:
    """``R[b, t]``: level relative to the gain reference (stage 3), with the experimental options:

    - ``xsmooth``: Gaussian smoothing across bands (sigma in bands) of the dB levels first;
    - ``bandnorm_ms``: minus each band's slow running mean (one-pole, this time constant), plus the mean
      over bands of those means (keeps the overall spectral tilt's average);
    - ``ref``: ``global`` (the loudest band's peak tracker, as the agent) or ``frame`` (the loudest band of
      the same step, no memory).
    """
    L = level
    if opts.get("xsmooth"):
        from scipy.ndimage import gaussian_filter1d

        L = gaussian_filter1d(L, opts["xsmooth"], axis=0, mode="nearest")
    if opts.get("bandnorm_ms"):
        from scipy.signal import lfilter

        a = math.exp(-spec.dt_ms / opts["bandnorm_ms"])
        p = 10 ** (L / 10)
        m = 10 * np.log10(lfilter([1 - a], [1, -a], p, axis=1) + 1e-12)
        L = L - (m - m.mean(axis=0, keepdims=True))
    release = spec.agc_release_db_per_s * spec.dt_ms / 1000.0
    t = np.arange(L.shape[1]) * release
    if opts.get("ref", "global") == "frame":
        ref = L.max(axis=0)
    else:
        ref = np.maximum.accumulate(L.max(axis=0) + t) - t
    return L - np.maximum(ref, spec.agc_floor_db)


def spikes_from(level: np.ndarray, rel: np.ndarray, spec: FrontendSpec, opts: dict[str, Any]) -> np.ndarray:
    """Spike raster (steps, channels) from levels (stages 4-5, as the agent), plus ``onset`` units: per band,
    one unit driven by the positive change of ``rel`` over ``onset_ms`` (dB per ``onset_db``)."""
    _nb, k = level.shape
    thr = np.array(spec.thresholds_db)
    gate = np.clip((level.T - spec.gate_db) / spec.level_span_db, 0.0, 1.0)
    drive = np.clip((rel.T[:, :, None] - thr) / spec.level_span_db, 0.0, 1.0) * gate[:, :, None]
    if opts.get("onset"):
        lag = int(opts.get("onset_ms", 20))
        past = np.concatenate([np.repeat(rel[:, :1], lag, axis=1), rel[:, :-lag]], axis=1)
        on = np.clip((rel - past).T / opts.get("onset_db", 10.0), 0.0, 1.0) * gate
        drive = np.concatenate([drive, on[:, :, None]], axis=2)
    c = drive.shape[1] * drive.shape[2]
    per_step = spec.max_rate_hz * spec.dt_ms / 1000.0 * fe._CHARGE_ONE
    charge = np.rint(drive * per_step).astype(np.int64).reshape(k, c)
    init = np.floor(np.mod(np.arange(1, c + 1) * fe._GOLDEN, 1.0) * fe._CHARGE_ONE).astype(np.int64)
    count = (np.cumsum(charge, axis=0) + init) // fe._CHARGE_ONE
    spikes = np.empty(count.shape, dtype=np.uint8)
    spikes[0] = count[0] != 0
    spikes[1:] = count[1:] != count[:-1]
    return spikes


def _bins(n_frames: int, span: tuple[int, int], mode: int | str, nbins: int, hop: int) -> np.ndarray:
    """Bin index of every frame (-1: outside), frames of ``hop`` samples."""
    centres = (np.arange(n_frames) + 0.5) * hop
    if mode == "span":
        lo, hi = span
    else:
        lo, hi = 0, TOTAL
    b = np.floor((centres - lo) / max(hi - lo, 1) * nbins).astype(int)
    b[(b < 0) | (b >= nbins)] = -1
    return b


def _pool(frames: np.ndarray, bins: np.ndarray, nbins: int) -> np.ndarray:
    """Mean of the frames (frames, dims) in each bin; an empty bin takes the nearest frame."""
    out = np.zeros((nbins, frames.shape[1]))
    for j in range(nbins):
        sel = bins == j
        if sel.any():
            out[j] = frames[sel].mean(axis=0)
        else:
            centre = np.flatnonzero(bins >= j)
            out[j] = frames[centre[0] if len(centre) else -1]
    return out


def frames_of(clip: dict[str, Any], conf: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Feature frames (frames, dims) of a clip and the hop in samples between frames."""
    kind = conf["feat"]
    x = clip["audio"]
    if kind in ("spike", "level", "rel"):
        spec = replace(FrontendSpec(), **{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in conf.get("spec", {}).items()})  # fmt: skip
        L = band_levels(x, spec)
        opts = conf.get("opts", {})
        if kind == "level":
            return L.T, spec.samples_per_step
        if kind == "rel":
            return np.maximum(agc_relative(L, spec, opts), -60.0).T, spec.samples_per_step
        spikes = spikes_from(L, agc_relative(L, spec, opts), spec, opts).astype(np.float64) * 1000.0
        return spikes, spec.samples_per_step
    import librosa

    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float32), sr=SR, n_fft=400, hop_length=160, n_mels=conf.get("n_mels", 40),
        fmin=conf.get("fmin", 20), fmax=conf.get("fmax", 8000), power=2.0, center=False,
    )  # fmt: skip
    logmel = np.log(mel + 1e-10)
    if conf.get("floor_db") is not None:  # a noise floor relative to the clip's max
        logmel = np.maximum(logmel, logmel.max() - conf["floor_db"] / 10 * math.log(10))
    if kind == "mfcc":
        return librosa.feature.mfcc(S=logmel, n_mfcc=conf.get("n_mfcc", 13)).T, 160
    return logmel.T, 160


def featurize(clip: dict[str, Any], conf: dict[str, Any]) -> np.ndarray:
    """LR features: frames pooled into ``bins`` time bins (``span`` or ``fixed``), flattened."""
    nbins, mode = conf.get("bins", 8), conf.get("binning", "span")
    frames, hop = frames_of(clip, conf)
    pooled = _pool(frames, _bins(len(frames), clip["span"], mode, nbins, hop), nbins)
    if conf["feat"] == "spike":
        pooled = np.log1p(pooled)
    if conf.get("cmn"):  # per-utterance mean over bins removed, per dimension
        pooled = pooled - pooled.mean(axis=0, keepdims=True)
    return pooled.ravel()


def sequence(clip: dict[str, Any], conf: dict[str, Any], n: int = 100) -> np.ndarray:
    """CNN features: ``n`` frames of 10 ms over the whole second (spikes: counts per frame, log1p)."""
    frames, hop = frames_of(clip, conf)
    per = (TOTAL // n) // hop
    if per > 1:
        frames = frames[: n * per].reshape(n, per, -1).mean(axis=1)
    out = np.zeros((n, frames.shape[1]))
    out[: min(n, len(frames))] = frames[:n]
    if len(frames) < n:
        out[len(frames) :] = frames[-1]
    if conf["feat"] == "spike":
        out = np.log1p(out / 100.0)
    if conf.get("cmn"):
        out = out - out.mean(axis=0, keepdims=True)
    return out


# ------------------------------------------------------------------------------------------- classifier


def classify(xtr: np.ndarray, ytr: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray]], c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    model = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(xtr), ytr)
    return {k: float(np.mean(model.predict(scaler.transform(x)) == y)) for k, (x, y) in tests.items()}


def classify_cnn(
    xtr: np.ndarray,
    ytr: np.ndarray,
    tests: dict[str, tuple[np.ndarray, np.ndarray]],
    conf: dict[str, Any],
    logits_of: np.ndarray | None = None,
) -> dict[str, Any]:
    """A small conventional KWS network (JAX): three 1-D convolutions over 10 ms frames (kernel 5, 64
    channels, ReLU, max-pool 2 after the first two), mean and max over time, a dense layer; AdamW, random
    time shifts of up to 0.1 s. The same network for every feature. Ablations toward the spiking network's
    shape: ``layers`` (1-3 convolutions) and ``pool`` (``meanmax``, ``mean`` or ``max`` over time)."""
    import jax
    import jax.numpy as jnp
    import optax

    mu, sd = xtr.mean(axis=(0, 1)), xtr.std(axis=(0, 1)) + 1e-3
    norm = lambda x: ((x - mu) / sd).astype(np.float32)  # noqa: E731
    width, ncls = conf.get("width", 64), 10
    key = jax.random.PRNGKey(conf.get("seed", 0))
    k1, k2, k3, k4 = jax.random.split(key, 4)
    d = xtr.shape[2]
    he = lambda k, shape: jax.random.normal(k, shape) * np.sqrt(2.0 / (shape[0] * shape[1]))  # noqa: E731
    params = {
        "c1": he(k1, (5, d, width)), "b1": jnp.zeros(width),
        "c2": he(k2, (5, width, width)), "b2": jnp.zeros(width),
        "c3": he(k3, (5, width, width)), "b3": jnp.zeros(width),
        "w": jax.random.normal(k4, (2 * width, ncls)) * np.sqrt(1.0 / (2 * width)), "b": jnp.zeros(ncls),
    }  # fmt: skip

    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
        return jax.nn.relu(y + b)

    def pool2(x):
        n = x.shape[1] // 2 * 2
        return x[:, :n].reshape(x.shape[0], n // 2, 2, x.shape[2]).max(axis=2)

    layers, pooling = conf.get("layers", 3), conf.get("pool", "meanmax")

    def logits(p, x):
        h = conv(x, p["c1"], p["b1"])
        if layers >= 2:
            h = conv(pool2(h), p["c2"], p["b2"])
        if layers >= 3:
            h = conv(pool2(h), p["c3"], p["b3"])
        mean, peak = h.mean(axis=1), h.max(axis=1)
        pooled = {"meanmax": (mean, peak), "mean": (mean, mean), "max": (peak, peak)}[pooling]
        return jnp.concatenate(pooled, axis=1) @ p["w"] + p["b"]

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    epochs, batch = conf.get("epochs", 30), 32
    steps = epochs * (len(xtr) // batch)
    opt = optax.adamw(optax.cosine_decay_schedule(2e-3, steps, 0.05), weight_decay=1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    predict = jax.jit(lambda p, x: logits(p, x).argmax(axis=1))
    rng = np.random.default_rng(conf.get("seed", 0))
    xn = norm(xtr)
    for _ in range(epochs):
        order = rng.permutation(len(xn))
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            xb = np.stack([np.roll(xn[j], int(rng.integers(-10, 11)), axis=0) for j in idx])
            params, state = step(params, state, xb, ytr[idx])
    out = {}
    for name, (x, y) in tests.items():
        pred = np.concatenate(
            [np.asarray(predict(params, norm(x[i : i + 256]))) for i in range(0, len(x), 256)]
        )
        out[name] = float(np.mean(pred == y))
    if logits_of is not None:  # the trained network's logits for these inputs (a teacher, distill.py)
        out["logits"] = np.concatenate(
            [np.asarray(logits(params, norm(logits_of[i : i + 256]))) for i in range(0, len(logits_of), 256)]
        )
    return out


_CACHE: dict[str, list[dict[str, Any]]] = {}
_ROTATIONS = (("fsdd-lucas", "fsdd-theo"), ("fsdd-george", "fsdd-jackson"), ("fsdd-nicolas", "fsdd-yweweler"))


def digit_clips(data: Any) -> np.ndarray:
    """Indices of a SpikeDataset's clips whose class is one of the ten digits."""
    return np.flatnonzero(np.isin(np.asarray(data.class_names)[data.labels], DIGITS))


def h5_sequences(source: Any, n: int = 100, digits_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The digit clips (or all clips) of a spike data set (a path of ``edgekws data synth`` / ``data import``:
    the very files the SNN trains on, augmented copies included; or the SpikeDataset read from one) as CNN
    input: spike counts in ``n`` frames, log1p."""
    from edgekws.toolkit.data import read_shd

    data = read_shd(source) if isinstance(source, (str, Path)) else source
    digits = digit_clips(data) if digits_only else np.arange(len(data))
    out = np.empty((len(digits), n, data.num_channels), np.float32)
    for i in range(0, len(digits), 500):
        idx = digits[i : i + 500]
        x = data.bin(0.001, TOTAL // 16, idx)  # (k, 1000, C) at 1 ms
        out[i : i + len(idx)] = np.log1p(x.reshape(len(idx), n, -1, x.shape[2]).sum(axis=2))
    return out, data.labels[digits]


def run_h5(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``{"h5": {"train": [paths], "tests": {name: path}}}``: the CNN on spike files, digits only."""
    t0 = time.time()
    parts = [h5_sequences(Path(p)) for p in conf["h5"]["train"]]
    xtr, ytr = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    tests = {k: h5_sequences(Path(p)) for k, p in conf["h5"]["tests"].items()}
    r = classify_cnn(xtr, ytr, tests, conf)
    scores = {k: round(v, 4) for k, v in r.items()}
    return {"name": name, "conf": conf, "dims": int(xtr.shape[1]), "train_clips": len(xtr),
            "h5_tests": scores, "seconds": round(time.time() - t0)}  # fmt: skip


def run(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    if "h5" in conf:
        return run_h5(name, conf)
    t0 = time.time()
    c = conf.get("C", 0.01)
    if "fsdd" not in _CACHE:
        _CACHE["fsdd"] = fsdd_clips()
    fsdd = _CACHE["fsdd"]
    cnn = conf.get("model") == "cnn"
    feat = sequence if cnn else featurize

    def fit(xtr: np.ndarray, ytr: np.ndarray, tests: dict[str, Any]) -> dict[str, float]:
        return classify_cnn(xtr, ytr, tests, conf) if cnn else classify(xtr, ytr, tests, c)

    xf = np.array([feat(e, conf) for e in fsdd])
    yf = np.array([e["label"] for e in fsdd])
    sp = np.array([e["speaker"] for e in fsdd])
    result: dict[str, Any] = {"name": name, "conf": conf, "dims": int(xf.shape[1])}
    protocols = conf.get("protocols", ["fsdd", "synth"])
    if "fsdd" in protocols:
        pairs = {}
        held_out = list(itertools.combinations(sorted(set(sp)), 2))
        if conf.get("rotations") == 3:  # benchmarks/real_voices.py's three rotations
            held_out = list(_ROTATIONS)
        for held in held_out:
            test = np.isin(sp, held)
            key = "+".join(h.removeprefix("fsdd-") for h in held)
            pairs[key] = fit(xf[~test], yf[~test], {"x": (xf[test], yf[test])})["x"]
        v = np.array(list(pairs.values()))
        result["fsdd4to2"] = {"mean": round(float(v.mean()), 4), "min": round(float(v.min()), 4),
                              "max": round(float(v.max()), 4), "pairs": pairs}  # fmt: skip
    if "synth" in protocols or "synth+fsdd" in protocols:
        corpus = Path(conf.get("corpus", "runs/diag/syn300"))
        key = f"synth:{corpus}"
        if key not in _CACHE:
            _CACHE[key] = synth_clips(corpus, ("train", "val"))
            _CACHE[key + ":test"] = synth_clips(corpus, ("test",))
        tr, te = _CACHE[key], _CACHE[key + ":test"]
        if conf.get("engines"):  # train on these engines' clips only (the test voices stay all engines')
            tr = [e for e in tr if e["engine"] in conf["engines"]]
        if conf.get("subsample"):  # a random subset of this many training clips (size controls)
            keep = np.random.default_rng(0).choice(len(tr), conf["subsample"], replace=False)
            tr = [tr[i] for i in sorted(keep)]
        xs = np.array([feat(e, conf) for e in tr])
        ys = np.array([e["label"] for e in tr])
        xt = np.array([feat(e, conf) for e in te])
        yt = np.array([e["label"] for e in te])
        tests = {"synth_test": (xt, yt), "fsdd": (xf, yf)}
        for s in sorted(set(sp)):
            tests[s.removeprefix("fsdd-")] = (xf[sp == s], yf[sp == s])
        r = fit(xs, ys, tests)
        result["synth_to_fsdd"] = round(r.pop("fsdd"), 4)
        result["synth_test"] = round(r.pop("synth_test"), 4)
        result["synth_fsdd_per_speaker"] = {k: round(v, 3) for k, v in r.items()}
        if "synth+fsdd" in protocols:  # real_voices.py's protocol (c): the corpus + 4 FSDD speakers -> 2
            pairs = {}
            for held in _ROTATIONS:
                test = np.isin(sp, held)
                key = "+".join(h.removeprefix("fsdd-") for h in held)
                xtr, ytr = np.concatenate([xs, xf[~test]]), np.concatenate([ys, yf[~test]])
                pairs[key] = fit(xtr, ytr, {"x": (xf[test], yf[test])})["x"]
            v = np.array(list(pairs.values()))
            result["synth+fsdd4to2"] = {"mean": round(float(v.mean()), 4), "min": round(float(v.min()), 4),
                                        "max": round(float(v.max()), 4), "pairs": pairs}  # fmt: skip
    result["seconds"] = round(time.time() - t0)
    return result


def table() -> None:
    path = OUT / "features_results.jsonl"
    head = ["name", "features", "dims", "FSDD 4->2 mean (min-max)", "synth -> FSDD", "synth test",
            "synth+4 FSDD -> 2"]  # fmt: skip
    print("| " + " | ".join(head) + " |\n" + "| --- " * len(head) + "|")

    def spread(f: dict[str, Any] | None) -> str:
        return f"{f['mean']:.3f} ({f['min']:.2f}-{f['max']:.2f})" if f else ""

    for line in path.read_text().splitlines():
        r = json.loads(line)
        conf = {k: v for k, v in r["conf"].items() if k not in ("protocols", "corpus")}
        scores = [spread(r.get("fsdd4to2")), r.get("synth_to_fsdd", ""), r.get("synth_test", "")]
        cells = [r["name"], f"`{json.dumps(conf)}`", r["dims"], *scores, spread(r.get("synth+fsdd4to2"))]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def snn_digits(run_dir: Path, data_path: Path) -> dict[str, float]:
    """A trained run's accuracy on a spike data set's digit clips, as its 12-way decision and as the arg-max
    over the ten digit outputs only (the CNN's decision), float model."""
    from edgekws.agent._decision import decide
    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.train import load_run
    from edgekws.toolkit.train._evaluate import float_readout

    run, data = load_run(run_dir), read_shd(data_path)
    spec = run.spec
    digits = digit_clips(data)
    right = np.zeros(2)
    for i in range(0, len(digits), 250):
        idx = digits[i : i + 250]
        x = data.bin(spec.dt_ms / 1000.0, spec.num_steps, idx)
        scores = decide(float_readout(run.params, spec, x, 64), spec.readout).scores
        right += [
            (scores.argmax(1) == data.labels[idx]).sum(),
            (scores[:, : len(DIGITS)].argmax(1) == data.labels[idx]).sum(),
        ]
    return {
        "clips": len(digits),
        "12-way": round(right[0] / len(digits), 4),
        "digits only": round(right[1] / len(digits), 4),
    }


def plot(results: Path = Path("benchmarks/results/snn_vs_cnn.json")) -> Path:
    """Bar chart of ``snn_vs_cnn.json``: FSDD (synthetic-only) and protocol (c) accuracy per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(results.read_text())
    cnn = {r["name"]: r for r in doc["cnn"]}
    snn = doc["snn_bundle_3_0_0"]
    round4 = json.loads((results.parent / "real_voices_round4.json").read_text())["results"]
    snn_c = round4["fsdd_finetune"]["mean_accuracy"]  # the bundle's recipe in protocol (c)
    rows = [  # (label, FSDD synthetic-only, protocol (c) or None, colour)
        ("SNN bundle 3.0.0\n(12-way)", snn["fsdd_12way"], snn_c, "tab:orange"),
        ("SNN bundle 3.0.0\n(digits only)", snn["fsdd_digits_only"], None, "tab:orange"),
        ("CNN 1 conv\nmean", cnn["cnn_spike_l1_mean"]["synth_to_fsdd"],
         cnn["cnn_spike_l1_mean_synthfsdd"]["synth+fsdd4to2"]["mean"], "tab:blue"),
        ("CNN 1 conv\nmax", cnn["cnn_spike_l1_max"]["synth_to_fsdd"], None, "tab:blue"),
        ("CNN 3 conv\nmean", cnn["cnn_spike_l3_mean"]["synth_to_fsdd"], None, "tab:blue"),
        ("CNN 3 conv\nmean+max", cnn["cnn_spike"]["synth_to_fsdd"],
         cnn["cnn_spike_synthfsdd"]["synth+fsdd4to2"]["mean"], "tab:blue"),
        ("CNN 3 conv\nlog-mel", cnn["cnn_logmel"]["synth_to_fsdd"], None, "tab:gray"),
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(rows))
    ax.bar(
        x - 0.2,
        [r[1] * 100 for r in rows],
        0.4,
        color=[r[3] for r in rows],
        label="synthetic only -> FSDD, 6 speakers",
    )
    cx = [i for i, r in enumerate(rows) if r[2] is not None]
    colours = [rows[i][3] for i in cx]
    ax.bar(np.array(cx) + 0.2, [rows[i][2] * 100 for i in cx], 0.4, color=colours, alpha=0.45, hatch="//",
           label="synthetic + 4 FSDD speakers -> other 2 (mean of 3)")  # fmt: skip
    for i, r in enumerate(rows):
        ax.text(i - 0.2, r[1] * 100 + 1, f"{r[1] * 100:.1f}", ha="center", fontsize=8)
        if r[2] is not None:
            ax.text(i + 0.2, r[2] * 100 + 1, f"{r[2] * 100:.1f}", ha="center", fontsize=8)
    for target, style in ((85, "--"), (95, ":")):
        ax.axhline(target, color="black", linestyle=style, linewidth=0.8)
    ax.set_xticks(x, [r[0] for r in rows], fontsize=8)
    ax.set_ylabel("accuracy on unseen real speakers (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Same spike front-end, different networks (issue #12; targets 85 % dashed, 95 % dotted)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = results.with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if argv[:1] == ["run"] and len(argv) >= 3:
        # several NAME CONF pairs in one process share the decoded clips
        for name, text in zip(argv[1::2], argv[2::2], strict=True):
            result = run(name, json.loads(text))
            print(json.dumps({k: v for k, v in result.items() if k != "conf"}), flush=True)
            with open(OUT / "features_results.jsonl", "a") as fh:
                fh.write(json.dumps(result) + "\n")
    elif argv[:1] == ["table"]:
        table()
    elif argv[:1] == ["plot"]:
        print(plot())
    elif argv[:1] == ["snn"] and len(argv) == 3:
        print(json.dumps(snn_digits(Path(argv[1]), Path(argv[2]))))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

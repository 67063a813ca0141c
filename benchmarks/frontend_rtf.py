"""Front-end speed (real-time factor on one core) and an information check, default spec and neighbours.

Run: ``.venv/bin/python benchmarks/frontend_rtf.py`` (about a minute; needs espeak-ng).

Specs: the default (32 bands x 4 levels = 128 channels), its neighbours, and the default with the delay taps
0, 25, 50, 100 ms (512 channels: a copy of the units' spikes per tap from a history of the last 100 steps),
and the default with the per-band noise floor (10 dB/s; one more low-pass and a running minimum per band).

1. **Real-time factor** = encoding time / audio duration, pinned to CPU 0 with BLAS/OpenMP threads = 1,
   for the whole signal at once and for streaming chunks of 100 ms, 10 ms and 1 ms (16 samples). The
   table gives the minimum over repeats (the cost without interference from other jobs on the shared
   machine) and the json records the median too. The
   streamed rasters are checked to be bit-identical to the whole-signal raster.
2. **Digit separability**: espeak-ng says the ten digits in 8 voices; each utterance becomes spike counts in
   10 equal time bins per channel; leave-one-voice-out nearest-neighbour (cosine) accuracy says whether the
   spikes keep what tells digits apart across voices (chance 10 %). Not a substitute for training an SNN,
   but a cheap way to compare channel counts.
3. **Loudness**: spike count of the same speech at 0, -6, -10, -20, -30 dB gain (AGC check), and of
   white noise at -70, -60, -50 dBFS.

Writes ``benchmarks/results/frontend_rtf.json`` and ``frontend_rtf.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import io
import itertools
import statistics
import subprocess
import time

import numpy as np
import scipy
import soundfile as sf
from _common import RESULTS, machine, write_results

from edgekws.agent import Frontend, FrontendSpec, encode
from edgekws.agent._audio import prepare

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = [
    ("en-gb", 175),
    ("en-us+f3", 160),
    ("en-gb-scotland+m3", 190),
    ("en-gb-x-rp+f2", 150),
    ("en-029+m7", 170),
    ("en-us-nyc+f4", 200),
    ("en-gb-x-gbcwmd+m2", 165),
    ("en-gb-x-gbclan+f1", 185),
]
BASELINES = {"1x4 = 4 (loudness only)": FrontendSpec(num_bands=1, f_min_hz=1000.0, f_max_hz=1000.0)}
REPEATS = 9
CHUNKS = {"whole": None, "100 ms": 1600, "10 ms": 160, "1 ms": 16}
SPECS = {
    "16x4 = 64": FrontendSpec(num_bands=16),
    "32x2 = 64": FrontendSpec(thresholds_db=(-35.0, -15.0), level_span_db=20.0),
    "32x4 = 128 (default)": FrontendSpec(),
    "64x4 = 256": FrontendSpec(num_bands=64),
    "32x4 x taps 0,25,50,100 = 512": FrontendSpec(delay_taps_ms=(0.0, 25.0, 50.0, 100.0)),
    "32x4 + noise floor 10 dB/s = 128": FrontendSpec(noise_floor_rise_db_per_s=10.0),
}
STREAMED_1MS = (
    "32x4 = 128 (default)",
    "32x4 x taps 0,25,50,100 = 512",
    "32x4 + noise floor 10 dB/s = 128",
)  # 1 ms chunks are slow: these only


def say(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return audio, int(sr)


def time_once(x: np.ndarray, spec: FrontendSpec, chunk: int | None) -> tuple[float, np.ndarray]:
    """Seconds to encode ``x`` whole (chunk None) or in chunks of ``chunk`` samples, and the raster."""
    fe = Frontend(spec)
    t0 = time.perf_counter()
    if chunk is None:
        out = fe.process(x)
    else:
        out = np.concatenate([fe.process(x[i : i + chunk]) for i in range(0, x.size, chunk)])
    return time.perf_counter() - t0, out


def features(raster: np.ndarray, bins: int = 10) -> np.ndarray:
    active = np.flatnonzero(raster.any(axis=1))
    r = raster[active[0] : active[-1] + 1] if active.size else raster
    edges = np.linspace(0, r.shape[0], bins + 1).astype(int)
    f = np.stack([r[a:b].sum(axis=0) for a, b in itertools.pairwise(edges)]).astype(np.float64)
    f = f.ravel()
    return f / (np.linalg.norm(f) + 1e-9)


def loo_voice_accuracy(feats: np.ndarray, labels: np.ndarray, voices: np.ndarray) -> float:
    correct = 0
    for i in range(len(labels)):
        others = voices != voices[i]
        sims = feats[others] @ feats[i]
        correct += int(labels[others][int(np.argmax(sims))] == labels[i])
    return correct / len(labels)


def main() -> None:
    os.sched_setaffinity(0, {0})
    utterances = []  # (audio at 16 kHz, digit, voice index)
    for v, (voice, speed) in enumerate(VOICES):
        for d, word in enumerate(DIGITS):
            audio, sr = say(word, voice, speed)
            utterances.append((np.asarray(prepare(audio, sr, 16000, resample_ok=True)), d, v))
    sentence = np.concatenate([u[0] for u in utterances])
    seconds = sentence.size / 16000
    x = sentence[: 16000 * 10] if seconds > 10 else sentence
    audio_s = x.size / 16000

    # Repeats are interleaved across configurations, so that load from other jobs hits all of them alike.
    cases = [(n, c) for n in SPECS for c in CHUNKS if CHUNKS[c] != 16 or n in STREAMED_1MS]
    reference = {n: Frontend(spec).process(x) for n, spec in SPECS.items()}
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    same = dict.fromkeys(cases, True)
    for r in range(REPEATS):
        for name, chunk_name in cases:
            if CHUNKS[chunk_name] == 16 and r >= 3:
                continue  # 1 ms chunks are slow; three repeats are enough
            seconds, out = time_once(x, SPECS[name], CHUNKS[chunk_name])
            times[(name, chunk_name)].append(seconds)
            same[(name, chunk_name)] &= bool(np.array_equal(out, reference[name]))
    rtf: dict[str, dict[str, object]] = {n: {} for n in SPECS}
    for (name, chunk_name), ts in times.items():
        rtf[name][chunk_name] = {
            "rtf_min": round(min(ts) / audio_s, 5),
            "rtf_median": round(statistics.median(ts) / audio_s, 5),
            "repeats": len(ts),
            "bit_identical_to_whole": same[(name, chunk_name)],
        }
        print(f"{name:22s} {chunk_name:7s} RTF min {min(ts) / audio_s:.4f}", flush=True)

    separability: dict[str, dict[str, float]] = {}
    labels = np.array([u[1] for u in utterances])
    voices = np.array([u[2] for u in utterances])
    rng = np.random.default_rng(0)
    # Harder condition: each utterance at a random gain (0 to -20 dB) in white noise 20 dB below the speech.
    noisy = []
    for audio, _, _ in utterances:
        gain = 10 ** (-rng.uniform(0, 20) / 20)
        rms = float(np.sqrt(np.mean(audio**2)))
        noisy.append(gain * (audio + 0.1 * rms * rng.standard_normal(audio.size)))
    for name, spec in {**SPECS, **BASELINES}.items():
        separability[name] = {}
        for condition, signals in (("clean", [u[0] for u in utterances]), ("gain+noise", noisy)):
            feats = np.stack([features(encode(a, 16000, spec)) for a in signals])
            separability[name][condition] = round(loo_voice_accuracy(feats, labels, voices), 3)
        print(f"{name:22s} leave-one-voice-out 1-NN digit accuracy {separability[name]}", flush=True)

    speech = np.concatenate([u[0] for u in utterances[:10]])  # the first voice's ten digits
    loud = {
        f"{g:+d} dB": int(encode(speech * 10 ** (g / 20), 16000).sum(dtype=np.int64))
        for g in (0, -6, -10, -20, -30)
    }
    rng = np.random.default_rng(0)
    noise = {
        f"{db} dBFS": int(
            encode(10 ** (db / 20) * rng.standard_normal(16000 * 5), 16000).sum(dtype=np.int64) / 5
        )
        for db in (-70, -60, -50)
    }
    floor = SPECS["32x4 + noise floor 10 dB/s = 128"]  # 5 s of noise: the floor has risen to it after ~3
    rng = np.random.default_rng(0)
    noise_floor = {
        f"{db} dBFS": int(
            encode(10 ** (db / 20) * rng.standard_normal(16000 * 5), 16000, floor)[3000:].sum() / 2
        )
        for db in (-70, -60, -50, -40)
    }
    speech_rate = loud["+0 dB"] / (speech.size / 16000)

    result = {
        "benchmark": "frontend_rtf",
        "command": ".venv/bin/python benchmarks/frontend_rtf.py",
        "machine": machine(pinned_to_cpu=0, scipy=scipy.__version__),
        "default_spec": FrontendSpec().to_dict(),
        "audio": f"{audio_s:.1f} s of espeak-ng digits (8 voices), resampled to 16 kHz",
        "rtf": rtf,
        "digit_separability_loo_voice_1nn": separability,
        "digit_utterances": len(utterances),
        "loudness_spike_counts": {"speech_10_digits": loud, "speech_spikes_per_s": round(speech_rate, 1)},
        "noise_spikes_per_s": noise,
        "noise_spikes_per_s_noise_floor_last_2_of_5_s": noise_floor,
    }
    write_results(RESULTS / "frontend_rtf.json", result, markdown(result))
    print(f"wrote {RESULTS / 'frontend_rtf.json'}")


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Front-end real-time factor",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['cores']} cores, pinned to CPU 0, BLAS threads 1), "
        f"{m['platform']}, Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}. "
        f"Audio: {r['audio']}. RTF = encode time / audio time, minimum (median) over repeats; lower is "
        "faster; target <= 0.02. The machine is shared with other jobs, so medians are noisy.",
        "",
        "| spec (bands x levels = channels) | "
        + " | ".join(f"RTF {c}" for c in CHUNKS)
        + " | digits 1-NN clean | digits 1-NN gain+noise |",
        "|---|" + "---|" * (len(CHUNKS) + 2),
    ]
    sep = r["digit_separability_loo_voice_1nn"]
    for name in sep:
        by_chunk = r["rtf"].get(name, {})
        cells = [
            f"{by_chunk[c]['rtf_min']:.4f} ({by_chunk[c]['rtf_median']:.4f})" if c in by_chunk else "-"
            for c in CHUNKS
        ]
        acc = f"{sep[name]['clean']:.3f} | {sep[name]['gain+noise']:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {acc} |")
    same = all(v["bit_identical_to_whole"] for by in r["rtf"].values() for v in by.values())
    lines += [
        "",
        f"Streamed rasters bit-identical to whole-signal rasters in every run: {same}.",
        "",
        f"Digits: leave-one-voice-out nearest-neighbour accuracy over {r['digit_utterances']} espeak-ng "
        "utterances (10 digits x 8 voices; chance 0.1), features = spike counts in 10 time bins per channel; "
        "gain+noise = random gain 0..-20 dB and white noise at 20 dB SNR.",
        "",
        f"Loudness (spikes for ten digits, default spec): {r['loudness_spike_counts']['speech_10_digits']}; "
        f"speech gives {r['loudness_spike_counts']['speech_spikes_per_s']} spikes/s, white noise "
        f"{r['noise_spikes_per_s']} spikes/s.",
        "",
    ]
    if "noise_spikes_per_s_noise_floor_last_2_of_5_s" in r:
        lines += [
            "With the noise floor (10 dB/s), white noise over the last 2 s of 5 s (the floor risen to it): "
            f"{r['noise_spikes_per_s_noise_floor_last_2_of_5_s']} spikes/s.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

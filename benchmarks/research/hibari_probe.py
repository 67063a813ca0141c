"""The first hibari probe of issue #12's round 4 (docs/training.md, "Hearing people", round 4: P1, P2), made
before hibari became an engine of the corpus builder: hibari's bundled voice (Kokoro-82M af_heart) saying the
en-digits words as labelled WAVs for ``edgekws data import``, each clip by one of 12 derived speakers (F0 and
formant scale, as ``edgekws.toolkit.data._engines.HIBARI_VARIANTS`` now has them) drawn at random, with F0
x e^+-0.1, formants x e^+-0.03 and model speed 0.8-1.25 per clip.

    .venv/bin/python benchmarks/research/hibari_probe.py runs/rv4/hibari-src 120 0    # P1 (P2 adds seed 1)
    .venv/bin/edgekws data import runs/rv4/hibari-src/labels.csv --task en-digits --out runs/rv4/hibari \\
        --rest train --augment AUG.toml --copies 1     # AUG.toml: round 3's [synth.augment]

It makes the probe's clips again to within one 16-bit step (the formant warp is now the engine's
``warp_bins``, in float64). The corpus builder's engine (``edgekws data synth --engines ...,hibari``) makes
the same kind of clips inside a corpus, with a speaker per utterance in turn and the corpus's own
augmentations; use that.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from hibari import Hibari, dsp

from edgekws.toolkit.data._engines import warp_bins
from edgekws.toolkit.data._synth import DIGITS_EN, unknown_words

# (F0 scale, formant scale) of the 12 derived speakers, in the order the probe drew from
SPEAKERS = [
    (0.5, 0.84), (0.55, 0.88), (0.6, 0.86), (0.62, 0.92), (0.7, 0.9), (0.75, 0.95),
    (0.85, 0.97), (1.0, 1.0), (1.1, 1.04), (0.9, 1.0), (0.65, 0.84), (1.2, 1.08),
]  # fmt: skip


def main() -> None:
    out, per_class = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    unknown = list(unknown_words("en-digits", "en"))
    tts = Hibari()
    (out / "wavs").mkdir(parents=True, exist_ok=True)

    def say(text: str, f0: float, formant: float, speed: float, seed: int) -> np.ndarray:
        ids = tts.ids(tts.phonemize(text)[0])
        feed = {"ids": np.asarray([ids], np.int64), "speed": np.asarray([speed], np.float32)}
        lh, th, ln, lr, phi, f0_curve = (x[0] for x in tts.sess.run(None, feed))
        lh, th, ln, lr, phi = (warp_bins(x, formant) for x in (lh, th, ln, lr, phi))
        return dsp.synth(lh, th, ln, lr, phi, f0_curve * f0, np.random.default_rng(seed))

    rows = []
    for label in [*DIGITS_EN, "_unknown_"]:
        for k in range(per_class):
            index = int(rng.integers(len(SPEAKERS)))
            f0, formant = SPEAKERS[index]
            f0 *= float(np.exp(rng.uniform(-0.1, 0.1)))
            formant *= float(np.exp(rng.uniform(-0.03, 0.03)))
            text = label if label != "_unknown_" else unknown[int(rng.integers(len(unknown)))]
            audio = say(text, f0, formant, float(rng.uniform(0.8, 1.25)), int(rng.integers(1 << 31)))
            audio = audio / np.abs(audio).max() * rng.uniform(0.25, 0.9)
            speaker = f"hibari-heart-v{index:02d}"
            name = f"wavs/{label.strip('_')}_{speaker}_{k:04d}.wav"
            sf.write(out / name, audio, 24000, subtype="PCM_16")
            rows.append({
                "file": name, "label": text, "speaker": speaker, "source": "hibari", "sample_rate": 24000,
                "gender": "female" if f0 > 0.8 else "male", "accent": "US", "split": "train",
            })  # fmt: skip
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} clips in {out}")


if __name__ == "__main__":
    main()

"""Issue #13: 1 s training windows cut from encoded stretches, so a K-lane model learns what its lanes see.

A lane window in the agent is one second of the front-end's output over a stream: the front-end never reset
(its AGC has been listening to the noise before the word), the word anywhere in the first few hundred ms,
background noise of every kind at 5-30 dB, and many windows holding no keyword at all. Training clips are
none of that (stream_diag.py: 87 % of the VAL keywords right as fresh noiseless cuts, 52 % with the stream's
noise, 35 % of the lane windows; 54 % of the keyword-free windows answered with a digit). This cuts, from
``edgekws data stretches`` output (the spikes as the stretch was encoded, taps included):

- for every keyword span, ``--per-keyword`` windows starting 50-350 ms before the word (label: the word),
  kept only where the whole word fits;
- ``--negatives`` x as many windows that overlap no keyword (nor the 300 ms after one), label ``_unknown_``
  (other words, silence and noise alike; the decision stage ignores both filler classes).

``python benchmarks/research/stream_windows.py STRETCHES.h5 CLIPS.h5 OUT.h5`` (CLIPS.h5: a clip set of the
same front-end whose classes the windows take; ``--with-clips``: OUT.h5 holds the clips, then the windows,
the set a clip model is fine-tuned on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgekws.agent import FrontendSpec
from edgekws.toolkit.data import SpikeDataset, read_shd, stream_spans, write_shd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stretches", type=Path)
    ap.add_argument("clips", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-keyword", type=int, default=3)
    ap.add_argument("--negatives", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--with-clips", action="store_true", help="write the clips too, then the windows")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    st, clips = read_shd(args.stretches), read_shd(args.clips)
    same = FrontendSpec.from_dict(st.attrs["frontend"]) == FrontendSpec.from_dict(clips.attrs["frontend"])
    if not same:
        raise SystemExit("the stretches and the clips were encoded by different front-ends")
    width = float(clips.attrs.get("duration_s", 1.0))
    unknown = clips.class_names.index("_unknown_")
    kw_names = [n for n in st.class_names if n != "_background_"]
    times, units, labels = [], [], []

    def cut(i: int, a: float, label: int) -> None:
        t = st.times[i]
        keep = (t >= a) & (t < a + width)
        times.append((t[keep] - a).astype(np.float32))
        units.append(st.units[i][keep])
        labels.append(label)

    positives = 0
    for i, spans in enumerate(stream_spans(st)):
        duration = float(st.attrs["duration_s"])
        busy = [(s - 0.05, e + 0.3) for _, s, e in spans]
        for cls, s, e in spans:
            for _ in range(args.per_keyword):
                a = s - rng.uniform(0.05, 0.35)
                if a >= 0 and e <= a + width and a + width <= duration:
                    cut(i, a, clips.class_names.index(kw_names[cls]))
                    positives += 1
        want = round(args.negatives * args.per_keyword * len(spans)) + 1
        for _ in range(20 * want):
            if want == 0:
                break
            a = rng.uniform(0, duration - width)
            if all(a + width <= b0 or a >= b1 for b0, b1 in busy):
                cut(i, a, unknown)
                want -= 1
    attrs = {k: v for k, v in clips.attrs.items() if k in ("frontend", "dt", "num_steps", "duration_s")}
    attrs["source"] = f"windows of {args.stretches}"
    names = list(clips.class_names)
    out = SpikeDataset(times, units, np.array(labels), clips.num_channels, names, attrs=attrs)
    if args.with_clips:  # the fine-tuning set: the clip model's clips and the windows, in one file
        out = SpikeDataset.concat([clips, out])
    write_shd(out, args.out)
    print(f"{positives} keyword windows, {len(labels) - positives} without a keyword -> {args.out}")


if __name__ == "__main__":
    main()

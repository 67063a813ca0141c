"""Issue #12 round 5 probe: does the SNN learn more when a conventional network teaches it (distillation)?

``features.py`` measured a small CNN on the SNN's own spike files 16-19 points above the SNN. This probe
trains that CNN on a corpus's training split (its ten digit classes), takes its logits for every training
clip, and trains the SNN (the project's trainer, sparse Eventprop kernel) on soft targets
``(1 - alpha) * one_hot + alpha * softmax(teacher / T)`` for the digit clips (``_unknown_`` and ``_silence_``
clips keep their one-hot targets), then scores it as ``real_runs.py`` does (FSDD, the synthetic test voices,
the Speech Commands sample).

A probe, not a feature: it swaps the sparse kernel's loss head for the soft-target cross-entropy by
patching ``edgekws.toolkit.train._sparse._head``, and ``TrainStep.prepare`` folds each batch's sample indices
into its labels for that head to decode. Nothing else of the trainer changes.

```
taskset -c 0 .venv/bin/python benchmarks/research/distill.py NAME runs/r4d/synth/all '{"alpha": 0.5, "T": 2}'
```
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

_STATE: dict[str, Any] = {}


def teacher_targets(corpus: Path, conf: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 12) soft targets for every clip of ``corpus/train.h5``, and the clips' labels."""
    from features import DIGITS, classify_cnn, digit_clips, h5_sequences

    from edgekws.toolkit.data import read_shd

    data = read_shd(corpus / "train.h5")
    x_all, _ = h5_sequences(data, digits_only=False)
    digit = digit_clips(data)
    trained = classify_cnn(
        x_all[digit], data.labels[digit], {}, {"seed": conf.get("teacher_seed", 0)}, logits_of=x_all
    )
    z = trained["logits"] / conf.get("T", 2.0)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    hard = np.eye(len(data.class_names))[data.labels]
    soft = hard.copy()
    alpha = conf.get("alpha", 0.5)
    soft[digit, : len(DIGITS)] = (1 - alpha) * hard[digit, : len(DIGITS)] + alpha * p[digit]
    agree = float(np.mean(p[digit].argmax(1) == data.labels[digit]))
    print(json.dumps({"teacher_train_accuracy": round(agree, 4), "clips": len(data)}), flush=True)
    return soft.astype(np.float32), data.labels


def _patch(train_labels: np.ndarray, soft: np.ndarray) -> None:
    """Each training batch's labels carry their sample indices (``label + K * index``: the trainer's feeder
    prepares batches ahead of the step, so no side channel would stay in step), and the sparse kernel's loss
    head decodes them into the soft-target cross-entropy."""
    import jax
    import jax.numpy as jnp

    from edgekws.toolkit.train import _sparse, _step

    k = soft.shape[1]
    original_prepare = _step.TrainStep.prepare
    original_head = _sparse._head

    def prepare(self: Any, data: Any, index: np.ndarray, dt_s: float, num_steps: int) -> Any:
        x, labels = original_prepare(self, data, index, dt_s, num_steps)
        if len(data) == len(train_labels) and np.array_equal(data.labels, train_labels):
            labels = np.asarray(labels, np.int32) + np.int32(k) * np.asarray(index, np.int32)
        return x, labels

    @jax.jit
    def soft_ce(scores: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        def ce(sc: jax.Array) -> jax.Array:
            return -jnp.mean(jnp.sum(q * jax.nn.log_softmax(sc, axis=-1), axis=1))

        return jax.value_and_grad(ce)(scores)

    def head(scores: Any, counts: Any, labels: Any, cfg: Any, sizes: tuple) -> Any:
        labels = np.asarray(labels)
        if labels.max() < k:  # not a training batch of ours (none come here undecoded in this probe)
            return original_head(scores, counts, labels, cfg, sizes)
        index, labels = np.divmod(labels, k)
        h = original_head(scores, counts, labels.astype(np.int32), cfg, sizes)
        ce, g = soft_ce(scores, jnp.asarray(soft[index]))
        _STATE["soft_batches"] = _STATE.get("soft_batches", 0) + 1
        return h._replace(loss=ce + h.reg, ce=ce, g_score=g)

    _step.TrainStep.prepare = prepare  # type: ignore[method-assign]
    _sparse._head = head


def main(name: str, corpus: Path, conf: dict[str, Any]) -> None:
    import real_runs

    soft, labels = teacher_targets(corpus, conf)
    _patch(labels, soft)
    train = {"epochs": 30, "augment": "none", "silent_boost": 0.02, **conf.get("train", {})}
    real_runs.train(
        name, corpus, {"train": train, "distill": {k: v for k, v in conf.items() if k != "train"}}
    )
    print(json.dumps({"soft_target_batches": _STATE.get("soft_batches", 0)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]))

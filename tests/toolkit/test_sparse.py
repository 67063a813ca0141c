"""The event-driven CPU kernel: its event batches, and its gradients against the dense JAX reference.

The exactness tests of tests/toolkit/test_eventprop.py run against both kernels; here the two kernels are
compared with each other directly, on networks where they emit the same spikes (so every difference is
float32 summation order).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from edgekws.packaging import NetworkSpec
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.train import LossConfig, eventprop_loss_and_grad, init_params
from edgekws.toolkit.train._sparse import SpikeEvents, sparse_loss_and_grad
from edgekws.toolkit.train._targets import StreamLoss, frame_targets

CASES = {
    "one recurrent layer": ((12,), (True,)),
    "recurrent then feed-forward": ((7, 5), (True, False)),
    "feed-forward then recurrent": ((6, 9), (False, True)),
}


def _problem(
    hidden: tuple[int, ...], recurrent: tuple[bool, ...], readout: str, steps: int = 83, seed: int = 0
) -> tuple[NetworkSpec, dict[str, jax.Array], np.ndarray, np.ndarray]:
    spec = NetworkSpec(
        num_inputs=10, hidden=hidden, recurrent=recurrent, num_outputs=4, num_steps=steps, readout=readout
    )
    params = init_params(spec, jax.random.PRNGKey(seed))
    params = {k: v * (12.0 if k.startswith("layer0") else 40.0) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    x = (rng.random((5, steps, 10)) < 0.15).astype(np.float32)
    return spec, params, x, rng.integers(0, 4, 5)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("readout", ["exp_weighted_mean", "max_over_time"])
def test_sparse_kernel_equals_the_dense_reference(case: str, readout: str) -> None:
    """Same spikes, loss, scores and counts, and every weight gradient within float32 rounding of the dense
    kernel's, for stacked, recurrent and feed-forward layers, both readout rules, with the regulariser."""
    spec, params, x, y = _problem(*CASES[case], readout)
    cfg = LossConfig(reg_lambda=1e-3, reg_nu=2.0, checkpoint_every=9)  # 10 segments, the last one short
    loss_d, aux_d, g_d = eventprop_loss_and_grad(params, x, y, spec, cfg)
    loss_s, aux_s, g_s = sparse_loss_and_grad(params, x, y, spec, cfg)
    for cd, cs in zip(aux_d["hidden_counts"], aux_s["hidden_counts"], strict=True):
        assert float(np.asarray(cd).sum()) > 20  # every layer spikes: the jumps are exercised
        np.testing.assert_array_equal(np.asarray(cd), np.asarray(cs))
    np.testing.assert_allclose(np.asarray(aux_s["scores"]), np.asarray(aux_d["scores"]), rtol=1e-5, atol=1e-7)
    assert float(loss_s) == pytest.approx(float(loss_d), rel=1e-6)
    assert float(aux_s["reg"]) == pytest.approx(float(aux_d["reg"]), rel=1e-6)
    assert g_s.keys() == g_d.keys() == params.keys()
    for name in g_d:
        d, s = np.asarray(g_d[name], np.float64), np.asarray(g_s[name], np.float64)
        assert np.abs(d).max() > 0, name
        assert np.linalg.norm(s - d) <= 1e-5 * np.linalg.norm(d), (
            name,
            np.linalg.norm(s - d) / np.linalg.norm(d),
        )


@pytest.mark.parametrize("mode", ["max", "frame"])
def test_sparse_kernel_equals_the_dense_reference_on_stream_targets(mode: str) -> None:
    """The time-resolved stream loss (frame terms and max-pooled windows over a 400-step stretch, state
    carried over 10 segments): same spikes, loss and accuracies, gradients within float32 rounding."""
    spec, params, x, _ = _problem((12,), (True,), "exp_weighted_mean", steps=400)
    spans = [[(0, 0.05, 0.09), (2, 0.2, 0.25)], [(1, 0.1, 0.14)], [], [(3, 0.3, 0.33)], [(1, 0.01, 0.02)]]
    targets = frame_targets(spans, 400, 0.001, 3, StreamLoss(mode, window_ms=40.0, guard_ms=20.0))
    cfg = LossConfig(reg_lambda=1e-4, reg_nu=5.0, checkpoint_every=41)
    loss_d, aux_d, g_d = eventprop_loss_and_grad(params, x, targets, spec, cfg)
    loss_s, aux_s, g_s = sparse_loss_and_grad(params, x, targets, spec, cfg)
    counts = [np.asarray(a["hidden_counts"][0]) for a in (aux_d, aux_s)]
    np.testing.assert_array_equal(*counts)
    assert float(loss_s) == pytest.approx(float(loss_d), rel=1e-5)
    for key in ("frame_accuracy", "window_accuracy"):
        assert float(aux_s[key]) == pytest.approx(float(aux_d[key]))
    for name in g_d:
        d, s = np.asarray(g_d[name], np.float64), np.asarray(g_s[name], np.float64)
        assert np.abs(d).max() > 0, name
        assert np.linalg.norm(s - d) <= 1e-5 * np.linalg.norm(d), (name, np.linalg.norm(s - d))


def test_sparse_kernel_result_does_not_depend_on_the_number_of_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backward pass sums a fixed number of sample chunks in a fixed order: 1 or 2 threads, same bits."""
    import numba

    from edgekws.toolkit.train import _sparse

    spec, params, x, y = _problem((12,), (True,), "exp_weighted_mean")
    x, y = np.concatenate([x] * 4), np.concatenate([y] * 4)  # 20 samples: several per chunk
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(_sparse, "PARALLEL_WORK", 1 if threads > 1 else 10**12)
        results.append(sparse_loss_and_grad(params, x, y, spec, LossConfig()))
        assert numba.get_num_threads() == min(
            threads, numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0))
        )
    for name in results[0][2]:
        np.testing.assert_array_equal(np.asarray(results[0][2][name]), np.asarray(results[1][2][name]))


def test_events_round_trip_and_binary_binning() -> None:
    """Events of a dense raster give the raster back; repeated (step, channel) pairs count once, pairs outside
    the grid are dropped, and a data set binned into events equals its dense binning."""
    rng = np.random.default_rng(1)
    x = (rng.random((3, 20, 6)) < 0.2).astype(np.float32)
    ev = SpikeEvents.from_dense(x)
    assert ev.shape == (3, 20, 6) and ev.ptr.shape == (3, 21) and len(ev.ch) == int(x.sum())
    np.testing.assert_array_equal(ev.to_dense(), x)
    pairs = [
        (np.array([0, 0, 5, 19, 20, -1]), np.array([2, 2, 1, 5, 0, 3])),
        (np.array([], int), np.array([], int)),
    ]
    dense = SpikeEvents.from_steps(pairs, 20, 6).to_dense()
    assert (
        dense.sum() == 3 and dense[0, 0, 2] == dense[0, 5, 1] == dense[0, 19, 5] == 1 and dense[1].sum() == 0
    )
    b, t, c = np.nonzero(x)
    shuffled = rng.permutation(np.concatenate([np.arange(len(b))] * 2))  # every event twice, any order
    per_sample = [(t[shuffled][b[shuffled] == i], c[shuffled][b[shuffled] == i]) for i in range(3)]
    again = SpikeEvents.from_steps(per_sample, 20, 6)
    np.testing.assert_array_equal(again.ptr, ev.ptr)
    np.testing.assert_array_equal(again.ch, ev.ch)  # channels ascending within each step
    data = SpikeDataset.from_raster(list((x > 0).astype(np.uint8)), [0, 1, 0], 0.001, ["a", "b"])
    from_data = SpikeEvents.from_steps([data.event_steps(i, 0.001, 20) for i in range(3)], 20, 6)
    np.testing.assert_array_equal(from_data.to_dense(), data.bin(0.001, 20).astype(np.float32))


def test_non_binary_input_and_bad_shapes_are_refused() -> None:
    """Graded inputs (counts) are refused with the fix; wrong shapes are all named in one error."""
    spec, params, x, y = _problem((12,), (True,), "exp_weighted_mean")
    with pytest.raises(ValueError, match="binary spikes"):
        sparse_loss_and_grad(params, x * 2, y, spec, LossConfig())
    bad = dict(params)
    bad["layer0.weight_rec"] = bad["layer0.weight_rec"][:3]
    with pytest.raises(ValueError, match=r"layer0\.weight_rec.*shape.*labels"):
        sparse_loss_and_grad(bad, x, y[:2], spec, LossConfig())

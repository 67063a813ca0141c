"""The training loop: learning, checkpoints, Ctrl-C, resume equivalence, model selection, run files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _spikes import C, T, two_class_data

from edgekws.toolkit.train import TrainConfig, TrainError, load_run, train
from edgekws.toolkit.train._loop import time_grid
from edgekws.toolkit.train._run import latest_checkpoint, read_metrics


def tiny_config(**changes: object) -> TrainConfig:
    base = TrainConfig(
        hidden=(16,),
        epochs=3,
        batch_size=8,
        learning_rate=0.01,
        ease_in=False,
        augment="none",
        method="bptt",
        reg_lambda=1e-6,
        silent_boost=0.3,  # the 8-channel toy data cannot make the paper's initial weights spike
        eval_batch_size=16,
    )
    return base.replace(**changes)


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("method", ["eventprop", "bptt"])
def test_training_increases_accuracy_on_a_separable_task(tmp_path: Path, method: str) -> None:
    """Training a tiny network (either gradient) on two separable classes reaches high validation accuracy."""
    data, val = two_class_data(48, 0), two_class_data(32, 1)
    result = train(data, tmp_path / "run", tiny_config(epochs=4, method=method), val_data=val, progress=False)
    history = read_metrics(tmp_path / "run")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["val_accuracy"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.selection == "val_accuracy"
    assert result.best_score == max(h["val_accuracy"] for h in history)
    run = load_run(tmp_path / "run")
    assert run.spec.num_inputs == C and run.spec.num_steps == T and run.spec.class_names == ("low", "high")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished" and info["selection"]["best_epoch"] == result.best_epoch
    assert {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "hidden_rate_hz",
        "seconds",
    } <= set(history[0])
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "epoch_001.npz",
        "epoch_002.npz",
        "epoch_003.npz",
        "epoch_004.npz",
    ]


@pytest.mark.parametrize(
    ("method", "kernel"), [("bptt", "dense"), ("eventprop", "dense"), ("eventprop", "sparse")]
)
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path: Path, method: str, kernel: str) -> None:
    """Ctrl-C at a batch saves a checkpoint; --resume then ends with exactly the uninterrupted parameters
    (every gradient kernel; the batches come from the background feed)."""
    data = two_class_data(40, 2)
    config = tiny_config(augment="shift-blend", shift_channels=200.0, blend_fraction=0.5, method=method)
    train(data, tmp_path / "full", config, progress=False, kernel=kernel)

    def interrupt(epoch: int, batch: int, metrics: dict[str, float]) -> None:
        if (epoch, batch) == (1, 2):
            raise KeyboardInterrupt

    part = train(data, tmp_path / "part", config, progress=False, on_batch=interrupt, kernel=kernel)
    assert part.interrupted and part.epochs_done == 1
    checkpoint = latest_checkpoint(tmp_path / "part")
    assert checkpoint is not None and checkpoint.name == "interrupt_e001_b0003.npz"
    info = json.loads((tmp_path / "part" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["placement"]["kernel"] == kernel
    resumed = train(data, tmp_path / "part", config, resume=True, progress=False, kernel=kernel)
    assert not resumed.interrupted and resumed.epochs_done == config.epochs
    a, b = (
        _params(tmp_path / "full" / "checkpoints" / "epoch_003.npz"),
        _params(tmp_path / "part" / "checkpoints" / "epoch_003.npz"),
    )
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in read_metrics(tmp_path / "part")]


def test_a_run_folder_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    """Reusing a run without --resume, or resuming nothing, fails with the fix in the message."""
    data = two_class_data(16, 3)
    config = tiny_config(epochs=1)
    with pytest.raises(TrainError, match="no checkpoint to resume"):
        train(data, tmp_path / "run", config, resume=True, progress=False)
    train(data, tmp_path / "run", config, progress=False)
    with pytest.raises(TrainError, match="--resume"):
        train(data, tmp_path / "run", config, progress=False)
    with pytest.raises(TrainError, match="changed: \\['seed'\\]"):
        train(data, tmp_path / "run", config.replace(seed=7, epochs=2), resume=True, progress=False)


def test_without_validation_the_best_epoch_is_chosen_by_training_accuracy(tmp_path: Path) -> None:
    """With no validation set, run.json records training-accuracy selection and says so."""
    result = train(two_class_data(16, 4), tmp_path / "run", tiny_config(epochs=2), progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert result.selection == "train_accuracy" == info["selection"]["metric"]
    assert "no validation set" in info["selection"]["note"]
    history = read_metrics(tmp_path / "run")
    assert history[0]["val_accuracy"] is None
    assert result.best_score == max(h["train_accuracy"] for h in history)


def test_silent_neurons_get_their_input_weights_raised(tmp_path: Path) -> None:
    """A hidden neuron that never spiked in an epoch has all its input weights raised by the boost."""
    data = two_class_data(16, 5)
    config = tiny_config(epochs=1, learning_rate=1e-9, silent_boost=0.5)
    train(data, tmp_path / "run", config, progress=False)
    from edgekws.toolkit.train._loop import _core

    model, _ = _core()
    import jax

    spec = load_run(tmp_path / "run").spec
    init = {k: np.asarray(v) for k, v in model.init_params(spec, jax.random.PRNGKey(config.seed)).items()}
    after = _params(tmp_path / "run" / "checkpoints" / "epoch_001.npz")
    delta = after["param/layer0.weight"] - init["layer0.weight"]
    boost = 0.5 * model.genn_weight_scale(spec)
    boosted_rows = np.isclose(delta, boost, atol=1e-6).all(axis=1)
    history = read_metrics(tmp_path / "run")
    assert boosted_rows.sum() == history[0]["silent_neurons"] > 0


def test_time_grid_comes_from_the_data_attrs_or_the_longest_sample() -> None:
    """dt and steps default to the data's attrs, else 1 ms and the last spike."""
    data = two_class_data(4, 6)
    assert time_grid(data, TrainConfig()) == (1.0, T)
    data.attrs.clear()
    last = float(data.durations().max())
    assert time_grid(data, TrainConfig()) == (1.0, round(last * 1000) + 1)
    assert time_grid(data, TrainConfig(dt_ms=2.0, num_steps=10)) == (2.0, 10)


def test_cosine_decay_follows_the_ease_in_and_ends_at_the_floor() -> None:
    """With lr_decay="cosine" the rate ramps up as in the paper, about halves mid-run, ends at the floor."""
    config = TrainConfig(learning_rate=1e-3, lr_decay="cosine", lr_min_fraction=0.05)
    assert config.learning_rate_at(0, 1000) == pytest.approx(1e-6, rel=1e-5)
    assert config.learning_rate_at(500, 1000) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5), rel=1e-5)
    assert config.learning_rate_at(10**6, 1000) == pytest.approx(5e-5, rel=1e-5)
    assert TrainConfig().learning_rate_at(10**6) == pytest.approx(1e-3, rel=1e-6)


def test_grad_clip_scales_a_huge_gradient_down_to_the_clip_norm() -> None:
    """With grad_clip c, Adam sees a gradient of norm > c as that gradient rescaled to norm c."""
    import jax.numpy as jnp

    from edgekws.toolkit.train._step import optimizer as _optimizer

    params = {"w": jnp.zeros(3)}
    small, huge = {"w": jnp.array([0.1, -0.2, 0.05])}, {"w": jnp.array([300.0, 400.0, 0.0])}
    scaled = {"w": huge["w"] / 500.0}

    def second_update(opt: object, g2: dict) -> np.ndarray:
        state = opt.init(params)  # type: ignore[attr-defined]
        _, state = opt.update(small, state, params)  # type: ignore[attr-defined]
        upd, _ = opt.update(g2, state, params)  # type: ignore[attr-defined]
        return np.asarray(upd["w"])

    clipped = second_update(_optimizer(0.01, False, grad_clip=1.0), huge)
    np.testing.assert_allclose(clipped, second_update(_optimizer(0.01, False), scaled), rtol=1e-6)
    assert not np.allclose(clipped, second_update(_optimizer(0.01, False), huge))


def test_training_with_clip_and_dropout_resumes_exactly(tmp_path: Path) -> None:
    """grad_clip and input_dropout keep a run deterministic: an interrupted run resumes to the same end."""
    data = two_class_data(40, 3)
    config = tiny_config(grad_clip=1.0, input_dropout=0.2, time_shift_ms=5.0)
    train(data, tmp_path / "full", config, progress=False)

    def interrupt(epoch: int, batch: int, metrics: dict[str, float]) -> None:
        if (epoch, batch) == (2, 1):
            raise KeyboardInterrupt

    train(data, tmp_path / "part", config, progress=False, on_batch=interrupt)
    train(data, tmp_path / "part", config, resume=True, progress=False)
    a = _params(tmp_path / "full" / "checkpoints" / "epoch_003.npz")
    b = _params(tmp_path / "part" / "checkpoints" / "epoch_003.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_time_shift_sources_delay_only_the_named_sources_and_refuse_bad_names(tmp_path: Path) -> None:
    """time_shift_sources delays only the samples whose metadata source it names (the others' events keep
    their times); a name no sample has, data without sources, or the option without time_shift_ms or with
    shift-blend are refused with what to do."""
    from edgekws.toolkit.data import SpikeDataset
    from edgekws.toolkit.train import ConfigError
    from edgekws.toolkit.train._loop import _epoch_data, time_shift_mask

    plain = two_class_data(8, 0)
    sources = np.array(["espeak-ng", "speech-commands"] * 4)
    data = SpikeDataset(
        times=plain.times, units=plain.units, labels=plain.labels, num_channels=plain.num_channels,
        class_names=list(plain.class_names), extra={"source": sources}, attrs=dict(plain.attrs),
    )  # fmt: skip
    config = tiny_config(time_shift_ms=10.0, time_shift_sources=("espeak-ng",))
    moved = set()
    for epoch in range(4):
        shifted, _ = _epoch_data(data, config, epoch, 0.001, time_shift_mask(data, config))
        for i in range(len(data)):
            same = np.array_equal(shifted.times[i], data.times[i])
            assert same or sources[i] == "espeak-ng", i
            if not same:
                moved.add(i)
    assert moved, "the named source's samples are delayed"
    assert TrainConfig.from_dict(
        {"time_shift_ms": 5.0, "time_shift_sources": "flite"}
    ).time_shift_sources == ("flite",)
    with pytest.raises(
        TrainError, match=r"\['kokoro'\] name no training sample.*'espeak-ng', 'speech-commands'"
    ):
        train(
            data,
            tmp_path / "typo",
            tiny_config(time_shift_ms=10.0, time_shift_sources=("kokoro",)),
            progress=False,
        )
    assert not (tmp_path / "typo").exists(), "a refused run writes nothing"
    with pytest.raises(TrainError, match="do not say theirs"):
        train(plain, tmp_path / "bare", config, progress=False)
    with pytest.raises(ConfigError, match="set time_shift_ms too"):
        tiny_config(time_shift_sources=("espeak-ng",))
    with pytest.raises(ConfigError, match="use augment 'none' or 'shift'"):
        tiny_config(augment="shift-blend", time_shift_ms=10.0, time_shift_sources=("espeak-ng",))


def test_time_constants_reach_the_run_and_change_the_dynamics(tmp_path: Path) -> None:
    """tau_mem_ms/tau_syn_ms of the config are the trained network's (its spec, hence every backend's
    12-bit decays: a longer time constant retains more per step), and a non-positive one is refused."""
    from edgekws.toolkit.train import ConfigError

    data = two_class_data(16, 0)
    train(data, tmp_path / "slow", tiny_config(epochs=1, tau_mem_ms=40.0, tau_syn_ms=8.0), progress=False)
    slow = load_run(tmp_path / "slow")
    assert (slow.spec.tau_mem_ms, slow.spec.tau_syn_ms) == (40.0, 8.0)
    assert slow.spec.alpha_mem > TrainConfig().network_spec(C, 2, 1.0, T).alpha_mem
    train(data, tmp_path / "fast", tiny_config(epochs=1), progress=False)
    assert load_run(tmp_path / "fast").spec.tau_mem_ms == 20.0
    with pytest.raises(ConfigError, match="tau_mem_ms"):
        TrainConfig(tau_mem_ms=0.0)

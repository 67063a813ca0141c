"""Tests for the streaming keyword spotter (staggered lanes on the real fixed-point emulator)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _devices import LABELS as _LABELS
from _devices import SPEC, small_network

from edgekws.agent import DetectionConfig
from edgekws.agent._decision import TimeCourse, decide
from edgekws.agent._frontend import FrontendSpec
from edgekws.agent._sources import AudioChunk
from edgekws.agent._spotter import Spotter, WindowScore
from edgekws.agent.backends import Backend, EmulatorBackend
from edgekws.packaging import DetectionSpec
from edgekws.packaging._fixedpoint import FixedPointNetwork

LABELS = list(_LABELS)


class InterfaceOnly(Backend, register=False):
    """The real emulator seen only through the Backend interface (no LaneStates, no idle skipping)."""

    name = "interface-only"

    def __init__(self, net: FixedPointNetwork) -> None:
        self._b = EmulatorBackend(net)

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def open(cls, model_dir: Any, config: Any) -> Backend:  # pragma: no cover - not used here
        raise NotImplementedError

    @property
    def num_inputs(self) -> int:
        return self._b.num_inputs

    @property
    def num_outputs(self) -> int:
        return self._b.num_outputs

    @property
    def streaming(self) -> bool:
        return True

    def run(self, spikes: np.ndarray) -> np.ndarray:
        return self._b.run(spikes)

    def reset(self, batch_size: int = 1) -> None:
        self._b.reset(batch_size)

    def step(self, chunk: np.ndarray) -> np.ndarray:
        return self._b.step(chunk)


def _spikes(steps: int, rate: float, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((steps, SPEC.num_channels)) < rate).astype(np.uint8)


def _collect(spotter: Spotter) -> list[WindowScore]:
    seen: list[WindowScore] = []
    spotter.on_window = seen.append
    return seen


def test_every_lane_window_equals_a_fresh_run_of_the_network() -> None:
    """Each scored window equals decide() of the network run from zero state on that window (parity)."""
    net = small_network(seed=0)
    spotter = Spotter(
        SPEC,
        EmulatorBackend(net),
        LABELS,
        window_steps=100,
        config=DetectionConfig(lanes=4, min_input_rate_hz=0.0),
    )
    seen = _collect(spotter)
    x = _spikes(460, 0.05)
    for i in range(0, 460, 37):  # chunks that do not align with the hop
        spotter.process_spikes(x[i : i + 37])
    assert [w.end_step for w in seen] == list(range(100, 451, 25))
    reference = EmulatorBackend(net)
    for w in seen:
        scores = decide(reference.run(x[w.start_step : w.end_step][None])).scores[0]
        p = np.exp(scores - scores.max())
        assert w.probabilities is not None
        np.testing.assert_allclose(w.probabilities, p / p.sum(), rtol=1e-12)


def test_lanes_through_the_generic_interface_agree_with_batched_state() -> None:
    """Lanes built from separate backend instances score the same windows as the batched emulator state."""
    net = small_network(seed=3)
    cfg = DetectionConfig(lanes=3, min_input_rate_hz=0.0)
    a = Spotter(SPEC, EmulatorBackend(net), LABELS, window_steps=60, config=cfg)
    b = Spotter(
        SPEC,
        InterfaceOnly(net),
        LABELS,
        window_steps=60,
        config=cfg,
        backend_factory=lambda: InterfaceOnly(net),
    )
    wa, wb = _collect(a), _collect(b)
    x = _spikes(300, 0.08, seed=5)
    a.process_spikes(x)
    for i in range(0, 300, 16):
        b.process_spikes(x[i : i + 16])
    assert len(wa) == len(wb) > 5
    for u, v in zip(wa, wb, strict=True):
        assert (u.lane, u.end_step) == (v.lane, v.end_step)
        np.testing.assert_allclose(u.probabilities, v.probabilities, rtol=1e-12)


def test_generic_backend_without_factory_is_refused_for_several_lanes() -> None:
    """A backend that cannot reset one stream needs a factory for more than one lane."""
    with pytest.raises(ValueError, match="factory"):
        Spotter(
            SPEC,
            InterfaceOnly(small_network(seed=0)),
            LABELS,
            window_steps=50,
            config=DetectionConfig(lanes=2),
        )


def test_silence_gives_no_detection_and_no_scores() -> None:
    """With no input spikes the silence guard skips every window and nothing is detected."""
    spotter = Spotter(
        SPEC,
        EmulatorBackend(small_network(seed=0)),
        LABELS,
        window_steps=50,
        config=DetectionConfig(lanes=5, threshold=0.01),
    )
    seen = _collect(spotter)
    assert spotter.process_spikes(np.zeros((400, SPEC.num_channels), dtype=np.uint8)) == []
    assert seen and all(w.probabilities is None for w in seen)


def _best_class_trace(net: FixedPointNetwork, x: np.ndarray, window: int, lanes: int) -> list[Any]:
    s = Spotter(
        SPEC,
        EmulatorBackend(net),
        LABELS,
        window_steps=window,
        config=DetectionConfig(lanes=lanes, min_input_rate_hz=0.0),
    )
    seen = _collect(s)
    s.process_spikes(x)
    return [w.probabilities for w in seen if w.probabilities is not None]


def test_threshold_refractory_and_ignored_labels() -> None:
    """Detections need the threshold, skip ignored labels, and repeat no faster than the refractory window."""
    net = small_network(seed=7)
    x = _spikes(2000, 0.06, seed=9)
    probs = _best_class_trace(net, x, 100, 4)
    best = [int(np.argmax(p)) for p in probs]
    keyword = max({1, 2}, key=best.count)
    assert best.count(keyword) > 10, "test network should favour a keyword class on this input"
    ignore = tuple(name for i, name in enumerate(LABELS) if i != keyword)

    def run(refractory_ms: float, threshold: float) -> list[float]:
        s = Spotter(
            SPEC,
            EmulatorBackend(net),
            LABELS,
            window_steps=100,
            config=DetectionConfig(
                lanes=4,
                smoothing=1,
                threshold=threshold,
                refractory_ms=refractory_ms,
                min_input_rate_hz=0.0,
                ignore_labels=ignore,
            ),
        )
        dets = []
        for i in range(0, 2000, 20):
            chunk = AudioChunk(np.zeros(320, np.float32), 16000, i / 1000, 0.0, "f.wav", i / 1000)
            dets += s.process_spikes(x[i : i + 20], chunk)
        assert all(d.label == LABELS[keyword] and d.origin == "f.wav" for d in dets)
        return [d.audio_time_s for d in dets]

    many = run(0.0, 1e-6)
    assert len(many) == best.count(keyword)
    spaced = run(500.0, 1e-6)
    assert len(spaced) < len(many) and np.all(np.diff(spaced) >= 0.5 - 1e-9)
    confident = sorted(float(p[keyword]) for p in probs if int(np.argmax(p)) == keyword)
    median = confident[len(confident) // 2]
    assert len(run(0.0, median)) == sum(c >= median for c in confident) < len(many)


def test_audio_in_gives_detections_with_latency() -> None:
    """Audio chunks go through the front-end; detections report end-of-window times and a small latency."""
    spotter = Spotter(
        SPEC,
        EmulatorBackend(small_network(seed=7)),
        LABELS,
        window_steps=200,
        config=DetectionConfig(
            lanes=2, threshold=1e-6, refractory_ms=0.0, min_input_rate_hz=0.0, ignore_labels=()
        ),
    )
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    import time

    dets = []
    for i in range(0, 16000, 320):
        chunk = AudioChunk(audio[i : i + 320], 16000, i / 16000, time.monotonic(), "noise", i / 16000)
        dets += spotter.process(chunk)
    assert spotter.step == 1000
    assert [round(d.audio_time_s, 3) for d in dets] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert all(0 <= d.latency_s < 0.5 for d in dets)


def test_mismatched_bundle_is_refused() -> None:
    """A front-end whose channel count differs from the network's inputs is a clear error."""
    with pytest.raises(ValueError, match="input channels"):
        Spotter(FrontendSpec(), EmulatorBackend(small_network(seed=0)), LABELS)


def test_idle_lanes_are_skipped_without_changing_any_score() -> None:
    """In silence idle lanes are not stepped, and every window scores exactly as with all lanes stepped."""
    net = small_network(seed=11)
    x = _spikes(900, 0.05, seed=2)
    x[:250] = 0  # leading silence
    x[400:700] = 0  # a pause between two words
    cfg = DetectionConfig(lanes=5, min_input_rate_hz=0.0)
    fast = Spotter(SPEC, EmulatorBackend(net), LABELS, window_steps=100, config=cfg)
    full = Spotter(SPEC, EmulatorBackend(net), LABELS, window_steps=100, config=cfg)
    full._lanes.can_skip = False
    wf, wl = _collect(fast), _collect(full)
    for i in range(0, 900, 30):
        fast.process_spikes(x[i : i + 30])
        full.process_spikes(x[i : i + 30])
    assert [w.end_step for w in wf] == [w.end_step for w in wl]
    for a, b in zip(wf, wl, strict=True):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert full._lanes.lane_steps == 5 * 900
    assert fast._lanes.lane_steps < 0.75 * full._lanes.lane_steps


# ---- always-on mode ---------------------------------------------------------------------------------------

ALWAYS_ON_LABELS = ["_background_", "yes", "no"]


def _always_on(**settings: float) -> DetectionSpec:
    base = {"smoothing_ms": 20.0, "threshold": 0.5, "min_margin": 0.0, "refractory_ms": 300.0}
    return DetectionSpec("always_on", **{**base, **settings})


@pytest.mark.parametrize("generic", [False, True])
def test_always_on_runs_one_never_reset_network_and_decides_on_its_time_course(generic: bool) -> None:
    """Always-on: the readout the spotter sees over a 3 s stream fed in 20-step chunks is the network's run
    over the whole stream from zero state (one state, never reset), its detections are the time-course
    stage's on that trace, and one inference is counted per second of audio (on the emulator and on any
    backend through the plain interface), whatever the bundle's num_steps (a training stretch's length)."""
    net = small_network(seed=3)
    backend: Backend = InterfaceOnly(net) if generic else EmulatorBackend(net)
    spikes = _spikes(3000, 0.08, seed=5)
    spec = _always_on()
    # a stream model's bundle says num_steps = its training stretch (20 s), which is no window of this run
    spotter = Spotter(SPEC, backend, ALWAYS_ON_LABELS, window_steps=20000, detection=spec)
    assert spotter.mode == "always_on"
    seen: list[tuple[int, np.ndarray]] = []
    spotter.on_readout = lambda step, v: seen.append((step, v))
    found = [d for i in range(0, 3000, 20) for d in spotter.process_spikes(spikes[i : i + 20])]
    trace = np.concatenate([v for _, v in seen])
    assert [s for s, _ in seen] == list(range(0, 3000, 20))
    np.testing.assert_array_equal(trace, EmulatorBackend(net).run(spikes[None])[0])
    expected = TimeCourse(spec, ALWAYS_ON_LABELS, SPEC.dt_ms).push(trace)
    assert found and [(d.audio_time_s, d.index) for d in found] == [
        ((s + 1) * 1e-3, k) for s, k, _ in expected
    ]
    assert all(d.label != "_background_" for d in found)
    assert spotter.inferences == 3 and spotter.network_steps == 3000  # one per second of network time
    assert spotter.backend is backend  # what the daemon's energy report reads the op counts from
    spotter.close()


def test_the_bundle_says_the_mode_and_the_config_may_only_confirm_it() -> None:
    """A per-utterance model cannot be forced to run always-on, nor a stream model in lanes; auto follows
    the bundle."""
    net = small_network(seed=3)
    lanes_cfg, on_cfg = DetectionConfig(mode="lanes"), DetectionConfig(mode="always_on")
    with pytest.raises(ValueError, match="trained on streams, never reset"):
        Spotter(SPEC, EmulatorBackend(net), ALWAYS_ON_LABELS, config=lanes_cfg, detection=_always_on())
    with pytest.raises(ValueError, match="trained on clips"):
        Spotter(SPEC, EmulatorBackend(net), ALWAYS_ON_LABELS, config=on_cfg)
    assert Spotter(SPEC, EmulatorBackend(net), ALWAYS_ON_LABELS).mode == "lanes"


def test_agent_config_overrides_only_the_settings_it_sets() -> None:
    """The bundle's decision settings apply unless [detection] sets one explicitly."""
    net = small_network(seed=3)
    spec = _always_on(threshold=0.7, min_margin=0.1, refractory_ms=500.0)
    cfg = DetectionConfig(threshold=0.9, smoothing_ms=50.0)
    spotter = Spotter(SPEC, EmulatorBackend(net), ALWAYS_ON_LABELS, config=cfg, detection=spec)
    s = spotter.settings
    assert (s.threshold, s.smoothing_ms, s.min_margin, s.refractory_ms) == (0.9, 50.0, 0.1, 500.0)


@pytest.mark.parametrize("generic", [False, True])
def test_sliding_scores_the_last_window_of_one_never_reset_network(generic: bool) -> None:
    """Sliding: every hop the window of the last ``window_steps`` is scored by decide() on the readout of
    ONE network run over the whole stream from zero state (never reset), so the windows' probabilities differ
    from the lanes' (each from zero state) only by the state carried in; one network-step per audio step."""
    net = small_network(seed=3)
    backend: Backend = InterfaceOnly(net) if generic else EmulatorBackend(net)
    cfg = DetectionConfig(mode="sliding", lanes=4, min_input_rate_hz=0.0)
    spotter = Spotter(SPEC, backend, LABELS, window_steps=100, config=cfg)
    assert spotter.mode == "sliding"
    seen = _collect(spotter)
    x = _spikes(460, 0.05)
    for i in range(0, 460, 37):  # chunks that do not align with the hop
        spotter.process_spikes(x[i : i + 37])
    assert [w.end_step for w in seen] == list(range(100, 451, 25))
    whole = EmulatorBackend(net).run(x[None])[0]
    fresh = EmulatorBackend(net)
    carried = 0
    for w in seen:
        scores = decide(whole[w.start_step : w.end_step][None]).scores[0]
        p = np.exp(scores - scores.max())
        assert w.probabilities is not None
        np.testing.assert_allclose(w.probabilities, p / p.sum(), rtol=1e-12)
        own = decide(fresh.run(x[w.start_step : w.end_step][None])).scores[0]
        carried += not np.allclose(own, scores)
    assert carried > 0  # windows after the first start from the state the audio before them left
    assert spotter.network_steps == 460 and spotter.inferences == 4
    assert spotter.backend is backend
    spotter.close()


def test_sliding_serves_only_per_utterance_models_on_streaming_backends() -> None:
    """A stream-trained bundle is refused in sliding mode (it decides on its time course), naming the fix."""
    net = small_network(seed=3)
    cfg = DetectionConfig(mode="sliding")
    with pytest.raises(ValueError, match="mode = 'auto'"):
        Spotter(SPEC, EmulatorBackend(net), ALWAYS_ON_LABELS, config=cfg, detection=_always_on())

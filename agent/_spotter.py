"""Keyword spotting on a continuous stream, with train/serve parity (the schemes are in docs/agent.md).

Two modes, as the bundle says its model was trained (``DetectionSpec.mode``, ``[detection] mode``):

- **always-on** (a model trained on long stretches, never reset): one network state per audio stream, stepped
  chunk by chunk as the audio arrives, and :class:`~edgekws.agent._decision.TimeCourse` deciding on the
  readout's time course (smoothed per-step probabilities, threshold, margin, refractory time). One network's
  work per audio second.
- **lanes** (a per-utterance model, trained on 1 s clips from zero state), below;
- **sliding** (the same per-utterance model served by one network): the lanes' windows and decision stages,
  below, over the readout of a single network that is never reset (``[detection] mode = "sliding"``). Every
  window then starts from the state the audio before it left instead of zero state, which the network was
  not trained for, but the state of a leaky network forgets in tens of milliseconds; one network's work per
  audio second instead of ``K``. Whether a model keeps its accuracy so is measured, not assumed
  (``benchmarks/kws_stream.py`` runs both on the same streams; docs/agent.md, "Sliding windows").

The per-utterance network was trained on windows of ``T`` steps (1 s), each from zero state, scored by
:func:`edgekws.agent.decide` over the whole window. To serve it on an endless stream without changing
what it computes, the spotter runs ``K`` **staggered lanes**: ``K`` instances of the network, batched on
one backend, all fed the same spikes. Lane ``k`` is reset to zero state at global steps
``g ≡ k·T/K (mod T)``, so each lane sees exactly the kind of window the network was trained on, and one
lane completes a window every hop ``H = T/K`` steps. A completed window is scored by ``decide`` on its
full readout trace (bit-for-bit the training-time rule), then:

1. **silence guard**: a window whose mean input spike rate is below ``min_input_rate_hz`` is not scored
   (and clears the smoothing history: silence separates words);
2. **smoothing**: the class probabilities of the last ``smoothing`` scored windows are averaged;
3. **threshold and unknown guard**: the best class must reach ``threshold`` and beat the second by
   ``min_margin``, and must not be a silence/unknown class (``ignore_labels``);
4. **refractory window**: the same label is not reported again within ``refractory_ms`` of audio.

Each detection carries its label, confidence, the stream time of the end of the window, and its
latency: wall time from when the window's last audio sample was available to the event.

Cost: ``K`` network instances per stream; latency: a window ends at most ``H`` after the keyword
ends. ``K = 20`` (hop 50 ms, the ``[detection] lanes`` default) is the default compromise.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgekws.agent._config import DetectionConfig
from edgekws.agent._decision import TimeCourse, decide
from edgekws.agent._frontend import Frontend, FrontendSpec
from edgekws.agent._sources import AudioChunk
from edgekws.agent.backends import Backend, LaneStates
from edgekws.packaging import DEFAULT_READOUT, DetectionSpec, Readout

ALWAYS_ON_OVERRIDES = ("threshold", "min_margin", "refractory_ms", "smoothing_ms")
#: An always-on network's inference: this much audio stepped through it (a lanes-mode window is 1 s as well).
ALWAYS_ON_INFERENCE_S = 1.0


def resolve_mode(config: DetectionConfig, spec: DetectionSpec) -> str:
    """The mode the spotter runs: the bundle's, which ``[detection] mode`` may only confirm, or ``sliding``
    for a per-utterance model."""
    if config.mode == "sliding":
        if spec.mode != "lanes":
            raise ValueError(
                "[detection] mode = 'sliding' serves a per-utterance model (trained on clips) with one "
                "never-reset network; this bundle's model was trained on streams (always_on) and decides on "
                "its readout's time course: set mode = 'auto' (or 'always_on')"
            )
        return "sliding"
    if config.mode not in ("auto", spec.mode):
        trained = "clips (lanes)" if spec.mode == "lanes" else "streams, never reset (always_on)"
        raise ValueError(
            f"[detection] mode = {config.mode!r}, but the bundle's model was trained on {trained}; set "
            f"mode = 'auto' (or {spec.mode!r}), or install a bundle trained for {config.mode!r}"
        )
    return spec.mode


def always_on_settings(config: DetectionConfig, spec: DetectionSpec) -> DetectionSpec:
    """The bundle's always-on decision settings with those the agent config sets explicitly on top."""
    changes = {k: getattr(config, k) for k in ALWAYS_ON_OVERRIDES if k in config.model_fields_set}
    return replace(spec, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Detection:
    """A keyword heard in the stream."""

    label: str
    index: int  # class index in the readout
    confidence: float  # smoothed softmax probability of the class
    audio_time_s: float  # stream time of the end of the deciding window (always-on: of the deciding step)
    window_start_s: float  # always-on: the start of the smoothing window
    latency_s: float  # wall time from the window's last sample being available to this event
    lane: int  # always-on: 0
    origin: str = ""  # file (or source) the window ended in
    origin_time_s: float = 0.0  # end of the window within ``origin``

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "audio_time_s": round(self.audio_time_s, 4),
            "window_start_s": round(self.window_start_s, 4),
            "latency_ms": round(self.latency_s * 1e3, 3),
            "lane": self.lane,
            "origin": self.origin,
            "origin_time_s": round(self.origin_time_s, 4),
        }


@dataclass(frozen=True)
class WindowScore:
    """One lane's completed window (what the decision stages above see)."""

    lane: int
    start_step: int
    end_step: int  # exclusive
    probabilities: np.ndarray | None  # None when the silence guard skipped the window
    input_spikes: int


class _Lanes:
    """``K`` network instances on one backend, each resettable on its own.

    A backend with :class:`~edgekws.agent.backends.LaneStates` (the emulator) keeps one batched state whose
    lanes are zeroed and advanced on their own; any other streaming backend gets ``K`` instances from
    ``factory``, each stepped with batch 1.

    Idle lanes are skipped (exactly) where the backend ``rests_without_input``: a lane that has seen no
    input spike since its reset is at zero state and stays there with a zero readout, so in silence no
    lane is stepped at all.
    """

    def __init__(self, backend: Backend, lanes: int, factory: Callable[[], Backend] | None) -> None:
        self.k = lanes
        self.backend = backend
        self.live = np.zeros(lanes, dtype=bool)  # lanes that have seen an input spike since their reset
        self.n_out = int(backend.num_outputs)
        self.can_skip = backend.rests_without_input
        self.lane_steps = 0  # lane-steps actually computed (for the skip statistics)
        self.batched: LaneStates | None = backend if isinstance(backend, LaneStates) else None
        self.instances: list[Backend] = []
        if self.batched is not None:
            self.state = self.batched.new_state(lanes)
        else:
            if factory is None and lanes > 1:
                raise ValueError(
                    f"backend {type(backend).__name__} cannot reset one stream of a batch; pass a factory "
                    "that builds more instances, or use lanes = 1"
                )
            self.instances = [backend] + [factory() for _ in range(lanes - 1)] if factory else [backend]
            for inst in self.instances:
                inst.reset(1)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Advance every lane over ``x`` (steps, channels); readout ``(K, steps, outputs)`` float."""
        if x.any():
            self.live[:] = True
        run = self.live if self.can_skip else np.ones(self.k, dtype=bool)
        out = np.zeros((self.k, x.shape[0], self.n_out))
        idx = np.flatnonzero(run)
        self.lane_steps += idx.size * x.shape[0]
        if idx.size == 0:
            return out
        if self.batched is not None:
            readout = self.batched.step_lanes(self.state, x, idx)
            if idx.size == self.k:
                return readout
            out[idx] = readout
            return out
        for i in idx.tolist():
            out[i] = np.asarray(self.instances[i].step(x[None]), dtype=np.float64)[0]
        return out

    def reset(self, lane: int) -> None:
        self.live[lane] = False
        if self.batched is not None:
            self.batched.reset_lanes(self.state, np.array([lane]))
        else:
            self.instances[lane].reset(1)


@dataclass
class _Smoother:
    size: int
    history: deque[np.ndarray] = field(default_factory=deque)

    def push(self, p: np.ndarray | None) -> np.ndarray | None:
        if p is None:
            self.history.clear()
            return None
        self.history.append(p)
        while len(self.history) > self.size:
            self.history.popleft()
        return np.mean(np.stack(self.history), axis=0)


class Spotter:
    """Front-end + the network on a backend (one always-on state, or staggered lanes) + the decision stages;
    feed it :class:`AudioChunk` s.

    ``detection`` is the bundle's detection spec (its mode and always-on decision settings); None means a
    per-utterance model (lanes).
    """

    def __init__(
        self,
        frontend_spec: FrontendSpec,
        backend: Backend,
        labels: Sequence[str],
        *,
        window_steps: int = 1000,
        rule: Readout = DEFAULT_READOUT,
        config: DetectionConfig | None = None,
        backend_factory: Callable[[], Backend] | None = None,
        detection: DetectionSpec | None = None,
    ) -> None:
        self.config = cfg = config or DetectionConfig()
        self.mode = resolve_mode(cfg, detection or DetectionSpec(mode="lanes"))
        self.frontend = Frontend(frontend_spec)
        if backend.num_inputs != frontend_spec.num_channels:
            raise ValueError(
                f"the network takes {backend.num_inputs} input channels but the front-end makes "
                f"{frontend_spec.num_channels}; the bundle's front-end spec and network disagree"
            )
        if len(labels) != backend.num_outputs:
            raise ValueError(
                f"{len(labels)} labels for {backend.num_outputs} outputs; the bundle is inconsistent"
            )
        if self.mode != "always_on" and not 1 <= cfg.lanes <= window_steps:
            raise ValueError(f"lanes must be in 1..{window_steps}, got {cfg.lanes}")
        self.labels = list(labels)
        self.window = window_steps
        self.rule: Readout = rule
        self.dt_s = frontend_spec.dt_ms / 1000.0
        self.step = 0  # global step index of the next input column
        self.windows_scored = 0
        self.network_steps = 0  # steps computed, summed over network instances (the work done)
        self.backend_seconds = 0.0
        self.on_window: Callable[[WindowScore], None] | None = None
        # always-on: called with (global step of the first row, readout rows) of every chunk
        self.on_readout: Callable[[int, np.ndarray], None] | None = None
        self._backend = backend
        self._lanes: _Lanes | None = None  # lanes mode's K instances; None: one network (always-on, sliding)
        if self.mode == "lanes":
            self._lanes = _Lanes(backend, cfg.lanes, backend_factory)
        else:  # one network state for the stream: reset once here, never again
            if not backend.streaming:
                raise ValueError(f"backend {backend.name!r} cannot carry state between chunks (streaming)")
            backend.reset(1)
        if self.mode == "always_on":
            assert detection is not None
            self.settings = always_on_settings(cfg, detection)
            self._decider = TimeCourse(self.settings, self.labels, frontend_spec.dt_ms, cfg.ignore_labels)
            return
        self.offsets = np.array([k * window_steps // cfg.lanes for k in range(cfg.lanes)])
        self._trace = np.zeros((cfg.lanes, window_steps, backend.num_outputs))
        self._spikes_in = np.zeros(cfg.lanes, dtype=np.int64)
        self._smoother = _Smoother(cfg.smoothing)
        self._last_fired: dict[int, float] = {}
        self._ignored = {i for i, name in enumerate(self.labels) if name in cfg.ignore_labels}
        self._min_spikes = cfg.min_input_rate_hz * frontend_spec.num_channels * window_steps * self.dt_s

    @property
    def inferences(self) -> int:
        """Windows' worth of network work done: lanes mode scores one window per lane per window length
        (K per audio second at 1 s windows); the always-on network does one per ALWAYS_ON_INFERENCE_S of
        audio (its bundle's ``num_steps`` is the length of the training stretches, not a window: it never
        resets), so energy per inference compares the two modes' networks and a report of a few seconds
        counts some; the sliding network, one per window length of audio (it scores K windows in that
        time, but computes each step once)."""
        if self.mode == "lanes":
            return self.windows_scored
        if self.mode == "sliding":
            return self.network_steps // self.window
        return self.network_steps // max(1, round(ALWAYS_ON_INFERENCE_S / self.dt_s))

    def _lane_local(self, g: int) -> np.ndarray:
        """Position of global step ``g`` inside each lane's current window."""
        return np.asarray((g - self.offsets) % self.window)

    def close(self) -> None:
        """Release the lane instances made by the factory (the backend passed in belongs to its owner)."""
        if self._lanes is not None:
            for instance in self._lanes.instances[1:]:
                instance.close()

    @property
    def backend(self) -> Any:
        """The backend the network runs on (the first lane instance, for backends stepped one per lane)."""
        lanes = self._lanes
        if lanes is None:
            return self._backend
        return lanes.backend if lanes.batched is not None else lanes.instances[0]

    def process(self, chunk: AudioChunk) -> list[Detection]:
        """Feed one chunk of audio; the detections whose windows ended in it."""
        spikes = self.frontend.process(chunk.samples)
        return self.process_spikes(spikes, chunk)

    def process_spikes(self, spikes: np.ndarray, chunk: AudioChunk | None = None) -> list[Detection]:
        """Feed front-end output ``(steps, channels)`` directly (chunk gives timestamps)."""
        if self.mode == "always_on":
            return self._always_on(spikes, chunk)
        detections: list[Detection] = []
        n = spikes.shape[0]
        pos = 0
        while pos < n:
            g = self.step
            # steps until the next lane finishes its window (a lane ends at g when (g - off + 1) % T == 0)
            to_end = (self.window - self._lane_local(g)) % self.window
            to_end[to_end == 0] = self.window
            seg = int(min(to_end.min(), n - pos))
            x = spikes[pos : pos + seg]
            t0 = time.perf_counter()
            if self._lanes is None:  # sliding: one network, its readout in every lane's window
                one = np.asarray(self._backend.step(x[None]), dtype=np.float64)[0]
                readout = np.broadcast_to(one, (self.config.lanes, *one.shape))
                self.network_steps += seg
            else:
                before = self._lanes.lane_steps
                readout = self._lanes.step(x)
                self.network_steps += self._lanes.lane_steps - before
            self.backend_seconds += time.perf_counter() - t0
            local = self._lane_local(g)
            for k in range(self.config.lanes):
                lo = int(local[k])
                self._trace[k, lo : lo + seg] = readout[k]
            self._spikes_in += int(x.sum(dtype=np.int64))
            self.step += seg
            pos += seg
            ended = np.flatnonzero(self._lane_local(self.step) == 0)
            for lane in ended.tolist():
                det = self._finish(lane, chunk)
                if det is not None:
                    detections.append(det)
        return detections

    def _always_on(self, spikes: np.ndarray, chunk: AudioChunk | None) -> list[Detection]:
        """One never-reset network over the chunk, then the time-course decision stage."""
        n = spikes.shape[0]
        if n == 0:
            return []
        t0 = time.perf_counter()
        readout = np.asarray(self._backend.step(spikes[None]), dtype=np.float64)[0]
        self.backend_seconds += time.perf_counter() - t0
        self.network_steps += n
        if self.on_readout is not None:
            self.on_readout(self.step, readout)
        found = self._decider.push(readout)
        self.step += n
        now = time.monotonic()
        available = chunk.available_at if chunk is not None else now
        out = []
        for step, index, conf in found:
            end_s = (step + 1) * self.dt_s
            at = chunk.origin_offset_s + (end_s - chunk.start_s) if chunk is not None else end_s
            out.append(
                Detection(
                    label=self.labels[index],
                    index=index,
                    confidence=conf,
                    audio_time_s=end_s,
                    window_start_s=max(0.0, end_s - self._decider.window * self.dt_s),
                    latency_s=now - available,
                    lane=0,
                    origin=chunk.origin if chunk is not None else "",
                    origin_time_s=at,
                )
            )
        return out

    def _finish(self, k: int, chunk: AudioChunk | None) -> Detection | None:
        end = self.step
        start = end - self.window
        complete = start >= 0
        spikes = int(self._spikes_in[k])
        probs = None
        if complete and spikes >= self._min_spikes:
            d = decide(self._trace[k][None], self.rule)
            z = d.scores[0] - d.scores[0].max()
            probs = np.exp(z) / np.exp(z).sum()
        if self._lanes is not None:
            self._lanes.reset(k)
        self._spikes_in[k] = 0
        if not complete:
            return None
        self.windows_scored += 1
        if self.on_window is not None:
            self.on_window(WindowScore(k, start, end, probs, spikes))
        smoothed = self._smoother.push(probs)
        if smoothed is None:
            return None
        order = np.argsort(smoothed)[::-1]
        best = int(order[0])
        conf = float(smoothed[best])
        margin = conf - float(smoothed[int(order[1])]) if smoothed.size > 1 else conf
        cfg = self.config
        if best in self._ignored or conf < cfg.threshold or margin < cfg.min_margin:
            return None
        end_s = end * self.dt_s
        last = self._last_fired.get(best)
        if last is not None and (end_s - last) * 1000.0 < cfg.refractory_ms:
            return None
        self._last_fired[best] = end_s
        available = chunk.available_at if chunk is not None else time.monotonic()
        origin = chunk.origin if chunk is not None else ""
        origin_t = chunk.origin_offset_s + (end_s - chunk.start_s) if chunk is not None else end_s
        return Detection(
            label=self.labels[best],
            index=best,
            confidence=conf,
            audio_time_s=end_s,
            window_start_s=start * self.dt_s,
            latency_s=time.monotonic() - available,
            lane=k,
            origin=origin,
            origin_time_s=origin_t,
        )

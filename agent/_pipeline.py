"""A bundle opened for inference: the one pipeline of the daemon and of ``edgekws-agent classify``.

:meth:`Pipeline.open` extracts a verified bundle's model files into a private folder, reads its front-end
spec, window and decision rule, and opens the first configured backend that can run it here (the
registry's class for each ``[[backends]]`` entry, in order; each one skipped is logged with its reason).
The daemon adds a :class:`~edgekws.agent.Spotter` for streams (``detection``); ``classify`` decides whole
recordings with :meth:`Pipeline.classify`. Everything it opened is released by :meth:`Pipeline.close`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekws.agent._config import BackendConfig, DetectionConfig
from edgekws.agent._frontend import Frontend, FrontendSpec
from edgekws.agent._spotter import Spotter
from edgekws.agent.backends import Backend, BackendUnavailable, backend_classes
from edgekws.packaging import DEFAULT_READOUT, Bundle, DetectionSpec, Readout

log = logging.getLogger("edgekws.agent")
DEFAULT_WINDOW_STEPS = 1000  # a bundle whose manifest has no network spec (1 s at 1 ms)


class NoBackend(RuntimeError):
    """No configured backend can run the active bundle here; the message lists why for each."""


def build_backend(cfg: BackendConfig, model_dir: Path) -> tuple[Backend, Callable[[], Backend]]:
    """A streaming backend of ``cfg.type`` for the bundle extracted in ``model_dir``, and a factory for
    more of it (the registry's class, opened the same way each time)."""
    cls = backend_classes()[cfg.type]

    def make() -> Backend:
        return cls.open(model_dir, cfg)

    backend = make()
    if not backend.streaming:
        backend.close()
        raise BackendUnavailable(
            f"backend {cfg.type!r} cannot stream this bundle's {cls.model_file} (e.g. an ONNX model exported "
            "as the whole-sequence variant); the daemon needs a model that carries state between chunks"
        )
    return backend, make


def choose_backend(
    configs: Sequence[BackendConfig], model_dir: Path
) -> tuple[str, Backend, Callable[[], Backend]]:
    """The first configured backend that loads; each one skipped is logged with its reason."""
    reasons = []
    for cfg in configs:
        try:
            backend, factory = build_backend(cfg, model_dir)
        except BackendUnavailable as exc:
            reasons.append(f"{cfg.type}: {exc}")
            log.warning("backend unavailable", extra={"fields": {"backend": cfg.type, "reason": str(exc)}})
            continue
        return cfg.type, backend, factory
    raise NoBackend("no configured backend can run here:\n  " + "\n  ".join(reasons))


class Pipeline:
    """What turns audio into decisions for one bundle (or, without one, the front-end alone)."""

    def __init__(self, frontend_spec: FrontendSpec, bundle: Bundle | None = None) -> None:
        self.bundle = bundle
        self.frontend_spec = frontend_spec
        self.frontend = Frontend(frontend_spec)
        self.labels: list[str] = [] if bundle is None else list(bundle.manifest.labels)
        net = None if bundle is None else bundle.manifest.network_spec()
        self.steps = net.num_steps if net else DEFAULT_WINDOW_STEPS
        self.rule: Readout = net.readout if net else DEFAULT_READOUT
        # the streaming mode the model was trained for, and its always-on decision settings
        self.detection = DetectionSpec(mode="lanes") if bundle is None else bundle.manifest.detection_spec()
        self.backend_name: str | None = None
        self.backend: Backend | None = None
        self.factory: Callable[[], Backend] | None = None
        self.spotter: Spotter | None = None
        self._resources = contextlib.ExitStack()

    @classmethod
    def open(
        cls, bundle: Bundle, backends: Sequence[BackendConfig], detection: DetectionConfig | None = None
    ) -> Pipeline:
        """Extract ``bundle``, open the first of ``backends`` that runs it, and (with ``detection``) a
        spotter on it; :class:`NoBackend` when none can, every reason listed."""
        pipeline = cls(FrontendSpec.from_dict(dict(bundle.manifest.frontend)), bundle)
        with contextlib.ExitStack() as undo:
            undo.callback(pipeline.close)
            folder = pipeline._resources.enter_context(tempfile.TemporaryDirectory(prefix="edgekws-model-"))
            model_dir = bundle.extract(Path(folder) / "model")
            log.info(
                "bundle loaded",
                extra={
                    "fields": {
                        "bundle": pipeline.label,
                        "sha256": bundle.sha256,
                        "keys": list(bundle.key_ids),
                    }
                },
            )
            pipeline.backend_name, pipeline.backend, pipeline.factory = choose_backend(backends, model_dir)
            pipeline._resources.callback(pipeline.backend.close)
            if detection is not None:
                pipeline.spotter = Spotter(
                    pipeline.frontend_spec,
                    pipeline.backend,
                    pipeline.labels,
                    window_steps=pipeline.steps,
                    rule=pipeline.rule,
                    config=detection,
                    backend_factory=pipeline.factory,
                    detection=pipeline.detection,
                )
                pipeline._resources.callback(pipeline.spotter.close)
            undo.pop_all()
        log.info("backend chosen", extra={"fields": {"backend": pipeline.backend_name}})
        return pipeline

    @property
    def label(self) -> str | None:
        m = None if self.bundle is None else self.bundle.manifest
        return None if m is None else f"{m.name}-{m.version}"

    @property
    def bundle_ref(self) -> dict[str, str] | None:
        m = None if self.bundle is None else self.bundle.manifest
        return None if m is None else {"name": m.name, "version": m.version}

    def event_detail(self) -> dict[str, Any]:
        """The bundle and backend as the ``bundle.loaded`` and ``bundle.activated`` events report them."""
        if self.bundle is None:
            return {}
        m = self.bundle.manifest
        return {
            "name": m.name,
            "version": m.version,
            "sha256": self.bundle.sha256,
            "backend": self.backend_name,
        }

    def window(self, samples: np.ndarray) -> np.ndarray:
        """One recording's spikes ``(steps, channels)``: encoded by a fresh front-end, then cut or zero-padded
        to the network's window (as in training)."""
        spikes = Frontend(self.frontend_spec).process(samples)[: self.steps]
        if spikes.shape[0] < self.steps:
            pad = np.zeros((self.steps - spikes.shape[0], spikes.shape[1]), spikes.dtype)
            spikes = np.concatenate([spikes, pad])
        return spikes

    def classify(self, samples: np.ndarray) -> tuple[str, float]:
        """The label and confidence of one recording: its window from zero state through the backend and
        the decision rule (:func:`edgekws.agent.decide`). Per-utterance models only: an always-on model has
        no window to decide on (stream the recording through the daemon instead)."""
        if self.backend is None:
            raise NoBackend("this pipeline has no bundle, so nothing to classify with")
        if self.detection.mode == "always_on":
            raise ValueError(
                "this bundle's model was trained on streams (always_on): it has no per-recording decision; "
                "stream the recording with `edgekws-agent run` (a [source] of type wav) to get its detections"
            )
        decision = self.backend.decide(self.window(samples)[None], self.rule)
        return self.labels[int(decision.labels[0])], float(decision.confidence[0])

    def close(self) -> None:
        """Release the backends and remove the extracted model files."""
        self._resources.close()

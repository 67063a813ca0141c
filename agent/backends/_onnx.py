"""ONNX Runtime backend: the float network on TensorRT, CUDA or CPU, whole sequences or chunk by chunk.

Loads the model bytes the toolkit exports (``edgekws.toolkit.export``). The streaming variant
serves both ``run`` (state starting at zero) and ``step`` (state carried between chunks); the
whole-sequence variant serves ``run`` only. ``onnxruntime`` is imported on first use, so the agent
imports without it; a missing install raises ``BackendUnavailable`` with the command that fixes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgekws.agent.backends._base import Backend, BackendConfig, BackendUnavailable, check_spikes
from edgekws.packaging import NetworkSpec, SpecError

#: Execution providers in order of preference; the first available one runs the model.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class InvalidOnnxModel(ValueError):
    """The bytes are not an edgekws ONNX model ONNX Runtime can load; the message says what is wrong."""


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "the onnx backend needs ONNX Runtime: pip install 'edgekws[onnx]' "
            "(or onnxruntime-gpu on a CUDA machine, the JetPack wheel on a Jetson)"
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers."""
    return list(_onnxruntime().get_available_providers())


def choose_providers(available: Sequence[str]) -> list[str]:
    """The preferred providers (TensorRT, CUDA, CPU) that are ``available``, in order of preference."""
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if not chosen:
        raise BackendUnavailable(
            f"ONNX Runtime offers none of {list(PREFERRED_PROVIDERS)} (it has {list(available)}); "
            "install onnxruntime or onnxruntime-gpu"
        )
    return chosen


class OnnxConfig(BackendConfig):
    """The float network on ONNX Runtime (CPU, CUDA or TensorRT execution providers)."""

    type: Literal["onnx"] = Field(description="Backend kind.")
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference, e.g. ['CUDAExecutionProvider', "
        "'CPUExecutionProvider'].",
    )
    threads: int = Field(default=1, ge=1, description="Intra-op threads of the ONNX Runtime session.")


class OnnxBackend(Backend):
    """Runs an exported edgekws ONNX model: ``run(spikes [B, T, C]) -> readout [B, T, O]`` float64.

    Unlike the fixed-point backends this one runs the *float* network (float32 inside ONNX Runtime):
    it is the GPU/CPU fallback, and its readout is the trained model's, before quantization.
    ``providers`` overrides the automatic TensorRT → CUDA → CPU choice; ``provider`` reports the
    provider ONNX Runtime actually put first (it falls back to CPU when a GPU provider fails to load).
    """

    name: ClassVar[str] = "onnx"
    Config: ClassVar[type[BackendConfig]] = OnnxConfig
    model_file: ClassVar[str] = "model/model.onnx"

    def __init__(
        self, model: bytes, *, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> None:
        ort = _onnxruntime()
        available = list(ort.get_available_providers())
        if providers is None:
            requested = choose_providers(available)
        else:
            missing = [p for p in providers if p not in available]
            if missing or not providers:
                raise BackendUnavailable(
                    f"execution providers {missing or list(providers)} are not available; "
                    f"this ONNX Runtime offers {available}"
                )
            requested = list(providers)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(model, sess_options=options, providers=requested)
        except Exception as exc:  # ORT raises its own pybind error types
            raise InvalidOnnxModel(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.provider: str = self.providers[0]
        self.spec, self.variant, self._state_layout = _read_metadata(self._session)
        self._state: dict[str, np.ndarray] | None = None
        self._steps = 0

    @classmethod
    def available(cls) -> bool:
        try:
            choose_providers(available_providers())
        except BackendUnavailable:
            return False
        return True

    @classmethod
    def open(cls, model_dir: Path, config: BackendConfig) -> OnnxBackend:
        settings = config if isinstance(config, OnnxConfig) else OnnxConfig(type="onnx")
        model = cls.model_path(model_dir).read_bytes()
        return cls(model, providers=settings.providers, threads=settings.threads)

    @property
    def num_inputs(self) -> int:
        return self.spec.num_inputs

    @property
    def num_outputs(self) -> int:
        return self.spec.num_outputs

    @property
    def streaming(self) -> bool:
        """Whether the model carries state between calls (the streaming variant), so ``step`` can be used."""
        return self.variant == "streaming"

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """The readout ``[B, T, O]`` of whole sequences ``[B, T, C]``, each starting from rest."""
        x = self._check_spikes(spikes)
        if not self.streaming:
            return np.asarray(self._session.run(["readout"], {"spikes": x})[0], dtype=np.float64)
        readout, _ = self._run_streaming(x, self._zero_state(x.shape[0]))
        return readout

    def reset(self, batch_size: int = 1) -> None:
        """Start ``batch_size`` new streams from rest."""
        self._state = self._zero_state(batch_size)
        self._steps = 0

    def step(self, chunk: np.ndarray) -> np.ndarray:
        """The readout ``[B, T_chunk, O]`` of the next chunk ``[B, T_chunk, C]`` of a stream.

        State carries over from the previous ``step`` (zeros after construction or ``reset``), so the
        chunks of a sequence give exactly the readout of ``run`` on the whole sequence.
        """
        if not self.streaming:
            raise BackendUnavailable(
                "this ONNX model is the whole-sequence variant and cannot carry state between chunks; "
                "export it with export_onnx_streaming to use step()"
            )
        x = self._check_spikes(chunk)
        batch = None if self._state is None else next(iter(self._state.values())).shape[0]
        if batch != x.shape[0]:
            if self._steps:
                raise ValueError(
                    f"chunk has batch size {x.shape[0]} but the streams have {batch}; "
                    "call reset(batch_size) to start new streams"
                )
            self.reset(x.shape[0])
        state = self._state if self._state is not None else self._zero_state(x.shape[0])
        readout, self._state = self._run_streaming(x, state)
        self._steps += x.shape[1]
        return readout

    def _run_streaming(
        self, x: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        names = [name for name, _ in self._state_layout]
        outputs = self._session.run(["readout", *(f"{n}.next" for n in names)], {"spikes": x, **state})
        return np.asarray(outputs[0], dtype=np.float64), dict(zip(names, outputs[1:], strict=True))

    def _zero_state(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, n), dtype=np.float32) for name, n in self._state_layout}

    def _check_spikes(self, spikes: np.ndarray) -> np.ndarray:
        x = check_spikes(spikes, self.num_inputs)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"spikes need at least one sample and one step, got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=np.float32)


def _read_metadata(session: Any) -> tuple[NetworkSpec, str, list[tuple[str, int]]]:
    props = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ("edgekws.onnx_variant", "edgekws.network_spec", "edgekws.state") if k not in props]
    if missing:
        raise InvalidOnnxModel(
            f"the model lacks the edgekws metadata {missing}; export it with edgekws.toolkit.export"
        )
    variant = props["edgekws.onnx_variant"]
    if variant not in ("sequence", "streaming"):
        raise InvalidOnnxModel(f"edgekws.onnx_variant must be 'sequence' or 'streaming', got {variant!r}")
    try:
        spec = NetworkSpec.from_dict(json.loads(props["edgekws.network_spec"]))
        layout = [(str(item["name"]), int(item["size"])) for item in json.loads(props["edgekws.state"])]
    except (SpecError, ValueError, KeyError, TypeError) as exc:
        raise InvalidOnnxModel(f"the model's edgekws metadata is malformed: {exc}") from exc
    return spec, variant, layout

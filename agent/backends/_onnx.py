"""ONNX Runtime backend: the float network on TensorRT, CUDA or CPU, whole sequences or chunk by chunk.

Loads the model bytes the toolkit exports (``edgekws.toolkit.export``). The streaming variant
serves both ``run`` (state starting at zero) and ``step`` (state carried between chunks); the
whole-sequence variant serves ``run`` only. ``onnxruntime`` is imported on first use, so the agent
imports without it; a missing install raises ``BackendUnavailable`` with the command that fixes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekws.packaging import NetworkSpec, SpecError

#: Execution providers in order of preference; the first available one runs the model.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine (a missing package or device); the message says the fix."""


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


class OnnxBackend:
    """Runs an exported edgekws ONNX model: ``run(spikes [B, T, C]) -> readout [B, T, O]`` float32.

    ``providers`` overrides the automatic TensorRT → CUDA → CPU choice; ``provider`` reports the
    provider ONNX Runtime actually put first (it falls back to CPU when a GPU provider fails to load).
    """

    name = "onnx"

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

    @property
    def streaming(self) -> bool:
        """Whether the model carries state between calls, so ``step`` can be used."""
        return self.variant == "streaming"

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """The readout ``[B, T, O]`` of whole sequences ``[B, T, C]``, each starting from rest."""
        x = self._check_spikes(spikes)
        if not self.streaming:
            return np.asarray(self._session.run(["readout"], {"spikes": x})[0])
        readout, _ = self._run_streaming(x, self._zero_state(x.shape[0]))
        return readout

    def reset(self) -> None:
        """Forget the carried state: the next ``step`` starts from rest."""
        self._state = None

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
        state = self._state if self._state is not None else self._zero_state(x.shape[0])
        batch = next(iter(state.values())).shape[0]
        if batch != x.shape[0]:
            raise ValueError(
                f"chunk batch size {x.shape[0]} differs from the stream's {batch}; "
                "call reset() before starting a new stream"
            )
        readout, self._state = self._run_streaming(x, state)
        return readout

    def _run_streaming(
        self, x: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        names = [name for name, _ in self._state_layout]
        outputs = self._session.run(["readout", *(f"{n}.next" for n in names)], {"spikes": x, **state})
        return np.asarray(outputs[0]), dict(zip(names, outputs[1:], strict=True))

    def _zero_state(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, n), dtype=np.float32) for name, n in self._state_layout}

    def _check_spikes(self, spikes: np.ndarray) -> np.ndarray:
        x = np.asarray(spikes)
        channels = self.spec.num_inputs
        if x.ndim != 3 or x.shape[2] != channels or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"spikes must have shape (batch, steps, {channels}) with batch and steps >= 1, got {x.shape}"
            )
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

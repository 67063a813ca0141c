"""Runtime backends behind one interface (emulator, Lava, ONNX Runtime)."""

from edgekws.agent.backends._onnx import BackendUnavailable as BackendUnavailable
from edgekws.agent.backends._onnx import InvalidOnnxModel as InvalidOnnxModel
from edgekws.agent.backends._onnx import OnnxBackend as OnnxBackend

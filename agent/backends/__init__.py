"""Runtime backends behind one interface (emulator, Lava, ONNX Runtime)."""

from edgekws.agent.backends._base import Backend as Backend
from edgekws.agent.backends._base import BackendUnavailable as BackendUnavailable
from edgekws.agent.backends._emulator import EmulatorBackend as EmulatorBackend
from edgekws.agent.backends._emulator import EmulatorState as EmulatorState
from edgekws.agent.backends._emulator import Traces as Traces
from edgekws.agent.backends._lava import LavaBackend as LavaBackend
from edgekws.agent.backends._lava import LavaBridgeBackend as LavaBridgeBackend
from edgekws.agent.backends._lava import Loihi2Backend as Loihi2Backend
from edgekws.agent.backends._lava import lava_python as lava_python
from edgekws.agent.backends._onnx import InvalidOnnxModel as InvalidOnnxModel
from edgekws.agent.backends._onnx import OnnxBackend as OnnxBackend

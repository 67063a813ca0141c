"""edgekws.agent.backends: the runtimes behind one interface, one module each (``_emulator``, ``_lava``,
``_onnx``), registered by name (see ``_base``: adding a backend is one module in this folder)."""

from edgekws.agent.backends._base import Backend as Backend
from edgekws.agent.backends._base import BackendConfig as BackendConfig
from edgekws.agent.backends._base import BackendUnavailable as BackendUnavailable
from edgekws.agent.backends._base import CountsEvents as CountsEvents
from edgekws.agent.backends._base import LaneStates as LaneStates
from edgekws.agent.backends._base import backend_classes as backend_classes
from edgekws.agent.backends._base import backend_names as backend_names
from edgekws.agent.backends._base import check_spikes as check_spikes
from edgekws.agent.backends._emulator import EmulatorBackend as EmulatorBackend
from edgekws.agent.backends._emulator import EmulatorState as EmulatorState
from edgekws.agent.backends._emulator import Traces as Traces
from edgekws.agent.backends._lava import LavaBackend as LavaBackend
from edgekws.agent.backends._lava import Loihi2Backend as Loihi2Backend
from edgekws.agent.backends._onnx import InvalidOnnxModel as InvalidOnnxModel
from edgekws.agent.backends._onnx import OnnxBackend as OnnxBackend
from edgekws.agent.backends._onnx import choose_providers as choose_providers

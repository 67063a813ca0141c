"""edgekws.agent: the on-device side (audio front-end, runtime backends, streaming, telemetry).

The agent never imports the toolkit, JAX or any training dependency.
"""

from edgekws.agent._audio import AudioError as AudioError
from edgekws.agent._audio import clipped_fraction as clipped_fraction
from edgekws.agent._audio import load_audio as load_audio
from edgekws.agent._audio import resample as resample
from edgekws.agent._config import AgentConfig as AgentConfig
from edgekws.agent._config import ConfigError as ConfigError
from edgekws.agent._config import DetectionConfig as DetectionConfig
from edgekws.agent._config import load_config as load_config
from edgekws.agent._daemon import Agent as Agent
from edgekws.agent._decision import Decision as Decision
from edgekws.agent._decision import TimeCourse as TimeCourse
from edgekws.agent._decision import decide as decide
from edgekws.agent._decision import readout_scores as readout_scores
from edgekws.agent._device_store import DeviceStore as DeviceStore
from edgekws.agent._device_store import StoreError as StoreError
from edgekws.agent._energy import OpCounts as OpCounts
from edgekws.agent._energy import loihi_opcount_joules as loihi_opcount_joules
from edgekws.agent._energy import opcounts_of as opcounts_of
from edgekws.agent._frontend import Frontend as Frontend
from edgekws.agent._frontend import FrontendSpec as FrontendSpec
from edgekws.agent._frontend import FrontendSpecError as FrontendSpecError
from edgekws.agent._frontend import encode as encode
from edgekws.agent._pipeline import NoBackend as NoBackend
from edgekws.agent._pipeline import Pipeline as Pipeline
from edgekws.agent._pipeline import build_backend as build_backend
from edgekws.agent._sources import AudioChunk as AudioChunk
from edgekws.agent._sources import SourceError as SourceError
from edgekws.agent._spotter import Detection as Detection
from edgekws.agent._spotter import Spotter as Spotter
from edgekws.packaging import __version__ as __version__

"""edgekws.agent: the on-device side (audio front-end, runtime backends, streaming, telemetry).

The agent never imports the toolkit, JAX or any training dependency.
"""

from edgekws.agent._decision import Decision as Decision
from edgekws.agent._decision import decide as decide
from edgekws.agent._decision import readout_scores as readout_scores
from edgekws.packaging import __version__ as __version__

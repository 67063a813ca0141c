"""edgekws.agent: the on-device side (audio front-end, runtime backends, streaming, telemetry).

The agent never imports the toolkit, JAX or any training dependency.
"""

from edgekws.packaging import __version__ as __version__

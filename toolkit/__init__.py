"""edgekws.toolkit: the host side (data sets, Eventprop training, quantization, export, bundling, fleet)."""

from edgekws.packaging import __version__ as __version__

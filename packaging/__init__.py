"""edgekws.packaging: the bundle format shared by the toolkit (writer) and the agent (reader)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgekws")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"

from edgekws.packaging._fixedpoint import FixedPointError as FixedPointError
from edgekws.packaging._fixedpoint import FixedPointLayer as FixedPointLayer
from edgekws.packaging._fixedpoint import FixedPointNetwork as FixedPointNetwork
from edgekws.packaging._network import NetworkSpec as NetworkSpec
from edgekws.packaging._network import SpecError as SpecError
from edgekws.packaging._network import decay_12bit as decay_12bit
from edgekws.packaging._netx import NetxError as NetxError
from edgekws.packaging._netx import read_netx as read_netx
from edgekws.packaging._netx import write_netx as write_netx

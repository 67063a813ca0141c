"""edgekws.packaging: the bundle format shared by the toolkit (writer) and the agent (reader)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgekws")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"

from edgekws.packaging._network import NetworkSpec as NetworkSpec
from edgekws.packaging._network import SpecError as SpecError
from edgekws.packaging._network import decay_12bit as decay_12bit

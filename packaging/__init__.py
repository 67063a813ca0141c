"""edgekws.packaging: the bundle format shared by the toolkit (writer) and the agent (reader)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgekws")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"

from edgekws.packaging._bundle import Bundle as Bundle
from edgekws.packaging._bundle import Limits as Limits
from edgekws.packaging._bundle import Report as Report
from edgekws.packaging._bundle import build_bundle as build_bundle
from edgekws.packaging._bundle import bundle_bytes as bundle_bytes
from edgekws.packaging._bundle import check_bundle as check_bundle
from edgekws.packaging._bundle import model_problems as model_problems
from edgekws.packaging._bundle import open_bundle as open_bundle
from edgekws.packaging._bundle import sha256_hex as sha256_hex
from edgekws.packaging._bundle import verify_bundle as verify_bundle
from edgekws.packaging._bundle import write_bundle as write_bundle
from edgekws.packaging._detection import BACKGROUND_LABEL as BACKGROUND_LABEL
from edgekws.packaging._detection import DetectionSpec as DetectionSpec
from edgekws.packaging._durable import atomic_path as atomic_path
from edgekws.packaging._durable import atomic_write_bytes as atomic_write_bytes
from edgekws.packaging._durable import atomic_write_text as atomic_write_text
from edgekws.packaging._durable import fsync_dir as fsync_dir
from edgekws.packaging._errors import InvalidBundle as InvalidBundle
from edgekws.packaging._errors import KeyFileError as KeyFileError
from edgekws.packaging._errors import ManifestError as ManifestError
from edgekws.packaging._errors import NotInStore as NotInStore
from edgekws.packaging._errors import Problem as Problem
from edgekws.packaging._errors import RollbackRefused as RollbackRefused
from edgekws.packaging._errors import StoreError as StoreError
from edgekws.packaging._errors import VersionConflict as VersionConflict
from edgekws.packaging._fixedpoint import READOUT_V_TH_MANT as READOUT_V_TH_MANT
from edgekws.packaging._fixedpoint import V_TH_MANT_MAX as V_TH_MANT_MAX
from edgekws.packaging._fixedpoint import FixedPointError as FixedPointError
from edgekws.packaging._fixedpoint import FixedPointLayer as FixedPointLayer
from edgekws.packaging._fixedpoint import FixedPointNetwork as FixedPointNetwork
from edgekws.packaging._manifest import NAME_PATTERN as NAME_PATTERN
from edgekws.packaging._manifest import FileEntry as FileEntry
from edgekws.packaging._manifest import Lineage as Lineage
from edgekws.packaging._manifest import Manifest as Manifest
from edgekws.packaging._manifest import Metrics as Metrics
from edgekws.packaging._manifest import SemVer as SemVer
from edgekws.packaging._manifest import canonical_json as canonical_json
from edgekws.packaging._manifest import check_activation as check_activation
from edgekws.packaging._manifest import format_created as format_created
from edgekws.packaging._manifest import parse_created as parse_created
from edgekws.packaging._network import DEFAULT_READOUT as DEFAULT_READOUT
from edgekws.packaging._network import READOUTS as READOUTS
from edgekws.packaging._network import NetworkSpec as NetworkSpec
from edgekws.packaging._network import Readout as Readout
from edgekws.packaging._network import SpecError as SpecError
from edgekws.packaging._network import decay_12bit as decay_12bit
from edgekws.packaging._network import layer_problems as layer_problems
from edgekws.packaging._network import readout_problem as readout_problem
from edgekws.packaging._network import tagged_dict as tagged_dict
from edgekws.packaging._netx import NetxError as NetxError
from edgekws.packaging._netx import read_netx as read_netx
from edgekws.packaging._netx import write_netx as write_netx
from edgekws.packaging._paths import artifact_path as artifact_path
from edgekws.packaging._signing import ORDER_CONTEXT as ORDER_CONTEXT
from edgekws.packaging._signing import PublicKey as PublicKey
from edgekws.packaging._signing import SigningKey as SigningKey
from edgekws.packaging._signing import TrustLike as TrustLike
from edgekws.packaging._signing import TrustStore as TrustStore
from edgekws.packaging._signing import as_trust_store as as_trust_store
from edgekws.packaging._signing import load_private_key as load_private_key
from edgekws.packaging._signing import load_public_key as load_public_key
from edgekws.packaging._signing import sign_detached as sign_detached
from edgekws.packaging._signing import verify_detached as verify_detached
from edgekws.packaging._signing import write_keypair as write_keypair
from edgekws.packaging._store import BundleStore as BundleStore
from edgekws.packaging._store import Store as Store
from edgekws.packaging._store import StoreEntry as StoreEntry

"""Hyperparameter and seed sweeps of `edgekws train` on Ray (embedded locally, or a cluster)."""

from edgekws.toolkit.sweep._spec import SweepError as SweepError
from edgekws.toolkit.sweep._spec import SweepSpec as SweepSpec

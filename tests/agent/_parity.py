"""Readout parity between two float implementations, with a tolerance relative to the readout's scale.

float32 rounding grows with the magnitude of the voltages, so an absolute bound (1e-4) that holds on readouts
up to 10 is nearly used up on readouts near 300 (8.85e-5 measured on a trained network, #17). The bound is
``REL_TOL`` times the larger of 1 and the largest |readout| of the reference.
"""

from __future__ import annotations

import numpy as np

REL_TOL = 2e-6  # float32 eps is 6e-8; 1000 steps of leaky sums stay well inside 30 eps of the scale


def readout_tolerance(expected: np.ndarray, rel: float = REL_TOL) -> float:
    """The largest allowed |actual - expected| for a readout trace ``expected``."""
    return rel * max(1.0, float(np.abs(expected).max()))


def assert_readout_close(actual: np.ndarray, expected: np.ndarray, rel: float = REL_TOL) -> None:
    """``actual`` agrees with ``expected`` within :func:`readout_tolerance`."""
    error, bound = (
        float(np.abs(np.asarray(actual, np.float64) - expected).max()),
        readout_tolerance(expected, rel),
    )
    assert error <= bound, (
        f"readout differs by {error:.3g}, more than {rel:g} x scale {bound / rel:.3g} = {bound:.3g}"
    )

"""The expected-value band: lower/upper = expected -/+ BAND_Z x the channel's RMS error.

The RMS error is the calibration steps' root mean squared error of the temporal
prediction (the one `expected` is), per channel, turned into data units by the
channel's scale. BAND_Z = 2 covers about 95% of normal values when errors are
roughly Gaussian, the coverage of the model bounds Elastic ML draws; a value
outside the band is unusual, but it is the score, not the band, that flags.
NumPy only.
"""

from __future__ import annotations

import numpy as np

from stad.core.types import BoolArray, FloatArray

BAND_Z = 2.0


def band_halfwidth(
    squared_errors: FloatArray, missing: BoolArray, usable: BoolArray, scale: FloatArray
) -> FloatArray:
    """(C,) BAND_Z x RMS error in data units, from per-step squared errors (T, C) in
    scaled units over the `usable` (T,) steps; 0 for a channel never observed there."""
    observed = ~missing & usable[:, None]
    count = observed.sum(axis=0)
    mse = np.where(observed, squared_errors, 0.0).sum(axis=0) / np.maximum(count, 1)
    halfwidth: FloatArray = BAND_Z * np.sqrt(mse) * scale
    return halfwidth

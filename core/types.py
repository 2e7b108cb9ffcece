"""Array aliases and units shared by every part of stad."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIB = 1024 * 1024  # bytes in a mebibyte: every *_mb setting is in MiB

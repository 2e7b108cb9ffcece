"""Conversions between numpy arrays and stad.v1.Series messages, with validation.

A series is `values` (T x C float64, NaN = missing), `timestamps_ns` (T int64,
strictly increasing, or None for evenly spaced steps) and `channels` (C unique
names). Invalid input raises `ValueError` with a message that names the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stad.core.quoting import quote_names
from stad.core.types import FloatArray, IntArray
from stad.v1 import series_pb2 as _series_pb2


@dataclass(frozen=True)
class SeriesData:
    """A validated multivariate series."""

    values: FloatArray  # (T, C)
    channels: tuple[str, ...]
    timestamps_ns: IntArray | None  # (T,) or None

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])


def make_series(
    values: npt.ArrayLike,
    *,
    channels: Sequence[str] | None = None,
    timestamps_ns: npt.ArrayLike | None = None,
) -> SeriesData:
    """Validate and normalise a series given as arrays."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]  # (T, 1)
    if array.ndim != 2:
        raise ValueError(f"values must be a T x C matrix, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"values are empty (shape {array.shape})")
    names = tuple(channels) if channels is not None else tuple(f"ch{i}" for i in range(array.shape[1]))
    if len(names) != array.shape[1]:
        raise ValueError(f"{len(names)} channel names for {array.shape[1]} value columns")
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must be unique, got {quote_names(names)}")
    if any(not name for name in names):
        raise ValueError("channel names must not be empty")
    if np.isinf(array).any():
        step, column = np.argwhere(np.isinf(array))[0]
        raise ValueError(f"channel {names[column]!r} has inf at step {step}; use NaN for missing values")
    stamps: IntArray | None = None
    if timestamps_ns is not None:
        stamps = np.asarray(timestamps_ns, dtype=np.int64)
        if stamps.size == 0:
            stamps = None
        elif stamps.shape != (array.shape[0],):
            raise ValueError(f"{stamps.size} timestamps for {array.shape[0]} steps")
        elif stamps.size > 1 and not (np.diff(stamps) > 0).all():
            bad = int(np.argmin(np.diff(stamps) > 0)) + 1
            raise ValueError(f"timestamps must be strictly increasing (step {bad} is not)")
    return SeriesData(values=array, channels=names, timestamps_ns=stamps)


def series_to_proto(series: SeriesData) -> _series_pb2.Series:
    message = _series_pb2.Series(channels=list(series.channels))
    message.values.extend(series.values.ravel().tolist())
    if series.timestamps_ns is not None:
        message.timestamps_ns.extend(series.timestamps_ns.tolist())
    return message


def series_from_proto(message: _series_pb2.Series) -> SeriesData:
    """Decode and validate a Series message; raises ValueError on bad shape or values."""
    n_channels = len(message.channels)
    if n_channels == 0:
        raise ValueError("series has no channels")
    values = np.asarray(message.values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("series has no values")
    if values.size % n_channels:
        raise ValueError(f"series has {values.size} values, not a multiple of its {n_channels} channels")
    return make_series(
        values.reshape(-1, n_channels),  # (T, C)
        channels=list(message.channels),
        timestamps_ns=np.asarray(message.timestamps_ns, dtype=np.int64) if message.timestamps_ns else None,
    )


def check_same_channels(names: Sequence[str], expected: Sequence[str]) -> None:
    """Raise ValueError unless `names` are the `expected` channels, in any order."""
    given, wanted = set(names), set(expected)
    if given == wanted and len(names) == len(expected):
        return
    missing = [name for name in expected if name not in given]
    extra = [name for name in names if name not in wanted]
    raise ValueError(
        f"channels differ from the model's: missing {quote_names(missing)}, unexpected {quote_names(extra)}"
    )


def align_channels(series: SeriesData, expected: Sequence[str]) -> FloatArray:
    """Return the values with columns in the order of `expected`, matched by name."""
    if tuple(series.channels) == tuple(expected):
        return series.values
    check_same_channels(series.channels, expected)
    index = [series.channels.index(name) for name in expected]
    return series.values[:, index]

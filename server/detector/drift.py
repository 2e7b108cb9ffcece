"""Drift: values outside the range each channel took in training (NumPy only).

The network has learned nothing about levels it never saw, and scaled inputs are
clipped, so off-scale data can predict itself well and score as normal (a series
at 10x its training range did). The training range is therefore saved with the
model and every scored value is checked against it: a value counts as out of
range when it lies more than `range_tolerance` x the channel's training span
(max - min) below the minimum or above the maximum. The span of a channel that
was constant in training is floored at MIN_SPAN_SHARE of its magnitude (at least
1), so any real change of it counts. Missing values never count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stad.core.types import BoolArray, FloatArray

# Floor of a channel's span, as a share of max(|min|, |max|, 1).
MIN_SPAN_SHARE = 1e-6


@dataclass(frozen=True)
class ValueRange:
    """Per-channel minimum and maximum of the training data (NaN: never observed)."""

    low: FloatArray  # (C,)
    high: FloatArray  # (C,)

    @classmethod
    def fit(cls, X: FloatArray) -> ValueRange:
        observed = ~np.isnan(X)
        seen = observed.any(axis=0)
        low = np.where(seen, np.where(observed, X, np.inf).min(axis=0), np.nan)
        high = np.where(seen, np.where(observed, X, -np.inf).max(axis=0), np.nan)
        return cls(low=low.astype(np.float64), high=high.astype(np.float64))

    @property
    def span(self) -> FloatArray:
        """(C,) max - min, floored at MIN_SPAN_SHARE of the channel's magnitude (NaN: never observed)."""
        magnitude = np.maximum(np.maximum(np.abs(self.low), np.abs(self.high)), 1.0)
        span: FloatArray = np.maximum(self.high - self.low, MIN_SPAN_SHARE * magnitude)
        return span

    def limits(self, tolerance: float) -> tuple[FloatArray, FloatArray]:
        """(lowest, highest) in-range value per channel, the margin included."""
        return self.low - tolerance * self.span, self.high + tolerance * self.span

    def outside(self, values: FloatArray, tolerance: float) -> BoolArray:
        """(T, C): observed values beyond the limits (channels never observed in training: False)."""
        out: BoolArray = self.excess(values, tolerance) > 0
        return out

    def excess(self, values: FloatArray, tolerance: float) -> FloatArray:
        """(T, C): how far each observed value lies beyond the limits, in training spans
        (floored as in `limits`); 0 within them, where missing and on channels never
        observed in training."""
        if values.shape[-1] != self.low.shape[0]:
            raise ValueError(f"expected {self.low.shape[0]} channels, got {values.shape[-1]}")
        lowest, highest = self.limits(tolerance)
        with np.errstate(invalid="ignore"):  # NaN stays NaN, then counts as 0
            beyond = np.maximum(np.maximum(lowest - values, values - highest), 0.0) / self.span
        out: FloatArray = np.nan_to_num(beyond, nan=0.0)  # missing, or a channel never seen
        return out

    def to_dict(self) -> dict[str, list[float | None]]:
        """Plain JSON data (null for a channel never observed)."""
        return {
            "low": [None if np.isnan(v) else float(v) for v in self.low],
            "high": [None if np.isnan(v) else float(v) for v in self.high],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValueRange:
        def column(values: list[float | None]) -> FloatArray:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        return cls(low=column(data["low"]), high=column(data["high"]))

"""Input validation, channel scaling, windowing and the training subspace (NumPy only).

Scaling is per channel with statistics of the training data (mean and standard
deviation, ignoring NaN and outliers, so that a few wild readings in training do
not squeeze the normal data), never per window: a per-window
normalisation would erase level shifts. NaN means missing and stays NaN
through scaling and windowing; the model sees it as unobserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.core.types import FloatArray

# Scaled values are clipped to this magnitude so a wild reading (or a reading
# of a channel that was constant in training) cannot overflow the network.
SCALED_CLIP = 1e4


def as_matrix(X: Any, *, name: str = "X") -> FloatArray:
    """Return X as a float64 (T, C) matrix; 1-D input is one channel.

    Raises ValueError for non-numeric, empty, 3-D or inf-containing input.
    """
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if array.ndim == 1:
        array = array[:, None]  # (T, 1)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (steps, channels) array, got {array.ndim}-D of shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    infinite = np.isinf(array)
    if infinite.any():
        row, col = np.argwhere(infinite)[0]
        raise ValueError(
            f"{name} contains inf (first at step {row}, channel {col}); use NaN for missing values"
        )
    return array


def check_length(array: FloatArray, window: int, *, name: str = "the series") -> None:
    if array.shape[0] < window:
        raise ValueError(f"{name} has {array.shape[0]} steps, shorter than one window ({window} steps)")


# A normal distribution's interquartile range, in standard deviations.
IQR_PER_SD = 1.349
# Values further than this many robust standard deviations from the median are outliers.
OUTLIER_SDS = 5.0
SCALING = "mean and standard deviation within 5 robust sd (IQR / 1.349) of the median"


@dataclass(frozen=True)
class ChannelScaler:
    """(x - mean) / scale per channel, fitted on training data without its outliers."""

    mean: FloatArray  # (C,)
    scale: FloatArray  # (C,)

    @classmethod
    def fit(cls, X: FloatArray) -> ChannelScaler:
        """Fit on (T, C) ignoring NaN: each channel's mean and standard deviation over its
        values within OUTLIER_SDS robust standard deviations (IQR / IQR_PER_SD) of its
        median, so that a few wild readings in training do not squeeze the normal data; on
        clean data that is every value. A channel whose IQR is 0 (a flag, or mostly one
        value) keeps all its values; a constant or all-missing one gets scale 1."""
        centre = np.zeros(X.shape[1])
        scale = np.ones(X.shape[1])
        for c in range(X.shape[1]):
            values = X[~np.isnan(X[:, c]), c]
            if values.size == 0:
                continue
            low, median, high = np.percentile(values, [25.0, 50.0, 75.0])
            robust_sd = (high - low) / IQR_PER_SD
            if robust_sd > 1e-9 * max(abs(median), 1.0):
                values = values[np.abs(values - median) <= OUTLIER_SDS * robust_sd]
            centre[c] = values.mean()
            spread = float(values.std())
            scale[c] = spread if spread > 1e-9 * max(abs(centre[c]), 1.0) else 1.0
        return cls(mean=centre, scale=scale)

    def transform(self, X: FloatArray) -> FloatArray:
        if X.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"expected {self.mean.shape[0]} channels, got {X.shape[-1]}")
        scaled: FloatArray = np.clip((X - self.mean) / self.scale, -SCALED_CLIP, SCALED_CLIP)
        return scaled

    def inverse(self, Z: npt.NDArray[np.floating[Any]]) -> FloatArray:
        out: FloatArray = Z.astype(np.float64) * self.scale + self.mean
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; `method` records how it was fitted (`mean` holds the centre)."""
        return {"method": SCALING, "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelScaler:
        """The inverse of `to_dict` (models saved before `method` used mean and std: same fields)."""
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
        )


def window_starts(n_steps: int, window: int, stride: int) -> npt.NDArray[np.int64]:
    """Starts of windows every `stride` steps, plus one ending at the last step.

    Every step is covered by at least one window. Requires n_steps >= window.
    """
    last = n_steps - window
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


def extract_windows(
    array: npt.NDArray[np.floating[Any]], starts: npt.NDArray[np.int64], window: int
) -> npt.NDArray[np.float32]:
    """(T, C) -> (N, L, C) float32 copies of the windows at `starts`."""
    index = starts[:, None] + np.arange(window)[None, :]  # (N, L)
    return np.ascontiguousarray(array[index], dtype=np.float32)  # (N, L, C)


@dataclass
class Subspace:
    """Low-rank linear subspace of scaled training steps (principal components).

    A step's squared residual to it, channel by channel, says how far the
    step's vector of channels lies from the training distribution's main
    directions, without regard to time: a combination of values never seen
    together in training leaves a residual even when each value alone is
    ordinary and easy to predict from its own history.
    """

    mean: FloatArray  # (C,)
    components: FloatArray  # (K, C) orthonormal rows

    @classmethod
    def fit(cls, X: FloatArray, variance: float) -> Subspace:
        """Keep the fewest components explaining `variance` of (T, C); NaN = mean."""
        observed = ~np.isnan(X)
        counts = observed.sum(axis=0)
        mean = np.where(observed, X, 0.0).sum(axis=0) / np.maximum(counts, 1)
        centred = np.where(observed, X - mean, 0.0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        power = singular**2
        share = np.cumsum(power) / max(float(power.sum()), 1e-12)
        keep = min(int(np.searchsorted(share, variance - 1e-12)) + 1, vt.shape[0])
        return cls(mean=mean.astype(np.float64), components=vt[:keep].astype(np.float64))

    def residual(self, X: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """(..., C) squared residual per channel; missing values count as the mean, residual 0."""
        observed = ~np.isnan(X)
        centred = np.where(observed, X - self.mean, 0.0)
        projected = centred @ self.components.T @ self.components
        out: FloatArray = np.where(observed, (centred - projected) ** 2, 0.0)
        return out

    def to_dict(self) -> dict[str, list[float] | list[list[float]]]:
        return {"mean": self.mean.tolist(), "components": self.components.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subspace:
        mean = np.asarray(data["mean"], dtype=np.float64)
        components = np.asarray(data["components"], dtype=np.float64).reshape(-1, mean.shape[0])
        return cls(mean=mean, components=components)

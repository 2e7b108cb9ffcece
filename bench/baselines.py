"""Baselines fitted side by side with stad: PCA reconstruction error and IsolationForest.

Both follow the detector's shape: `fit(X) -> self`, `score(X)` (higher = more
anomalous, one value per step), and `threshold_`, set automatically from the
training scores: `threshold_factor` x their `threshold_quantile` quantile.
Channels are standardised with training statistics (constant channels keep
unit scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _check(values: npt.ArrayLike, channels: int | None = None) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"expected a T x C matrix with T >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("baselines need finite values (no NaN or inf)")
    if channels is not None and array.shape[1] != channels:
        raise ValueError(f"fitted on {channels} channels, got {array.shape[1]}")
    return array


@dataclass
class Standardiser:
    mean_: FloatArray
    scale_: FloatArray

    @classmethod
    def fit(cls, values: FloatArray) -> Standardiser:
        scale = values.std(axis=0)
        return cls(mean_=values.mean(axis=0), scale_=np.where(scale > 1e-12, scale, 1.0))

    def transform(self, values: FloatArray) -> FloatArray:
        out: FloatArray = (values - self.mean_) / self.scale_
        return out


class _Thresholded:
    """Shared automatic threshold from training scores."""

    threshold_quantile: float
    threshold_factor: float
    threshold_: float

    def score(self, values: npt.ArrayLike) -> FloatArray:
        raise NotImplementedError

    def _set_threshold(self, train_values: FloatArray) -> None:
        train_scores = self.score(train_values)
        self.threshold_ = self.threshold_factor * float(np.quantile(train_scores, self.threshold_quantile))

    def predict(self, values: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        return self.score(values) >= self.threshold_


class PCABaseline(_Thresholded):
    """Squared reconstruction error (SPE / Q statistic) of standardised data in a PCA subspace."""

    def __init__(
        self,
        *,
        explained_variance: float = 0.9,
        threshold_quantile: float = 0.99,
        threshold_factor: float = 1.0,
    ) -> None:
        if not 0 < explained_variance <= 1:
            raise ValueError(f"explained_variance must be in (0, 1], got {explained_variance}")
        self.explained_variance = explained_variance
        self.threshold_quantile = threshold_quantile
        self.threshold_factor = threshold_factor

    def fit(self, values: npt.ArrayLike) -> PCABaseline:
        train = _check(values)
        self.scaler_ = Standardiser.fit(train)
        centred = self.scaler_.transform(train)
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        variance = singular**2
        share = np.cumsum(variance) / max(float(variance.sum()), 1e-12)
        keep = int(np.searchsorted(share, self.explained_variance - 1e-12) + 1)
        self.components_ = components[: min(keep, components.shape[0])]  # (K, C)
        self._set_threshold(train)
        return self

    def score(self, values: npt.ArrayLike) -> FloatArray:
        data = self.scaler_.transform(_check(values, self.scaler_.mean_.shape[0]))
        projected = data @ self.components_.T @ self.components_  # (T, C)
        residual: FloatArray = ((data - projected) ** 2).sum(axis=1)
        return residual


class IForestBaseline(_Thresholded):
    """scikit-learn IsolationForest on standardised steps; score = -score_samples."""

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        seed: int = 0,
        threshold_quantile: float = 0.99,
        threshold_factor: float = 1.0,
    ) -> None:
        self.n_estimators = n_estimators
        self.seed = seed
        self.threshold_quantile = threshold_quantile
        self.threshold_factor = threshold_factor

    def fit(self, values: npt.ArrayLike) -> IForestBaseline:
        from sklearn.ensemble import IsolationForest

        train = _check(values)
        self.scaler_ = Standardiser.fit(train)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self.forest_.fit(self.scaler_.transform(train))
        self._set_threshold(train)
        return self

    def score(self, values: npt.ArrayLike) -> FloatArray:
        data = self.scaler_.transform(_check(values, self.scaler_.mean_.shape[0]))
        return -np.asarray(self.forest_.score_samples(data), dtype=np.float64)

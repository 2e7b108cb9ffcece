"""What the detector decides from the training data at fit time (NumPy only).

Each choice is recorded in the model's metadata (`DataChoices.to_dict`):

- channel kinds: `constant` (one observed value, or none), `binary` (two values),
  `near_constant` (one value on at least NEAR_CONSTANT_SHARE of the steps) or
  `varying`. Constant channels carry no pattern to learn: they are left out of the
  step score (a later change of such a channel is drift, not a prediction error).
- the dominant period: TSB-AD's autocorrelation rule (`stad.core.metrics.dominant_period`,
  lags 6..303) on each varying channel, the median over those with a peak; None
  when no channel has one.
- the range span: with `range_scores`, a step's score is the highest within a
  centred range of this many steps, so that a labelled range is scored as a range:
  the dominant period, at most `window`; window / 2 when there is no period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stad.core.detector_config import DetectorConfig
from stad.core.metrics import dominant_period
from stad.core.types import BoolArray, FloatArray

NEAR_CONSTANT_SHARE = 0.95


def channel_kind(values: FloatArray) -> str:
    """The kind of one channel from its observed training values (NaN ignored)."""
    observed = _observed(values)
    uniques, counts = np.unique(observed, return_counts=True)
    if uniques.size <= 1:
        return "constant"
    if uniques.size == 2:
        return "binary"
    if counts.max() >= NEAR_CONSTANT_SHARE * observed.size:
        return "near_constant"
    return "varying"


def _observed(values: FloatArray) -> FloatArray:
    observed: FloatArray = values[~np.isnan(values)]
    return observed


@dataclass(frozen=True)
class DataChoices:
    """The fit-time choices of one training series."""

    kinds: tuple[str, ...]  # per channel
    period: int | None
    span: int  # 1 = no range aggregation

    @property
    def scored(self) -> BoolArray:
        """Channels counted in the step score: all but the constant ones (all if every one is)."""
        mask = np.array([kind != "constant" for kind in self.kinds])
        return mask if mask.any() else np.ones_like(mask)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, n_channels: int) -> DataChoices:
        """The inverse of `to_dict`; a model saved before choices were recorded scores
        every channel and aggregates no range."""
        if data is None:
            return cls(("varying",) * n_channels, None, 1)
        return cls(tuple(data["channel_kinds"]), data["dominant_period"], int(data["range_span"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_kinds": list(self.kinds),
            "dominant_period": self.period,
            "range_span": self.span,
            "scored_channels": int(self.scored.sum()),
        }


def choose(train: FloatArray, config: DetectorConfig) -> DataChoices:
    """The choices for a (T, C) training series under `config`."""
    kinds = tuple(channel_kind(train[:, c]) for c in range(train.shape[1]))
    periods = [dominant_period(_observed(train[:, c])) for c, kind in enumerate(kinds) if kind == "varying"]
    found = [p for p in periods if p is not None]
    period = int(np.median(found)) if found else None
    window = config.model.window
    span = 1
    if config.scoring.range_scores:
        span = min(period, window) if period is not None else max(1, window // 2)
    return DataChoices(kinds, period, span)

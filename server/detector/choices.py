"""What the detector decides from the training data at fit time (NumPy only).

Each choice is recorded in the model's metadata (`DataChoices.to_dict`):

- channel kinds: `constant` (one observed value, or none), `binary` (two values),
  `near_constant` (one value on at least NEAR_CONSTANT_SHARE of the steps) or
  `varying`. Constant channels carry no pattern to learn: they are left out of the
  step score (a later change of such a channel is drift, not a prediction error).
  Binary channels are inputs but, unless `binary_in_score`, left out of the step
  score when a varying or near-constant channel is there (`DataChoices.counted`).
- the dominant period: TSB-AD's autocorrelation rule (`stad.core.metrics.dominant_period`,
  lags 6..303) on each varying channel, the median over those with a peak; None
  when no channel has one.
- the window, when `window` is 0: `window_for_period` (one period, a multiple
  of `patch` in [AUTO_WINDOW_LOW, AUTO_WINDOW_HIGH], at most a quarter of the training
  steps; AUTO_WINDOW_FALLBACK when there is no period). The saved config holds the
  chosen window; `window_from_period` records that it was chosen.
- the range span: with `range_scores`, a step's score is the highest, within a
  centred range of this many steps, of the means over centred ranges half as long
  (`steps.range_score`), so that a labelled range is scored as a range: the dominant
  period, at most `window`; `window` when there is no period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stad.core.detector_config import DetectorConfig
from stad.core.metrics import dominant_period
from stad.core.types import BoolArray, FloatArray

NEAR_CONSTANT_SHARE = 0.95
AUTO_WINDOW_LOW, AUTO_WINDOW_HIGH = 32, 256
AUTO_WINDOW_FALLBACK = 64
PERIODS_PER_WINDOW = 1  # two measured worse (bench/auto_window.py)
RANGE_MEAN_SHARE = 2  # the range mean spans 1 / this of the range (bench: 2 beat 4 and 8)
WINDOWS_PER_TRAINING = 4  # the chosen window is at most this share of the training steps


def _to_patch(steps: float, patch: int) -> int:
    """The nearest multiple of `patch` to `steps`, at least two patches."""
    return max(2 * patch, round(steps / patch) * patch)


def window_for_period(period: int | None, steps: int, patch: int, periods: float = PERIODS_PER_WINDOW) -> int:
    """The window chosen for `window` 0 from the dominant period and the training length
    (`periods`: periods per window; other values are for measuring the rule)."""
    wanted = AUTO_WINDOW_FALLBACK if period is None else periods * period
    window = _to_patch(min(max(wanted, AUTO_WINDOW_LOW), AUTO_WINDOW_HIGH), patch)
    longest = max(2 * patch, steps // WINDOWS_PER_TRAINING // patch * patch)
    return min(window, longest)


def largest_auto_window(patch: int) -> int:
    """The longest window `window_for_period` can choose (for limits checked before the data is seen)."""
    return _to_patch(AUTO_WINDOW_HIGH, patch)


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
    window: int  # the window the model uses
    window_from_period: bool = False  # True when `window` 0 let the data choose it
    mean_span: int = 1  # the centred mean taken before the range maximum; 1 = none
    binary_in_score: bool = True  # False: binary channels are left out of the step score

    @property
    def scored(self) -> BoolArray:
        """Channels the network sees and predicts: all but the constant ones (all if every one is)."""
        mask = np.array([kind != "constant" for kind in self.kinds])
        return mask if mask.any() else np.ones_like(mask)

    @property
    def counted(self) -> BoolArray:
        """Channels counted in the step score: the `scored` ones, less the binary ones when
        `binary_in_score` is off and a varying or near-constant channel is scored.

        A binary channel's prediction error is whether the network foresaw a toggle: on
        series with continuous channels beside flags and commands, those errors drowned
        the continuous channels' (TSB-AD-M: bench/results/accuracy.json). The flags stay
        inputs, so a toggle the continuous channels do not follow still shows on them, and
        a flag taking a value not seen in training is drift.
        """
        scored = self.scored
        continuous = scored & np.array([kind in ("varying", "near_constant") for kind in self.kinds])
        if self.binary_in_score or not continuous.any():
            return scored
        binary = np.array([kind == "binary" for kind in self.kinds])
        out: BoolArray = scored & ~binary
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, n_channels: int, window: int) -> DataChoices:
        """The inverse of `to_dict` (`window`: the saved config's); a model saved before
        choices were recorded scores every channel and aggregates no range, and one saved
        before range means takes none."""
        if data is None:
            return cls(("varying",) * n_channels, None, 1, window)
        return cls(
            tuple(data["channel_kinds"]),
            data["dominant_period"],
            int(data["range_span"]),
            window,
            bool(data.get("window_from_period", False)),
            int(data.get("range_mean_span", 1)),
            bool(data.get("binary_in_score", True)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_kinds": list(self.kinds),
            "dominant_period": self.period,
            "range_span": self.span,
            "range_mean_span": self.mean_span,
            "scored_channels": int(self.scored.sum()),
            "binary_in_score": self.binary_in_score,
            "counted_channels": int(self.counted.sum()),
            "window_from_period": self.window_from_period,
        }


def series_period(train: FloatArray, kinds: tuple[str, ...]) -> int | None:
    """The dominant period of a (T, C) series: the median over its varying channels that have one."""
    periods = [dominant_period(_observed(train[:, c])) for c, kind in enumerate(kinds) if kind == "varying"]
    found = [p for p in periods if p is not None]
    return int(np.median(found)) if found else None


def choose(train: FloatArray, config: DetectorConfig) -> DataChoices:
    """The choices for a (T, C) training series under `config` (`window` 0: chosen here)."""
    kinds = tuple(channel_kind(train[:, c]) for c in range(train.shape[1]))
    period = series_period(train, kinds)
    auto = config.model.window == 0
    window = window_for_period(period, train.shape[0], config.model.patch) if auto else config.model.window
    span = mean_span = 1
    if config.scoring.range_scores:
        span = min(period, window) if period is not None else window
        mean_span = max(1, span // RANGE_MEAN_SHARE)
    return DataChoices(kinds, period, span, window, auto, mean_span, config.scoring.binary_in_score)

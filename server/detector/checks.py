"""Checks of a fit that end up as training warnings (NumPy only).

Each check looks at one thing and returns a `DataWarning` or None:
  constant_channels             channels with one value (or none) in training
  monotonic_channels            channels that only rose, or only fell, through training
                                (counters, or a stretch too short to see them turn):
                                their later values leave the training range, which is drift
  small_calibration             errors and threshold calibrated on fewer than
                                `min_calibration_steps` held-out steps, or (none held
                                out) on the training steps themselves, which the model
                                has fitted
  unrepresentative_calibration  the held-out steps cover under MIN_COVERAGE of the
                                training range on the median varying channel (a quiet
                                stretch: its threshold would flood on the rest)
  early_stopping                pretraining stopped before its last epoch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stad.core.data_warnings import (
    CONSTANT_CHANNELS,
    EARLY_STOPPING,
    MONOTONIC_CHANNELS,
    SMALL_CALIBRATION,
    UNREPRESENTATIVE_CALIBRATION,
    DataWarning,
    name_list,
)
from stad.core.detector_config import DetectorConfig
from stad.core.types import BoolArray, FloatArray
from stad.server.detector.drift import ValueRange

# Median share of the training span the calibration steps must cover.
MIN_COVERAGE = 0.5
# A channel is monotonic when at least MONOTONE_SHARE of its changes (and at least
# MIN_MONOTONE_CHANGES of them) go one way: a counter's rare resets still pass.
MONOTONE_SHARE = 0.99
MIN_MONOTONE_CHANGES = 10


def constant_channels(train_range: ValueRange, channels: Sequence[str]) -> DataWarning | None:
    constant = [
        name for name, lo, hi in zip(channels, train_range.low, train_range.high, strict=True) if not lo < hi
    ]  # NaN (never observed) compares False too
    if not constant:
        return None
    return DataWarning(
        CONSTANT_CHANNELS,
        f"{len(constant)} of {len(channels)} channel(s) constant or missing in training: "
        f"{name_list(constant)}; they carry no information, and any later change of them is drift",
    )


def monotonic_channels(data: FloatArray, channels: Sequence[str]) -> DataWarning | None:
    found = [name for name, column in zip(channels, data.T, strict=True) if _one_way(column)]
    if not found:
        return None
    return DataWarning(
        MONOTONIC_CHANNELS,
        f"{len(found)} of {len(channels)} channel(s) only rose or only fell through training "
        f"(counters, or a stretch too short to see them turn): {name_list(found)}; their later "
        "values leave the training range and are flagged as drift, so score a counter's rate "
        "of change instead (Flux derivative(), InfluxQL non_negative_derivative())",
    )


def _one_way(values: FloatArray) -> bool:
    changes = np.diff(values[~np.isnan(values)])
    changes = changes[changes != 0]
    if changes.size < MIN_MONOTONE_CHANGES:
        return False
    return max(float((changes > 0).mean()), float((changes < 0).mean())) >= MONOTONE_SHARE


def small_calibration(record: Mapping[str, Any], config: DetectorConfig) -> DataWarning | None:
    steps = int(record.get("calibration_steps", 0))
    needed = config.scoring.min_calibration_steps
    held_out = record.get("calibration_source") != "training series"
    if held_out and steps >= needed:
        return None
    where = (
        f"{steps} held-out steps, fewer than min_calibration_steps ({needed}), so the threshold "
        "rests on their highest scores"
        if held_out
        else f"the {steps} training steps themselves (none held out)"
    )
    return DataWarning(
        SMALL_CALIBRATION,
        f"errors and threshold calibrated on {where}: expect more flags on new data than on "
        "the training data; train on a longer series or raise val_fraction",
    )


def unrepresentative_calibration(
    data: FloatArray, calibration: BoolArray, train_range: ValueRange
) -> DataWarning | None:
    if calibration.all() or not calibration.any():
        return None
    span = train_range.high - train_range.low
    varying = span > 0  # NaN compares False
    if not varying.any():
        return None
    held = ValueRange.fit(data[calibration])
    coverage = np.nan_to_num((held.high - held.low)[varying] / span[varying], nan=0.0)
    median = float(np.median(coverage))
    if median >= MIN_COVERAGE:
        return None
    return DataWarning(
        UNREPRESENTATIVE_CALIBRATION,
        f"the calibration steps cover only {100 * median:.0f}% of the training range on the median "
        "channel: a quiet stretch calibrates a threshold that floods on the rest; "
        "train on a period whose end resembles the whole",
    )


def early_stopping(metrics: Mapping[str, Any], config: DetectorConfig) -> DataWarning | None:
    if not metrics.get("stopped_early"):
        return None
    return DataWarning(
        EARLY_STOPPING,
        f"training stopped early after {metrics.get('epochs_run')} of "
        f"{metrics.get('epochs_planned', config.training.epochs)} epochs: "
        f"the monitored loss did not improve for patience ({config.training.patience}) epochs",
    )


def training_warnings(
    data: FloatArray,
    train_range: ValueRange,
    channels: Sequence[str],
    calibration: BoolArray,
    record: Mapping[str, Any],
    metrics: Mapping[str, Any],
    config: DetectorConfig,
) -> list[DataWarning]:
    """Every check's warning, in a fixed order; `train_range` is the training data's
    (`ValueRange.fit(data)`), `calibration` marks the calibration steps."""
    found = (
        constant_channels(train_range, channels),
        monotonic_channels(data, channels),
        small_calibration(record, config),
        unrepresentative_calibration(data, calibration, train_range),
        early_stopping(metrics, config),
    )
    return [warning for warning in found if warning is not None]

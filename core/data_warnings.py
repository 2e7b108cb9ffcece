"""Warnings about the data or the fit that reach the user (torch-free, shared).

A warning is a stable `code` for programs and a `message` for people. Training
results carry the codes below from `TRAINING_CODES`; score results carry `drift`.
The server builds them, the proto carries them (`stad.v1.DataWarning`), the client
returns them as this class, the CLI prints `warning: <message>` on stderr and the
InfluxDB task logs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CONSTANT_CHANNELS",
    "DRIFT",
    "EARLY_STOPPING",
    "MONOTONIC_CHANNELS",
    "SMALL_CALIBRATION",
    "TRAINING_CODES",
    "UNREPRESENTATIVE_CALIBRATION",
    "DataWarning",
    "drift_warning",
]

CONSTANT_CHANNELS = "constant_channels"
MONOTONIC_CHANNELS = "monotonic_channels"
SMALL_CALIBRATION = "small_calibration"
UNREPRESENTATIVE_CALIBRATION = "unrepresentative_calibration"
EARLY_STOPPING = "early_stopping"
TRAINING_CODES = (
    CONSTANT_CHANNELS,
    MONOTONIC_CHANNELS,
    SMALL_CALIBRATION,
    UNREPRESENTATIVE_CALIBRATION,
    EARLY_STOPPING,
)
DRIFT = "drift"

# Channels named in one message at most; the rest are counted.
LISTED_CHANNELS = 10


@dataclass(frozen=True)
class DataWarning:
    """One warning: `code` (stable, e.g. "drift") and `message` (for people)."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataWarning:
        return cls(code=str(data["code"]), message=str(data["message"]))

    @classmethod
    def list_from(cls, items: Iterable[Mapping[str, Any]] | None) -> tuple[DataWarning, ...]:
        """Warnings from saved plain data; None (a model saved before warnings) is none."""
        return tuple(cls.from_dict(item) for item in items or ())


def name_list(names: Sequence[str]) -> str:
    """'a, b, c' with at most LISTED_CHANNELS names, then '... (N more)'."""
    shown = ", ".join(names[:LISTED_CHANNELS])
    more = len(names) - LISTED_CHANNELS
    return f"{shown} ... ({more} more)" if more > 0 else shown


def drift_warning(channels: Sequence[str], out_of_range: npt.ArrayLike) -> DataWarning | None:
    """The drift warning of a score result: which channels lie outside the training range,
    on what share of its steps, from its (N, C) out-of-range flags (None when none does)."""
    flags = np.asarray(out_of_range, dtype=bool).reshape(-1, len(channels))
    counts = flags.sum(axis=0)
    steps = flags.shape[0]
    if steps == 0 or not counts.any():
        return None
    order = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    parts = [f"{channels[i]} ({100.0 * counts[i] / steps:.3g}% of steps)" for i in order]
    return DataWarning(
        DRIFT,
        f"values outside the range seen in training (drift) on {len(order)} of {len(channels)} "
        f"channel(s): {name_list(parts)}; those steps are flagged as anomalous",
    )

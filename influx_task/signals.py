"""What a score result says beside the scores, as `anomaly_scores` fields and log lines.

Per step: `lower_<f>` / `upper_<f>`, the band around `expected_<f>`; `drift`, true when
some channel lies outside the range seen in training (such a step is also flagged);
`drift_channels`, those channels comma-separated ("" when none). The result's warnings
(drift, naming the channels and their shares) and a training job's warnings become
`warning:` log lines on the `stad.influx_task` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stad.core.data_warnings import DataWarning

log = logging.getLogger("stad.influx_task")

FieldValue = float | int | bool | str


class SignalScores(Protocol):
    """What these fields need of a stad.client.ScoreResult."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def lower(self) -> npt.NDArray[np.float64]: ...

    @property
    def upper(self) -> npt.NDArray[np.float64]: ...

    @property
    def out_of_range(self) -> npt.NDArray[np.bool_]: ...

    @property
    def out_of_range_channels(self) -> npt.NDArray[np.bool_]: ...


def signal_fields(result: SignalScores, step: int) -> dict[str, FieldValue]:
    """The band and drift fields of returned step `step`."""
    fields: dict[str, FieldValue] = {}
    for c, name in enumerate(result.channels):
        fields[f"lower_{name}"] = float(result.lower[step, c])
        fields[f"upper_{name}"] = float(result.upper[step, c])
    drifted = [name for c, name in enumerate(result.channels) if result.out_of_range_channels[step, c]]
    fields["drift"] = bool(result.out_of_range[step])
    fields["drift_channels"] = ",".join(drifted)
    return fields


def log_warnings(where: str, warnings: Iterable[DataWarning]) -> None:
    """One `<where>: warning: <message>` line per warning."""
    for warning in warnings:
        log.warning("%s: warning: %s", where, warning.message)

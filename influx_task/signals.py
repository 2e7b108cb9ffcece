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
from stad.influx_task.lines import FieldColumn

log = logging.getLogger("stad.influx_task")


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


def signal_columns(result: SignalScores, rows: npt.NDArray[np.intp]) -> list[tuple[str, FieldColumn]]:
    """The band and drift fields of the returned steps `rows`, one column each."""
    columns: list[tuple[str, FieldColumn]] = []
    for c, name in enumerate(result.channels):
        columns.append((f"lower_{name}", result.lower[rows, c]))
        columns.append((f"upper_{name}", result.upper[rows, c]))
    drifted = np.asarray(result.out_of_range_channels[rows], dtype=bool)  # (N, C)
    names = [""] * len(rows)
    for i in np.flatnonzero(drifted.any(axis=1)).tolist():
        names[i] = ",".join(result.channels[c] for c in np.flatnonzero(drifted[i]).tolist())
    columns.append(("drift", np.asarray(result.out_of_range[rows], dtype=bool)))
    columns.append(("drift_channels", names))
    return columns


def log_warnings(where: str, warnings: Iterable[DataWarning]) -> None:
    """One `<where>: warning: <message>` line per warning."""
    for warning in warnings:
        log.warning("%s: warning: %s", where, warning.message)

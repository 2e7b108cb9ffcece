"""The points a pipeline writes: one `anomaly_scores` point per scored step, one `anomaly_events`
point per episode (at its first step, rewritten while it grows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stad.core.data_warnings import DataWarning
from stad.influx_task.config import Pipeline
from stad.influx_task.events import Episode
from stad.influx_task.lines import FieldColumn, to_lines
from stad.influx_task.points import Point
from stad.influx_task.signals import SignalScores, signal_columns


class Scores(SignalScores, Protocol):
    """What the task needs of a stad.client.ScoreResult."""

    @property
    def timestamps_ns(self) -> npt.NDArray[np.int64]: ...

    @property
    def score(self) -> npt.NDArray[np.float64]: ...

    @property
    def raw_score(self) -> npt.NDArray[np.float64]: ...

    @property
    def is_anomaly(self) -> npt.NDArray[np.bool_]: ...

    @property
    def severity(self) -> npt.NDArray[np.float64]: ...

    @property
    def threshold(self) -> float: ...

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def contributions(self) -> npt.NDArray[np.float64]: ...

    @property
    def expected(self) -> npt.NDArray[np.float64]: ...

    @property
    def version(self) -> str: ...

    @property
    def warnings(self) -> tuple[DataWarning, ...]: ...


def output_tags(pipeline: Pipeline, tags: Mapping[str, str]) -> dict[str, str]:
    return {**tags, "model": pipeline.model, "source_measurement": pipeline.measurement}


def score_columns(result: Scores, rows: npt.NDArray[np.intp]) -> list[tuple[str, FieldColumn]]:
    """The anomaly_scores fields of the returned steps `rows`, in the order they are written."""
    columns: list[tuple[str, FieldColumn]] = [
        ("score", result.score[rows]),
        ("raw_score", result.raw_score[rows]),
        ("threshold", float(result.threshold)),
        ("is_anomaly", np.asarray(result.is_anomaly[rows], dtype=bool)),
        ("severity", result.severity[rows]),
    ]
    contributions, expected = result.contributions[rows], result.expected[rows]  # (N, C)
    columns += [(f"contrib_{name}", contributions[:, c]) for c, name in enumerate(result.channels)]
    columns += [(f"expected_{name}", expected[:, c]) for c, name in enumerate(result.channels)]
    columns += signal_columns(result, rows)
    columns.append(("model_version", result.version))
    return columns


def score_lines(
    pipeline: Pipeline, tags: Mapping[str, str], result: Scores, keep: npt.NDArray[np.bool_]
) -> list[str]:
    """The anomaly_scores lines of the returned steps where `keep` is true (their scores are
    finite, so each has a line)."""
    rows = np.flatnonzero(keep)
    if not rows.size:
        return []
    return to_lines(
        pipeline.output_measurement,
        output_tags(pipeline, tags),
        score_columns(result, rows),
        result.timestamps_ns[rows],
    )


def event_points(pipeline: Pipeline, tags: Mapping[str, str], episodes: Sequence[Episode]) -> list[Point]:
    out_tags = output_tags(pipeline, tags)
    points = []
    for episode in episodes:
        end_ns = episode.end_ns(pipeline.interval_ns)
        points.append(
            Point(
                pipeline.events_measurement,
                out_tags,
                {
                    "end_time": end_ns,
                    "max_score": episode.max_score,
                    "duration_s": (end_ns - episode.start_ns) / 1e9,
                    "top_channels": ",".join(episode.top_channels()),
                    "ongoing": episode.open,
                },
                episode.start_ns,
            )
        )
    return points

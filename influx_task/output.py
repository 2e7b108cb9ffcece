"""The points a pipeline writes: one `anomaly_scores` point per scored step, one `anomaly_events`
point per episode (at its first step, rewritten while it grows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stad.influx_task.config import Pipeline
from stad.influx_task.events import Episode
from stad.influx_task.points import Point


class Scores(Protocol):
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


def output_tags(pipeline: Pipeline, tags: Mapping[str, str]) -> dict[str, str]:
    return {**tags, "model": pipeline.model, "source_measurement": pipeline.measurement}


def score_points(
    pipeline: Pipeline, tags: Mapping[str, str], result: Scores, keep: npt.NDArray[np.bool_]
) -> list[Point]:
    """anomaly_scores points for the returned steps where `keep` is true."""
    out_tags = output_tags(pipeline, tags)
    points = []
    channels = result.channels
    for i in np.flatnonzero(keep).tolist():
        fields: dict[str, float | int | bool | str] = {
            "score": float(result.score[i]),
            "raw_score": float(result.raw_score[i]),
            "threshold": float(result.threshold),
            "is_anomaly": bool(result.is_anomaly[i]),
            "severity": float(result.severity[i]),
        }
        for c, name in enumerate(channels):
            fields[f"contrib_{name}"] = float(result.contributions[i, c])
        for c, name in enumerate(channels):
            fields[f"expected_{name}"] = float(result.expected[i, c])
        fields["model_version"] = result.version
        points.append(Point(pipeline.output_measurement, out_tags, fields, int(result.timestamps_ns[i])))
    return points


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

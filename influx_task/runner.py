"""The task's passes: `once` (score from each checkpoint up to now - offset), the
scheduled `run` loop, `backfill` over a range, and `training_series` for `train`.

Exactly-once effect: for each chunk the task reads, scores and writes the
points, and only then advances the checkpoints. A crash before the checkpoint
write makes the next pass redo the chunk, which overwrites the same points
(same measurement, tag set and time), so there is neither a gap nor a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from stad.core.progress import Progress
from stad.core.series import SeriesData, make_series
from stad.influx_task.checkpoint import Checkpoint, CheckpointStore
from stad.influx_task.config import Job
from stad.influx_task.events import Episode, track_episodes
from stad.influx_task.grid import SeriesBlock, align_down, series_key, to_grid
from stad.influx_task.retry import RetryPolicy, retry_call
from stad.influx_task.writer import LineWriter, Point

log = logging.getLogger("stad.influx_task")
T = TypeVar("T")


class Reader(Protocol):
    def read(self, job: Job, start_ns: int, stop_ns: int) -> list[SeriesBlock]: ...


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


class Scorer(Protocol):
    def __call__(
        self, series: Sequence[SeriesData], *, job: Job, return_from_ns: int
    ) -> Sequence[Scores]: ...


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bad shard {self.index}/{self.count}: need 0 <= i < n")

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as exc:
            raise ValueError(f"bad shard {text!r}: expected i/n such as 0/4") from exc
        return cls(index, count)

    def owns(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


NO_SHARD = Shard()


@dataclass
class ChunkReport:
    job: str
    start_ns: int
    stop_ns: int
    series: int
    steps: int  # time steps scored and written, over all series
    points: int  # lines written (scores + events)


@dataclass
class PassStats:
    chunks: int = 0
    steps: int = 0
    points: int = 0
    series: set[str] = field(default_factory=set)


def build_points(
    job: Job,
    tags: Mapping[str, str],
    result: Scores,
    observed: npt.NDArray[np.bool_],
    from_ns: int,
) -> tuple[list[Point], npt.NDArray[np.bool_]]:
    """anomaly_scores points for the steps at or after `from_ns` that had data.

    `observed[i]` says whether returned step i had any observed value. Returns
    the points and the mask of steps that were written.
    """
    out_tags = {**tags, "model": job.model, "source_measurement": job.measurement}
    keep = observed & (result.timestamps_ns >= from_ns) & np.isfinite(result.score)
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
        points.append(Point(job.output_measurement, out_tags, fields, int(result.timestamps_ns[i])))
    return points, keep


def event_points(job: Job, tags: Mapping[str, str], episodes: Sequence[Episode]) -> list[Point]:
    out_tags = {**tags, "model": job.model, "source_measurement": job.measurement}
    points = []
    for episode in episodes:
        end_ns = episode.end_ns(job.interval_ns)
        points.append(
            Point(
                job.events_measurement,
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


@dataclass
class _Item:
    key: str
    tags: dict[str, str]
    from_ns: int
    series: SeriesData
    observed: npt.NDArray[np.bool_]  # (T,) any channel observed


class JobRunner:
    """Runs one job against one InfluxDB and one scorer."""

    def __init__(
        self,
        job: Job,
        *,
        reader: Reader,
        writer: LineWriter,
        store: CheckpointStore,
        scorer: Scorer,
        retry: RetryPolicy,
        is_retryable: Callable[[BaseException], bool],
        shard: Shard = NO_SHARD,
        now_ns: Callable[[], int] = time.time_ns,
        stop: threading.Event | None = None,
        on_chunk: Callable[[ChunkReport], None] | None = None,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> None:
        self.job = job
        self.reader = reader
        self.writer = writer
        self.store = store
        self.scorer = scorer
        self.retry = retry
        self.is_retryable = is_retryable
        self.shard = shard
        self.now_ns = now_ns
        self.stop = stop or threading.Event()
        self.on_chunk = on_chunk
        self.on_retry = on_retry

    def _call(self, fn: Callable[[], T], what: str) -> T:
        def report(exc: BaseException, attempt: int, delay_s: float) -> None:
            log.warning(
                "job %s: %s failed (attempt %d), retrying in %.2fs: %s",
                self.job.name,
                what,
                attempt,
                delay_s,
                exc,
            )
            if self.on_retry is not None:
                self.on_retry(exc, attempt, delay_s)

        return retry_call(fn, self.retry, self.is_retryable, on_retry=report)

    def _filter_tags(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.job.tag_filter.items() if len(v) == 1}

    def scored_until_ns(self) -> int:
        """Grid steps labelled before this are complete: their window ended by now - offset."""
        job = self.job
        return align_down(self.now_ns() - job.offset_ns, job.interval_ns)

    # -- passes ------------------------------------------------------------

    def run_once(self, *, progress: Progress | None = None) -> PassStats:
        """Score every owned series from its checkpoint to now - offset."""
        job = self.job
        to_ns = self.scored_until_ns()
        checkpoints = {
            k: c
            for k, c in self._call(lambda: self.store.load(job.name), "checkpoint load").items()
            if self.shard.owns(k)
        }
        if checkpoints:
            start = min(c.next_ns for c in checkpoints.values())
        else:
            start = to_ns - align_down(job.initial_lookback_ns, job.interval_ns)
        return self._run_range(start, to_ns, checkpoints, progress=progress)

    def backfill(self, start_ns: int, stop_ns: int, *, progress: Progress | None = None) -> PassStats:
        """Score [start, stop) regardless of checkpoints, overwriting earlier scores."""
        start = align_down(start_ns, self.job.interval_ns)
        stop = align_down(stop_ns, self.job.interval_ns)
        if stop <= start:
            raise ValueError(f"backfill range is empty: start {start_ns} >= stop {stop_ns}")
        return self._run_range(start, stop, None, progress=progress)

    def _run_range(
        self, start: int, stop: int, checkpoints: dict[str, Checkpoint] | None, *, progress: Progress | None
    ) -> PassStats:
        stats = PassStats()
        episodes: dict[str, Episode | None] = {}
        chunk_ns = self.job.chunk_steps * self.job.interval_ns
        chunk_start = start
        while chunk_start < stop and not self.stop.is_set():
            chunk_stop = min(stop, chunk_start + chunk_ns)
            report = self._chunk(chunk_start, chunk_stop, checkpoints, episodes)
            stats.chunks += 1
            stats.steps += report.steps
            stats.points += report.points
            if progress is not None:
                progress.advance((chunk_stop - chunk_start) // self.job.interval_ns)
            if self.on_chunk is not None:
                self.on_chunk(report)
            chunk_start = chunk_stop
        return stats

    # -- one chunk -----------------------------------------------------------

    def _items(
        self,
        blocks: list[SeriesBlock],
        read_from: int,
        chunk_start: int,
        chunk_stop: int,
        checkpoints: dict[str, Checkpoint] | None,
    ) -> list[_Item]:
        job = self.job
        fixed = self._filter_tags()
        items = []
        for block in blocks:
            tags = {**fixed, **block.tags}
            key = series_key(job.measurement, tags)
            if not self.shard.owns(key):
                continue
            from_ns = chunk_start
            if checkpoints is not None and key in checkpoints:
                from_ns = max(from_ns, checkpoints[key].next_ns)
            if from_ns >= chunk_stop:
                continue
            times, values = to_grid(
                block.timestamps_ns,
                block.values,
                start_ns=read_from,
                stop_ns=chunk_stop,
                interval_ns=job.interval_ns,
                fill=job.fill,
            )
            observed = np.asarray(~np.isnan(values).all(axis=1), dtype=np.bool_)  # (T,)
            if times.size == 0 or not (observed & (times >= from_ns)).any():
                continue
            series = make_series(values, channels=job.fields, timestamps_ns=times)
            items.append(_Item(key, tags, from_ns, series, observed))
        return items

    def _chunk(
        self,
        chunk_start: int,
        chunk_stop: int,
        checkpoints: dict[str, Checkpoint] | None,
        episodes: dict[str, Episode | None],
    ) -> ChunkReport:
        job = self.job
        read_from = chunk_start - job.context_steps * job.interval_ns
        blocks = self._call(lambda: self.reader.read(job, read_from, chunk_stop), "read")
        items = self._items(blocks, read_from, chunk_start, chunk_stop, checkpoints)
        points: list[Point] = []
        advanced: list[Checkpoint] = []
        steps = 0
        for first in range(0, len(items), job.series_per_call):
            group = items[first : first + job.series_per_call]
            results = self._call(
                lambda group=group: self.scorer(
                    [i.series for i in group],
                    job=job,  # type: ignore[misc]
                    return_from_ns=chunk_start,
                ),
                "score",
            )
            if len(results) != len(group):
                raise RuntimeError(f"server returned {len(results)} results for {len(group)} series")
            for item, result in zip(group, results, strict=True):
                index = np.searchsorted(item.series.timestamps_ns, result.timestamps_ns)  # type: ignore[arg-type]
                new_points, kept = build_points(job, item.tags, result, item.observed[index], item.from_ns)
                points += new_points
                steps += len(new_points)
                if checkpoints is not None:
                    previous = checkpoints.get(item.key)
                    state = previous.episode if previous else None
                else:
                    state = episodes.get(item.key)
                touched, state = track_episodes(
                    state,
                    result.timestamps_ns[kept],
                    result.is_anomaly[kept],
                    result.score[kept],
                    result.contributions[kept],
                    result.channels,
                )
                points += event_points(job, item.tags, touched)
                episodes[item.key] = state
                advanced.append(Checkpoint(item.key, chunk_stop, state))
        if checkpoints is not None:
            seen = {c.series for c in advanced}
            for key, old in checkpoints.items():
                if key not in seen and old.next_ns < chunk_stop:
                    advanced.append(Checkpoint(key, chunk_stop, old.episode))
        written = self._call(
            lambda: self.writer.write(
                points, database=job.out_database, retention_policy=job.output_retention_policy
            ),
            "write",
        )
        if checkpoints is not None and advanced:
            self._call(lambda: self.store.save(job.name, advanced), "checkpoint save")
            for checkpoint in advanced:
                checkpoints[checkpoint.series] = checkpoint
        return ChunkReport(job.name, chunk_start, chunk_stop, len(items), steps, written)

    # -- training data -------------------------------------------------------

    def training_series(self, start_ns: int, stop_ns: int) -> list[SeriesData]:
        """The owned series over [start, stop) on the grid, one SeriesData per tag set."""
        job = self.job
        start = align_down(start_ns, job.interval_ns)
        stop = align_down(stop_ns, job.interval_ns)
        if stop <= start:
            raise ValueError(f"training range is empty: start {start_ns} >= stop {stop_ns}")
        pieces: dict[str, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]] = {}
        chunk_ns = job.chunk_steps * job.interval_ns
        for chunk_start in range(start, stop, chunk_ns):
            chunk_stop = min(stop, chunk_start + chunk_ns)
            blocks = self._call(
                lambda a=chunk_start, b=chunk_stop: self.reader.read(job, a, b),  # type: ignore[misc]
                "read",
            )
            for block in blocks:
                key = series_key(job.measurement, {**self._filter_tags(), **block.tags})
                if not self.shard.owns(key):
                    continue
                times, values = to_grid(
                    block.timestamps_ns,
                    block.values,
                    start_ns=chunk_start,
                    stop_ns=chunk_stop,
                    interval_ns=job.interval_ns,
                    fill=job.fill,
                )
                pieces.setdefault(key, []).append((times, values))
        out = []
        for key in sorted(pieces):
            times = np.concatenate([t for t, _ in pieces[key]])
            values = np.concatenate([v for _, v in pieces[key]])  # (T, C)
            observed = ~np.isnan(values).all(axis=1)
            if not observed.any():
                continue
            first, last = np.flatnonzero(observed)[[0, -1]]
            out.append(
                make_series(
                    values[first : last + 1], channels=job.fields, timestamps_ns=times[first : last + 1]
                )
            )
        return out


def concatenate_for_training(series: Sequence[SeriesData]) -> SeriesData:
    """Stack several series of the same channels end to end (one model serves them all)."""
    if not series:
        raise ValueError("no data to train on in the given range")
    values = np.concatenate([s.values for s in series])  # (sum T, C)
    return make_series(values, channels=series[0].channels)

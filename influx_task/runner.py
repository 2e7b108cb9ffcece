"""The task's passes: `run_once` (score from each checkpoint up to now - offset),
`backfill` over a range, and `training_series` for `train`.

Exactly-once effect: for each chunk the task reads, scores and writes the
points, and only then advances the checkpoints. A crash before the checkpoint
write makes the next pass redo the chunk, which overwrites the same points
(same measurement, tag set and time), so there is neither a gap nor a duplicate.

Determinism: every series is sent on the window grid of `geometry.py`, and a
step is written only once every window it needs has data that is final, so a
step's score, and the episodes built from the scores, do not depend on where
chunks or passes start. Data is final up to `now - offset`; after a series' last
observed step it is held back for `lateness` in case the data is only late.
Within `lateness` behind a series' checkpoint, `run_once` re-reads the data,
and the blocks that changed are rescored (see `lateness.py`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from stad.core.series import SeriesData, make_series
from stad.influx_task.checkpoint import Checkpoint, CheckpointStore
from stad.influx_task.config import Pipeline
from stad.influx_task.eraser import Spans
from stad.influx_task.events import Episode, track_episodes
from stad.influx_task.geometry import Geometry, align_down
from stad.influx_task.grid import SeriesBlock, filled, series_key, to_grid
from stad.influx_task.lateness import LateState, digest
from stad.influx_task.output import Scores, event_points, score_lines
from stad.influx_task.points import point_lines
from stad.influx_task.retry import RetryPolicy, retry_call
from stad.influx_task.signals import log_warnings
from stad.influx_task.times import rfc3339_from_ns
from stad.influx_task.writer import LineWriter

log = logging.getLogger("stad.influx_task")
T = TypeVar("T")
QUEUE_DEPTH = 2  # chunks waiting between two stages of the pipeline


def _put(channel: queue.Queue[T], item: T, failed: threading.Event) -> None:
    """Put, waiting for room unless the pipeline failed (then the item is not wanted)."""
    while True:
        try:
            channel.put(item, timeout=0.05)
            return
        except queue.Full:
            if failed.is_set():
                return


class Reader(Protocol):
    def read(self, pipeline: Pipeline, start_ns: int, stop_ns: int) -> list[SeriesBlock]: ...


@runtime_checkable
class SeriesLister(Protocol):
    """A reader that can list a pipeline's series (their group_by tags) cheaply."""

    def series_tags(self, pipeline: Pipeline) -> list[dict[str, str]] | None: ...


class Scorer(Protocol):
    def __call__(
        self, series: Sequence[SeriesData], *, pipeline: Pipeline, return_from_ns: int
    ) -> Sequence[Scores]: ...

    def geometry(self, pipeline: Pipeline) -> Geometry: ...


class EpisodeLookup(Protocol):
    def open_episode_starts(self, pipeline: Pipeline, before_ns: int) -> dict[str, int]: ...


class Eraser(Protocol):
    def erase(self, pipeline: Pipeline, spans: Spans) -> None: ...


def _nothing_replaced(key: str) -> int:
    return -(2**63)


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
        digest_ = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest_[:8], "big") % self.count == self.index


NO_SHARD = Shard()


def fixed_tags(pipeline: Pipeline) -> dict[str, str]:
    """The tags every series of the pipeline has: its single-valued tag filters."""
    return {k: v[0] for k, v in pipeline.tag_filter.items() if len(v) == 1}


def owned_only(pipeline: Pipeline, shard: Shard, listed: Sequence[Mapping[str, str]]) -> Pipeline | None:
    """The pipeline with its tag filter narrowed to the group_by values of the listed series
    (their group_by tags) that `shard` owns; None when it owns none of them."""
    fixed = fixed_tags(pipeline)
    owned = [t for t in listed if shard.owns(series_key(pipeline.measurement, {**fixed, **t}))]
    if not owned:
        return None
    values = {key: tuple(sorted({t[key] for t in owned})) for key in pipeline.group_by}
    return replace(pipeline, tag_filter={**pipeline.tag_filter, **values})


@dataclass
class ChunkReport:
    pipeline: str
    start_ns: int
    stop_ns: int
    series: int
    steps: int  # time steps scored and written, over all series
    points: int  # lines written (scores + events)
    read: int = 0  # field values read


@dataclass
class PassStats:
    chunks: int = 0
    steps: int = 0
    points: int = 0
    series: set[str] = field(default_factory=set)
    rescored: set[str] = field(default_factory=set)  # series rescored for late data
    interrupted: bool = False
    lag_s: float = 0.0  # now - offset minus the oldest checkpoint after the pass
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("read", "score", "write"), 0.0))


@dataclass
class _Prepared:
    start_ns: int
    stop_ns: int
    items: list[_Item]
    advance: dict[str, int]  # series with nothing to score whose checkpoint moves to this
    read: int  # field values read
    replaced: dict[tuple[int, int], list[dict[str, str]]]  # spans whose old points go, by series tags


@dataclass
class _Scored:
    prepared: _Prepared
    results: list[Scores]


class _NoWrites:
    """Stands in for the writer, the eraser and the checkpoint store in a dry run."""

    def write_lines(self, lines: Sequence[str], **_: object) -> int:
        return len(lines)

    def erase(self, pipeline: Pipeline, spans: Spans) -> None:
        return None

    def save(self, pipeline: str, checkpoints: Sequence[Checkpoint]) -> None:
        return None


@dataclass
class _Item:
    key: str
    tags: dict[str, str]
    from_ns: int
    until_ns: int  # steps before this are final and written
    series: SeriesData  # sent on the window grid
    observed: npt.NDArray[np.bool_]  # (T,) any channel observed before the fill
    raw: npt.NDArray[np.float64]  # (T, C) before the fill


class PipelineRunner:
    """Runs one pipeline against one InfluxDB and one scorer."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        reader: Reader,
        writer: LineWriter,
        store: CheckpointStore,
        scorer: Scorer,
        retry: RetryPolicy,
        is_retryable: Callable[[BaseException], bool],
        episodes: EpisodeLookup | None = None,
        eraser: Eraser | None = None,
        shard: Shard = NO_SHARD,
        now_ns: Callable[[], int] = time.time_ns,
        stop: threading.Event | None = None,
        on_chunk: Callable[[ChunkReport], None] | None = None,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.reader = reader
        self.writer = writer
        self.store = store
        self.scorer = scorer
        self.retry = retry
        self.is_retryable = is_retryable
        self.episodes = episodes
        self.eraser = eraser
        self.shard = shard
        self.now_ns = now_ns
        self.stop = stop or threading.Event()
        self.on_chunk = on_chunk
        self.on_retry = on_retry
        self._geometry: Geometry | None = None
        self._owned_only: tuple[Pipeline | None] | None = None  # narrowed to this shard's series

    def _call(self, fn: Callable[[], T], what: str) -> T:
        def report(exc: BaseException, attempt: int, delay_s: float) -> None:
            log.warning(
                "pipeline %s: %s failed (attempt %d), retrying in %.2fs: %s",
                self.pipeline.name,
                what,
                attempt,
                delay_s,
                exc,
            )
            if self.on_retry is not None:
                self.on_retry(exc, attempt, delay_s)

        return retry_call(fn, self.retry, self.is_retryable, on_retry=report, stop=self.stop)

    @property
    def geometry(self) -> Geometry:
        """The model's scoring windows (asked of the server once); refuses a too short context."""
        if self._geometry is None:
            geometry = self._call(lambda: self.scorer.geometry(self.pipeline), "model lookup")
            if self.pipeline.context_steps < geometry.window:
                raise ValueError(
                    f"pipeline {self.pipeline.name!r}: context = {self.pipeline.context_steps} steps is "
                    "shorter than "
                    f"model {self.pipeline.model!r}'s window of {geometry.window} steps"
                )
            self._geometry = geometry
        return self._geometry

    def _read(self, start_ns: int, stop_ns: int, what: str = "read") -> list[SeriesBlock]:
        """Read the pipeline over [start, stop): with shards, only (about) the owned series."""
        pipeline = self._read_pipeline()
        if pipeline is None:
            return []
        return self._call(lambda: self.reader.read(pipeline, start_ns, stop_ns), what)

    def _read_pipeline(self) -> Pipeline | None:
        """The pipeline as read. One shard of several reads only the group_by tag values of
        the series it owns (listed once per pass), not every series to drop most of them;
        None when it owns none. Series that appear later are read from the next pass on."""
        pipeline = self.pipeline
        if self.shard.count == 1 or not pipeline.group_by or not isinstance(self.reader, SeriesLister):
            return pipeline
        if self._owned_only is None:
            lister = self.reader
            listed = self._call(lambda: lister.series_tags(pipeline), "series lookup")
            self._owned_only = (pipeline if listed is None else owned_only(pipeline, self.shard, listed),)
        return self._owned_only[0]

    def _filter_tags(self) -> dict[str, str]:
        return fixed_tags(self.pipeline)

    def horizon_ns(self) -> int:
        """Data on grid steps before this is final: their window ended by now - offset."""
        return align_down(self.now_ns() - self.pipeline.offset_ns, self.pipeline.interval_ns)

    @property
    def fill_reach(self) -> int:
        """Steps a filled value may reach back (or forward) to its source."""
        return 0 if self.pipeline.fill == "null" else self.pipeline.context_steps

    def _owned_checkpoints(self, key: str) -> dict[str, Checkpoint]:
        """The checkpoints saved under `key` of the series this shard owns."""
        found = self._call(lambda: self.store.load(key), "checkpoint load")
        return {k: c for k, c in found.items() if self.shard.owns(k)}

    # -- passes ------------------------------------------------------------

    def run_once(self) -> PassStats:
        """Rescore late data within the horizon, then score every owned series up to now - offset."""
        pipeline = self.pipeline
        horizon = self.horizon_ns()
        checkpoints = self._owned_checkpoints(pipeline.name)
        rescored = self._rewind_late(checkpoints) if pipeline.lateness_ns and checkpoints else {}
        if checkpoints:
            start = min(c.next_ns for c in checkpoints.values())
        else:
            start = horizon - align_down(pipeline.initial_lookback_ns, pipeline.interval_ns)
        stats = self._run_range(
            start,
            horizon,
            horizon,
            checkpoints,
            save_as=pipeline.name,
            replace_before=lambda key: rescored.get(key, _nothing_replaced(key)),
        )
        stats.rescored = set(rescored)
        if checkpoints:
            stats.lag_s = max(0, horizon - min(c.next_ns for c in checkpoints.values())) / 1e9
        return stats

    def dry_run(self) -> ChunkReport:
        """Read and score the chunk the next pass would score first; write nothing."""
        pipeline = self.pipeline
        horizon = self.horizon_ns()
        checkpoints = self._owned_checkpoints(pipeline.name)
        start = min(
            (c.next_ns for c in checkpoints.values()),
            default=horizon - align_down(pipeline.initial_lookback_ns, pipeline.interval_ns),
        )
        stop = min(horizon, start + pipeline.chunk_steps * pipeline.interval_ns)
        writer, store, eraser = self.writer, self.store, self.eraser
        self.writer = self.store = self.eraser = _NoWrites()  # type: ignore[assignment]
        try:
            report = self._chunk(start, stop, horizon, checkpoints, pipeline.name, None, None)
        finally:
            self.writer, self.store, self.eraser = writer, store, eraser
        if report.series == 0:
            raise ValueError(
                f"pipeline {pipeline.name!r}: no data for measurement {pipeline.measurement!r} fields "
                f"{list(pipeline.fields)} in {pipeline.database!r} "
                f"from {rfc3339_from_ns(start)} to {rfc3339_from_ns(stop)}"
            )
        return report

    def backfill(self, start_ns: int, stop_ns: int, *, restart: bool = False) -> PassStats:
        """Score [start, stop) regardless of the pipeline's checkpoints, overwriting earlier scores.

        Progress is kept apart (checkpoint pipeline `<name>#backfill@<start>`), so an
        interrupted backfill restarted with the same start resumes; one that had finished
        scores its range again. An episode open at `start` is rescored from
        its first step, and one open at `stop` is followed until it closes (at most up to
        now - offset), so a partial backfill leaves episodes whole. The points each series
        had before `stop` from where its rescore begins are replaced: those not written
        again (an episode gone, a step with no data now) are deleted.
        """
        pipeline = self.pipeline
        start = align_down(start_ns, pipeline.interval_ns)
        stop = align_down(stop_ns, pipeline.interval_ns)
        if stop <= start:
            raise ValueError(f"backfill range is empty: start {start_ns} >= stop {stop_ns}")
        key = f"{pipeline.name}#backfill@{start}"
        checkpoints = {} if restart else self._owned_checkpoints(key)
        resumed = bool(checkpoints)
        if not checkpoints and self.episodes is not None:
            opened = self._call(lambda: self.episodes.open_episode_starts(pipeline, start), "episode lookup")  # type: ignore[union-attr]
            checkpoints = {k: Checkpoint(k, t) for k, t in opened.items() if self.shard.owns(k)}
        first = min([start, *(c.next_ns for c in checkpoints.values())])
        stats = self._run_range(
            first,
            stop,
            self.horizon_ns(),
            checkpoints,
            save_as=key,
            new_from=start,
            follow_open=True,
            replace_before=lambda _: stop,
        )
        if resumed and not stats.interrupted and stats.steps == 0:
            log.info("pipeline %s: the backfill from %s had finished: scoring it again", pipeline.name, start)
            return self.backfill(start_ns, stop_ns, restart=True)
        return stats

    def _run_range(
        self,
        start: int,
        stop: int,
        horizon: int,
        checkpoints: dict[str, Checkpoint],
        *,
        save_as: str,
        new_from: int | None = None,
        follow_open: bool = False,
        replace_before: Callable[[str], int] = _nothing_replaced,
    ) -> PassStats:
        """Chunks over [start, stop); series not checkpointed yet start at max(chunk, new_from).

        Reading, scoring and writing overlap (see `_overlapped`). `follow_open`: then go on
        past `stop`, one chunk at a time, for the series whose episode is still open.
        `replace_before(series)`: the points a series already has before this, from where
        its scoring begins, are deleted chunk by chunk before the chunk's points are written.
        """
        stats = PassStats()
        chunk_ns = self.pipeline.chunk_steps * self.pipeline.interval_ns
        end = min(stop, horizon)
        bounds = [(a, min(end, a + chunk_ns)) for a in range(start, end, chunk_ns)]
        self._overlapped(bounds, horizon, checkpoints, save_as, new_from, replace_before, stats)
        chunk_start = end
        while follow_open and not stats.interrupted and chunk_start < horizon:
            only = {k for k, c in checkpoints.items() if c.episode is not None}
            if not only:
                break
            if self.stop.is_set():
                stats.interrupted = True
                break
            chunk_stop = min(horizon, chunk_start + chunk_ns)
            report = self._chunk(
                chunk_start, chunk_stop, horizon, checkpoints, save_as, new_from, only, replace_before
            )
            self._count(report, checkpoints, stats)
            chunk_start = chunk_stop
            if report.steps == 0:  # the followed series are silent: skip to where their data goes on
                chunk_start = self._skip_silence(only, chunk_stop, horizon, checkpoints, save_as)
        return stats

    def _skip_silence(
        self, keys: set[str], start: int, horizon: int, checkpoints: dict[str, Checkpoint], save_as: str
    ) -> int:
        """Where the next data of the series `keys` after `start` lies, to a chunk (`horizon`
        when there is none: an episode open at the end of a series' data stays open). One
        coarse query (a row per chunk and series), so that following an episode past a feed
        that stopped does not read the silence chunk by chunk. The checkpoints that reached
        `start` move there too (there is nothing to score before it)."""
        pipeline = self.pipeline
        chunk_ns = pipeline.chunk_steps * pipeline.interval_ns
        if start >= horizon:
            return horizon
        read_as = self._read_pipeline()
        if read_as is None:
            return horizon
        narrowed = replace(read_as, interval_ns=chunk_ns)
        blocks = self._call(lambda: self.reader.read(narrowed, start, horizon), "read ahead")
        found = horizon
        for block in blocks:
            if series_key(pipeline.measurement, {**self._filter_tags(), **block.tags}) not in keys:
                continue
            seen = ~np.isnan(block.values).all(axis=1)
            if seen.any():
                found = min(found, max(start, int(block.timestamps_ns[seen][0])))
        found = align_down(found, pipeline.interval_ns)
        moved = [
            self._advanced(checkpoints[key], key, found, None)
            for key in sorted(keys)
            if checkpoints[key].next_ns == start < found < horizon
        ]
        if moved:
            self._call(lambda: self.store.save(save_as, moved), "checkpoint save")
            checkpoints.update({c.series: c for c in moved})
        return found

    def _count(self, report: ChunkReport, checkpoints: dict[str, Checkpoint], stats: PassStats) -> None:
        stats.chunks += 1
        stats.steps += report.steps
        stats.points += report.points
        stats.series |= set(checkpoints)
        if self.on_chunk is not None:
            self.on_chunk(report)

    def _overlapped(
        self,
        bounds: list[tuple[int, int]],
        horizon: int,
        checkpoints: dict[str, Checkpoint],
        save_as: str,
        new_from: int | None,
        replace_before: Callable[[str], int],
        stats: PassStats,
    ) -> None:
        """Read, score and write the chunks as a pipeline: a reading thread, a scoring thread
        and this one writing, joined by queues of `QUEUE_DEPTH` chunks, so the slowest stage
        sets the pace. Chunks are scored and written in order, and a chunk's checkpoints are
        saved only after its points are written. A stop request ends the reading; what is
        already read is finished. The first error stops all three and is raised here."""
        prepared: queue.Queue[_Prepared | None] = queue.Queue(QUEUE_DEPTH)
        scored: queue.Queue[_Scored | None] = queue.Queue(QUEUE_DEPTH)
        failed = threading.Event()
        errors: list[BaseException] = []
        frontier = {k: c.next_ns for k, c in checkpoints.items()}

        def stage(
            source: queue.Queue[Any], work: Callable[[Any], Any], sink: Callable[[Any], None], name: str
        ) -> None:
            """Work each item of `source` up to None into `sink`, timed; after a failure anywhere,
            only drain `source`, so that the stage before it can finish."""
            try:
                while (item := source.get()) is not None:
                    if not failed.is_set():
                        began = time.perf_counter()
                        result = work(item)
                        stats.stage_s[name] += time.perf_counter() - began
                        sink(result)
            except BaseException as exc:
                errors.append(exc)
                failed.set()
                while source.get() is not None:
                    pass

        def read() -> None:
            try:
                for chunk_start, chunk_stop in bounds:
                    if failed.is_set():
                        return
                    if self.stop.is_set():
                        stats.interrupted = True
                        return
                    began = time.perf_counter()
                    item = self._prepare(
                        chunk_start, chunk_stop, horizon, frontier, new_from, None, replace_before
                    )
                    stats.stage_s["read"] += time.perf_counter() - began
                    _put(prepared, item, failed)
            except BaseException as exc:
                errors.append(exc)
                failed.set()
            finally:
                prepared.put(None)  # the scorer always drains to this

        def score() -> None:
            try:
                stage(prepared, self._score, lambda done: _put(scored, done, failed), "score")
            finally:
                scored.put(None)  # the writer always drains to this

        threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=score, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            stage(
                scored,
                lambda done: self._commit(done, checkpoints, save_as),
                lambda report: self._count(report, checkpoints, stats),
                "write",
            )
        finally:
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    # -- late data -----------------------------------------------------------

    def _rewind_late(self, checkpoints: dict[str, Checkpoint]) -> dict[str, int]:
        """Re-read the blocks each checkpoint remembers; rewind series whose data changed
        within the lateness horizon, and name the backfill for changes beyond it. Returns
        the rewound series with the checkpoint each had: their points before it get replaced."""
        pipeline = self.pipeline
        spans = [(b, stop) for c in checkpoints.values() for b, (stop, _) in c.late.digests.items()]
        if not spans:
            return {}
        lo, hi = min(b for b, _ in spans), max(stop for _, stop in spans)
        blocks = self._read(lo, hi, "late-data read")
        rewound = {}
        for block in blocks:
            key = series_key(pipeline.measurement, {**self._filter_tags(), **block.tags})
            checkpoint = checkpoints.get(key)
            if checkpoint is None:
                continue
            _, raw = to_grid(
                block.timestamps_ns, block.values, start_ns=lo, stop_ns=hi, interval_ns=pipeline.interval_ns
            )
            now = {
                b: (stop, digest(raw[(b - lo) // pipeline.interval_ns : (stop - lo) // pipeline.interval_ns]))
                for b, (stop, _) in checkpoint.late.digests.items()
            }
            changed = sorted(b for b, known in checkpoint.late.digests.items() if now[b] != known)
            horizon = checkpoint.next_ns - pipeline.lateness_ns
            beyond = [b for b in changed if b < horizon]
            within = [b for b in changed if b >= horizon]
            if beyond:
                log.warning(
                    "pipeline %s: series %s: data changed at %d, beyond the lateness horizon (%d s) "
                    "and not rescored; run `stad influx backfill --pipeline %s --start %d --stop %d`",
                    pipeline.name,
                    key,
                    beyond[0],
                    pipeline.lateness_ns // 10**9,
                    pipeline.name,
                    self._first_affected(beyond[0]),
                    horizon,
                )
                checkpoint.late.digests.update({b: now[b] for b in beyond})  # said once
            if not within:
                continue
            snapshot = checkpoint.late.snapshot_at_or_before(self._first_affected(within[0]))
            if snapshot is None:
                continue
            at, episode = snapshot
            log.info(
                "pipeline %s: series %s: late data at %d, rescoring from %d",
                pipeline.name,
                key,
                within[0],
                at,
            )
            late = checkpoint.late
            late.snapshots = [s for s in late.snapshots if s[0] <= at]
            rewound[key] = checkpoint.next_ns
            checkpoints[key] = Checkpoint(key, at, episode, late)
        return rewound

    def _first_affected(self, changed_ns: int) -> int:
        """The first window that covers a changed step (or a value filled from it) starts here."""
        geometry = self.geometry
        reach = (geometry.window - 1 + self.fill_reach) * self.pipeline.interval_ns + geometry.after_ns
        return -(-(changed_ns - reach) // geometry.block_ns) * geometry.block_ns

    # -- one chunk -----------------------------------------------------------

    def _series_horizon(self, observed_times: npt.NDArray[np.int64], read_stop: int, horizon: int) -> int:
        """Data of one series is final before this: after its last observed step, steps wait
        for late data for `lateness` (or until the chunk's read ends before now - offset)."""
        if read_stop < horizon - self.pipeline.lateness_ns:
            return read_stop
        waited = horizon - self.pipeline.lateness_ns
        last = int(observed_times[-1]) + self.pipeline.interval_ns if observed_times.size else waited
        return min(read_stop, max(last, waited))

    def _items(
        self,
        blocks: list[SeriesBlock],
        read_from: int,
        read_stop: int,
        data_stop: int,
        chunk_start: int,
        chunk_stop: int,
        horizon: int,
        frontier: Mapping[str, int],
        new_from: int | None,
        only: set[str] | None,
    ) -> tuple[list[_Item], dict[str, int], dict[str, tuple[dict[str, str], int, int]]]:
        """Series to score, the new `next_ns` of series with nothing to score, and for the
        series read, their tags and the steps [from, until) the chunk takes them over."""
        pipeline, geometry = self.pipeline, self.geometry
        fixed = self._filter_tags()
        items = []
        advance: dict[str, int] = {}
        moved: dict[str, tuple[dict[str, str], int, int]] = {}
        seen = set()
        for block in blocks:
            tags = {**fixed, **block.tags}
            key = series_key(pipeline.measurement, tags)
            if not self.shard.owns(key) or (only is not None and key not in only):
                continue
            seen.add(key)
            known = frontier.get(key)
            from_ns = known if known is not None else max(chunk_start, new_from or chunk_start)
            if from_ns >= chunk_stop:
                continue
            times, raw = to_grid(
                block.timestamps_ns,
                block.values,
                start_ns=read_from,
                stop_ns=data_stop,
                interval_ns=pipeline.interval_ns,
            )
            observed = np.asarray(~np.isnan(raw).all(axis=1), dtype=np.bool_)  # (T,)
            inside = times < read_stop
            until_data = self._series_horizon(times[observed & inside], read_stop, horizon)
            until = min(chunk_stop, geometry.final_until(until_data))
            send_from = geometry.send_from(from_ns, pipeline.context_steps)
            send_until = geometry.send_until(until_data)
            if until > from_ns and not (observed & (times >= from_ns) & (times < until)).any():
                advance[key] = until  # nothing observed to score: only the checkpoint moves
                moved[key] = (tags, from_ns, until)
                continue
            if until <= from_ns or send_until - send_from < geometry.window * pipeline.interval_ns:
                if known is None:  # nothing to score yet: a new series' checkpoint starts here
                    advance[key] = from_ns
                continue
            model_input = filled(raw, pipeline.fill, self.fill_reach)
            part = slice(
                (send_from - read_from) // pipeline.interval_ns,
                (send_until - read_from) // pipeline.interval_ns,
            )
            series = make_series(model_input[part], channels=pipeline.fields, timestamps_ns=times[part])
            items.append(_Item(key, tags, from_ns, until, series, observed[part], raw[part]))
            moved[key] = (tags, from_ns, until)
        for key, next_ns in frontier.items():
            if key in seen or (only is not None and key not in only) or next_ns >= chunk_stop:
                continue
            until = min(
                chunk_stop,
                geometry.final_until(self._series_horizon(np.zeros(0, np.int64), read_stop, horizon)),
            )
            if until > next_ns:
                advance[key] = until
        return items, advance, moved

    def _chunk(
        self,
        chunk_start: int,
        chunk_stop: int,
        horizon: int,
        checkpoints: dict[str, Checkpoint],
        save_as: str,
        new_from: int | None,
        only: set[str] | None,
        replace_before: Callable[[str], int] = _nothing_replaced,
    ) -> ChunkReport:
        """One chunk, read to checkpoint, in this thread."""
        frontier = {k: c.next_ns for k, c in checkpoints.items()}
        prepared = self._prepare(chunk_start, chunk_stop, horizon, frontier, new_from, only, replace_before)
        return self._commit(self._score(prepared), checkpoints, save_as)

    def _prepare(
        self,
        chunk_start: int,
        chunk_stop: int,
        horizon: int,
        frontier: dict[str, int],
        new_from: int | None,
        only: set[str] | None,
        replace_before: Callable[[str], int],
    ) -> _Prepared:
        """Read a chunk and cut its series; moves `frontier` (series -> next step) past it.
        The steps a series moves over before `replace_before(series)` are to be replaced."""
        pipeline, geometry = self.pipeline, self.geometry
        owned = [n for k, n in frontier.items() if only is None or k in only]
        lowest = min([chunk_start, *owned]) if new_from is None else min([max(chunk_start, new_from), *owned])
        read_from = (
            geometry.send_from(lowest, pipeline.context_steps) - self.fill_reach * pipeline.interval_ns
        )
        read_stop = min(horizon, chunk_stop + geometry.window * pipeline.interval_ns + geometry.after_ns)
        data_stop = min(horizon, read_stop + self.fill_reach * pipeline.interval_ns)
        blocks = self._read(read_from, data_stop)
        items, advance, moved = self._items(
            blocks,
            read_from,
            read_stop,
            data_stop,
            chunk_start,
            chunk_stop,
            horizon,
            frontier,
            new_from,
            only,
        )
        frontier.update(advance)
        frontier.update({item.key: item.until_ns for item in items})
        read = sum(int(np.count_nonzero(~np.isnan(b.values))) for b in blocks)
        replaced: dict[tuple[int, int], list[dict[str, str]]] = {}
        for key, (tags, first, until) in moved.items():
            last = min(until, replace_before(key))
            if first < last:
                replaced.setdefault((first, last), []).append(tags)
        return _Prepared(chunk_start, chunk_stop, items, advance, read, replaced)

    def _score(self, prepared: _Prepared) -> _Scored:
        """The Score calls of a prepared chunk (nothing else, so the scoring stage only waits on them)."""
        pipeline = self.pipeline
        items = prepared.items
        results: list[Scores] = []
        for first in range(0, len(items), pipeline.series_per_call):
            group = items[first : first + pipeline.series_per_call]
            answer = self._call(
                lambda group=group: self.scorer(  # type: ignore[misc]
                    [i.series for i in group], pipeline=pipeline, return_from_ns=min(i.from_ns for i in group)
                ),
                "score",
            )
            if len(answer) != len(group):
                raise RuntimeError(f"server returned {len(answer)} results for {len(group)} series")
            results += answer
        return _Scored(prepared, results)

    def _commit(self, scored: _Scored, checkpoints: dict[str, Checkpoint], save_as: str) -> ChunkReport:
        """Points and episodes from a scored chunk, in chunk order; delete the old points of
        the spans the chunk replaces, write the new ones, then (only then) save and adopt the
        chunk's checkpoints."""
        pipeline, prepared = self.pipeline, scored.prepared
        lines: list[str] = []
        advanced = [self._advanced(checkpoints.get(k), k, n, None) for k, n in prepared.advance.items()]
        steps = 0
        for item, result in zip(prepared.items, scored.results, strict=True):
            log_warnings(f"pipeline {pipeline.name} series {item.key}", result.warnings)
            index = np.searchsorted(item.series.timestamps_ns, result.timestamps_ns)  # type: ignore[arg-type]
            stamps = result.timestamps_ns
            keep = (
                item.observed[index]
                & (stamps >= item.from_ns)
                & (stamps < item.until_ns)
                & np.isfinite(result.score)
            )
            new_lines = score_lines(pipeline, item.tags, result, keep)
            lines += new_lines
            steps += len(new_lines)
            previous = checkpoints.get(item.key)
            touched, state = track_episodes(
                previous.episode if previous else None,
                stamps[keep],
                result.is_anomaly[keep],
                result.score[keep],
                result.contributions[keep],
                result.channels,
            )
            lines += point_lines(event_points(pipeline, item.tags, touched))
            advanced.append(self._advanced(previous, item.key, item.until_ns, state, item))
        if prepared.replaced and self.eraser is not None:
            eraser = self.eraser
            self._call(lambda: eraser.erase(pipeline, prepared.replaced), "delete")
        written = self._call(
            lambda: self.writer.write_lines(
                lines, database=pipeline.out_database, retention_policy=pipeline.output_retention_policy
            ),
            "write",
        )
        if advanced:
            self._call(lambda: self.store.save(save_as, advanced), "checkpoint save")
            checkpoints.update({c.series: c for c in advanced})
        return ChunkReport(
            pipeline.name,
            prepared.start_ns,
            prepared.stop_ns,
            len(prepared.items),
            steps,
            written,
            prepared.read,
        )

    def _advanced(
        self,
        previous: Checkpoint | None,
        key: str,
        until: int,
        state: Episode | None,
        item: _Item | None = None,
    ) -> Checkpoint:
        """The checkpoint after a chunk: `until`, the episode state there, and what the
        lateness horizon needs (the data's block hashes, the state where the chunk began)."""
        pipeline = self.pipeline
        if previous is None:
            late = LateState()
            episode = state
        else:
            late = LateState(dict(previous.late.digests), list(previous.late.snapshots))
            episode = state if item is not None else previous.episode
        if pipeline.lateness_ns:
            if previous is not None:
                late.snapshots.append((previous.next_ns, previous.episode))
            else:
                late.snapshots.append((item.from_ns if item else until, None))
            if item is not None:
                times = item.series.timestamps_ns
                assert times is not None
                block = self.geometry.block_ns
                for b in range(int(times[0]), int(times[-1]) + pipeline.interval_ns, block):
                    stop = min(b + block, int(times[-1]) + pipeline.interval_ns)
                    rows = slice(
                        (b - int(times[0])) // pipeline.interval_ns,
                        (stop - int(times[0])) // pipeline.interval_ns,
                    )
                    late.digests[b] = (stop, digest(item.raw[rows]))
            # Twice the horizon: changes in the outer half are only reported (see _rewind_late).
            lead = self.geometry.lead_steps(pipeline.context_steps) * pipeline.interval_ns
            late.prune(until - 2 * pipeline.lateness_ns - lead)
        return Checkpoint(key, until, episode, late)

    # -- training data -------------------------------------------------------

    def training_series(self, start_ns: int, stop_ns: int) -> list[SeriesData]:
        """The owned series over [start, stop) on the grid, one SeriesData per tag set."""
        pipeline = self.pipeline
        start = align_down(start_ns, pipeline.interval_ns)
        stop = align_down(stop_ns, pipeline.interval_ns)
        if stop <= start:
            raise ValueError(f"training range is empty: start {start_ns} >= stop {stop_ns}")
        pieces: dict[str, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]] = {}
        chunk_ns = pipeline.chunk_steps * pipeline.interval_ns
        for chunk_start in range(start, stop, chunk_ns):
            chunk_stop = min(stop, chunk_start + chunk_ns)
            blocks = self._read(chunk_start, chunk_stop)
            for block in blocks:
                key = series_key(pipeline.measurement, {**self._filter_tags(), **block.tags})
                if not self.shard.owns(key):
                    continue
                times, values = to_grid(
                    block.timestamps_ns,
                    block.values,
                    start_ns=chunk_start,
                    stop_ns=chunk_stop,
                    interval_ns=pipeline.interval_ns,
                    fill=pipeline.fill,
                    fill_limit=self.fill_reach,
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
                    values[first : last + 1], channels=pipeline.fields, timestamps_ns=times[first : last + 1]
                )
            )
        return out


def concatenate_for_training(series: Sequence[SeriesData]) -> SeriesData:
    """Stack several series of the same channels end to end (one model serves them all)."""
    if not series:
        raise ValueError("no data to train on in the given range")
    values = np.concatenate([s.values for s in series])  # (sum T, C)
    return make_series(values, channels=series[0].channels)

"""Wiring: one Task holds the InfluxDB transport, the scoring client and a PipelineRunner per pipeline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from stad.client import (
    Cancelled,
    Client,
    DeadlineExceeded,
    JobStatus,
    ResourceExhausted,
    TrainingSettings,
    Unavailable,
)
from stad.core.series import SeriesData
from stad.influx_task import transport as _transport
from stad.influx_task.checkpoint import CheckpointStore, FileCheckpointStore, InfluxCheckpointStore
from stad.influx_task.config import Pipeline, TaskConfig
from stad.influx_task.eraser import SpanEraser
from stad.influx_task.flux import FluxReader
from stad.influx_task.geometry import Geometry, geometry_from_metadata
from stad.influx_task.history import WrittenHistory
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.metrics import TaskMetrics
from stad.influx_task.output import Scores
from stad.influx_task.retry import RetryPolicy
from stad.influx_task.runner import (
    NO_SHARD,
    ChunkReport,
    PassStats,
    PipelineRunner,
    Reader,
    Shard,
    concatenate_for_training,
)
from stad.influx_task.signals import log_warnings
from stad.influx_task.times import rfc3339_from_ns
from stad.influx_task.writer import LineWriter

log = logging.getLogger("stad.influx_task")


def is_retryable(exc: BaseException) -> bool:
    """InfluxDB down/overloaded, or the scoring server UNAVAILABLE/overloaded/late, or
    CANCELLED: the task never cancels its own calls, so that is a server cutting calls off
    as it shuts down (gRPC can do so before stad's own UNAVAILABLE reaches the caller)."""
    transient = Unavailable | ResourceExhausted | DeadlineExceeded | Cancelled
    return _transport.is_retryable(exc) or isinstance(exc, transient)


class ClientScorer:
    """Scores through stad.client: all series of a group in one Score call."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(
        self, series: Sequence[SeriesData], *, pipeline: Pipeline, return_from_ns: int
    ) -> list[Scores]:
        return list(
            self.client.score_many(
                series,
                model=pipeline.model,
                version=pipeline.version,
                threshold=pipeline.threshold,
                return_from_ns=return_from_ns,
            )
        )

    def geometry(self, pipeline: Pipeline) -> Geometry:
        """The scoring windows of the version the pipeline uses (its own, else the active one)."""
        info = self.client.model(pipeline.model, version=pipeline.version)
        wanted = pipeline.version or info.active_version
        version = next((v for v in info.versions if v.version == wanted), None)
        if version is None:
            raise ValueError(f"model {pipeline.model!r} has no version {wanted!r} to score with")
        return geometry_from_metadata(version.metadata, pipeline.interval_ns)


class Task:
    """The InfluxDB worker for a TaskConfig; a context manager."""

    def __init__(
        self,
        config: TaskConfig,
        *,
        client: Client | None = None,
        shard: Shard = NO_SHARD,
        now_ns: Callable[[], int] = time.time_ns,
        stop: threading.Event | None = None,
        on_chunk: Callable[[ChunkReport], None] | None = None,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
        metrics: TaskMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.shard = shard
        self.now_ns = now_ns
        self.stop = stop or threading.Event()
        self.on_chunk = on_chunk
        self.on_retry = on_retry
        settings = config.retry
        self.retry = RetryPolicy(
            base_s=settings.base_ms / 1000,
            cap_s=settings.cap_ms / 1000,
            max_attempts=settings.max_attempts,
            deadline_s=settings.deadline_s,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self.transport = _transport.Transport(config.connection)
        self.influxql = InfluxQLReader(self.transport)
        self.writer = LineWriter(self.transport)
        self.eraser = SpanEraser(self.transport)
        self._flux: FluxReader | None = None
        self._owns_client = client is None
        self.client = client or Client(
            config.server.target, token=config.server.token, timeout_s=config.server.timeout_s, retries=0
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._flux is not None:
            self._flux.close()
        if self._owns_client:
            self.client.close()
        self.transport.close()

    def _reader(self, pipeline: Pipeline) -> Reader:
        if pipeline.read_path == "influxql":
            return self.influxql
        if self._flux is None:
            self._flux = FluxReader(self.config.connection)
        return self._flux

    def _store(self, pipeline: Pipeline) -> CheckpointStore:
        if self.config.checkpoint_store == "influx":
            return InfluxCheckpointStore(self.influxql, self.writer, database=pipeline.out_database)
        return FileCheckpointStore(self.config.checkpoint_store)

    def runner(self, pipeline: Pipeline) -> PipelineRunner:
        return PipelineRunner(
            pipeline,
            reader=self._reader(pipeline),
            writer=self.writer,
            store=self._store(pipeline),
            scorer=ClientScorer(self.client),
            retry=self.retry,
            is_retryable=is_retryable,
            episodes=WrittenHistory(self.influxql),
            eraser=self.eraser,
            shard=self.shard,
            now_ns=self.now_ns,
            stop=self.stop,
            on_chunk=lambda report: self._chunk_done(pipeline, report),
            on_retry=lambda exc, attempt, delay: self._retrying(pipeline, exc, attempt, delay),
        )

    def _chunk_done(self, pipeline: Pipeline, report: ChunkReport) -> None:
        if self.metrics is not None:
            self.metrics.chunk(pipeline.name, report.read, report.steps, report.points)
        if self.on_chunk is not None:
            self.on_chunk(report)

    def _retrying(self, pipeline: Pipeline, exc: BaseException, attempt: int, delay_s: float) -> None:
        if self.metrics is not None:
            self.metrics.retry(pipeline.name)
        if self.on_retry is not None:
            self.on_retry(exc, attempt, delay_s)

    def probe(self) -> None:
        """One try at InfluxDB and the scoring server, no retries: a connection that never
        worked (a typo'd URL, a wrong token) fails at once instead of being retried."""
        try:
            self.transport.request("GET", "/ping", params={})
        except _transport.InfluxError as exc:
            raise ConnectionError(f"cannot reach InfluxDB at {self.config.connection.url}: {exc}") from exc
        try:
            self.client.health()
        except (Unavailable, DeadlineExceeded) as exc:
            raise ConnectionError(
                f"cannot reach the stad server at {self.config.server.target}: {exc}"
            ) from exc

    def check(self, pipeline: Pipeline) -> ChunkReport:
        """A dry run of one chunk (read, score, write nothing): what `stad influx check` does."""
        return self.runner(pipeline).dry_run()

    def once(self, names: list[str] | None = None) -> dict[str, PassStats | Exception]:
        """One pass over every pipeline (or the named ones); a failing pipeline does not stop the others."""
        selected = [self.config.pipeline(n) for n in names] if names else list(self.config.pipelines)
        outcome: dict[str, PassStats | Exception] = {}
        for pipeline in selected:
            if self.stop.is_set():
                break
            started = time.monotonic()
            try:
                stats = outcome[pipeline.name] = self.runner(pipeline).run_once()
            except Exception as exc:
                log.error("pipeline %s failed: %s: %s", pipeline.name, type(exc).__name__, exc)
                outcome[pipeline.name] = exc
                self._record(pipeline, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
                continue
            self._record(pipeline, "", time.monotonic() - started, stats.lag_s)
            log.info(
                "pipeline %s: %d series, %d steps, %d points, lag %.0f s, %.2f s%s",
                pipeline.name,
                len(stats.series),
                stats.steps,
                stats.points,
                stats.lag_s,
                time.monotonic() - started,
                f", rescored late data of {len(stats.rescored)} series" if stats.rescored else "",
            )
        return outcome

    def _record(self, pipeline: Pipeline, error: str, seconds: float, lag_s: float | None = None) -> None:
        """Keep the pass's outcome for `status` and the metrics; InfluxDB being down is not
        worth a failure here."""
        if self.metrics is not None:
            self.metrics.pass_done(pipeline.name, error, seconds=seconds, lag_s=lag_s)
        try:
            self._store(pipeline).record_outcome(pipeline.name, error[:1000])
        except (_transport.InfluxError, OSError) as exc:
            log.warning("pipeline %s: cannot record the pass's outcome: %s", pipeline.name, exc)

    def status(self, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per pipeline: each owned series' checkpoint and lag behind now - offset, the last error."""
        selected = [self.config.pipeline(n) for n in names] if names else list(self.config.pipelines)
        report: dict[str, dict[str, Any]] = {}
        for pipeline in selected:
            store = self._store(pipeline)
            runner = self.runner(pipeline)
            horizon = runner.horizon_ns()
            series = {
                key: {
                    "next": rfc3339_from_ns(c.next_ns),
                    "next_ns": c.next_ns,
                    "lag_s": max(0, horizon - c.next_ns) / 1e9,
                    "episode_open": c.episode is not None,
                }
                for key, c in sorted(store.load(pipeline.name).items())
                if self.shard.owns(key)
            }
            report[pipeline.name] = {"series": series, "last_error": store.last_error(pipeline.name)}
        return report

    def run(self, on_pass: Callable[[str, PassStats | Exception], None] | None = None) -> None:
        """Pass over each pipeline every `every` until `stop` is set; `on_pass` hears each outcome."""
        due = {pipeline.name: 0.0 for pipeline in self.config.pipelines}
        if not due:
            raise ValueError("no pipelines configured")
        while not self.stop.is_set():
            if self.metrics is not None:
                self.metrics.beat()
            for pipeline in self.config.pipelines:
                if self.stop.is_set() or time.monotonic() < due[pipeline.name]:
                    continue
                due[pipeline.name] = time.monotonic() + pipeline.every_ns / 1e9
                for name, outcome in self.once([pipeline.name]).items():
                    if on_pass is not None:
                        on_pass(name, outcome)
            # wake at least every 30 s, so that liveness sees the loop turn
            self.stop.wait(min(30.0, max(0.0, min(due.values()) - time.monotonic())))

    def backfill(self, name: str, start_ns: int, stop_ns: int, *, restart: bool = False) -> PassStats:
        """Score one pipeline over [start, stop) (see PipelineRunner.backfill)."""
        return self.runner(self.config.pipeline(name)).backfill(start_ns, stop_ns, restart=restart)

    def train(
        self,
        name: str,
        start_ns: int,
        stop_ns: int,
        *,
        activate: bool = True,
        settings: TrainingSettings | None = None,
        on_status: Callable[[JobStatus], None] | None = None,
        timeout_s: float | None = None,
    ) -> JobStatus:
        """Pull the pipeline's history over [start, stop), train a new version, wait for it."""
        pipeline = self.config.pipeline(name)
        series = self.runner(pipeline).training_series(start_ns, stop_ns)
        data = concatenate_for_training(series)
        handle = self.client.train(
            data,
            model=pipeline.model,
            settings=settings,
            activate=activate,
            description=f"stad influx train --pipeline {pipeline.name}",
        )
        for status in handle.watch(timeout_s=timeout_s):
            if on_status is not None:
                on_status(status)
        final = handle.wait(timeout_s=timeout_s)
        log_warnings(f"pipeline {pipeline.name} training", final.warnings)
        return final

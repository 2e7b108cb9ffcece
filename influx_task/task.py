"""Wiring: one Task holds the InfluxDB transport, the scoring client and a JobRunner per job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from stad.client import Client, DeadlineExceeded, JobStatus, ResourceExhausted, TrainingSettings, Unavailable
from stad.core.progress import Progress
from stad.core.series import SeriesData
from stad.influx_task import transport as _transport
from stad.influx_task.checkpoint import CheckpointStore, FileCheckpointStore, InfluxCheckpointStore
from stad.influx_task.config import Job, TaskConfig
from stad.influx_task.flux import FluxReader
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.retry import RetryPolicy
from stad.influx_task.runner import (
    NO_SHARD,
    ChunkReport,
    JobRunner,
    PassStats,
    Reader,
    Scores,
    Shard,
    concatenate_for_training,
)
from stad.influx_task.writer import LineWriter

log = logging.getLogger("stad.influx_task")


def is_retryable(exc: BaseException) -> bool:
    """InfluxDB down/overloaded, or the scoring server UNAVAILABLE/overloaded/late."""
    return _transport.is_retryable(exc) or isinstance(exc, Unavailable | ResourceExhausted | DeadlineExceeded)


class ClientScorer:
    """Scores through stad.client: all series of a group in one Score call."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, series: Sequence[SeriesData], *, job: Job, return_from_ns: int) -> list[Scores]:
        return list(
            self.client.score_many(
                series,
                model=job.model,
                version=job.version,
                threshold=job.threshold,
                return_from_ns=return_from_ns,
            )
        )


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
    ) -> None:
        self.config = config
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

    def _reader(self, job: Job) -> Reader:
        if job.read_path == "influxql":
            return self.influxql
        if self._flux is None:
            self._flux = FluxReader(self.config.connection)
        return self._flux

    def _store(self, job: Job) -> CheckpointStore:
        if self.config.checkpoint_store == "influx":
            return InfluxCheckpointStore(
                self.influxql,
                self.writer,
                database=job.out_database,
                retention_policy=job.output_retention_policy,
            )
        return FileCheckpointStore(self.config.checkpoint_store)

    def runner(self, job: Job) -> JobRunner:
        return JobRunner(
            job,
            reader=self._reader(job),
            writer=self.writer,
            store=self._store(job),
            scorer=ClientScorer(self.client),
            retry=self.retry,
            is_retryable=is_retryable,
            shard=self.shard,
            now_ns=self.now_ns,
            stop=self.stop,
            on_chunk=self.on_chunk,
            on_retry=self.on_retry,
        )

    def once(self, jobs: list[str] | None = None) -> dict[str, PassStats | Exception]:
        """One pass over every job (or the named ones); a failing job does not stop the others."""
        selected = [self.config.job(name) for name in jobs] if jobs else list(self.config.jobs)
        outcome: dict[str, PassStats | Exception] = {}
        for job in selected:
            if self.stop.is_set():
                break
            try:
                outcome[job.name] = self.runner(job).run_once()
            except Exception as exc:
                log.error("job %s failed: %s: %s", job.name, type(exc).__name__, exc)
                outcome[job.name] = exc
        return outcome

    def run(self) -> None:
        """Pass over each job every `every` until `stop` is set."""
        due = {job.name: 0.0 for job in self.config.jobs}
        if not due:
            raise ValueError("no jobs configured")
        while not self.stop.is_set():
            for job in self.config.jobs:
                if self.stop.is_set() or time.monotonic() < due[job.name]:
                    continue
                due[job.name] = time.monotonic() + job.every_ns / 1e9
                self.once([job.name])
            self.stop.wait(max(0.0, min(due.values()) - time.monotonic()))

    def backfill(self, job_name: str, start_ns: int, stop_ns: int, *, progress: bool = True) -> PassStats:
        job = self.config.job(job_name)
        total = max(0, (stop_ns - start_ns) // job.interval_ns)
        if not progress:
            return self.runner(job).backfill(start_ns, stop_ns)
        with Progress(f"backfill {job.name}", total=total) as bar:
            return self.runner(job).backfill(start_ns, stop_ns, progress=bar)

    def train(
        self,
        job_name: str,
        start_ns: int,
        stop_ns: int,
        *,
        activate: bool = True,
        settings: TrainingSettings | None = None,
        on_status: Callable[[JobStatus], None] | None = None,
        timeout_s: float | None = None,
    ) -> JobStatus:
        """Pull the job's history over [start, stop), train a new version, wait for it."""
        job = self.config.job(job_name)
        series = self.runner(job).training_series(start_ns, stop_ns)
        data = concatenate_for_training(series)
        handle = self.client.train(
            data,
            model=job.model,
            settings=settings,
            activate=activate,
            description=f"stad influx train --job {job.name}",
        )
        for status in handle.watch(timeout_s=timeout_s):
            if on_status is not None:
                on_status(status)
        return handle.wait(timeout_s=timeout_s)

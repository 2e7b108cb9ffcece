"""Training jobs: queued, then trained in a spawned child process each.

At most `max_concurrent` jobs run at once (one per device by default); the rest
wait in FIFO order. A child that raises, crashes, is killed or is cancelled ends
its job as FAILED or CANCELLED and nothing else: scoring runs in the parent,
and only the parent writes the registry, after the child reports a saved model.

Every job is recorded in a journal on disk (see job_journal), so the history of
the newest `max_history` finished jobs survives a restart. Jobs that were queued
or running when the server went away come back FAILED: their data is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.core.jobs import JOB_STATES, JobState
from stad.server import job_worker
from stad.server.errors import NotFoundError, ResourceExhaustedError, UnavailableError
from stad.server.job_journal import JobJournal
from stad.server.metrics import ServerMetrics
from stad.server.registry import Registry

log = logging.getLogger("stad.server.jobs")

MAX_JOB_HISTORY = 1000
RECORD_PROGRESS_INTERVAL_S = 1.0  # progress alone rewrites a job's record at most this often
RESTART_REASON = "the server stopped before the job finished (restart)"
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class TrainingRequest:
    """A validated request: what to train and on what."""

    model: str
    config: dict[str, Any]  # DetectorConfig fields to set
    values: npt.NDArray[np.float64]  # (T, C)
    channels: tuple[str, ...]
    timestamps_ns: npt.NDArray[np.int64] | None = None
    labels: npt.NDArray[np.int64] | None = None
    activate: bool = False
    description: str = ""


@dataclass
class Job:
    """A job's state as callers see it; `revision` grows on every change."""

    job_id: str
    model: str
    steps: int
    channels: tuple[str, ...]
    state: JobState = JobState.QUEUED
    progress: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    error: str = ""
    created_at_ns: int = field(default_factory=time.time_ns)
    started_at_ns: int = 0
    finished_at_ns: int = 0
    revision: int = 0


@dataclass
class _Running:
    process: multiprocessing.process.BaseProcess
    reader: Connection


class JobManager:
    """Queues, runs, watches and cancels training jobs."""

    def __init__(
        self,
        registry: Registry[Any],
        work_dir: Path,
        *,
        device: str = "cpu",
        max_concurrent: int = 1,
        max_queued: int = 64,
        metrics: ServerMetrics | None = None,
        runner: job_worker.JobRunner = job_worker.run,
        cancel_timeout_s: float = 15.0,
        torch_threads: int = 0,
        max_history: int = MAX_JOB_HISTORY,
        server_id: str = "",
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, got {max_history}")
        self._registry = registry
        self._work_dir = Path(work_dir)
        self._device = device
        self._max_concurrent = max_concurrent
        self._max_queued = max_queued
        self._metrics = metrics
        self._runner = runner
        self._cancel_timeout_s = cancel_timeout_s
        self._torch_threads = torch_threads
        self._max_history = max_history
        self._server_id = server_id or socket.gethostname()
        self._journal = JobJournal(self._work_dir)
        self._recorded: dict[str, tuple[JobState, float]] = {}  # job id -> state, monotonic time
        self._jobs: dict[str, Job] = {}
        self._requests: dict[str, TrainingRequest] = {}
        self._queue: deque[str] = deque()
        self._running: dict[str, _Running] = {}
        self._cancels: dict[str, Any] = {}  # job id -> multiprocessing Event, once it is starting
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._closed = False
        self._context = multiprocessing.get_context("spawn")
        self._restore_history()

    # -- queries ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFoundError(f"unknown training job {job_id!r}") from None

    def list(self, model: str = "") -> list[Job]:
        """Jobs newest first, optionally of one model only."""
        jobs = [job for job in self._jobs.values() if not model or job.model == model]
        return sorted(jobs, key=lambda job: job.created_at_ns, reverse=True)

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then after every change, until it has finished."""
        job = self.get(job_id)
        seen = -1
        while True:
            async with self._changed:
                while job.revision == seen:
                    await self._changed.wait()
                seen = job.revision
                finished = job.state.finished  # as yielded: it may change while the caller sends it
            yield job
            if finished:
                return

    # -- commands --------------------------------------------------------------------

    async def submit(self, request: TrainingRequest) -> Job:
        if self._closed:
            raise UnavailableError("the server is shutting down; no new training jobs")
        if len(self._queue) >= self._max_queued:
            raise ResourceExhaustedError(
                f"training queue is full: {len(self._queue)} jobs waiting "
                f"(max_queued_jobs={self._max_queued}); retry later"
            )
        job = Job(
            job_id=uuid.uuid4().hex,
            model=request.model,
            steps=int(request.values.shape[0]),
            channels=request.channels,
        )
        self._jobs[job.job_id] = job
        self._requests[job.job_id] = request
        self._queue.append(job.job_id)
        log.info(
            "training job %s queued: model %r, %d steps x %d channels",
            job.job_id,
            job.model,
            job.steps,
            len(job.channels),
        )
        await self._changed_job(job)
        self._start_queued()
        return job

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; returns it once it has finished."""
        job = self.get(job_id)
        if job.state.finished:
            return job
        if job_id in self._queue:
            self._queue.remove(job_id)
            self._requests.pop(job_id, None)
            await self._finish(job, JobState.CANCELLED, error=self._cancel_reason("before it started"))
            return job
        self._cancels[job_id].set()  # the child checks it between training steps
        try:
            await asyncio.wait_for(self._until_finished(job), self._cancel_timeout_s)
        except TimeoutError:
            running = self._running.get(job_id)
            if running is not None:
                running.process.kill()  # it ignored the request: the next message is EOF
            await self._until_finished(job)
        return job

    async def close(self) -> None:
        """Cancel queued jobs and stop running ones (used on shutdown)."""
        self._closed = True
        for job_id in list(self._queue):
            await self.cancel(job_id)
        for job_id, cancel in list(self._cancels.items()):
            cancel.set()
            running = self._running.get(job_id)
            if running is not None:
                running.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_finished(self._jobs[job_id]), 10)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- running ---------------------------------------------------------------------

    def _start_queued(self) -> None:
        while self._queue and len(self._cancels) < self._max_concurrent and not self._closed:
            job_id = self._queue.popleft()
            self._cancels[job_id] = self._context.Event()
            task = asyncio.get_running_loop().create_task(self._run(self._jobs[job_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        request = self._requests.pop(job.job_id)
        directory = self._work_dir / job.job_id
        cancel = self._cancels[job.job_id]
        try:
            await asyncio.to_thread(_write_job_files, directory, request)
            if cancel.is_set():
                await self._finish(job, JobState.CANCELLED, error=self._cancel_reason("before it started"))
                return
            reader, writer = self._context.Pipe(duplex=False)
            process = self._context.Process(
                target=self._runner,
                args=(str(directory), writer, cancel, self._device, self._torch_threads),
                name=f"stad-train-{job.job_id[:8]}",
                daemon=True,
            )
            await asyncio.to_thread(process.start)
            writer.close()  # the child holds the only write end: EOF when it exits
            self._running[job.job_id] = _Running(process, reader)
            job.state = JobState.RUNNING
            job.started_at_ns = time.time_ns()
            log.info("training job %s started (process %s)", job.job_id, process.pid)
            await self._changed_job(job)
            await self._follow(job, process, reader, request, cancel)
        except Exception as exc:
            if not job.state.finished:
                await self._finish(job, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._running.pop(job.job_id, None)
            self._cancels.pop(job.job_id, None)
            shutil.rmtree(directory, ignore_errors=True)
            self._start_queued()

    async def _follow(
        self,
        job: Job,
        process: multiprocessing.process.BaseProcess,
        reader: Connection,
        request: TrainingRequest,
        cancel: Any,
    ) -> None:
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        thread = threading.Thread(
            target=_pump, args=(reader, loop, messages), name=f"stad-job-{job.job_id[:8]}", daemon=True
        )
        thread.start()
        while True:
            kind, payload = await messages.get()
            if kind == "progress":
                job.progress = dict(payload)
                await self._changed_job(job)
                continue
            break
        await asyncio.to_thread(process.join)
        if kind == "done":
            version = await asyncio.to_thread(
                self._registry.register,
                request.model,
                Path(payload),
                description=request.description,
                activate=request.activate,
            )
            await self._finish(job, JobState.SUCCEEDED, version=version)
        elif kind == "cancelled" or (kind == "eof" and cancel.is_set()):
            await self._finish(job, JobState.CANCELLED, error=self._cancel_reason("while running"))
        elif kind == "failed":
            await self._finish(job, JobState.FAILED, error=str(payload))
        else:
            await self._finish(job, JobState.FAILED, error=_death_reason(process.exitcode))

    def _cancel_reason(self, when: str) -> str:
        return f"cancelled {when}" + (" (the server shut down)" if self._closed else "")

    async def _finish(self, job: Job, state: JobState, *, version: str = "", error: str = "") -> None:
        _mark_finished(job, state, version=version, error=error)
        _log_finished(job)
        await self._changed_job(job)

    async def _until_finished(self, job: Job) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: job.state.finished)

    async def _changed_job(self, job: Job) -> None:
        job.revision += 1
        self._record(job)
        if job.state.finished:
            self._prune_history()
        self._count_states()
        async with self._changed:
            self._changed.notify_all()

    def _count_states(self) -> None:
        if self._metrics is None:
            return
        counts = {state: 0 for state in JOB_STATES}
        for each in self._jobs.values():
            counts[each.state] += 1
        for state, count in counts.items():
            self._metrics.training_jobs.labels(state=state.value).set(count)

    # -- history ---------------------------------------------------------------------

    def _record(self, job: Job) -> None:
        """Write the job's record on a state change; on progress alone, at most once per interval.

        Written synchronously: a record is a few hundred bytes, and ordering is then simple.
        """
        now = time.monotonic()
        last = self._recorded.get(job.job_id)
        if last is not None and last[0] is job.state and now - last[1] < RECORD_PROGRESS_INTERVAL_S:
            return
        self._journal.write(job.job_id, self._job_record(job))
        if job.state.finished:
            self._recorded.pop(job.job_id, None)
        else:
            self._recorded[job.job_id] = (job.state, now)

    def _job_record(self, job: Job) -> dict[str, Any]:
        return {**_job_record(job), "server": self._server_id}

    def _own_job(self, job_id: str, record: dict[str, Any]) -> Job | None:
        """The job of a record this server wrote (None: another replica's, left alone)."""
        if record.get("server", self._server_id) != self._server_id:
            return None
        return _job_from_record(job_id, record)

    def _restore_history(self) -> None:
        """Load this server's records; its jobs cut off by the last shutdown become FAILED.

        Replicas sharing a model dir each keep to the records they wrote, so one that
        starts never fails, deletes or prunes another's jobs.
        """
        for job in self._journal.load(self._own_job):
            if job is None:
                continue
            if not job.state.finished:
                _mark_finished(job, JobState.FAILED, error=RESTART_REASON)
                shutil.rmtree(self._work_dir / job.job_id, ignore_errors=True)
                self._journal.write(job.job_id, self._job_record(job))
            self._jobs[job.job_id] = job
        self._prune_history()
        self._count_states()

    def _prune_history(self) -> None:
        """Forget the oldest finished jobs beyond `max_history`, in memory and on disk."""
        finished = [job for job in self._jobs.values() if job.state.finished]
        excess = len(finished) - self._max_history
        if excess <= 0:
            return
        for job in sorted(finished, key=lambda each: each.finished_at_ns)[:excess]:
            del self._jobs[job.job_id]
            self._journal.remove(job.job_id)


def _mark_finished(job: Job, state: JobState, *, version: str = "", error: str = "") -> None:
    job.state = state
    job.version = version
    job.error = error
    job.finished_at_ns = time.time_ns()


def _log_finished(job: Job) -> None:
    if job.state is JobState.SUCCEEDED:
        log.info("training job %s succeeded: model %r version %s", job.job_id, job.model, job.version)
    elif job.state is JobState.CANCELLED:
        log.info("training job %s %s", job.job_id, job.error)  # "cancelled before it started", ...
    else:
        log.warning("training job %s failed: %s", job.job_id, job.error)


def _job_record(job: Job) -> dict[str, Any]:
    record = asdict(job)
    del record["revision"]
    record["state"] = job.state.value
    record["channels"] = list(job.channels)
    return record


def _job_from_record(job_id: str, record: dict[str, Any]) -> Job:
    if not JOB_ID_PATTERN.fullmatch(job_id) or record["job_id"] != job_id:
        raise ValueError(f"the record does not hold job {job_id!r}")
    progress = record["progress"]
    if not isinstance(progress, dict):
        raise TypeError(f"progress is {type(progress).__name__}, not an object")
    state = JobState(record["state"])
    if state not in JOB_STATES:
        raise ValueError(f"{state.value!r} is not a state a job is recorded in")
    return Job(
        job_id=job_id,
        model=str(record["model"]),
        steps=int(record["steps"]),
        channels=tuple(str(channel) for channel in record["channels"]),
        state=state,
        progress={str(k): v for k, v in progress.items() if isinstance(v, (int, float, str))},
        version=str(record["version"]),
        error=str(record["error"]),
        created_at_ns=int(record["created_at_ns"]),
        started_at_ns=int(record["started_at_ns"]),
        finished_at_ns=int(record["finished_at_ns"]),
    )


def _pump(reader: Connection, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[tuple[str, Any]]) -> None:
    """Forward the child's messages to the event loop until its final one or EOF."""
    while True:
        try:
            kind, payload = reader.recv()
        except (EOFError, OSError):
            kind, payload = "eof", None
        loop.call_soon_threadsafe(out.put_nowait, (kind, payload))
        if kind != "progress":
            reader.close()
            return


def _write_job_files(directory: Path, request: TrainingRequest) -> None:
    directory.mkdir(parents=True)
    document = {"model": request.model, "config": request.config, "channels": list(request.channels)}
    (directory / job_worker.REQUEST_FILE).write_text(json.dumps(document))
    np.save(directory / job_worker.VALUES_FILE, request.values)
    if request.labels is not None:
        np.save(directory / job_worker.LABELS_FILE, request.labels)
    if request.timestamps_ns is not None:
        np.save(directory / job_worker.TIMESTAMPS_FILE, request.timestamps_ns)


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"training process was killed by {name}{hint}"
    return f"training process exited with code {exitcode} without a result"

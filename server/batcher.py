"""Dynamic batching of windows from concurrent requests into one compute call.

Requests put windows (N, L, C) in a FIFO queue. A batch forms when the queue holds
`max_batch_windows` windows or when its oldest request has waited
`max_queue_delay_ms`; a request larger than one batch is split over several. The
compute function runs in an executor, off the event loop, on whole batches; its
result is a tuple of arrays with one row per window, which is split back per
request (`score`: all at once; `stream`: piece by piece as the batches run).
Requests whose deadline passed while queued are dropped before compute, and a
request whose deadline cannot be met is refused at once (RESOURCE_EXHAUSTED): the
batchers of all model versions share one device thread and one `ComputeLoad`,
which measures the compute rate and counts the windows waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stad.server.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError

Windows = npt.NDArray[np.float32]  # (N, L, C)
Outputs = tuple[np.ndarray, ...]  # each (N, ...)
BatchFn = Callable[[Windows], Outputs]


# Share of a request's remaining time its windows may wait and compute in; the rest is left
# for assembling, encoding and sending the response, which the prediction does not cover.
ADMISSION_SHARE = 0.7


class ComputeLoad:
    """The device thread's backlog and measured speed, shared by every batcher.

    A request's wait is predicted as (windows waiting + the batch on the device + its own)
    x seconds per window, plus a learnt extra:

    - seconds per window: a moving average over the batches run of the time from one
      batch's end to the next one's while a backlog waited (the device's real throughput,
      with whatever slows it on a shared CPU; compute time alone when it was idle). It
      follows a slowdown fast and a speed-up slowly, and one batch raises it at most
      RISE_LIMIT times, so that a single stall does not refuse everything.
    - the extra: what predictions missed for the requests that finished (event-loop time
      around compute), its moving average plus four moving deviations, as TCP sets a
      retransmission timeout from round trips (RFC 6298), so that waits are rarely longer.

    Until a batch has run the speed is unknown and every request is admitted.
    """

    SMOOTHING = 0.2  # weight of the newest measurement in the moving averages
    DEVIATIONS = 4.0
    SLOWER_WEIGHT = 0.5  # weight of a batch slower than the average
    RISE_LIMIT = 4.0

    def __init__(self) -> None:
        self.pending_windows = 0
        self.seconds_per_window: float | None = None
        self.overhead_s = 0.0  # moving average of waits beyond the prediction
        self.overhead_deviation_s = 0.0
        self._last_end: float | None = None
        self._backlog_at_last_end = 0

    def observe(self, windows: int, compute_s: float, now: float) -> None:
        """A batch of `windows` took `compute_s` of compute and ended at `now` (loop time)."""
        seconds = compute_s
        if self._last_end is not None and self._backlog_at_last_end > 0:
            seconds = max(compute_s, now - self._last_end)
        self._last_end, self._backlog_at_last_end = now, self.pending_windows
        latest = seconds / max(1, windows)
        average = self.seconds_per_window
        if average is None:
            self.seconds_per_window = latest
        elif latest > average:
            latest = min(latest, self.RISE_LIMIT * average)
            self.seconds_per_window = average + self.SLOWER_WEIGHT * (latest - average)
        else:
            self.seconds_per_window = _moving(average, latest)

    def observe_wait(self, predicted_s: float, waited_s: float) -> None:
        """A request predicted to wait `predicted_s` (unscaled) had its windows after `waited_s`."""
        excess = max(0.0, waited_s - predicted_s)
        self.overhead_deviation_s = _moving(self.overhead_deviation_s, abs(excess - self.overhead_s))
        self.overhead_s = _moving(self.overhead_s, excess)

    def predicted_wait_s(self, windows: int, batch_windows: int) -> float | None:
        """Unscaled seconds until `windows` more would be computed (None: not measured yet)."""
        if self.seconds_per_window is None:
            return None
        return (self.pending_windows + batch_windows + windows) * self.seconds_per_window

    def expected_wait_s(self, windows: int, batch_windows: int) -> float | None:
        """The prediction plus what finished requests waited beyond theirs, from above."""
        predicted = self.predicted_wait_s(windows, batch_windows)
        if predicted is None:
            return None
        return predicted + self.overhead_s + self.DEVIATIONS * self.overhead_deviation_s


def _moving(average: float | None, latest: float) -> float:
    return latest if average is None else average + ComputeLoad.SMOOTHING * (latest - average)


class BatchObserver(Protocol):
    """What the batcher reports (the server's metrics implement it)."""

    def queued(self, wait_s: float) -> None: ...

    def batch_done(self, windows: int, compute_s: float) -> None: ...

    def pending_changed(self, delta: int) -> None: ...


@dataclass
class _Item:
    windows: Windows
    future: asyncio.Future[Outputs]
    deadline: float | None  # event-loop time
    enqueued: float = field(default=0.0)


class WindowBatcher:
    """Batches windows of many requests for one model version."""

    def __init__(
        self,
        score_fn: BatchFn,
        *,
        max_batch_windows: int,
        max_queue_delay_ms: float,
        max_queue_windows: int,
        executor: Executor,
        observer: BatchObserver | None = None,
        name: str = "model",
        load: ComputeLoad | None = None,
    ) -> None:
        if max_batch_windows < 1:
            raise ValueError(f"max_batch_windows must be at least 1, got {max_batch_windows}")
        if max_queue_windows < max_batch_windows:
            raise ValueError(
                f"max_queue_windows ({max_queue_windows}) is below max_batch_windows ({max_batch_windows})"
            )
        if max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {max_queue_delay_ms}")
        self._score_fn = score_fn
        self.max_batch_windows = max_batch_windows
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_windows = max_queue_windows
        self._executor = executor
        self._observer = observer
        self.name = name
        self._load = load or ComputeLoad()
        self._queue: deque[_Item] = deque()
        self._pending = 0
        self._arrived = asyncio.Event()
        self._flushing = False
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.windows_run = 0

    @property
    def pending_windows(self) -> int:
        return self._pending

    async def score(self, windows: Windows, *, deadline: float | None = None) -> Outputs:
        """Score (N, L, C) windows; returns the compute function's outputs for them."""
        parts = [part async for part in self.stream(windows, deadline=deadline)]
        return tuple(np.concatenate(arrays, axis=0) for arrays in zip(*parts, strict=True))

    async def stream(
        self, windows: Windows, *, deadline: float | None = None
    ) -> AsyncGenerator[Outputs, None]:
        """Score (N, L, C) windows piece by piece: yields the outputs of consecutive pieces
        of at most max_batch_windows windows, in order, each once its batch has run.

        All pieces are queued on the first step. Leaving early (an error, cancellation,
        closing the iterator) drops the pieces not computed yet; close it with
        `contextlib.aclosing` when you may stop before the end.
        """
        loop = asyncio.get_running_loop()
        predicted = self._load.predicted_wait_s(int(windows.shape[0]), self.max_batch_windows)
        items = self._enqueue(windows, deadline)
        began = loop.time()
        try:
            for item in items:
                yield await item.future
        finally:
            if predicted is not None:  # also when it failed: late requests teach the most
                self._load.observe_wait(predicted, loop.time() - began)
            for item in items:
                item.future.cancel()  # no-op when done

    def _enqueue(self, windows: Windows, deadline: float | None) -> list[_Item]:
        """Queue the windows in pieces of at most max_batch_windows, or refuse them all."""
        if windows.ndim != 3 or windows.shape[0] == 0:
            raise ValueError(f"windows must be a non-empty (N, L, C) array, got shape {windows.shape}")
        if self._closed:
            raise UnavailableError("the server is shutting down")
        count = int(windows.shape[0])
        if count > self.max_queue_windows:
            raise ResourceExhaustedError(
                f"request needs {count} windows, more than the queue holds "
                f"(max_queue_windows={self.max_queue_windows}); send a shorter series"
            )
        if self._pending + count > self.max_queue_windows:
            raise ResourceExhaustedError(
                f"scoring queue of {self.name} is full: {self._pending} windows waiting, "
                f"this request adds {count}, limit {self.max_queue_windows}; retry later"
            )
        loop = asyncio.get_running_loop()
        self._check_deadline(count, deadline, loop.time())
        self._ensure_worker()
        items = []
        for start in range(0, count, self.max_batch_windows):
            chunk = windows[start : start + self.max_batch_windows]
            item = _Item(chunk, loop.create_future(), deadline, loop.time())
            item.future.add_done_callback(self._on_done)
            self._queue.append(item)
            items.append(item)
        self._add_pending(count)
        self._arrived.set()
        return items

    def _check_deadline(self, count: int, deadline: float | None, now: float) -> None:
        """Refuse a request its deadline leaves too little time for, at the measured speed."""
        if deadline is None:
            return
        wait_s = self._load.expected_wait_s(count, self.max_batch_windows)
        if wait_s is None:
            return
        wait_s += self.max_queue_delay_s
        if wait_s > ADMISSION_SHARE * (deadline - now):
            speed = 1.0 / max(self._load.seconds_per_window or 0.0, 1e-12)
            raise ResourceExhaustedError(
                f"the deadline cannot be met: {self._load.pending_windows} windows are waiting "
                f"before this request's {count}, about {1000 * wait_s:.0f} ms at the measured "
                f"{speed:.0f} windows/s, and {1000 * max(0.0, deadline - now):.0f} ms remain; "
                "retry later, elsewhere, or with a longer deadline"
            )

    def _on_done(self, future: asyncio.Future[Outputs]) -> None:
        if future.cancelled():
            self._arrived.set()  # let the worker forget it now

    def flush(self) -> None:
        """Stop waiting for batches to fill: run what is queued at once (used on shutdown)."""
        self._flushing = True
        self._arrived.set()

    async def close(self) -> None:
        """Run what is queued, then stop; later requests get UNAVAILABLE."""
        self._closed = True
        self.flush()
        if self._worker is not None:
            while self._queue and not self._worker.done():
                await asyncio.sleep(0.005)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def _add_pending(self, delta: int) -> None:
        self._pending += delta
        self._load.pending_windows += delta
        if self._observer is not None:
            self._observer.pending_changed(delta)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_done()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_fill(loop)
            batch = self._take_batch(loop)
            if batch:
                await self._compute(batch, loop)

    async def _wait_for_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._pending < self.max_batch_windows and not self._flushing:
            remaining = self._queue[0].enqueued + self.max_queue_delay_s - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            self._drop_done()
            if not self._queue:
                return

    def _drop_done(self) -> None:
        """Forget items whose caller went away (cancelled futures)."""
        kept = [item for item in self._queue if not item.future.done()]
        dropped = sum(item.windows.shape[0] for item in self._queue if item.future.done())
        if dropped:
            self._queue = deque(kept)
            self._add_pending(-dropped)

    def _take_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        now = loop.time()
        while self._queue:
            item = self._queue[0]
            n = int(item.windows.shape[0])
            if item.future.done():
                self._queue.popleft()
                self._add_pending(-n)
                continue
            if item.deadline is not None and now >= item.deadline:
                self._queue.popleft()
                self._add_pending(-n)
                item.future.set_exception(
                    DeadlineExceededError(
                        f"deadline passed after {1000 * (now - item.enqueued):.0f} ms in the "
                        "scoring queue, before compute"
                    )
                )
                continue
            if batch and size + n > self.max_batch_windows:
                break
            self._queue.popleft()
            self._add_pending(-n)
            batch.append(item)
            size += n
            if self._observer is not None:
                self._observer.queued(now - item.enqueued)
        return batch

    async def _compute(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        windows = batch[0].windows if len(batch) == 1 else np.concatenate([i.windows for i in batch])
        try:
            outputs, seconds = await loop.run_in_executor(self._executor, _timed, self._score_fn, windows)
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.batches_run += 1
        self.windows_run += int(windows.shape[0])
        self._load.observe(int(windows.shape[0]), seconds, loop.time())
        if self._observer is not None:
            self._observer.batch_done(int(windows.shape[0]), seconds)
        start = 0
        for item in batch:
            stop = start + int(item.windows.shape[0])
            if not item.future.done():
                item.future.set_result(tuple(out[start:stop] for out in outputs))
            start = stop


def _timed(fn: BatchFn, windows: Windows) -> tuple[Outputs, float]:
    began = time.perf_counter()
    outputs = fn(windows)
    for out in outputs:
        if out.shape[0] != windows.shape[0]:
            raise RuntimeError(f"batch function returned {out.shape[0]} rows for {windows.shape[0]} windows")
    return outputs, time.perf_counter() - began

"""Scoring of series with registered models through per-version window batchers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from stad.core.series import SeriesData, align_channels
from stad.server.batcher import Outputs, WindowBatcher, Windows
from stad.server.detector.steps import ScoreOutput, WindowOutput
from stad.server.errors import InvalidArgumentError
from stad.server.metrics import ServerMetrics
from stad.server.registry import Registry, check_model_name

if TYPE_CHECKING:
    from stad.server.detector import Detector

A = TypeVar("A")
R = TypeVar("R")
T = TypeVar("T")


class WindowBudget:
    """Windows one request may have queued at once, so its own series never overfill the queue.

    A request with many series queues them as room frees up; one series larger than the
    whole budget still goes alone (the batcher then says whether the queue can hold it).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def take(self, count: int) -> AsyncIterator[None]:
        async with self._freed:
            await self._freed.wait_for(lambda: self._used == 0 or self._used + count <= self._limit)
            self._used += count
        try:
            yield
        finally:
            async with self._freed:
                self._used -= count
                self._freed.notify_all()


@dataclass(frozen=True)
class BatchingSettings:
    max_batch_windows: int
    max_queue_delay_ms: float
    max_queue_windows: int


class ScoringEngine:
    """Resolves a model version, windows each series, batches, and reassembles scores."""

    def __init__(
        self,
        registry: Registry[Detector],
        batching: BatchingSettings,
        *,
        executor: Executor,
        metrics: ServerMetrics,
        device: str = "cpu",
    ) -> None:
        self._registry = registry
        self._batching = batching
        self._executor = executor
        self._metrics = metrics
        self._device = device
        self._batchers: dict[tuple[str, str], WindowBatcher] = {}

    @property
    def pending_windows(self) -> int:
        return sum(b.pending_windows for b in self._batchers.values())

    async def resolve(self, model: str, version: str) -> tuple[str, Detector]:
        """The version to use (empty: the active one) and its loaded detector."""
        if not model:
            raise InvalidArgumentError("no model named in the request")
        check_model_name(model)
        resolved = self._registry.resolve(model, version)  # a stat and a tiny read
        detector = self._registry.cached(model, resolved)
        if detector is None:
            detector = await asyncio.to_thread(self._registry.load, model, resolved)
        return resolved, detector

    async def score(
        self,
        model: str,
        version: str,
        detector: Detector,
        series: Sequence[SeriesData],
        *,
        threshold: float | None = None,
        deadline: float | None = None,
    ) -> list[ScoreOutput]:
        """Score every series with an already resolved version, sharing one window budget.

        The first series that fails ends the call: the others' windows are dropped.
        """
        budget = self.request_budget()
        tasks = [
            asyncio.ensure_future(
                _joined(
                    self.stream_series(
                        model, version, detector, i, s, threshold=threshold, deadline=deadline, budget=budget
                    ),
                    s.steps,
                )
            )
            for i, s in enumerate(series)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()  # no-op when done

    @property
    def request_windows(self) -> int:
        """Windows one request may have queued at once: half the queue, leaving room for others."""
        return max(self._batching.max_batch_windows, self._batching.max_queue_windows // 2)

    def request_budget(self) -> WindowBudget:
        """A fresh budget for one request (see request_windows)."""
        return WindowBudget(self.request_windows)

    async def stream_series(
        self,
        model: str,
        version: str,
        detector: Detector,
        index: int,
        series: SeriesData,
        *,
        threshold: float | None = None,
        deadline: float | None = None,
        budget: WindowBudget | None = None,
    ) -> AsyncGenerator[ScoreOutput, None]:
        """Score one series (request index `index`) with an already resolved version, in
        consecutive chunks of steps, each as soon as its steps are final.

        A series of more windows than one request may queue (request_windows) is queued
        in turns of that many, each once the one before is taken; the request's budget
        is held for a turn until its last chunk is taken.
        """
        with _naming_series(index):
            values = align_channels(series, detector.channels_)
            plan = detector.plan_windows(values)
            assembler = detector.assembler(plan, threshold=threshold)
        batcher = self._batcher(model, version)
        turn = self.request_windows
        for first in range(0, len(plan.windows), turn):
            windows = plan.windows[first : first + turn]  # (n, L, C) view
            async with (
                budget.take(len(windows)) if budget else contextlib.nullcontext(),
                contextlib.aclosing(batcher.stream(windows, deadline=deadline)) as parts,
            ):
                async for outputs in parts:
                    window_output = WindowOutput(
                        outputs[0], outputs[1], outputs[2] if len(outputs) > 2 else None
                    )
                    folded_steps = len(window_output) * detector.config.model.window
                    with _naming_series(index):
                        chunk = await _off_loop_if_large(folded_steps, assembler.add, window_output)
                    if chunk is not None:
                        yield chunk

    def flush(self) -> None:
        for batcher in self._batchers.values():
            batcher.flush()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))

    def _batcher(self, model: str, version: str) -> WindowBatcher:
        key = (model, version)
        if key not in self._batchers:
            self._batchers[key] = WindowBatcher(
                self._compute_fn(model, version),
                max_batch_windows=self._batching.max_batch_windows,
                max_queue_delay_ms=self._batching.max_queue_delay_ms,
                max_queue_windows=self._batching.max_queue_windows,
                executor=self._executor,
                observer=self._metrics.observer(f"{model}/{version}"),
                name=f"{model}/{version}",
            )
        return self._batchers[key]

    def _compute_fn(self, model: str, version: str) -> WindowCompute:
        staging = HostStaging(pinned_buffer) if self._device.startswith("cuda") else None
        return WindowCompute(self._registry, model, version, staging=staging)


class HostStaging:
    """A reused host buffer that batches are copied into before compute.

    On CUDA it is pinned (page-locked) memory, so the host-to-device copy is a
    direct DMA; `allocate` makes a new buffer of a shape when a batch outgrows it.
    """

    def __init__(self, allocate: Callable[[tuple[int, ...]], Windows]) -> None:
        self._allocate = allocate
        self._buffer: Windows | None = None

    def stage(self, windows: Windows) -> Windows:
        n = windows.shape[0]
        buffer = self._buffer
        if buffer is None or buffer.shape[0] < n or buffer.shape[1:] != windows.shape[1:]:
            buffer = self._buffer = self._allocate(tuple(windows.shape))
        staged = buffer[:n]  # (N, L, C) view of the buffer
        np.copyto(staged, windows)
        return staged


def pinned_buffer(shape: tuple[int, ...]) -> Windows:
    import torch

    array: Windows = torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
    return array


class WindowCompute:
    """The batch function of one model version; runs in the device thread.

    The detector runs its forward passes under bf16 autocast on CUDA and in
    inference mode; with `staging` the batch goes through a reused (on CUDA:
    pinned) host buffer.
    """

    def __init__(
        self, registry: Registry[Detector], model: str, version: str, *, staging: HostStaging | None
    ) -> None:
        self._registry = registry
        self._model = model
        self._version = version
        self._staging = staging

    def __call__(self, windows: Windows) -> Outputs:
        detector = self._registry.load(self._model, self._version)
        if self._staging is not None:
            windows = self._staging.stage(windows)
        output = detector.score_windows(windows)
        errors = np.asarray(output.errors, dtype=np.float32)
        expected = np.asarray(output.expected, dtype=np.float64)
        if output.probability is None:
            return errors, expected
        return errors, expected, np.asarray(output.probability, dtype=np.float32)


# Assembling more steps than this at once runs in a worker thread, off the event loop.
OFF_LOOP_STEPS = 50_000


async def _off_loop_if_large(steps: int, fn: Callable[[A], R], arg: A) -> R:
    """fn(arg), in a worker thread when it handles more than OFF_LOOP_STEPS steps."""
    if steps > OFF_LOOP_STEPS:
        return await asyncio.to_thread(fn, arg)
    return fn(arg)


async def _joined(chunks: AsyncIterator[ScoreOutput], steps: int) -> ScoreOutput:
    """All chunks of one series' scores as one."""
    parts = [chunk async for chunk in chunks]
    return await _off_loop_if_large(steps, ScoreOutput.concatenate, parts)


@contextlib.contextmanager
def _naming_series(index: int) -> Iterator[None]:
    """Bad input of one series becomes INVALID_ARGUMENT naming its index in the request."""
    try:
        yield
    except ValueError as exc:
        raise InvalidArgumentError(f"series {index}: {exc}") from exc


async def interleave(sources: Sequence[AsyncGenerator[T, None]]) -> AsyncIterator[tuple[int, T]]:
    """The items of every source as each comes, tagged with the source's index.

    Each source runs at most one item ahead of the consumer. The first error ends the
    whole iteration; however it ends, every source is closed before this returns.
    """
    ahead = {asyncio.ensure_future(anext(source)): i for i, source in enumerate(sources)}
    try:
        while ahead:
            done, _ = await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
            for step in sorted(done, key=ahead.__getitem__):
                index = ahead.pop(step)
                with contextlib.suppress(StopAsyncIteration):
                    item = step.result()
                    ahead[asyncio.ensure_future(anext(sources[index]))] = index
                    yield index, item
    finally:
        for step in ahead:
            step.cancel()
        await asyncio.gather(*ahead, return_exceptions=True)
        for source in sources:
            await source.aclose()


def check_request(series: Sequence[SeriesData], threshold: float | None) -> None:
    if not series:
        raise InvalidArgumentError("the request has no series to score")
    if threshold is not None and not (np.isfinite(threshold) and threshold >= 0):
        raise InvalidArgumentError(
            f"threshold must be a finite number >= 0 (scores are never negative), got {threshold}"
        )


def step_ranges(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most `size` covering range(start, stop)."""
    for first in range(start, stop, size):
        yield first, min(stop, first + size)

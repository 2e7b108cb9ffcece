"""The window batcher, driven by a plain row-wise numpy function."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stad.server.batcher import Outputs, WindowBatcher, Windows
from stad.server.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from tests.waiting import until


def rowwise(windows: Windows) -> Outputs:
    """Each window's result depends on that window only."""
    return windows * 2.0, windows.sum(axis=(1, 2))


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def make(executor: ThreadPoolExecutor, **kw: float) -> WindowBatcher:
    options: dict[str, float] = {
        "max_batch_windows": 16,
        "max_queue_delay_ms": 2,
        "max_queue_windows": 256,
    }
    options.update(kw)
    return WindowBatcher(
        rowwise,
        max_batch_windows=int(options["max_batch_windows"]),
        max_queue_delay_ms=options["max_queue_delay_ms"],
        max_queue_windows=int(options["max_queue_windows"]),
        executor=executor,
    )


def windows(n: int, seed: int) -> Windows:
    return np.random.default_rng(seed).normal(size=(n, 8, 3)).astype(np.float32)


async def test_concurrent_requests_get_their_own_results(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor)
    inputs = [windows(n, seed) for seed, n in enumerate([1, 3, 16, 40, 1, 7])]
    results = await asyncio.gather(*(batcher.score(w) for w in inputs))
    for given, (doubled, sums) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, given * 2.0)
        np.testing.assert_allclose(sums, given.sum(axis=(1, 2)), rtol=1e-6)
    assert batcher.windows_run == sum(len(w) for w in inputs)
    await batcher.close()


async def test_batch_forms_when_full_without_waiting_for_the_delay(
    executor: ThreadPoolExecutor,
) -> None:
    batcher = make(executor, max_batch_windows=10, max_queue_delay_ms=600_000)
    await asyncio.gather(*(batcher.score(windows(1, i)) for i in range(10)))
    assert batcher.batches_run == 1
    assert batcher.windows_run == 10
    await batcher.close()


async def test_lone_request_runs_after_the_delay(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=64, max_queue_delay_ms=5)
    doubled, _ = await batcher.score(windows(2, 0))
    assert doubled.shape == (2, 8, 3)
    assert batcher.batches_run == 1
    await batcher.close()


async def test_large_request_is_split_over_batches(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=16)
    given = windows(40, 1)
    doubled, _ = await batcher.score(given)
    np.testing.assert_array_equal(doubled, given * 2.0)
    assert batcher.batches_run == 3  # 16 + 16 + 8
    await batcher.close()


async def start_queued(batcher: WindowBatcher, batch: Windows) -> asyncio.Task[Outputs]:
    """Start scoring `batch` and wait until it sits in the batcher's queue."""
    task = asyncio.create_task(batcher.score(batch))
    await until(lambda: batcher.pending_windows >= batch.shape[0], "the batch is queued")
    return task


async def test_full_queue_is_resource_exhausted(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=16, max_queue_windows=16, max_queue_delay_ms=600_000)
    waiting = await start_queued(batcher, windows(10, 0))
    with pytest.raises(ResourceExhaustedError, match=r"queue .* is full"):
        await batcher.score(windows(7, 1))
    with pytest.raises(ResourceExhaustedError, match="needs 17 windows"):
        await batcher.score(windows(17, 2))
    batcher.flush()
    doubled, _ = await waiting
    assert doubled.shape[0] == 10
    await batcher.close()


async def test_expired_request_is_dropped_before_compute(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor)
    past = asyncio.get_running_loop().time() - 1.0
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        await batcher.score(windows(2, 0), deadline=past)
    assert batcher.batches_run == 0
    assert batcher.pending_windows == 0
    await batcher.close()


async def test_cancelled_request_is_not_computed(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=16, max_queue_delay_ms=600_000)
    abandoned = await start_queued(batcher, windows(5, 0))
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    kept = asyncio.create_task(batcher.score(windows(16, 1)))
    await kept
    assert batcher.windows_run == 16
    await batcher.close()


async def test_compute_error_reaches_every_caller(executor: ThreadPoolExecutor) -> None:
    def broken(batch: Windows) -> Outputs:
        raise RuntimeError(f"cannot score {batch.shape[0]} windows")

    batcher = WindowBatcher(
        broken, max_batch_windows=4, max_queue_delay_ms=1, max_queue_windows=8, executor=executor
    )
    with pytest.raises(RuntimeError, match="cannot score"):
        await batcher.score(windows(3, 0))
    await batcher.close()


async def test_close_runs_queued_work_then_refuses(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=16, max_queue_delay_ms=600_000)
    queued = await start_queued(batcher, windows(3, 0))
    await batcher.close()
    doubled, _ = await queued
    assert doubled.shape[0] == 3
    with pytest.raises(UnavailableError, match="shutting down"):
        await batcher.score(windows(1, 1))


def test_bad_settings_are_named(executor: ThreadPoolExecutor) -> None:
    with pytest.raises(ValueError, match="max_batch_windows must be at least 1, got 0"):
        WindowBatcher(
            rowwise, max_batch_windows=0, max_queue_delay_ms=1, max_queue_windows=8, executor=executor
        )


async def test_stream_yields_pieces_in_order(executor: ThreadPoolExecutor) -> None:
    batcher = make(executor, max_batch_windows=16)
    given = windows(40, 1)
    pieces = [doubled async for doubled, _ in batcher.stream(given)]
    assert [p.shape[0] for p in pieces] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate(pieces), given * 2.0)
    await batcher.close()


async def test_stream_left_early_drops_the_pieces_not_computed(executor: ThreadPoolExecutor) -> None:
    released = threading.Event()

    def held_after_first(batch: Windows) -> Outputs:
        if batcher.batches_run >= 1:
            released.wait(timeout=30)
        return rowwise(batch)

    batcher = WindowBatcher(
        held_after_first,
        max_batch_windows=4,
        max_queue_delay_ms=600_000,
        max_queue_windows=64,
        executor=executor,
    )
    async with contextlib.aclosing(batcher.stream(windows(40, 2))) as pieces:
        first, _ = await anext(pieces)
    released.set()  # the second batch was already computing; the other eight are dropped
    assert first.shape[0] == 4
    await until(lambda: not batcher.pending_windows and batcher.batches_run >= 2, "the queue drained")
    assert batcher.windows_run == 8
    await batcher.close()

"""Scoring of series with registered models through per-version window batchers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from stad.core.series import SeriesData, align_channels
from stad.server.batcher import Outputs, WindowBatcher, Windows
from stad.server.detector import Detector, ScoreOutput, WindowOutput
from stad.server.errors import InvalidArgumentError
from stad.server.metrics import ServerMetrics
from stad.server.registry import Registry, check_model_name


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
        resolved = await asyncio.to_thread(self._registry.resolve, model, version)
        detector = await asyncio.to_thread(self._registry.load, model, resolved)
        return resolved, detector

    async def score_series(
        self,
        model: str,
        version: str,
        detector: Detector,
        series: SeriesData,
        *,
        threshold: float | None = None,
        deadline: float | None = None,
    ) -> ScoreOutput:
        """Score one series with an already resolved version."""
        values = align_channels(series, detector.channels_)
        plan = detector.plan_windows(values)
        batcher = self._batcher(model, version)
        outputs = await batcher.score(plan.windows, deadline=deadline)
        probability = outputs[2] if len(outputs) > 2 else None
        window_output = WindowOutput(outputs[0], outputs[1], probability)
        if plan.n_steps > 50_000:
            return await asyncio.to_thread(detector.assemble, plan, window_output, threshold=threshold)
        return detector.assemble(plan, window_output, threshold=threshold)

    async def score(
        self,
        model: str,
        version: str,
        series: Sequence[SeriesData],
        *,
        threshold: float | None = None,
        deadline: float | None = None,
    ) -> tuple[str, list[ScoreOutput]]:
        """Score every series with the named (or active) version; returns (version, results)."""
        check_request(series, threshold)
        resolved, detector = await self.resolve(model, version)
        results = await asyncio.gather(
            *(
                self.score_indexed(model, resolved, detector, i, s, threshold=threshold, deadline=deadline)
                for i, s in enumerate(series)
            )
        )
        return resolved, list(results)

    async def score_indexed(
        self,
        model: str,
        version: str,
        detector: Detector,
        index: int,
        series: SeriesData,
        *,
        threshold: float | None = None,
        deadline: float | None = None,
    ) -> ScoreOutput:
        """`score_series`, with the series' index in any bad-input message."""
        try:
            return await self.score_series(
                model, version, detector, series, threshold=threshold, deadline=deadline
            )
        except ValueError as exc:
            raise InvalidArgumentError(f"series {index}: {exc}") from exc

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
        return WindowCompute(self._registry, model, version, self._device)


class WindowCompute:
    """The batch function of one model version; runs in the device thread.

    On CUDA the batch is staged in a pinned host buffer (so the detector's
    host-to-device copy can be asynchronous) and computed under bf16 autocast
    and inference mode.
    """

    def __init__(self, registry: Registry[Detector], model: str, version: str, device: str) -> None:
        self._registry = registry
        self._model = model
        self._version = version
        self._cuda = device.startswith("cuda")
        self._pinned: np.ndarray | None = None

    def __call__(self, windows: Windows) -> Outputs:
        detector = self._registry.load(self._model, self._version)
        if self._cuda:
            windows = self._stage(windows)
        with self._device_context():
            output = detector.score_windows(windows)
        errors = np.asarray(output.errors, dtype=np.float32)
        expected = np.asarray(output.expected, dtype=np.float64)
        if output.probability is None:
            return errors, expected
        return errors, expected, np.asarray(output.probability, dtype=np.float32)

    def _stage(self, windows: Windows) -> Windows:
        import torch

        n = windows.shape[0]
        if self._pinned is None or self._pinned.shape[0] < n or self._pinned.shape[1:] != windows.shape[1:]:
            self._pinned = torch.empty(windows.shape, dtype=torch.float32, pin_memory=True).numpy()
        staged = self._pinned[:n]  # (N, L, C) view of pinned memory
        np.copyto(staged, windows)
        return staged

    def _device_context(self) -> contextlib.AbstractContextManager[object]:
        if not self._cuda:
            return contextlib.nullcontext()
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        return stack


def check_request(series: Sequence[SeriesData], threshold: float | None) -> None:
    if not series:
        raise InvalidArgumentError("the request has no series to score")
    if threshold is not None and not np.isfinite(threshold):
        raise InvalidArgumentError(f"threshold must be a finite number, got {threshold}")


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of at most `size` covering range(total)."""
    for start in range(0, total, size):
        yield start, min(total, start + size)

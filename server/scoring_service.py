"""stad.v1.ScoringService: messages in, ScoringEngine, messages out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from grpc import aio

from stad.core.series import SeriesData
from stad.core.types import MIB
from stad.server import convert
from stad.server.detector import Detector
from stad.server.errors import ResourceExhaustedError
from stad.server.guard import CallGuard, deadline_of
from stad.server.scoring import ScoringEngine, check_request, interleave, step_ranges
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import scoring_pb2_grpc as _scoring_pb2_grpc

# A streamed message is at most about this big, and fits the max message size when that is smaller.
STREAM_CHUNK_BYTES = MIB

Context = aio.ServicerContext[Any, Any]


class ScoringServicer(_scoring_pb2_grpc.ScoringServiceServicer):
    """`max_response_bytes`: the server's max send message size; a Score call whose
    response would be larger is refused before compute (None: no check)."""

    def __init__(
        self, engine: ScoringEngine, guard: CallGuard, *, max_response_bytes: int | None = None
    ) -> None:
        self._engine = engine
        self._guard = guard
        self._max_response_bytes = max_response_bytes

    async def Score(self, request: _scoring_pb2.ScoreRequest, context: Context) -> _scoring_pb2.ScoreResponse:
        return await self._guard.unary("Score", context, lambda: self._score(request, context))

    async def _score(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> _scoring_pb2.ScoreResponse:
        series, threshold = _decode(request)
        version, detector = await self._engine.resolve(request.model, request.version)
        convert.check_series_channels(series, detector.channels_)
        firsts = [convert.first_step_from(data, request.return_from_ns) for data in series]
        self._check_response_size(request, version, detector, series, firsts)
        outputs = await self._engine.score(
            request.model, version, detector, series, threshold=threshold, deadline=deadline_of(context)
        )
        response = _scoring_pb2.ScoreResponse(model=request.model, version=version)
        for index, (data, output, first) in enumerate(zip(series, outputs, firsts, strict=True)):
            response.results.append(convert.series_scores(index, data, output, first, data.steps))
        return response

    def _check_response_size(
        self,
        request: _scoring_pb2.ScoreRequest,
        version: str,
        detector: Detector,
        series: Sequence[SeriesData],
        firsts: Sequence[int],
    ) -> None:
        limit = self._max_response_bytes
        if limit is None:
            return
        size = (
            len(request.model)
            + len(version)
            + sum(
                convert.series_scores_bytes(
                    data.steps - first, detector.channels_, timestamps=data.timestamps_ns is not None
                )
                for data, first in zip(series, firsts, strict=True)
            )
        )
        if size > limit:
            raise ResourceExhaustedError(
                f"the response would be about {size / MIB:.1f} MiB ({size} bytes), more than the "
                f"server's max message size of {limit / MIB:.1f} MiB ({limit} bytes); use "
                "StreamScore, or return_from_ns, or fewer series per call"
            )

    async def StreamScore(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> AsyncIterator[_scoring_pb2.ScoreResponse]:
        async for response in self._guard.stream("StreamScore", context, self._stream(request, context)):
            yield response

    async def _stream(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> AsyncIterator[_scoring_pb2.ScoreResponse]:
        """Each series' steps in order, in chunks sent as soon as they are final; the
        chunks of different series interleave."""
        series, threshold = _decode(request)
        version, detector = await self._engine.resolve(request.model, request.version)
        convert.check_series_channels(series, detector.channels_)
        deadline = deadline_of(context)
        budget = self._engine.request_budget()
        sources = [
            self._engine.stream_series(
                request.model, version, detector, i, s, threshold=threshold, deadline=deadline, budget=budget
            )
            for i, s in enumerate(series)
        ]
        steps_per_message = self._steps_per_message(request.model, version, detector.channels_)
        async for index, chunk in interleave(sources):
            data = series[index]
            first = max(chunk.start_step, convert.first_step_from(data, request.return_from_ns))
            for start, stop in step_ranges(first, chunk.stop_step, steps_per_message):
                yield _scoring_pb2.ScoreResponse(
                    model=request.model,
                    version=version,
                    results=[convert.series_scores(index, data, chunk, start, stop)],
                )

    def _steps_per_message(self, model: str, version: str, channels: Sequence[str]) -> int:
        """Steps per streamed message: about STREAM_CHUNK_BYTES, within the max message size."""
        budget = min(STREAM_CHUNK_BYTES, self._max_response_bytes or STREAM_CHUNK_BYTES)
        fixed = len(model) + len(version) + convert.series_scores_bytes(0, channels, timestamps=True)
        return max(1, (budget - fixed) // convert.step_bytes(len(channels), timestamps=True))


def _decode(request: _scoring_pb2.ScoreRequest) -> tuple[list[SeriesData], float | None]:
    """The request's series and threshold override, checked."""
    series = convert.series_list(request.series)
    threshold = request.threshold if request.HasField("threshold") else None
    check_request(series, threshold)
    return series, threshold

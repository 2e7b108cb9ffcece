"""stad.v1.ScoringService: messages in, ScoringEngine, messages out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from stad.server import convert
from stad.server.guard import CallGuard, deadline_of
from stad.server.scoring import ScoringEngine, check_request, chunks
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import scoring_pb2_grpc as _scoring_pb2_grpc

# A streamed chunk carries at most this many values (steps x per-step fields).
STREAM_CHUNK_VALUES = 1 << 17

Context = aio.ServicerContext[Any, Any]


class ScoringServicer(_scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, engine: ScoringEngine, guard: CallGuard) -> None:
        self._engine = engine
        self._guard = guard

    async def Score(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> _scoring_pb2.ScoreResponse:
        return await self._guard.unary("Score", context, lambda: self._score(request, context))

    async def _score(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> _scoring_pb2.ScoreResponse:
        series = convert.series_list(request.series)
        threshold = request.threshold if request.HasField("threshold") else None
        version, outputs = await self._engine.score(
            request.model, request.version, series, threshold=threshold, deadline=deadline_of(context)
        )
        response = _scoring_pb2.ScoreResponse(model=request.model, version=version)
        for index, (data, output) in enumerate(zip(series, outputs, strict=True)):
            start = convert.first_step_from(data, request.return_from_ns)
            response.results.append(convert.series_scores(index, data, output, start, data.steps))
        return response

    async def StreamScore(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> AsyncIterator[_scoring_pb2.ScoreResponse]:
        async for response in self._guard.stream("StreamScore", context, self._stream(request, context)):
            yield response

    async def _stream(
        self, request: _scoring_pb2.ScoreRequest, context: Context
    ) -> AsyncIterator[_scoring_pb2.ScoreResponse]:
        series = convert.series_list(request.series)
        threshold = request.threshold if request.HasField("threshold") else None
        check_request(series, threshold)
        version, detector = await self._engine.resolve(request.model, request.version)
        deadline = deadline_of(context)
        budget = self._engine.request_budget()
        tasks = {
            asyncio.ensure_future(
                self._engine.score_indexed(
                    request.model, version, detector, i, s, threshold=threshold, deadline=deadline,
                    budget=budget,
                )
            ): i
            for i, s in enumerate(series)
        }
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.__getitem__):
                    index = tasks[task]
                    data, output = series[index], task.result()
                    per_step = 5 + 2 * len(output.channels)
                    size = max(1, STREAM_CHUNK_VALUES // per_step)
                    first = convert.first_step_from(data, request.return_from_ns)
                    for start, stop in chunks(data.steps - first, size):
                        yield _scoring_pb2.ScoreResponse(
                            model=request.model,
                            version=version,
                            results=[
                                convert.series_scores(index, data, output, first + start, first + stop)
                            ],
                        )
        finally:
            for task in tasks:
                task.cancel()

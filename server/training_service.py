"""stad.v1.TrainingService: turns streamed requests into jobs (see `requests`) and drives the JobManager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from stad.server import convert, paging, requests
from stad.server.errors import RequestCutOff, StadServerError
from stad.server.guard import CallGuard
from stad.server.intercept import drain
from stad.server.jobs import JobManager
from stad.v1 import training_pb2 as _training_pb2
from stad.v1 import training_pb2_grpc as _training_pb2_grpc

Context = aio.ServicerContext[Any, Any]


class TrainingServicer(_training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, jobs: JobManager, guard: CallGuard, *, max_training_bytes: int) -> None:
        self._jobs = jobs
        self._guard = guard
        self._max_bytes = max_training_bytes

    async def StartTraining(
        self, request_iterator: AsyncIterator[_training_pb2.StartTrainingRequest], context: Context
    ) -> _training_pb2.StartTrainingResponse:
        async def body() -> _training_pb2.StartTrainingResponse:
            messages = _ended_by_client(request_iterator, context)
            try:
                request = await requests.training_request(messages, self._max_bytes)
            except StadServerError:
                await drain(request_iterator)  # the caller sees our status once it stops writing
                raise
            job = await self._jobs.submit(request)
            return _training_pb2.StartTrainingResponse(job=convert.job_message(job))

        return await self._guard.unary("StartTraining", context, body)

    async def WatchTraining(
        self, request: _training_pb2.WatchTrainingRequest, context: Context
    ) -> AsyncIterator[_training_pb2.TrainingJob]:
        async def body() -> AsyncIterator[_training_pb2.TrainingJob]:
            async for job in self._jobs.watch(request.job_id):
                yield convert.job_message(job)

        async for message in self._guard.stream("WatchTraining", context, body()):
            yield message

    async def GetTraining(
        self, request: _training_pb2.GetTrainingRequest, context: Context
    ) -> _training_pb2.TrainingJob:
        async def body() -> _training_pb2.TrainingJob:
            return convert.job_message(self._jobs.get(request.job_id))

        return await self._guard.unary("GetTraining", context, body)

    async def ListTrainings(
        self, request: _training_pb2.ListTrainingsRequest, context: Context
    ) -> _training_pb2.ListTrainingsResponse:
        async def body() -> _training_pb2.ListTrainingsResponse:
            size = paging.page_size(request.page_size)
            offset = _offset(request.page_token)
            jobs = self._jobs.list(request.model)
            page = jobs[offset : offset + size]
            token = ""
            if offset + size < len(jobs):
                token = paging.encode_token("offset:", offset + size)
            return _training_pb2.ListTrainingsResponse(
                jobs=[convert.job_message(j) for j in page], next_page_token=token
            )

        return await self._guard.unary("ListTrainings", context, body)

    async def CancelTraining(
        self, request: _training_pb2.CancelTrainingRequest, context: Context
    ) -> _training_pb2.TrainingJob:
        async def body() -> _training_pb2.TrainingJob:
            return convert.job_message(await self._jobs.cancel(request.job_id))

        return await self._guard.unary("CancelTraining", context, body)


def _offset(token: str) -> int:
    if not token:
        return 0
    value = paging.decode_token(token, "offset:")
    try:
        offset = int(value)
    except ValueError:
        raise paging.bad_token(token) from None
    if offset < 0:
        raise paging.bad_token(token)
    return offset


async def _ended_by_client(
    messages: AsyncIterator[_training_pb2.StartTrainingRequest], context: Context
) -> AsyncIterator[_training_pb2.StartTrainingRequest]:
    """The request stream, which raises RequestCutOff where gRPC, not the client, ended it.

    gRPC ends a request stream at a message over the max message size as if the client had
    finished, and cancels the call: sending the response headers then fails, so no job is
    made of the messages before it, and the call is counted with the code the client got.
    """
    async for message in messages:
        yield message
    try:
        await context.send_initial_metadata(())
    except (asyncio.CancelledError, Exception) as exc:  # Exception: gRPC's ExecuteBatchError
        raise RequestCutOff("a StartTrainingRequest was over the server's max message size") from exc

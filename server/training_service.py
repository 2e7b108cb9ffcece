"""stad.v1.TrainingService: collects streamed training data and drives the JobManager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from grpc import aio

from stad.core.detector_config import DetectorConfig, SettingError
from stad.core.series import SeriesData, align_channels, make_series, series_from_proto
from stad.core.types import MIB
from stad.server import convert, paging
from stad.server.errors import InvalidArgumentError, RequestCutOff, ResourceExhaustedError
from stad.server.guard import CallGuard
from stad.server.jobs import JobManager, TrainingRequest
from stad.server.registry import check_model_name
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
            request = await collect_training_request(messages, self._max_bytes)
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


async def collect_training_request(
    messages: AsyncIterator[_training_pb2.StartTrainingRequest], max_bytes: int
) -> TrainingRequest:
    """Validate the streamed spec and data chunks into one TrainingRequest."""
    spec: _training_pb2.TrainingSpec | None = None
    chunks: list[SeriesData] = []
    labels: list[np.ndarray] = []
    total_bytes = 0
    index = -1
    over_limit = ""
    async for message in messages:
        index += 1
        if index == 0:
            if not message.HasField("spec"):
                raise InvalidArgumentError("the first StartTrainingRequest must carry the spec")
            spec = message.spec
        if over_limit:
            continue  # read the rest, so the caller sees our status, not a broken stream
        if not message.HasField("data") or not message.data.values:
            if message.labels:
                raise InvalidArgumentError(f"message {index} has labels but no data")
            continue
        try:
            chunk = series_from_proto(message.data)
        except ValueError as exc:
            raise InvalidArgumentError(f"data chunk {index}: {exc}") from exc
        if chunks:
            if set(chunk.channels) != set(chunks[0].channels):
                raise InvalidArgumentError(
                    f"data chunk {index} has channels {list(chunk.channels)}, "
                    f"the first chunk had {list(chunks[0].channels)}"
                )
            chunk = make_series(
                align_channels(chunk, chunks[0].channels),
                channels=chunks[0].channels,
                timestamps_ns=chunk.timestamps_ns,
            )
        total_bytes += chunk.values.nbytes
        if total_bytes > max_bytes:
            over_limit = (
                f"training data is over the server's limit of {max_bytes // MIB} MiB "
                f"(max_training_mb) after {sum(c.steps for c in chunks) + chunk.steps} steps"
            )
            chunks.clear()
            labels.clear()
            continue
        if chunks and bool(message.labels) != bool(labels):
            raise InvalidArgumentError("either every data chunk has labels or none does")
        if message.labels:
            if len(message.labels) != chunk.steps:
                raise InvalidArgumentError(
                    f"data chunk {index} has {len(message.labels)} labels for {chunk.steps} steps"
                )
            labels.append(convert.as_labels(message.labels))
        chunks.append(chunk)
    if over_limit:
        raise ResourceExhaustedError(over_limit)
    if spec is None:
        raise InvalidArgumentError("no StartTrainingRequest received: send the spec first")
    check_model_name(spec.model)
    if not chunks:
        raise InvalidArgumentError("no training data: send data in the StartTrainingRequest messages")
    config = convert.spec_config(spec)
    try:
        parsed = DetectorConfig.from_flat(config)
    except SettingError as exc:
        raise InvalidArgumentError(f"bad training setting {exc}") from exc
    stamps = [c.timestamps_ns for c in chunks]
    if any(s is None for s in stamps) and not all(s is None for s in stamps):
        raise InvalidArgumentError("either every data chunk has timestamps or none does")
    try:
        series = make_series(
            np.concatenate([c.values for c in chunks]),  # (T, C)
            channels=chunks[0].channels,
            timestamps_ns=None if stamps[0] is None else np.concatenate([s for s in stamps if s is not None]),
        )
    except ValueError as exc:
        raise InvalidArgumentError(f"training data: {exc}") from exc
    if series.steps < parsed.model.window:
        raise InvalidArgumentError(
            f"training data has {series.steps} steps, fewer than one window of {parsed.model.window}"
        )
    check_every_channel_observed(series)
    return TrainingRequest(
        model=spec.model,
        config=config,
        values=series.values,
        channels=series.channels,
        timestamps_ns=series.timestamps_ns,
        labels=np.concatenate(labels) if labels else None,
        activate=spec.activate,
        description=spec.description,
    )


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


def check_every_channel_observed(series: SeriesData) -> None:
    """A model cannot learn a channel without a single value in its training data."""
    unobserved = [bool(np.isnan(column).all()) for column in series.values.T]
    if any(unobserved):
        names = [repr(name) for name, empty in zip(series.channels, unobserved, strict=True) if empty]
        which = ("channel " if len(names) == 1 else "channels ") + ", ".join(names)
        raise InvalidArgumentError(f"training data has no observed values (all NaN) in {which}")

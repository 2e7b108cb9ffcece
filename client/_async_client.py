"""The asyncio stad client: the surface of `Client`, with coroutines and async iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc
import grpc.aio
import numpy.typing as npt
from grpc_health.v1 import health_pb2 as _health_pb2
from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc

from stad.client import _channel, _chunks, _convert
from stad.client._client import check_succeeded
from stad.client._exceptions import from_rpc_error
from stad.client._types import HealthStatus, JobStatus, ModelInfo, ScoreResult, TrainingSettings
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import models_pb2_grpc as _models_pb2_grpc
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import scoring_pb2_grpc as _scoring_pb2_grpc
from stad.v1 import training_pb2 as _training_pb2
from stad.v1 import training_pb2_grpc as _training_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


class AsyncClient(_channel.ClientBase):
    """An asyncio client for a stad server; use `async with` or await close()."""

    def __init__(
        self,
        target: str = "",
        *,
        token: str | None = None,
        tls: _channel.TLSOption = None,
        client_cert: _channel.PathLike | None = None,
        client_key: _channel.PathLike | None = None,
        timeout_s: float | None = _channel.DEFAULT_TIMEOUT_S,
        retries: int = _channel.DEFAULT_RETRIES,
        max_message_mb: int = _channel.DEFAULT_MAX_MESSAGE_MB,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        super().__init__(
            target,
            token=token,
            timeout_s=timeout_s,
            retries=retries,
            max_message_mb=max_message_mb,
            channel_given=channel is not None,
        )
        if channel is None:
            creds = _channel.credentials(tls, client_cert=client_cert, client_key=client_key)
            if creds is None:
                channel = grpc.aio.insecure_channel(target, options=self._channel_options)
            else:
                channel = grpc.aio.secure_channel(target, creds, options=self._channel_options)
        self._channel = channel
        self._scoring = _scoring_pb2_grpc.ScoringServiceStub(channel)
        self._training = _training_pb2_grpc.TrainingServiceStub(channel)
        self._models = _models_pb2_grpc.ModelServiceStub(channel)
        self._health: Any = _health_pb2_grpc.HealthStub(channel)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closed and self._owns_channel:
            await self._channel.close(grace=None)
        self._closed = True

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        idempotent: bool,
    ) -> _Resp:
        self._check_open()
        deadline = _channel.deadline_after(self._timeout_s)
        attempt = 0
        while True:
            try:
                return await method(request, timeout=_channel.remaining_s(deadline), metadata=self._metadata)
            except grpc.RpcError as exc:
                await asyncio.sleep(
                    _channel.retry_delay(
                        exc, deadline=deadline, idempotent=idempotent, attempt=attempt, retries=self._retries
                    )
                )
                attempt += 1

    async def _exchange(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        exchange: _convert.Exchange[_Req, _Resp, _T],
    ) -> _T:
        """Run an idempotent request/response exchange (such as a paged List) to its result."""
        request = next(exchange)
        while True:
            response = await self._unary(method, request, idempotent=True)
            try:
                request = exchange.send(response)
            except StopIteration as stop:
                return cast(_T, stop.value)

    # -- scoring -----------------------------------------------------------

    async def score(
        self,
        values: _convert.SeriesInput,
        *,
        model: str,
        timestamps: npt.ArrayLike | None = None,
        channels: Sequence[str] | None = None,
        version: str | None = None,
        threshold: float | None = None,
        return_from_ns: int = 0,
        chunk_steps: int | None = None,
    ) -> ScoreResult:
        """Score one series of any length, in overlapping chunks when long (see Client.score)."""
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        size = chunk_steps or _chunks.default_chunk_steps(len(series.channels), self.max_message_bytes)
        if series.steps <= size:
            results = await self.score_many(
                [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
            )
            return results[0]
        requests = _chunks.chunk_requests(
            series,
            await self.model(model, version=version),
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
            chunk_steps=size,
        )
        return await self._exchange(self._scoring.Score, _chunks.chunked_score(requests))

    async def score_many(
        self,
        series: Sequence[_convert.SeriesInput],
        *,
        model: str,
        version: str | None = None,
        threshold: float | None = None,
        return_from_ns: int = 0,
    ) -> list[ScoreResult]:
        request = _convert.score_request(
            series, model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        return _convert.score_results(await self._unary(self._scoring.Score, request, idempotent=True))

    async def stream_score(
        self,
        values: _convert.SeriesInput,
        *,
        model: str,
        timestamps: npt.ArrayLike | None = None,
        channels: Sequence[str] | None = None,
        version: str | None = None,
        threshold: float | None = None,
        return_from_ns: int = 0,
        chunk_steps: int | None = None,
    ) -> AsyncIterator[ScoreResult]:
        """Score one series of any length as results of consecutive steps (see Client.stream_score)."""
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        size = chunk_steps or _chunks.default_chunk_steps(len(series.channels), self.max_message_bytes)
        if series.steps <= size:
            request = _convert.score_request(
                [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
            )
            async for result in self._stream_score(request):
                yield result
            return
        requests = _chunks.chunk_requests(
            series,
            await self.model(model, version=version),
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
            chunk_steps=size,
        )
        for request, call in requests:
            async for result in self._stream_score(request):
                kept = _chunks.kept_steps(result, call)
                if kept.steps:
                    yield kept

    async def _stream_score(self, request: _scoring_pb2.ScoreRequest) -> AsyncIterator[ScoreResult]:
        self._check_open()
        call = self._scoring.StreamScore(request, timeout=self._timeout_s, metadata=self._metadata)
        try:
            async for response in call:
                for result in _convert.score_results(response):
                    yield result
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()

    # -- training ----------------------------------------------------------

    async def train(
        self,
        values: _convert.SeriesInput,
        *,
        model: str,
        timestamps: npt.ArrayLike | None = None,
        channels: Sequence[str] | None = None,
        labels: npt.ArrayLike | None = None,
        settings: TrainingSettings | None = None,
        activate: bool = True,
        description: str = "",
    ) -> AsyncTrainingJob:
        requests = _convert.upload_requests(
            values,
            model=model,
            timestamps=timestamps,
            channels=channels,
            labels=labels,
            settings=settings,
            activate=activate,
            description=description,
            max_message_bytes=self.max_message_bytes,
        )
        self._check_open()
        try:
            response = await self._training.StartTraining(
                iter(requests), timeout=self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return AsyncTrainingJob(self, _convert.job_status(response.job))

    async def job(self, job_id: str) -> AsyncTrainingJob:
        return AsyncTrainingJob(self, await self._get_job(job_id))

    async def jobs(self, *, model: str | None = None) -> list[JobStatus]:
        return await self._exchange(self._training.ListTrainings, _convert.list_jobs(model))

    async def _get_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.GetTrainingRequest(job_id=job_id)
        response = await self._unary(self._training.GetTraining, request, idempotent=True)
        return _convert.job_status(response)

    async def _cancel_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.CancelTrainingRequest(job_id=job_id)
        response = await self._unary(self._training.CancelTraining, request, idempotent=True)
        return _convert.job_status(response)

    async def _watch_job(self, job_id: str, timeout_s: float | None) -> AsyncIterator[JobStatus]:
        deadline = _channel.deadline_after(timeout_s)
        request = _training_pb2.WatchTrainingRequest(job_id=job_id)
        reconnects = 0
        while True:
            self._check_open()
            call = self._training.WatchTraining(
                request, timeout=_channel.remaining_s(deadline), metadata=self._metadata
            )
            try:
                async for message in call:
                    status = _convert.job_status(message)
                    yield status
                    if status.state.finished:
                        return
                return
            except grpc.RpcError as exc:
                await asyncio.sleep(_channel.reconnect_delay(exc, reconnects))
                reconnects += 1
            finally:
                call.cancel()

    # -- models and health -------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        return await self._exchange(self._models.ListModels, _convert.list_models())

    async def model(self, name: str, *, version: str | None = None) -> ModelInfo:
        request = _models_pb2.GetModelRequest(name=name, version=version or "")
        return _convert.model_info(await self._unary(self._models.GetModel, request, idempotent=True))

    async def delete_model(self, name: str, *, version: str | None = None) -> None:
        request = _models_pb2.DeleteModelRequest(name=name, version=version or "")
        await self._unary(self._models.DeleteModel, request, idempotent=False)

    async def activate(self, name: str, version: str) -> ModelInfo:
        request = _models_pb2.SetActiveVersionRequest(name=name, version=version)
        response = await self._unary(self._models.SetActiveVersion, request, idempotent=True)
        return _convert.model_info(response)

    async def health(self, service: str = "") -> HealthStatus:
        request = _health_pb2.HealthCheckRequest(service=service)
        response = await self._unary(self._health.Check, request, idempotent=True)
        return _convert.health_status(response, service=service)


class AsyncTrainingJob:
    """A handle to a training job, for AsyncClient."""

    def __init__(self, client: AsyncClient, status: JobStatus) -> None:
        self._client = client
        self.status = status

    @property
    def job_id(self) -> str:
        return self.status.job_id

    async def refresh(self) -> JobStatus:
        self.status = await self._client._get_job(self.job_id)
        return self.status

    async def watch(self, *, timeout_s: float | None = None) -> AsyncIterator[JobStatus]:
        async for status in self._client._watch_job(self.job_id, timeout_s):
            self.status = status
            yield status

    async def wait(self, *, timeout_s: float | None = None) -> JobStatus:
        async for _ in self.watch(timeout_s=timeout_s):
            pass
        while not self.status.state.finished:
            await asyncio.sleep(_channel.POLL_S)
            await self.refresh()
        return check_succeeded(self.status)

    async def cancel(self) -> JobStatus:
        self.status = await self._client._cancel_job(self.job_id)
        return self.status

    def __repr__(self) -> str:
        return f"AsyncTrainingJob(job_id={self.job_id!r}, state={self.status.state.value!r})"

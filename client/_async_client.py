"""The asyncio stad client: the surface of `Client`, with coroutines and async iterators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
import numpy.typing as npt
from grpc_health.v1 import health_pb2 as _health_pb2
from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc

from stad.client import _channel, _convert
from stad.client._client import check_succeeded
from stad.client._exceptions import ClientClosedError, from_rpc_error
from stad.client._types import HealthStatus, JobStatus, ModelInfo, ScoreResult, TrainingSettings
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import models_pb2_grpc as _models_pb2_grpc
from stad.v1 import scoring_pb2_grpc as _scoring_pb2_grpc
from stad.v1 import training_pb2 as _training_pb2
from stad.v1 import training_pb2_grpc as _training_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_WATCH_RECONNECTS = 5
_POLL_S = 0.5


class AsyncClient:
    """An asyncio client for a stad server; use `async with` or await close()."""

    def __init__(
        self,
        target: str = "",
        *,
        token: str | None = None,
        tls: _channel.TLSOption = None,
        timeout_s: float | None = _channel.DEFAULT_TIMEOUT_S,
        retries: int = _channel.DEFAULT_RETRIES,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        if channel is None and not target:
            raise ValueError("give a target such as '127.0.0.1:50051' or a channel")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive or None, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target = target
        self._metadata = _channel.call_metadata(token)
        self._timeout_s = timeout_s
        self._retries = retries
        self._owns_channel = channel is None
        if channel is None:
            creds = _channel.credentials(tls)
            if creds is None:
                channel = grpc.aio.insecure_channel(target, options=_channel.CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(target, creds, options=_channel.CHANNEL_OPTIONS)
        self._channel = channel
        self._scoring = _scoring_pb2_grpc.ScoringServiceStub(channel)
        self._training = _training_pb2_grpc.TrainingServiceStub(channel)
        self._models = _models_pb2_grpc.ModelServiceStub(channel)
        self._health: Any = _health_pb2_grpc.HealthStub(channel)
        self._closed = False

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

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        idempotent: bool,
    ) -> _Resp:
        self._check_open()
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        attempt = 0
        while True:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                delay = _channel.backoff_s(attempt)
                in_time = deadline is None or time.monotonic() + delay < deadline
                if in_time and _channel.should_retry(
                    exc, idempotent=idempotent, attempt=attempt, retries=self._retries
                ):
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                raise from_rpc_error(exc) from exc

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
    ) -> ScoreResult:
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        results = await self.score_many(
            [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        return results[0]

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
            [_convert.to_series(item) for item in series],
            model=model,
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
        )
        response = await self._unary(self._scoring.Score, request, idempotent=True)
        results = sorted(response.results, key=lambda r: r.series_index)
        return [
            _convert.score_result(item, model=response.model, version=response.version) for item in results
        ]

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
    ) -> AsyncIterator[ScoreResult]:
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        request = _convert.score_request(
            [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        self._check_open()
        call = self._scoring.StreamScore(request, timeout=self._timeout_s, metadata=self._metadata)
        try:
            async for response in call:
                for item in response.results:
                    yield _convert.score_result(item, model=response.model, version=response.version)
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
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        requests = list(
            _convert.training_requests(
                series,
                model=model,
                labels=labels,
                settings=settings,
                activate=activate,
                description=description,
            )
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
        out: list[JobStatus] = []
        token = ""
        while True:
            request = _training_pb2.ListTrainingsRequest(page_token=token, model=model or "")
            response = await self._unary(self._training.ListTrainings, request, idempotent=True)
            out.extend(_convert.job_status(job) for job in response.jobs)
            token = response.next_page_token
            if not token:
                return out

    async def _get_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.GetTrainingRequest(job_id=job_id)
        response = await self._unary(self._training.GetTraining, request, idempotent=True)
        return _convert.job_status(response)

    async def _cancel_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.CancelTrainingRequest(job_id=job_id)
        response = await self._unary(self._training.CancelTraining, request, idempotent=True)
        return _convert.job_status(response)

    async def _watch_job(self, job_id: str, timeout_s: float | None) -> AsyncIterator[JobStatus]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reconnects = 0
        while True:
            self._check_open()
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            request = _training_pb2.WatchTrainingRequest(job_id=job_id)
            call = self._training.WatchTraining(request, timeout=remaining, metadata=self._metadata)
            try:
                async for message in call:
                    status = _convert.job_status(message)
                    yield status
                    if status.state.finished:
                        return
                return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and reconnects < _WATCH_RECONNECTS:
                    await asyncio.sleep(_channel.backoff_s(reconnects))
                    reconnects += 1
                    continue
                raise from_rpc_error(exc) from exc
            finally:
                call.cancel()

    # -- models and health -------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        out: list[ModelInfo] = []
        token = ""
        while True:
            request = _models_pb2.ListModelsRequest(page_token=token)
            response = await self._unary(self._models.ListModels, request, idempotent=True)
            out.extend(_convert.model_info(item) for item in response.models)
            token = response.next_page_token
            if not token:
                return out

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
        name = _health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return HealthStatus(status=str(name), service=service)


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
            await asyncio.sleep(_POLL_S)
            await self.refresh()
        return check_succeeded(self.status)

    async def cancel(self) -> JobStatus:
        self.status = await self._client._cancel_job(self.job_id)
        return self.status

    def __repr__(self) -> str:
        return f"AsyncTrainingJob(job_id={self.job_id!r}, state={self.status.state.value!r})"

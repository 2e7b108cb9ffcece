"""The synchronous stad client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self, TypeVar, cast

import grpc
import numpy.typing as npt
from grpc_health.v1 import health_pb2 as _health_pb2
from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc

from stad.client import _channel, _chunks, _convert
from stad.client._exceptions import TrainingFailedError, from_rpc_error
from stad.client._types import HealthStatus, JobStatus, ModelInfo, ScoreResult, TrainingSettings
from stad.core.jobs import JobState
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import models_pb2_grpc as _models_pb2_grpc
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import scoring_pb2_grpc as _scoring_pb2_grpc
from stad.v1 import training_pb2 as _training_pb2
from stad.v1 import training_pb2_grpc as _training_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


class Client(_channel.ClientBase):
    """A blocking client for a stad server; use it as a context manager or call close().

    `channel` injects a ready channel (tests, custom interceptors); the client
    then does not close it. Unary calls get a deadline of `timeout_s`;
    idempotent ones are retried with backoff on UNAVAILABLE up to `retries` times.
    `max_message_mb` bounds each message either way, like the server's setting
    of that name; training uploads are cut into chunks that fit it.
    `tls`: True (the system's root certificates), a CA certificate's path, or
    ChannelCredentials; `client_cert`/`client_key` (PEM paths, else $STAD_CLIENT_CERT
    and $STAD_CLIENT_KEY when TLS is on) present a client certificate (mutual TLS).
    """

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
        channel: grpc.Channel | None = None,
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
                channel = grpc.insecure_channel(target, options=self._channel_options)
            else:
                channel = grpc.secure_channel(target, creds, options=self._channel_options)
        self._channel = channel
        self._scoring = _scoring_pb2_grpc.ScoringServiceStub(channel)
        self._training = _training_pb2_grpc.TrainingServiceStub(channel)
        self._models = _models_pb2_grpc.ModelServiceStub(channel)
        self._health = _health_pb2_grpc.HealthStub(channel)

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed and self._owns_channel:
            self._channel.close()
        self._closed = True

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        idempotent: bool,
    ) -> _Resp:
        self._check_open()
        deadline = _channel.deadline_after(self._timeout_s)
        attempt = 0
        while True:
            try:
                return method(request, timeout=_channel.remaining_s(deadline), metadata=self._metadata)
            except grpc.RpcError as exc:
                time.sleep(
                    _channel.retry_delay(
                        exc, deadline=deadline, idempotent=idempotent, attempt=attempt, retries=self._retries
                    )
                )
                attempt += 1

    def _exchange(
        self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], exchange: _convert.Exchange[_Req, _Resp, _T]
    ) -> _T:
        """Run an idempotent request/response exchange (such as a paged List) to its result."""
        request = next(exchange)
        while True:
            response = self._unary(method, request, idempotent=True)
            try:
                request = exchange.send(response)
            except StopIteration as stop:
                return cast(_T, stop.value)

    # -- scoring -----------------------------------------------------------

    def score(
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
        """Score one T x C series (numpy array, DataFrame or SeriesData) of any length.

        A series longer than `chunk_steps` (default: what fits half the max message size)
        is scored in overlapping chunks, one call each, all with the same model version;
        the result is the one a single call would give.
        """
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        size = chunk_steps or _chunks.default_chunk_steps(len(series.channels), self.max_message_bytes)
        if series.steps <= size:
            return self.score_many(
                [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
            )[0]
        requests = _chunks.chunk_requests(
            series,
            self.model(model, version=version),
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
            chunk_steps=size,
        )
        return self._exchange(self._scoring.Score, _chunks.chunked_score(requests))

    def score_many(
        self,
        series: Sequence[_convert.SeriesInput],
        *,
        model: str,
        version: str | None = None,
        threshold: float | None = None,
        return_from_ns: int = 0,
    ) -> list[ScoreResult]:
        """Score several series in one Score call; results come back in input order."""
        request = _convert.score_request(
            series, model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        return _convert.score_results(self._unary(self._scoring.Score, request, idempotent=True))

    def stream_score(
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
    ) -> Iterator[ScoreResult]:
        """Score one series of any length, yielding results of consecutive steps as the
        server sends them; a series longer than `chunk_steps` goes in overlapping chunks,
        one StreamScore call each, as in `score`."""
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        size = chunk_steps or _chunks.default_chunk_steps(len(series.channels), self.max_message_bytes)
        if series.steps <= size:
            request = _convert.score_request(
                [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
            )
            yield from self._stream_score(request)
            return
        requests = _chunks.chunk_requests(
            series,
            self.model(model, version=version),
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
            chunk_steps=size,
        )
        for request, call in requests:
            for result in self._stream_score(request):
                kept = _chunks.kept_steps(result, call)
                if kept.steps:
                    yield kept

    def _stream_score(self, request: _scoring_pb2.ScoreRequest) -> Iterator[ScoreResult]:
        self._check_open()
        call = self._scoring.StreamScore(request, timeout=self._timeout_s, metadata=self._metadata)
        try:
            for response in call:
                yield from _convert.score_results(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    # -- training ----------------------------------------------------------

    def train(
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
    ) -> TrainingJob:
        """Upload training data and start a job; returns at once with a handle to it."""
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
            response = self._training.StartTraining(
                iter(requests), timeout=self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return TrainingJob(self, _convert.job_status(response.job))

    def job(self, job_id: str) -> TrainingJob:
        """A handle to an existing job (NotFound when the server does not know it)."""
        return TrainingJob(self, self._get_job(job_id))

    def jobs(self, *, model: str | None = None) -> list[JobStatus]:
        """Every job the server knows, newest first."""
        return self._exchange(self._training.ListTrainings, _convert.list_jobs(model))

    def _get_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.GetTrainingRequest(job_id=job_id)
        return _convert.job_status(self._unary(self._training.GetTraining, request, idempotent=True))

    def _cancel_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.CancelTrainingRequest(job_id=job_id)
        response = self._unary(self._training.CancelTraining, request, idempotent=True)
        return _convert.job_status(response)

    def _watch_job(self, job_id: str, timeout_s: float | None) -> Iterator[JobStatus]:
        deadline = _channel.deadline_after(timeout_s)
        request = _training_pb2.WatchTrainingRequest(job_id=job_id)
        reconnects = 0
        while True:
            self._check_open()
            call = self._training.WatchTraining(
                request, timeout=_channel.remaining_s(deadline), metadata=self._metadata
            )
            try:
                for message in call:
                    status = _convert.job_status(message)
                    yield status
                    if status.state.finished:
                        return
                return  # the server ended the stream
            except grpc.RpcError as exc:
                time.sleep(_channel.reconnect_delay(exc, reconnects))
                reconnects += 1
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    # -- models and health -------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every registered model, by name."""
        return self._exchange(self._models.ListModels, _convert.list_models())

    def model(self, name: str, *, version: str | None = None) -> ModelInfo:
        request = _models_pb2.GetModelRequest(name=name, version=version or "")
        return _convert.model_info(self._unary(self._models.GetModel, request, idempotent=True))

    def delete_model(self, name: str, *, version: str | None = None) -> None:
        """Delete one version, or the whole model when no version is given."""
        request = _models_pb2.DeleteModelRequest(name=name, version=version or "")
        self._unary(self._models.DeleteModel, request, idempotent=False)

    def activate(self, name: str, version: str) -> ModelInfo:
        """Make `version` the active version of model `name`."""
        request = _models_pb2.SetActiveVersionRequest(name=name, version=version)
        return _convert.model_info(self._unary(self._models.SetActiveVersion, request, idempotent=True))

    def health(self, service: str = "") -> HealthStatus:
        """The standard gRPC health check ("" is the whole server)."""
        request = _health_pb2.HealthCheckRequest(service=service)
        response = self._unary(self._health.Check, request, idempotent=True)
        return _convert.health_status(response, service=service)


class TrainingJob:
    """A handle to a training job on the server."""

    def __init__(self, client: Client, status: JobStatus) -> None:
        self._client = client
        self.status = status  # the latest state seen

    @property
    def job_id(self) -> str:
        return self.status.job_id

    def refresh(self) -> JobStatus:
        self.status = self._client._get_job(self.job_id)
        return self.status

    def watch(self, *, timeout_s: float | None = None) -> Iterator[JobStatus]:
        """The job's state now, then each change and progress event until it ends."""
        for status in self._client._watch_job(self.job_id, timeout_s):
            self.status = status
            yield status

    def wait(self, *, timeout_s: float | None = None) -> JobStatus:
        """Block until the job ends; raises TrainingFailedError unless it succeeded."""
        for _ in self.watch(timeout_s=timeout_s):
            pass
        while not self.status.state.finished:  # the server ended the stream early
            time.sleep(_channel.POLL_S)
            self.refresh()
        return check_succeeded(self.status)

    def cancel(self) -> JobStatus:
        """Cancel the job (a no-op returning the final state when it already ended)."""
        self.status = self._client._cancel_job(self.job_id)
        return self.status

    def __repr__(self) -> str:
        return f"TrainingJob(job_id={self.job_id!r}, state={self.status.state.value!r})"


def check_succeeded(status: JobStatus) -> JobStatus:
    """Return the status of a succeeded job; raise TrainingFailedError for any other end."""
    if status.state is JobState.SUCCEEDED:
        return status
    reason = f": {status.error}" if status.error else ""
    raise TrainingFailedError(
        f"training job {status.job_id} ended {status.state.value}{reason}",
        job_id=status.job_id,
        state=status.state.value,
    )

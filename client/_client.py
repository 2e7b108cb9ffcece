"""The synchronous stad client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self, TypeVar

import grpc
import numpy.typing as npt
from grpc_health.v1 import health_pb2 as _health_pb2
from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc

from stad.client import _channel, _convert
from stad.client._exceptions import ClientClosedError, TrainingFailedError, from_rpc_error
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


class Client:
    """A blocking client for a stad server; use it as a context manager or call close().

    `channel` injects a ready channel (tests, custom interceptors); the client
    then does not close it. Unary calls get a deadline of `timeout_s`;
    idempotent ones are retried with backoff on UNAVAILABLE up to `retries` times.
    """

    def __init__(
        self,
        target: str = "",
        *,
        token: str | None = None,
        tls: _channel.TLSOption = None,
        timeout_s: float | None = _channel.DEFAULT_TIMEOUT_S,
        retries: int = _channel.DEFAULT_RETRIES,
        channel: grpc.Channel | None = None,
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
                channel = grpc.insecure_channel(target, options=_channel.CHANNEL_OPTIONS)
            else:
                channel = grpc.secure_channel(target, creds, options=_channel.CHANNEL_OPTIONS)
        self._channel = channel
        self._scoring = _scoring_pb2_grpc.ScoringServiceStub(channel)
        self._training = _training_pb2_grpc.TrainingServiceStub(channel)
        self._models = _models_pb2_grpc.ModelServiceStub(channel)
        self._health = _health_pb2_grpc.HealthStub(channel)
        self._closed = False

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

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
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
                return method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                delay = _channel.backoff_s(attempt)
                in_time = deadline is None or time.monotonic() + delay < deadline
                if in_time and _channel.should_retry(
                    exc, idempotent=idempotent, attempt=attempt, retries=self._retries
                ):
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise from_rpc_error(exc) from exc

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
    ) -> ScoreResult:
        """Score one T x C series (numpy array, DataFrame or SeriesData)."""
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        return self.score_many(
            [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )[0]

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
            [_convert.to_series(item) for item in series],
            model=model,
            version=version,
            threshold=threshold,
            return_from_ns=return_from_ns,
        )
        response = self._unary(self._scoring.Score, request, idempotent=True)
        results = sorted(response.results, key=lambda r: r.series_index)
        return [
            _convert.score_result(item, model=response.model, version=response.version) for item in results
        ]

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
    ) -> Iterator[ScoreResult]:
        """Score one series, yielding chunks of consecutive steps as the server sends them."""
        series = _convert.to_series(values, timestamps=timestamps, channels=channels)
        request = _convert.score_request(
            [series], model=model, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        self._check_open()
        call = self._scoring.StreamScore(request, timeout=self._timeout_s, metadata=self._metadata)
        try:
            for response in call:
                for item in response.results:
                    yield _convert.score_result(item, model=response.model, version=response.version)
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
        out: list[JobStatus] = []
        token = ""
        while True:
            request = _training_pb2.ListTrainingsRequest(page_token=token, model=model or "")
            response = self._unary(self._training.ListTrainings, request, idempotent=True)
            out.extend(_convert.job_status(job) for job in response.jobs)
            token = response.next_page_token
            if not token:
                return out

    def _get_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.GetTrainingRequest(job_id=job_id)
        return _convert.job_status(self._unary(self._training.GetTraining, request, idempotent=True))

    def _cancel_job(self, job_id: str) -> JobStatus:
        request = _training_pb2.CancelTrainingRequest(job_id=job_id)
        response = self._unary(self._training.CancelTraining, request, idempotent=True)
        return _convert.job_status(response)

    def _watch_job(self, job_id: str, timeout_s: float | None) -> Iterator[JobStatus]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reconnects = 0
        while True:
            self._check_open()
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            request = _training_pb2.WatchTrainingRequest(job_id=job_id)
            call = self._training.WatchTraining(request, timeout=remaining, metadata=self._metadata)
            try:
                for message in call:
                    status = _convert.job_status(message)
                    yield status
                    if status.state.finished:
                        return
                return  # the server ended the stream
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and reconnects < _WATCH_RECONNECTS:
                    time.sleep(_channel.backoff_s(reconnects))
                    reconnects += 1
                    continue
                raise from_rpc_error(exc) from exc
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    # -- models and health -------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every registered model, by name."""
        out: list[ModelInfo] = []
        token = ""
        while True:
            request = _models_pb2.ListModelsRequest(page_token=token)
            response = self._unary(self._models.ListModels, request, idempotent=True)
            out.extend(_convert.model_info(item) for item in response.models)
            token = response.next_page_token
            if not token:
                return out

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
        name = _health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return HealthStatus(status=str(name), service=service)


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
            time.sleep(_POLL_S)
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
    if status.state.value == "succeeded":
        return status
    reason = f": {status.error}" if status.error else ""
    raise TrainingFailedError(
        f"training job {status.job_id} ended {status.state.value}{reason}",
        job_id=status.job_id,
        state=status.state.value,
    )

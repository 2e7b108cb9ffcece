"""Conversions between user input, stad.v1 messages and the client's result types."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from grpc_health.v1 import health_pb2 as _health_pb2

from stad.client._exceptions import DataError
from stad.client._types import (
    HealthStatus,
    JobStatus,
    ModelInfo,
    ModelVersionInfo,
    ScoreResult,
    TrainingSettings,
)
from stad.core.jobs import JobState, TrainingProgress
from stad.core.quoting import quote, quote_names
from stad.core.series import SeriesData, make_series, series_to_proto
from stad.core.types import IntArray
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import series_pb2 as _series_pb2
from stad.v1 import training_pb2 as _training_pb2

# A SeriesData, a T x C array (or anything numpy turns into one), or a pandas
# DataFrame (columns are channels; a DatetimeIndex gives the timestamps).
SeriesInput: TypeAlias = SeriesData | npt.ArrayLike

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Result = TypeVar("_Result")
_PageResp = TypeVar("_PageResp", bound="_Page")
_Item = TypeVar("_Item")

# A request/response exchange without I/O: it yields requests, is sent each
# response and returns the result; the sync and async clients drive it.
Exchange: TypeAlias = Generator[_Req, _Resp, _Result]

# A training-data message fills at most this share of the max message size.
TRAIN_CHUNK_SHARE = 4
# Encoded bytes per step of training data at most, beside a float64 per channel:
# a varint timestamp and a 0/1 varint label.
TRAIN_STEP_EXTRA_BYTES = 10 + 1


def _is_pandas(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas"


def timestamps_to_ns(timestamps: npt.ArrayLike) -> IntArray:
    """Integer nanoseconds, datetime64 values, datetimes or pandas timestamps to int64 ns."""
    if _is_pandas(timestamps):
        import pandas as pd

        index = pd.DatetimeIndex(timestamps) if not isinstance(timestamps, pd.DatetimeIndex) else timestamps
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    array = np.asarray(timestamps)
    if array.dtype.kind == "M":
        return array.astype("datetime64[ns]").astype(np.int64)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    if array.dtype.kind == "O":
        try:
            return np.array(
                [_datetime_to_ns(item) if isinstance(item, datetime) else int(item) for item in array]
            ).astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"timestamps must be integer nanoseconds or datetimes: {exc}") from exc
    raise DataError(f"timestamps must be integer nanoseconds or datetimes, got dtype {array.dtype}")


def _datetime_to_ns(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1_000


def to_series(
    values: SeriesInput,
    *,
    timestamps: npt.ArrayLike | None = None,
    channels: Sequence[str] | None = None,
) -> SeriesData:
    """Validate user input as a series; raises DataError naming the problem."""
    if isinstance(values, SeriesData):
        if timestamps is not None or channels is not None:
            raise DataError("give timestamps and channels inside the SeriesData, not beside it")
        return values
    if _is_pandas(values) and hasattr(values, "columns"):
        frame: Any = values
        dated = [name for name in frame.columns if frame[name].dtype.kind == "M"]
        if timestamps is None and frame.index.dtype.kind == "M":
            timestamps = frame.index
        elif timestamps is None and len(dated) == 1:
            timestamps = frame[dated[0]]
            frame = frame.drop(columns=dated)
        other = [str(name) for name in frame.columns if frame[name].dtype.kind not in "biuf"]
        if other:
            raise DataError(f"DataFrame columns must be numeric channels; not numeric: {quote_names(other)}")
        if channels is None:
            channels = [str(name) for name in frame.columns]
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return make_series(
            np.asarray(values, dtype=np.float64),
            channels=channels,
            timestamps_ns=None if timestamps is None else timestamps_to_ns(timestamps),
        )
    except (ValueError, TypeError) as exc:
        raise DataError(str(exc)) from exc


def score_request(
    series: Sequence[SeriesInput],
    *,
    model: str,
    version: str | None,
    threshold: float | None,
    return_from_ns: int,
) -> _scoring_pb2.ScoreRequest:
    inputs = [to_series(item) for item in series]
    if not model:
        raise DataError("model name is empty")
    if not inputs:
        raise DataError("no series to score")
    if threshold is not None and not np.isfinite(threshold):
        raise DataError(f"threshold must be finite, got {threshold}")
    request = _scoring_pb2.ScoreRequest(
        model=model,
        version=version or "",
        series=[series_to_proto(item) for item in inputs],
        return_from_ns=return_from_ns,
    )
    if threshold is not None:
        request.threshold = threshold
    return request


def score_result(message: _scoring_pb2.SeriesScores, *, model: str, version: str) -> ScoreResult:
    steps = len(message.score)
    channels = tuple(message.channels)
    shape = (steps, len(channels))
    return ScoreResult(
        timestamps_ns=np.asarray(message.timestamps_ns, dtype=np.int64),
        score=np.asarray(message.score, dtype=np.float64),
        raw_score=np.asarray(message.raw_score, dtype=np.float64),
        is_anomaly=np.asarray(message.is_anomaly, dtype=bool),
        severity=np.asarray(message.severity, dtype=np.float64),
        threshold=float(message.threshold),
        channels=channels,
        contributions=_matrix(message.contributions, shape),
        expected=_matrix(message.expected, shape),
        model=model,
        version=version,
        series_index=int(message.series_index),
        start_step=int(message.start_step),
    )


def score_results(response: _scoring_pb2.ScoreResponse) -> list[ScoreResult]:
    """The results of a Score response (or a StreamScore message) in input order."""
    results = sorted(response.results, key=lambda r: r.series_index)
    return [score_result(item, model=response.model, version=response.version) for item in results]


def _matrix(values: Sequence[float], shape: tuple[int, int]) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.size != shape[0] * shape[1]:
        return np.full(shape, np.nan)  # the server sent no matrix
    return array.reshape(shape)  # (N, C)


def training_requests(
    series: SeriesData,
    *,
    model: str,
    labels: npt.ArrayLike | None,
    settings: TrainingSettings | None,
    activate: bool,
    description: str,
    max_message_bytes: int,
) -> Iterator[_training_pb2.StartTrainingRequest]:
    """The StartTraining stream: the spec with the first chunk, then further chunks,
    each well within `max_message_bytes`."""
    if not model:
        raise DataError("model name is empty")
    label_array: npt.NDArray[np.int32] | None = None
    if labels is not None:
        raw = np.asarray(labels)
        if raw.shape != (series.steps,):
            raise DataError(f"{raw.size} labels for {series.steps} steps")
        if raw.dtype.kind == "f" and np.isnan(raw).any():
            raise DataError(f"labels contain NaN (first at step {int(np.argmax(np.isnan(raw)))})")
        label_array = raw.astype(np.int32)
        bad = np.flatnonzero((label_array != 0) & (label_array != 1))
        if bad.size:
            raise DataError(f"labels must be 0 or 1, got {raw[bad[0]].item()} at step {int(bad[0])}")
    spec = _training_pb2.TrainingSpec(model=model, activate=activate, description=description)
    for name, value in (settings or TrainingSettings()).given().items():
        try:
            setattr(spec, name, value)
        except (ValueError, TypeError) as exc:  # protobuf: out of its int32/int64 range
            raise DataError(f"training setting {name}={quote(value)} is out of range: {exc}") from exc
    rows = training_chunk_steps(len(series.channels), max_message_bytes)
    for start in range(0, series.steps, rows):
        stop = min(start + rows, series.steps)
        chunk = _series_pb2.Series(channels=list(series.channels))
        chunk.values.extend(series.values[start:stop].ravel().tolist())
        if series.timestamps_ns is not None:
            chunk.timestamps_ns.extend(series.timestamps_ns[start:stop].tolist())
        request = _training_pb2.StartTrainingRequest(data=chunk)
        if label_array is not None:
            request.labels.extend(label_array[start:stop].tolist())
        if start == 0:
            request.spec.CopyFrom(spec)
        yield request


def training_chunk_steps(n_channels: int, max_message_bytes: int) -> int:
    """Steps per training-data message: a share of the max message size."""
    step_bytes = 8 * n_channels + TRAIN_STEP_EXTRA_BYTES
    return max(1, max_message_bytes // TRAIN_CHUNK_SHARE // step_bytes)


def upload_requests(
    values: SeriesInput,
    *,
    model: str,
    timestamps: npt.ArrayLike | None,
    channels: Sequence[str] | None,
    labels: npt.ArrayLike | None,
    settings: TrainingSettings | None,
    activate: bool,
    description: str,
    max_message_bytes: int,
) -> list[_training_pb2.StartTrainingRequest]:
    """The whole StartTraining stream for user input, validated before anything is sent."""
    series = to_series(values, timestamps=timestamps, channels=channels)
    return list(
        training_requests(
            series,
            model=model,
            labels=labels,
            settings=settings,
            activate=activate,
            description=description,
            max_message_bytes=max_message_bytes,
        )
    )


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


def pages(
    request: Callable[[str], _Req], items: Callable[[_PageResp], Iterable[_Item]]
) -> Exchange[_Req, _PageResp, list[_Item]]:
    """Every item of a paged List call, page after page."""
    out: list[_Item] = []
    token = ""
    while True:
        response = yield request(token)
        out.extend(items(response))
        token = response.next_page_token
        if not token:
            return out


def list_jobs(
    model: str | None,
) -> Exchange[_training_pb2.ListTrainingsRequest, _training_pb2.ListTrainingsResponse, list[JobStatus]]:
    return pages(
        lambda token: _training_pb2.ListTrainingsRequest(page_token=token, model=model or ""),
        lambda response: (job_status(job) for job in response.jobs),
    )


def list_models() -> Exchange[_models_pb2.ListModelsRequest, _models_pb2.ListModelsResponse, list[ModelInfo]]:
    return pages(
        lambda token: _models_pb2.ListModelsRequest(page_token=token),
        lambda response: (model_info(item) for item in response.models),
    )


def health_status(response: _health_pb2.HealthCheckResponse, *, service: str) -> HealthStatus:
    name = _health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return HealthStatus(status=str(name), service=service)


def _time(stamp: _timestamp_pb2.Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def job_status(message: _training_pb2.TrainingJob) -> JobStatus:
    progress = None
    if message.HasField("progress"):
        sent = message.progress
        progress = TrainingProgress(**{f.name: getattr(sent, f.name) for f in fields(TrainingProgress)})
    return JobStatus(
        job_id=message.job_id,
        model=message.model,
        state=JobState.from_proto(message.state),
        progress=progress,
        version=message.version or None,
        error=message.error,
        created_at=_time(message.created_at),
        started_at=_time(message.started_at),
        finished_at=_time(message.finished_at),
        steps=message.steps,
        channels=tuple(message.channels),
    )


def model_info(message: _models_pb2.Model) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        active_version=message.active_version or None,
        versions=tuple(_version_info(v) for v in message.versions),
    )


def _version_info(message: _models_pb2.ModelVersion) -> ModelVersionInfo:
    try:
        metadata = json.loads(message.metadata_json) if message.metadata_json else {}
    except json.JSONDecodeError:
        metadata = {"unparsed": message.metadata_json}
    return ModelVersionInfo(
        version=message.version,
        created_at=_time(message.created_at),
        channels=tuple(message.channels),
        window=message.window,
        threshold=message.threshold,
        train_start_ns=message.train_start_ns,
        train_end_ns=message.train_end_ns,
        train_steps=message.train_steps,
        metrics=dict(message.metrics),
        metadata=metadata,
        description=message.description,
    )

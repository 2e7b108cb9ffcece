"""Conversions between the server's objects and stad.v1 messages."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from stad.core.detector_config import SETTINGS, Value
from stad.core.quoting import quote, quote_names
from stad.core.series import SeriesData, check_same_channels, series_from_proto
from stad.server.detector import saved
from stad.server.detector.steps import ScoreOutput
from stad.server.errors import InvalidArgumentError
from stad.server.jobs import Job
from stad.server.registry import ModelRecord, VersionRecord
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import scoring_pb2 as _scoring_pb2
from stad.v1 import series_pb2 as _series_pb2
from stad.v1 import training_pb2 as _training_pb2


def series_list(messages: Sequence[_series_pb2.Series]) -> list[SeriesData]:
    """Decode every series, naming the index of a bad one."""
    decoded = []
    for index, message in enumerate(messages):
        try:
            decoded.append(series_from_proto(message))
        except ValueError as exc:
            raise InvalidArgumentError(f"series {index}: {exc}") from exc
    return decoded


def first_step_from(series: SeriesData, return_from_ns: int) -> int:
    if not return_from_ns or series.timestamps_ns is None:
        return 0
    return int(np.searchsorted(series.timestamps_ns, return_from_ns, side="left"))


# A SeriesScores carries per step: score, raw_score and severity (packed doubles),
# is_anomaly (a packed bool: one byte), maybe timestamps_ns (a varint: at most ten
# bytes), then contributions and expected per channel (doubles).
STEP_DOUBLES = 3
DOUBLE_BYTES = 8
TIMESTAMP_BYTES = 10
SERIES_OVERHEAD_BYTES = 128  # index, start step, threshold, field tags and lengths


def step_bytes(n_channels: int, *, timestamps: bool) -> int:
    """The encoded size of one step of a SeriesScores, from above."""
    return (STEP_DOUBLES + 2 * n_channels) * DOUBLE_BYTES + 1 + (TIMESTAMP_BYTES if timestamps else 0)


def series_scores_bytes(steps: int, channels: Sequence[str], *, timestamps: bool) -> int:
    """The encoded size of `steps` steps of a SeriesScores, estimated from above."""
    names = sum(len(name.encode()) + 2 for name in channels)
    return steps * step_bytes(len(channels), timestamps=timestamps) + names + SERIES_OVERHEAD_BYTES


def series_scores(
    index: int, series: SeriesData, output: ScoreOutput, start: int, stop: int
) -> _scoring_pb2.SeriesScores:
    """Steps start..stop of one scored series (steps of the series, which `output`,
    maybe a chunk starting at output.start_step, must cover) as a message."""
    message = _scoring_pb2.SeriesScores(
        series_index=index,
        start_step=start,
        threshold=float(output.threshold),
        channels=list(output.channels),
    )
    if series.timestamps_ns is not None:
        message.timestamps_ns.extend(series.timestamps_ns[start:stop].tolist())
    rows = slice(start - output.start_step, stop - output.start_step)
    message.score.extend(output.score[rows].tolist())
    message.raw_score.extend(output.raw_score[rows].tolist())
    message.is_anomaly.extend(output.is_anomaly[rows].tolist())
    message.severity.extend(output.severity[rows].tolist())
    message.contributions.extend(output.contributions[rows].ravel().tolist())
    message.expected.extend(output.expected[rows].ravel().tolist())
    return message


def timestamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def version_message(record: VersionRecord) -> _models_pb2.ModelVersion:
    """The version's record with its metadata in the current format (as it was saved when
    that is unreadable, so that a listing still shows it)."""
    meta = record.metadata
    window = 0
    with contextlib.suppress(ValueError):
        meta = saved.upgrade(meta)
        window = saved.config_of(meta).model.window
    span = meta.get("training_range") or {}
    metrics = {
        key: float(value)
        for key, value in (meta.get("training_metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    return _models_pb2.ModelVersion(
        version=record.version,
        created_at=timestamp(record.created_at_ns),
        channels=list(meta.get("channels", [])),
        window=window,
        threshold=float((meta.get("thresholds") or {}).get("threshold", 0.0)),
        train_start_ns=int(span.get("start_ns") or 0),
        train_end_ns=int(span.get("end_ns") or 0),
        train_steps=int(span.get("steps") or 0),
        metrics=metrics,
        metadata_json=json.dumps(meta),
        description=record.description,
    )


def model_message(record: ModelRecord) -> _models_pb2.Model:
    return _models_pb2.Model(
        name=record.name,
        active_version=record.active_version,
        versions=[version_message(v) for v in record.versions],
    )


def job_message(job: Job) -> _training_pb2.TrainingJob:
    message = _training_pb2.TrainingJob(
        job_id=job.job_id,
        model=job.model,
        state=job.state.to_proto(),
        version=job.version,
        error=job.error,
        created_at=timestamp(job.created_at_ns),
        steps=job.steps,
        channels=list(job.channels),
    )
    if job.started_at_ns:
        message.started_at.CopyFrom(timestamp(job.started_at_ns))
    if job.finished_at_ns:
        message.finished_at.CopyFrom(timestamp(job.finished_at_ns))
    if job.progress:
        known = set(_training_pb2.TrainingProgress.DESCRIPTOR.fields_by_name)
        message.progress.CopyFrom(
            _training_pb2.TrainingProgress(**{k: v for k, v in job.progress.items() if k in known})
        )
    return message


def spec_config(spec: _training_pb2.TrainingSpec) -> dict[str, Value]:
    """The detector settings the spec sets, by name (unset ones keep the server's defaults)."""
    present = {field.name for field, _ in spec.ListFields()}
    return {info.name: getattr(spec, info.name) for info in SETTINGS if info.name in present}


def as_labels(values: Sequence[int], *, chunk: int) -> npt.NDArray[np.int64]:
    """The labels of data chunk `chunk`, which must be 0 (normal) or 1 (anomalous)."""
    labels = np.asarray(values, dtype=np.int64)
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise InvalidArgumentError(
            f"data chunk {chunk}: labels must be 0 or 1, got {labels[bad[0]]} at its step {bad[0]}"
        )
    return labels


def check_series_channels(series: Sequence[SeriesData], expected: Sequence[str]) -> None:
    """Every series has the model's channels (by name, in any order); checked before
    anything is sized or queued, so a request that is wrong and large is told it is wrong."""
    for index, data in enumerate(series):
        try:
            check_same_channels(data.channels, expected)
        except ValueError as exc:
            raise InvalidArgumentError(f"series {index}: {exc}") from exc


def check_chunk_channels(chunk: int, names: Sequence[str], first: Sequence[str]) -> None:
    """A training data chunk names the channels of the first chunk, in any order."""
    if set(names) != set(first) or len(names) != len(first):
        raise InvalidArgumentError(
            f"data chunk {chunk} has channels {quote_names(names)}, the first chunk had {quote_names(first)}"
        )


# Values per block when checking training data: bounds the temporaries to a few MiB.
SCALING_CHECK_BLOCK_VALUES = 1 << 19


def check_scalable(series: SeriesData) -> None:
    """Training values whose per-channel mean and spread are finite in float64, as the
    detector's scaler (ChannelScaler.fit) needs: values near 1e308 overflow them.
    Reads the values in blocks of rows, so that no copy of the whole data is made."""
    values = series.values  # (T, C)
    rows = max(1, SCALING_CHECK_BLOCK_VALUES // values.shape[1])
    blocks = [values[start : start + rows] for start in range(0, values.shape[0], rows)]
    with np.errstate(over="ignore", invalid="ignore"):
        sums = sum((np.nansum(block, axis=0) for block in blocks), np.zeros(values.shape[1]))
        counts = sum(((~np.isnan(block)).sum(axis=0) for block in blocks), np.zeros(values.shape[1]))
        mean = sums / np.maximum(counts, 1)
        spread = sum((np.nansum((block - mean) ** 2, axis=0) for block in blocks), np.zeros(values.shape[1]))
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(spread)))
    if bad.size:
        column = series.values[:, bad[0]]
        step = int(np.nanargmax(np.abs(column)))
        raise InvalidArgumentError(
            f"training values of channel {quote(series.channels[bad[0]])} are too large to scale "
            f"(their mean or spread overflows float64): {column[step]:g} at step {step}; "
            "rescale them (e.g. change units)"
        )

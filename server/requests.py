"""Training requests from StartTrainingRequest streams: every check of the spec and the data.

A bad request raises InvalidArgumentError (INVALID_ARGUMENT), a bad setting
`SettingError` (a ValueError, so INVALID_ARGUMENT too) carrying the field, its
value and the rule it broke; data over the size limit ResourceExhaustedError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from stad.core.detector_config import DetectorConfig
from stad.core.quoting import quote_names
from stad.core.series import SeriesData, align_channels, make_series, series_from_proto
from stad.core.types import MIB, FloatArray
from stad.server import convert
from stad.server.errors import InvalidArgumentError, ResourceExhaustedError
from stad.server.jobs import TrainingRequest
from stad.server.registry import check_model_name
from stad.v1 import training_pb2 as _training_pb2


async def training_request(
    messages: AsyncIterator[_training_pb2.StartTrainingRequest], max_bytes: int
) -> TrainingRequest:
    """Validate the streamed spec and data chunks into one TrainingRequest."""
    spec: _training_pb2.TrainingSpec | None = None
    chunks: list[SeriesData] = []
    labels: list[np.ndarray] = []
    first_channels: list[str] | None = None
    total_bytes = 0
    index = -1
    over_limit = ""
    async for message in messages:
        index += 1
        if index == 0:
            if not message.HasField("spec"):
                raise InvalidArgumentError("the first StartTrainingRequest must carry the spec")
            spec = message.spec
        if not message.HasField("data") or not message.data.values:
            if message.labels:
                raise InvalidArgumentError(f"message {index} has labels but no data")
            continue
        # names and labels are checked even past the size limit: a wrong request is told so
        if first_channels is None:
            first_channels = list(message.data.channels)
        convert.check_chunk_channels(index, message.data.channels, first_channels)
        chunk_labels = convert.as_labels(message.labels, chunk=index) if message.labels else None
        if over_limit:
            continue  # read the rest, so the caller sees our status, not a broken stream
        try:
            chunk = series_from_proto(message.data)
        except ValueError as exc:
            raise InvalidArgumentError(f"data chunk {index}: {exc}") from exc
        if chunks:
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
        if chunk_labels is not None:
            if len(chunk_labels) != chunk.steps:
                raise InvalidArgumentError(
                    f"data chunk {index} has {len(chunk_labels)} labels for {chunk.steps} steps"
                )
            labels.append(chunk_labels)
        chunks.append(chunk)
    if over_limit:
        raise ResourceExhaustedError(over_limit)
    if spec is None:
        raise InvalidArgumentError("no StartTrainingRequest received: send the spec first")
    check_model_name(spec.model)
    if not chunks:
        raise InvalidArgumentError("no training data: send data in the StartTrainingRequest messages")
    config = convert.spec_config(spec)
    window = DetectorConfig.from_flat(config).min_steps  # SettingError: field, value and rule
    stamps = [c.timestamps_ns for c in chunks]
    if any(s is None for s in stamps) and not all(s is None for s in stamps):
        raise InvalidArgumentError("either every data chunk has timestamps or none does")
    channels = chunks[0].channels
    try:
        series = make_series(
            _joined_values(chunks),  # (T, C); empties `chunks`
            channels=channels,
            timestamps_ns=None if stamps[0] is None else np.concatenate([s for s in stamps if s is not None]),
        )
    except ValueError as exc:
        raise InvalidArgumentError(f"training data: {exc}") from exc
    if series.steps < window:
        raise InvalidArgumentError(
            f"training data has {series.steps} steps, fewer than one window of {window}"
        )
    check_every_channel_observed(series)
    await asyncio.to_thread(convert.check_scalable, series)  # reads all the data: off the event loop
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


def _joined_values(chunks: list[SeriesData]) -> FloatArray:
    """The chunks' values as one (T, C) array. Each chunk is dropped once it is copied, so
    that the data is held about once while it is joined, not twice."""
    values = np.empty((sum(c.steps for c in chunks), chunks[0].values.shape[1]))
    start = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        values[start : start + chunk.steps] = chunk.values
        start += chunk.steps
    return values


def check_every_channel_observed(series: SeriesData) -> None:
    """A model cannot learn a channel without a single value in its training data."""
    unobserved = [bool(np.isnan(column).all()) for column in series.values.T]
    if any(unobserved):
        names = [name for name, empty in zip(series.channels, unobserved, strict=True) if empty]
        which = ("channel " if len(names) == 1 else "channels ") + quote_names(names).strip("[]")
        raise InvalidArgumentError(f"training data has no observed values (all NaN) in {which}")

"""Scoring a series too long for one call: overlapping chunks joined into one call's result.

The server scores windows of `window` steps every `stride` steps from step 0, plus one
window ending at the last step. A chunk that starts on that stride grid at least the
model's `ScoreReach.context` steps before the first step it keeps, and ends `window`
(plus a range score's look-ahead) steps after the last one (or at the series' end), sees
everything those steps depend on: the steps it keeps come out as one call over the whole
series gives them, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from stad.client._convert import Exchange, score_request, score_results
from stad.client._exceptions import DataError
from stad.client._types import ModelInfo, ModelVersionInfo, ScoreResult
from stad.core.score_reach import ScoreReach
from stad.core.series import SeriesData, make_series
from stad.v1 import scoring_pb2 as _scoring_pb2

# Encoded bytes of one step of scores, from above: score, raw score, severity, two bools,
# a timestamp, then contributions, expected, lower and upper and a bool per channel.
_STEP_BYTES_FIXED = 3 * 8 + 2 + 10
_CHANNEL_STEP_BYTES = 4 * 8 + 1
# A call's response fills at most this share of the max message size.
_MESSAGE_SHARE = 2


Geometry = ScoreReach  # how a model version windows a series


def geometry_of(version: ModelVersionInfo) -> ScoreReach:
    reach = ScoreReach.from_metadata(version.metadata)
    if reach is None:
        raise DataError(f"model version {version.version} does not say its window; cannot split the series")
    return reach


@dataclass(frozen=True)
class ChunkCall:
    """One call: steps [read_start, read_stop) are sent, [keep_start, keep_stop) kept."""

    read_start: int
    read_stop: int
    keep_start: int
    keep_stop: int


def default_chunk_steps(n_channels: int, max_message_bytes: int) -> int:
    """Steps kept per call so that a call's response fills about half the max message size."""
    step_bytes = _STEP_BYTES_FIXED + _CHANNEL_STEP_BYTES * n_channels
    return max(1, max_message_bytes // _MESSAGE_SHARE // step_bytes)


def plan_calls(steps: int, first: int, geometry: Geometry, chunk_steps: int) -> list[ChunkCall]:
    """Calls keeping steps first..steps-1, at most `chunk_steps` each (at least one call)."""
    if chunk_steps < 1:
        raise DataError(f"chunk_steps must be at least 1, got {chunk_steps}")
    calls = []
    start = min(first, steps)
    while True:
        stop = min(start + chunk_steps, steps)
        read_start = max(0, (start - geometry.context) // geometry.stride * geometry.stride)
        tail = geometry.window + geometry.range_after
        read_stop = steps if stop + tail >= steps else stop + tail
        calls.append(ChunkCall(read_start, read_stop, start, stop))
        if stop >= steps:
            return calls
        start = stop


def chosen_version(info: ModelInfo, version: str | None) -> ModelVersionInfo | None:
    """The version a call for `version` (None: the active one) scores with."""
    wanted = version or info.active_version
    return next((v for v in info.versions if v.version == wanted), None)


def chunk_requests(
    series: SeriesData,
    info: ModelInfo,
    *,
    version: str | None,
    threshold: float | None,
    return_from_ns: int,
    chunk_steps: int,
) -> Iterator[tuple[_scoring_pb2.ScoreRequest, ChunkCall]]:
    """The requests for overlapping chunks of `series`, each with the steps it keeps.

    Every request names the same version, so the chunks cannot straddle an activation.
    """
    chosen = chosen_version(info, version)
    if chosen is None:  # no such (or no active) version: one call gets the server's answer
        request = score_request(
            [series], model=info.name, version=version, threshold=threshold, return_from_ns=return_from_ns
        )
        yield request, ChunkCall(0, series.steps, 0, series.steps)
        return
    stamps = series.timestamps_ns
    first = 0
    if return_from_ns and stamps is not None:
        first = int(np.searchsorted(stamps, return_from_ns, side="left"))
    for call in plan_calls(series.steps, first, geometry_of(chosen), chunk_steps):
        piece = make_series(
            series.values[call.read_start : call.read_stop],  # (n, C)
            channels=series.channels,
            timestamps_ns=None if stamps is None else stamps[call.read_start : call.read_stop],
        )
        keep_from_ns = (
            0 if stamps is None or call.keep_start >= series.steps else int(stamps[call.keep_start])
        )
        request = score_request(
            [piece], model=info.name, version=chosen.version, threshold=threshold, return_from_ns=keep_from_ns
        )
        yield request, call


def chunked_score(
    requests: Iterable[tuple[_scoring_pb2.ScoreRequest, ChunkCall]],
) -> Exchange[_scoring_pb2.ScoreRequest, _scoring_pb2.ScoreResponse, ScoreResult]:
    """One Score call per chunk request, and their kept steps joined into one result."""
    parts = []
    for request, call in requests:
        response = yield request
        parts.append(kept_steps(score_results(response)[0], call))
    return join_results(parts)


def kept_steps(result: ScoreResult, call: ChunkCall) -> ScoreResult:
    """The steps of a chunk's result (or of a streamed part of it) that the chunk keeps,
    numbered as steps of the whole series; maybe none."""
    offset = call.read_start + result.start_step  # the series step of the result's first row
    first = min(max(call.keep_start, offset), offset + result.steps)
    rows = slice(first - offset, max(first, min(call.keep_stop, offset + result.steps)) - offset)
    return result.take(rows, start_step=first)


def join_results(parts: Sequence[ScoreResult]) -> ScoreResult:
    """One result from results of consecutive steps of one series (chunks, stream messages)."""
    if not parts:
        raise DataError("the server returned no scores")
    return ScoreResult.join(parts)

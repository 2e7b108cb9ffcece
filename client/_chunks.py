"""Scoring a series too long for one call: overlapping chunks joined into one call's result.

The server scores windows of `window` steps every `stride` steps from step 0, plus one
window ending at the last step, and averages each step over the windows covering it,
then over a trailing `smoothing` steps. A chunk that starts on that stride grid at least
`window + smoothing - 2` steps before the first step it keeps, and ends `window` steps
after the last one (or at the series' end), sees every window that step sees and no
other: the steps it keeps come out as one call over the whole series gives them, bit for
bit when smoothing is 1 (with more, the trailing mean's running sums start elsewhere,
which can change the last bits).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stad.client._convert import Exchange, score_request, score_results
from stad.client._exceptions import DataError
from stad.client._types import ModelInfo, ModelVersionInfo, ScoreResult
from stad.core.series import SeriesData, make_series
from stad.v1 import scoring_pb2 as _scoring_pb2

# Encoded bytes of one step of scores, from above: score, raw score, severity, a bool,
# a timestamp, then contributions and expected per channel.
_STEP_BYTES_FIXED = 3 * 8 + 1 + 10
# A call's response fills at most this share of the max message size.
_MESSAGE_SHARE = 2


@dataclass(frozen=True)
class Geometry:
    """How a model version windows a series."""

    window: int
    stride: int
    smoothing: int

    @classmethod
    def of(cls, version: ModelVersionInfo) -> Geometry:
        config = version.metadata.get("config") or {}
        window = version.window or _setting(config, "window", 0)
        if window < 1:
            raise DataError(
                f"model version {version.version} does not say its window; cannot split the series"
            )
        stride = _setting(config, "score_stride", 0) or max(1, window // 2)  # 0: the detector's default
        return cls(window=window, stride=stride, smoothing=max(1, _setting(config, "smoothing", 1)))

    @property
    def context(self) -> int:
        """Steps before a kept step that its scores depend on."""
        return self.window + self.smoothing - 2


def _setting(config: Mapping[str, Any], name: str, default: int) -> int:
    """A setting from a saved config, flat or grouped ({"scoring": {"smoothing": 4}})."""
    if name in config:
        return int(config[name])
    for group in config.values():
        if isinstance(group, Mapping) and name in group:
            return int(group[name])
    return default


@dataclass(frozen=True)
class ChunkCall:
    """One call: steps [read_start, read_stop) are sent, [keep_start, keep_stop) kept."""

    read_start: int
    read_stop: int
    keep_start: int
    keep_stop: int


def default_chunk_steps(n_channels: int, max_message_bytes: int) -> int:
    """Steps kept per call so that a call's response fills about half the max message size."""
    step_bytes = _STEP_BYTES_FIXED + 2 * 8 * n_channels
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
        read_stop = steps if stop + geometry.window >= steps else stop + geometry.window
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
    for call in plan_calls(series.steps, first, Geometry.of(chosen), chunk_steps):
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
    return replace(
        result,
        timestamps_ns=result.timestamps_ns[rows] if result.timestamps_ns.size else result.timestamps_ns,
        score=result.score[rows],
        raw_score=result.raw_score[rows],
        is_anomaly=result.is_anomaly[rows],
        severity=result.severity[rows],
        contributions=result.contributions[rows],  # (N, C)
        expected=result.expected[rows],  # (N, C)
        start_step=first,
    )


def join_results(parts: Sequence[ScoreResult]) -> ScoreResult:
    """One result from results of consecutive steps of one series (chunks, stream messages)."""
    if not parts:
        raise DataError("the server returned no scores")
    ordered = sorted(parts, key=lambda part: part.start_step)
    return replace(
        ordered[0],
        timestamps_ns=np.concatenate([p.timestamps_ns for p in ordered]),
        score=np.concatenate([p.score for p in ordered]),
        raw_score=np.concatenate([p.raw_score for p in ordered]),
        is_anomaly=np.concatenate([p.is_anomaly for p in ordered]),
        severity=np.concatenate([p.severity for p in ordered]),
        contributions=np.concatenate([p.contributions for p in ordered]),  # (N, C)
        expected=np.concatenate([p.expected for p in ordered]),  # (N, C)
    )

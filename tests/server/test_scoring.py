"""Scores over a real channel equal the in-process detector's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from grpc import aio

from stad.server.app import StadServer
from stad.server.batcher import Outputs, Windows
from stad.server.detector import Detector, ScoreOutput
from stad.server.registry import Registry
from stad.server.scoring import HostStaging, WindowCompute
from stad.v1 import scoring_pb2, scoring_pb2_grpc
from tests.kit import PER_STEP_FIELDS, make_values
from tests.server.conftest import CHANNELS, MODEL, MakeServer, series_message


def assert_same(result: scoring_pb2.SeriesScores, expected: ScoreOutput, start: int = 0) -> None:
    n_channels = len(expected.channels)
    np.testing.assert_array_equal(np.asarray(result.score), expected.score[start:])
    np.testing.assert_array_equal(np.asarray(result.raw_score), expected.raw_score[start:])
    np.testing.assert_array_equal(np.asarray(result.is_anomaly), expected.is_anomaly[start:])
    np.testing.assert_array_equal(np.asarray(result.severity), expected.severity[start:])
    np.testing.assert_array_equal(
        np.asarray(result.contributions).reshape(-1, n_channels), expected.contributions[start:]
    )
    np.testing.assert_array_equal(
        np.asarray(result.expected).reshape(-1, n_channels), expected.expected[start:]
    )
    assert result.threshold == expected.threshold
    assert tuple(result.channels) == expected.channels


async def test_score_equals_in_process_score(
    served: tuple[StadServer, aio.Channel], detector: Detector
) -> None:
    _, channel = served
    values = make_values(300, seed=5)
    values[40:44, 1] = np.nan  # missing values must not break anything
    values[200:210, 0] += 4.0
    response = await scoring_pb2_grpc.ScoringServiceStub(channel).Score(
        scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values, t0_ns=10**18)])
    )
    assert response.version == "1"
    (result,) = response.results
    assert_same(result, detector.score(values))
    assert list(result.timestamps_ns) == [10**18 + i * 10**9 for i in range(300)]
    assert result.score[205] > result.score[100]


async def test_channels_are_matched_by_name_and_threshold_overrides(
    served: tuple[StadServer, aio.Channel], detector: Detector
) -> None:
    _, channel = served
    values = make_values(120, seed=6)
    reordered = values[:, [2, 0, 1]]
    request = scoring_pb2.ScoreRequest(
        model=MODEL,
        version="1",
        threshold=0.05,
        series=[
            series_message(values),
            series_message(reordered, channels=(CHANNELS[2], CHANNELS[0], CHANNELS[1])),
        ],
    )
    response = await scoring_pb2_grpc.ScoringServiceStub(channel).Score(request)
    expected = detector.score(values, threshold=0.05)
    assert [r.series_index for r in response.results] == [0, 1]
    for result in response.results:
        assert_same(result, expected)
        assert result.threshold == 0.05


async def test_return_from_skips_earlier_steps(
    served: tuple[StadServer, aio.Channel], detector: Detector
) -> None:
    _, channel = served
    values = make_values(100, seed=7)
    t0 = 1_700_000_000 * 10**9
    response = await scoring_pb2_grpc.ScoringServiceStub(channel).Score(
        scoring_pb2.ScoreRequest(
            model=MODEL, series=[series_message(values, t0_ns=t0)], return_from_ns=t0 + 60 * 10**9
        )
    )
    (result,) = response.results
    assert result.start_step == 60
    assert result.timestamps_ns[0] == t0 + 60 * 10**9
    assert_same(result, detector.score(values), start=60)


def joined(parts: list[scoring_pb2.SeriesScores]) -> scoring_pb2.SeriesScores:
    """The streamed chunks of one series as one message; they must be in order and contiguous."""
    whole = scoring_pb2.SeriesScores()
    whole.CopyFrom(parts[0])
    for part in parts[1:]:
        assert part.start_step == whole.start_step + len(whole.score)
        assert (part.series_index, part.threshold, part.channels) == (
            whole.series_index,
            whole.threshold,
            whole.channels,
        )
        for name in PER_STEP_FIELDS:
            getattr(whole, name).extend(getattr(part, name))
    return whole


def streamed_by_series(
    responses: list[scoring_pb2.ScoreResponse],
) -> dict[int, list[scoring_pb2.SeriesScores]]:
    pieces: dict[int, list[scoring_pb2.SeriesScores]] = {}
    for response in responses:
        (part,) = response.results
        pieces.setdefault(part.series_index, []).append(part)
    return pieces


async def test_stream_score_chunks_reassemble_to_score(
    served: tuple[StadServer, aio.Channel], detector: Detector
) -> None:
    server, channel = served
    t0 = 10**18
    long_values = make_values(30_000, seed=8)  # 3,749 windows: 59 batches of at most 64
    long_values[5_000:5_100, 2] = np.nan
    short_values = make_values(50, seed=9)
    request = scoring_pb2.ScoreRequest(
        model=MODEL,
        series=[
            series_message(long_values, t0_ns=t0),
            series_message(short_values, t0_ns=t0 + 980 * 10**9),  # returned from its step 20
        ],
        return_from_ns=t0 + 1_000 * 10**9,
    )
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    pieces = streamed_by_series([response async for response in stub.StreamScore(request)])
    assert server.engine._batchers[(MODEL, "1")].batches_run >= 59
    assert len(pieces[0]) > 10  # the long series arrives batch by batch
    unary = await stub.Score(request)
    assert [joined(pieces[0]), joined(pieces[1])] == list(unary.results)
    assert_same(joined(pieces[0]), detector.score(long_values), start=1_000)
    assert_same(joined(pieces[1]), detector.score(short_values), start=20)


async def test_stream_score_sends_a_chunk_before_the_last_batch_runs(
    make_server: MakeServer, detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compute stops after the first batch until the first chunk has reached the caller."""
    server, channel = await make_server(max_batch_windows=8, max_queue_delay_ms=0.0)
    first_chunk_seen = threading.Event()
    compute = WindowCompute.__call__

    def gated(self: WindowCompute, windows: Windows) -> Outputs:
        held = server.engine._batchers[(MODEL, "1")].batches_run >= 1
        if held and not first_chunk_seen.wait(timeout=30):
            raise RuntimeError("no chunk reached the caller while compute was held")
        return compute(self, windows)

    monkeypatch.setattr(WindowCompute, "__call__", gated)
    values = make_values(800, seed=13)  # 99 windows: 13 batches
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values)])
    responses = []
    try:
        async for response in scoring_pb2_grpc.ScoringServiceStub(channel).StreamScore(request):
            if not responses:
                batcher = server.engine._batchers[(MODEL, "1")]
                assert batcher.batches_run == 1
                assert batcher.pending_windows > 0
            first_chunk_seen.set()
            responses.append(response)
    finally:
        first_chunk_seen.set()
    assert server.engine._batchers[(MODEL, "1")].batches_run == 13
    assert_same(joined(streamed_by_series(responses)[0]), detector.score(values))


async def test_concurrent_clients_get_sequential_scores(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=20.0, max_batch_windows=32)
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    requests = [
        scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(16 + 7 * i, seed=i))])
        for i in range(24)
    ]
    sequential = [await stub.Score(r) for r in requests]
    concurrent = await asyncio.gather(*(stub.Score(r) for r in requests))
    for one, other in zip(sequential, concurrent, strict=True):
        assert one == other
    scored = sum(b.windows_run for b in server.engine._batchers.values())
    runs = sum(b.batches_run for b in server.engine._batchers.values())
    assert scored >= runs > 0


def test_staged_compute_matches_direct_compute(model_dir: Path, detector: Detector) -> None:
    """The CUDA path's buffer staging, with a plain host allocator standing in for pinned memory."""
    shapes: list[tuple[int, ...]] = []

    def allocate(shape: tuple[int, ...]) -> Windows:
        shapes.append(shape)
        return np.full(shape, np.nan, dtype=np.float32)

    compute = WindowCompute(Registry(model_dir, Detector.load), MODEL, "1", staging=HostStaging(allocate))
    windows = detector.plan_windows(make_values(200, seed=12)).windows
    for batch in (windows[:5], windows[5:8], windows[8:16], windows[16:17]):
        errors, expected = compute(batch)
        direct = detector.score_windows(batch)
        np.testing.assert_array_equal(errors, direct.errors)
        np.testing.assert_array_equal(expected, direct.expected)
    assert [s[0] for s in shapes] == [5, 8]  # reused unless a batch outgrows it


@pytest.mark.parametrize("method", ["Score", "StreamScore"])
async def test_many_series_larger_together_than_the_queue_are_all_scored(
    make_server: MakeServer, detector: Detector, method: str
) -> None:
    # 12 series of 11 windows each (window 16, stride 8): 132 windows, the queue holds 32
    server, channel = await make_server(max_batch_windows=8, max_queue_windows=32)
    values = [make_values(96, seed) for seed in range(12)]
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(v) for v in values])
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    if method == "Score":
        results = list((await stub.Score(request)).results)
    else:
        pieces = streamed_by_series([response async for response in stub.StreamScore(request)])
        results = [joined(parts) for parts in pieces.values()]
    assert sorted(r.series_index for r in results) == list(range(12))
    for result in results:
        assert_same(result, detector.score(values[result.series_index]))
    assert server.engine.pending_windows == 0

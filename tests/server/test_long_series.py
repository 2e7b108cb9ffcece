"""A series of more windows than the scoring queue holds is scored in turns, not refused."""

from __future__ import annotations

import pytest

from stad.server.detector import Detector
from stad.v1 import scoring_pb2, scoring_pb2_grpc
from tests.server.conftest import MODEL, MakeServer, make_values, series_message
from tests.server.test_scoring import assert_same, joined, streamed_by_series


@pytest.mark.parametrize("method", ["Score", "StreamScore"])
async def test_a_series_larger_than_the_queue_is_scored_in_turns(
    make_server: MakeServer, detector: Detector, method: str
) -> None:
    server, channel = await make_server(max_batch_windows=8, max_queue_windows=8)
    values = make_values(1000, 3)  # 124 windows (window 16, stride 8); the queue holds 8
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values)])
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    if method == "Score":
        (result,) = (await stub.Score(request)).results
    else:
        (parts,) = streamed_by_series([r async for r in stub.StreamScore(request)]).values()
        result = joined(parts)
    assert_same(result, detector.score(values))
    assert server.engine.pending_windows == 0


async def test_turns_leave_room_for_other_callers(make_server: MakeServer, detector: Detector) -> None:
    server, channel = await make_server(max_batch_windows=8, max_queue_windows=16)
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    # a turn of the long call is 8 windows; the short call adds 4: both fit the queue of 16
    long_values, short_values = make_values(2000, 4), make_values(40, 5)
    long_call = stub.Score(scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(long_values)]))
    short = await stub.Score(scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(short_values)]))
    assert_same(short.results[0], detector.score(short_values))
    assert_same((await long_call).results[0], detector.score(long_values))
    assert server.engine.pending_windows == 0

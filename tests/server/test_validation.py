"""Input is validated up front, and errors quote it shortened, through a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc import aio

from stad.server.app import StadServer
from stad.v1 import scoring_pb2, scoring_pb2_grpc, series_pb2, training_pb2, training_pb2_grpc
from tests.server.conftest import CHANNELS, MODEL, MakeServer, make_values, series_message
from tests.server.test_training import requests, spec

# gRPC carries the message in a trailer of at most 16 KiB; ours stay far below it.
MAX_DETAILS = 4096


async def score_error(channel: aio.Channel, request: scoring_pb2.ScoreRequest) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await scoring_pb2_grpc.ScoringServiceStub(channel).Score(request)
    return caught.value


async def training_error(channel: aio.Channel, *args: object, **kw: object) -> aio.AioRpcError:
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.StartTraining(requests(*args, **kw))  # type: ignore[arg-type]
    return caught.value


def assert_invalid(error: aio.AioRpcError, *fragments: str) -> None:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    details = str(error.details())
    assert len(details) < MAX_DETAILS
    for fragment in fragments:
        assert fragment in details, details


def many_channels(count: int) -> tuple[str, ...]:
    return tuple(f"sensor_{i:05d}_with_a_long_name" for i in range(count))


async def test_a_5000_channel_mismatch_gets_the_real_error(served: tuple[StadServer, aio.Channel]) -> None:
    names = many_channels(5000)
    series = series_pb2.Series(channels=list(names), values=[0.5] * (len(names) * 20))
    error = await score_error(served[1], scoring_pb2.ScoreRequest(model=MODEL, series=[series]))
    assert_invalid(
        error, "series 0", "channels differ", "missing ['temp', 'pressure', 'flow']", "(4992 more)"
    )


async def test_a_20000_character_model_name_gets_the_real_error(
    served: tuple[StadServer, aio.Channel],
) -> None:
    name = "m" * 20_000
    request = scoring_pb2.ScoreRequest(model=name, series=[series_message(make_values(40, 0))])
    assert_invalid(await score_error(served[1], request), "bad model name", "more characters")
    error = await training_error(served[1], spec(model=name), [make_values(100, 0)])
    assert_invalid(error, "bad model name")


async def test_training_chunks_with_5000_other_channels_get_the_real_error(
    served: tuple[StadServer, aio.Channel],
) -> None:
    names = many_channels(5000)
    chunks = [make_values(40, 0), np.zeros((2, len(names)))]
    error = await training_error(served[1], spec(), chunks, channels=[CHANNELS, names])
    assert_invalid(error, "data chunk 1 has channels", "the first chunk had")


async def test_labels_other_than_0_or_1_are_refused_before_a_job_is_made(
    served: tuple[StadServer, aio.Channel],
) -> None:
    labels = [[0] * 100, [0] * 57 + [2] + [0] * 42]
    error = await training_error(served[1], spec(), [make_values(100, 0), make_values(100, 1)], labels=labels)
    assert_invalid(error, "data chunk 1: labels must be 0 or 1, got 2 at its step 57")
    jobs = await training_pb2_grpc.TrainingServiceStub(served[1]).ListTrainings(
        training_pb2.ListTrainingsRequest()
    )
    assert not jobs.jobs


async def test_training_values_that_overflow_scaling_are_refused(
    served: tuple[StadServer, aio.Channel],
) -> None:
    values = make_values(100, 0)
    values[10, 1], values[11, 1] = 1e308, -1e308
    error = await training_error(served[1], spec(), [values])
    assert_invalid(error, "channel 'pressure' are too large to scale", "at step 10")


async def test_wrong_channels_win_over_a_response_too_large(make_server: MakeServer) -> None:
    _, channel = await make_server(max_message_mb=1)
    # about 0.7 MiB of values whose scores would be about 2.4 MiB: over the 1 MiB limit
    wrong = series_message(make_values(30_000, 0), channels=("temp", "pressure", "speed"))
    error = await score_error(channel, scoring_pb2.ScoreRequest(model=MODEL, series=[wrong]))
    assert_invalid(error, "unexpected ['speed']")
    right = series_message(make_values(30_000, 0))
    error = await score_error(channel, scoring_pb2.ScoreRequest(model=MODEL, series=[right]))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_wrong_channels_win_over_training_data_too_large(make_server: MakeServer) -> None:
    _, channel = await make_server(max_training_mb=1)
    chunks = [make_values(30_000, i) for i in range(3)]  # 0.7 MiB each
    names = [CHANNELS, CHANNELS, ("temp", "pressure", "speed")]
    error = await training_error(channel, spec(), chunks, channels=names)
    assert_invalid(error, "data chunk 2 has channels")

"""Every status code of the scoring and model services, through a real channel."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio

from stad.core.types import MIB
from stad.server import convert
from stad.server.app import StadServer
from stad.server.detector import Detector
from stad.server.guard import CallGuard
from stad.server.metrics import ServerMetrics
from stad.server.registry import Registry
from stad.server.scoring import BatchingSettings, ScoringEngine
from stad.server.scoring_service import ScoringServicer
from stad.v1 import models_pb2, models_pb2_grpc, scoring_pb2, scoring_pb2_grpc, series_pb2
from tests.kit import make_values
from tests.server.conftest import CHANNELS, MODEL, MakeServer, series_message
from tests.waiting import until


async def score_error(
    channel: aio.Channel, request: scoring_pb2.ScoreRequest, **kw: float
) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await scoring_pb2_grpc.ScoringServiceStub(channel).Score(request, **kw)  # type: ignore[arg-type]
    return caught.value


def request_with(series: series_pb2.Series, **kw: object) -> scoring_pb2.ScoreRequest:
    return scoring_pb2.ScoreRequest(model=MODEL, series=[series], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (series_pb2.Series(channels=list(CHANNELS), values=[1.0] * 50), "not a multiple of its 3 channels"),
        (series_message(make_values(40, 0)[:, :2], channels=CHANNELS[:2]), "missing ['flow']"),
        (
            series_message(make_values(40, 0), channels=("temp", "pressure", "speed")),
            "unexpected ['speed']",
        ),
        (series_pb2.Series(channels=list(CHANNELS)), "no values"),
        (series_pb2.Series(channels=list(CHANNELS), values=[1.0, float("inf"), 0.0] * 20), "inf"),
        (series_message(make_values(10, 0)), "10"),  # shorter than the window of 16
        (
            series_pb2.Series(channels=["temp"], values=[1.0, 2.0], timestamps_ns=[5, 5]),
            "strictly increasing",
        ),
    ],
)
async def test_bad_series_is_invalid_argument(
    served: tuple[StadServer, aio.Channel], series: series_pb2.Series, message: str
) -> None:
    error = await score_error(served[1], request_with(series))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(error.details())
    assert "series 0" in str(error.details())


async def test_request_without_series_or_with_bad_threshold(served: tuple[StadServer, aio.Channel]) -> None:
    error = await score_error(served[1], scoring_pb2.ScoreRequest(model=MODEL))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "no series" in str(error.details())
    for threshold in (float("nan"), -0.5):
        bad_threshold = request_with(series_message(make_values(40, 0)), threshold=threshold)
        error = await score_error(served[1], bad_threshold)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"threshold must be a finite number >= 0 (scores are never negative), got {threshold}" in str(
            error.details()
        )


async def test_unknown_model_or_version_is_not_found(served: tuple[StadServer, aio.Channel]) -> None:
    series = series_message(make_values(40, 0))
    error = await score_error(served[1], scoring_pb2.ScoreRequest(model="nope", series=[series]))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "unknown model 'nope'" in str(error.details())
    error = await score_error(served[1], request_with(series, version="7"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "has no version '7'" in str(error.details())
    error = await score_error(served[1], scoring_pb2.ScoreRequest(model="../etc", series=[series]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "bad model name '../etc'" in str(error.details())


async def test_no_active_version_is_failed_precondition(
    make_server: MakeServer, model_dir: Path, saved_model: Path
) -> None:
    Registry(model_dir, Detector.load).register("inactive", saved_model, activate=False)
    _, channel = await make_server()
    request = scoring_pb2.ScoreRequest(model="inactive", series=[series_message(make_values(40, 0))])
    error = await score_error(channel, request)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "model 'inactive' has no active version" in str(error.details())
    request.version = "1"
    response = await scoring_pb2_grpc.ScoringServiceStub(channel).Score(request)
    assert response.version == "1"


async def test_queue_full_while_others_wait(make_server: MakeServer) -> None:
    server, channel = await make_server(
        max_batch_windows=16, max_queue_windows=16, max_queue_delay_ms=600_000
    )
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    first = asyncio.ensure_future(stub.Score(request_with(series_message(make_values(96, 1)))))  # 11 windows
    await until(lambda: server.engine.pending_windows >= 11, "11 windows queued")
    error = await score_error(channel, request_with(series_message(make_values(64, 2))))  # 7 more
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue of pump/1 is full" in str(error.details())
    server.engine.flush()
    assert len((await first).results[0].score) == 96


async def test_message_over_the_limit_is_resource_exhausted(make_server: MakeServer) -> None:
    _, channel = await make_server(max_message_mb=1)
    big = series_message(make_values(50_000, 0))  # 150k doubles: about 1.2 MB
    error = await score_error(channel, request_with(big))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(error.details())


async def test_served_response_over_the_limit_points_to_stream_score(make_server: MakeServer) -> None:
    server, channel = await make_server(max_message_mb=1)
    request = request_with(series_message(make_values(20_000, 0)))  # request 0.5 MB, response ~1.8 MB
    assert request.ByteSize() < MIB
    error = await score_error(channel, request)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "use StreamScore" in str(error.details())
    assert not server.engine._batchers  # refused before compute
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    steps = sum([len(r.results[0].score) async for r in stub.StreamScore(request)])
    assert steps == 20_000


async def counted(server: StadServer, method: str, outcome: str) -> float:
    """stad_requests_total of the method and outcome, once the call has been counted."""
    counter = server.metrics.requests.labels(method=method, outcome=outcome)
    async with asyncio.timeout(10):
        while counter._value.get() < 1:
            await asyncio.sleep(0.01)
    return float(counter._value.get())


async def test_a_bad_series_drops_the_other_series_windows(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    long_enough = series_message(make_values(320, 0))  # 39 windows: waits for its batch to fill
    too_short = series_message(make_values(10, 0))
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[long_enough, too_short])
    error = await score_error(channel, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "series 1: the series has 10 steps" in str(error.details())
    await until(lambda: server.engine.pending_windows == 0, "series 0 left the queue")
    assert sum(b.windows_run for b in server.engine._batchers.values()) == 0


async def test_deadline_passed_in_queue_is_deadline_exceeded(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    error = await score_error(channel, request_with(series_message(make_values(40, 0))), timeout=0.5)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert await counted(server, "Score", "DEADLINE_EXCEEDED") == 1  # the code the caller got
    assert server.metrics.requests.labels(method="Score", outcome="CANCELLED")._value.get() == 0
    server.engine.flush()
    await until(lambda: not server.engine.pending_windows, "the queue drained")
    assert sum(b.windows_run for b in server.engine._batchers.values()) == 0  # dropped before compute


async def test_cancelled_call_is_seen_as_cancelled(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    call = scoring_pb2_grpc.ScoringServiceStub(channel).Score(
        request_with(series_message(make_values(40, 0)))
    )
    await until(lambda: server.engine.pending_windows > 0, "the call's windows are queued")
    call.cancel()
    assert await call.code() is grpc.StatusCode.CANCELLED
    assert await counted(server, "Score", "CANCELLED") == 1
    await until(lambda: not server.engine.pending_windows, "the queue drained")
    assert sum(b.windows_run for b in server.engine._batchers.values()) == 0


async def test_shutting_down_is_unavailable(served: tuple[StadServer, aio.Channel]) -> None:
    server, channel = served
    await server.begin_shutdown()
    error = await score_error(channel, request_with(series_message(make_values(40, 0))))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in str(error.details())


async def test_token_is_required_when_set(make_server: MakeServer) -> None:
    _, channel = await make_server(token="s3cret")
    stub = models_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.ListModels(models_pb2.ListModelsRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token" in str(caught.value.details())
    response = await stub.ListModels(
        models_pb2.ListModelsRequest(), metadata=(("authorization", "Bearer s3cret"),)
    )
    assert [m.name for m in response.models] == [MODEL]


def test_values_are_really_too_big_for_one_mib() -> None:
    assert series_message(make_values(50_000, 0)).ByteSize() > MIB
    assert np.isfinite(make_values(10, 0)).all()


RESPONSE_LIMIT = 200_000


@pytest.fixture
async def small_response_server(model_dir: Path) -> AsyncIterator[tuple[aio.Channel, ScoringEngine]]:
    """A scoring server whose max message size is RESPONSE_LIMIT bytes, and a channel to it."""
    metrics = ServerMetrics()
    executor = ThreadPoolExecutor(max_workers=1)
    engine = ScoringEngine(
        Registry(model_dir, Detector.load),
        BatchingSettings(max_batch_windows=1024, max_queue_delay_ms=2.0, max_queue_windows=8192),
        executor=executor,
        metrics=metrics,
    )
    server = aio.server(options=[("grpc.max_send_message_length", RESPONSE_LIMIT)])
    servicer = ScoringServicer(engine, CallGuard(metrics), max_response_bytes=RESPONSE_LIMIT)
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, engine
    await channel.close(None)
    await server.stop(None)
    await engine.close()
    executor.shutdown(wait=True)


def estimated_response_bytes(steps: int, *, timestamps: bool = False) -> int:
    """The servicer's estimate for a Score response of one series of `steps` steps."""
    return convert.series_scores_bytes(steps, CHANNELS, timestamps=timestamps) + len(MODEL) + len("1")


def most_steps_that_fit(*, timestamps: bool) -> int:
    return next(
        n
        for n in itertools.count(1)
        if estimated_response_bytes(n + 1, timestamps=timestamps) > RESPONSE_LIMIT
    )


async def test_response_over_the_message_limit_is_refused_before_compute(
    small_response_server: tuple[aio.Channel, ScoringEngine],
) -> None:
    channel, engine = small_response_server
    steps = most_steps_that_fit(timestamps=False)
    values = make_values(steps + 1, 0)
    error = await score_error(channel, request_with(series_message(values)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = str(error.details())
    assert f"about 0.2 MiB ({estimated_response_bytes(steps + 1)} bytes)" in details
    assert f"max message size of 0.2 MiB ({RESPONSE_LIMIT} bytes)" in details
    assert "use StreamScore, or return_from_ns, or fewer series" in details
    assert engine.pending_windows == 0 and not engine._batchers  # refused before any compute
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    stamped = most_steps_that_fit(timestamps=True)  # one step more is refused, as above
    all_but_first = request_with(series_message(make_values(stamped + 1, 0), t0_ns=0), return_from_ns=10**9)
    assert len((await stub.Score(all_but_first)).results[0].score) == stamped
    response = await stub.Score(request_with(series_message(values[:steps])))
    assert len(response.results[0].score) == steps
    assert (
        0.99 * estimated_response_bytes(steps) <= response.ByteSize() <= RESPONSE_LIMIT
    )  # from above, tight


async def test_stream_score_chunks_fit_a_small_max_message_size(
    small_response_server: tuple[aio.Channel, ScoringEngine], detector: Detector
) -> None:
    channel, _ = small_response_server
    values = make_values(5_000, 0)  # about 0.44 MB of results, final after one batch; the limit is 0.2 MB
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    responses = [r async for r in stub.StreamScore(request_with(series_message(values)))]
    assert len(responses) > 2
    assert all(r.ByteSize() <= RESPONSE_LIMIT for r in responses)
    scores = np.concatenate([r.results[0].score for r in responses])
    np.testing.assert_array_equal(scores, detector.score(values).score)

"""Request memory: scoring calls wait for room before their message is read, and a call that
fails does not keep its request alive."""

from __future__ import annotations

import asyncio
import gc
import urllib.request
from typing import Any

import grpc
import pytest
from grpc import aio

from stad.core.types import MIB
from stad.server.request_memory import NoRoom, RequestMemory
from stad.v1 import scoring_pb2, scoring_pb2_grpc
from tests.kit import make_values
from tests.server.conftest import MODEL, MakeServer, rpc_error, series_message

SCORE = "/stad.v1.ScoringService/Score"


async def test_reservations_wait_for_room_and_settle_to_their_cost() -> None:
    waited: list[int] = []
    memory = RequestMemory(100, on_wait=lambda: waited.append(1))
    async with memory.reserve(60, timeout_s=1) as first:
        await first.settle(10)  # the message turned out small: room for another large one
        async with memory.reserve(60, timeout_s=1) as second:
            assert memory.reserved == 70 and not waited
            with pytest.raises(NoRoom):
                async with memory.reserve(60, timeout_s=0.05):
                    pass
            assert waited == [1]
            await second.settle(90)  # more than reserved is taken at once: it is in memory
            assert memory.reserved == 100
    assert memory.reserved == 0


async def test_a_waiting_reservation_gets_in_when_room_is_given_back() -> None:
    memory = RequestMemory(100)
    order: list[str] = []

    async def hold() -> None:
        async with memory.reserve(80, timeout_s=1):
            await asyncio.sleep(0.05)
            order.append("first done")

    async def wait() -> None:
        await asyncio.sleep(0.01)
        async with memory.reserve(80, timeout_s=5):
            order.append("second in")

    await asyncio.gather(hold(), wait())
    assert order == ["first done", "second in"]


async def test_one_call_larger_than_the_budget_still_gets_in() -> None:
    memory = RequestMemory(10)
    async with memory.reserve(1_000, timeout_s=0.05):
        assert memory.reserved == 10


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not served"
    return values[0]


@pytest.mark.parametrize(("budget_mb", "expect_waits"), [(1, True), (512, False)])
async def test_scoring_calls_over_the_budget_take_turns_and_all_succeed(
    make_server: MakeServer, budget_mb: int, expect_waits: bool
) -> None:
    # each call reserves the largest message (4 MiB) until its own is read: a 1 MiB budget
    # lets one call in at a time
    server, channel = await make_server(max_request_memory_mb=budget_mb, max_message_mb=4, metrics_port=0)
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(4_000, seed=3))])
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    responses = await asyncio.gather(*(stub.Score(request, timeout=120) for _ in range(4)))
    assert all(len(r.results[0].score) == 4_000 for r in responses)
    port = server.metrics_port
    assert port is not None
    waits = await asyncio.to_thread(_metric, port, "stad_request_memory_waits_total")
    assert (waits > 0) is expect_waits
    assert await asyncio.to_thread(_metric, port, "stad_request_memory_bytes") == 0


@pytest.mark.parametrize("messages", [0, 2])
async def test_a_scoring_call_must_carry_exactly_one_message(
    served: tuple[Any, aio.Channel], messages: int
) -> None:
    payload = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(100))])
    call = served[1].stream_unary(SCORE)
    with pytest.raises(aio.AioRpcError) as refused:
        await call(iter([payload.SerializeToString()] * messages), timeout=20)
    assert rpc_error(refused.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly one request message" in str(refused.value.details())


async def test_a_refused_call_does_not_keep_its_request_alive(served: tuple[Any, aio.Channel]) -> None:
    """gRPC keeps an aborted call's exception in a reference cycle with its traceback's
    frames; without the cyclic collector (it may not run for a long while: large arrays do
    not count towards its thresholds) the request would stay alive."""
    payload = scoring_pb2.ScoreRequest(model="no-such-model", series=[series_message(make_values(2_000))])
    raw = payload.SerializeToString()
    del payload
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            with pytest.raises(aio.AioRpcError) as refused:
                await served[1].unary_unary(SCORE)(raw, timeout=20)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        alive = [o for o in gc.get_objects() if type(o) is scoring_pb2.ScoreRequest]
    finally:
        gc.enable()
    assert alive == [], f"{len(alive)} requests of {len(raw) / MIB:.1f} MiB still alive"

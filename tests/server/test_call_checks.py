"""What a call meets before its handler, through a real server: the token check, corrupt
wire bytes, the cap on concurrent calls, and how bad calls are logged."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stad.server.app import StartupError, create_server
from stad.server.embedded import EmbeddedServer
from stad.server.intercept import RateLimitedLog
from stad.server.settings import Settings
from stad.v1 import models_pb2, models_pb2_grpc, scoring_pb2, series_pb2, training_pb2
from tests.server.conftest import MakeServer

# Not a protobuf message: a tag whose varint never ends.
CORRUPT = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
TOKEN = "s3cret"


def stad_methods() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every stad.v1 method."""
    methods = []
    for module in (scoring_pb2, training_pb2, models_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods.append(
                    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
                )
    return methods


OPEN_METHODS = [
    ("/grpc.health.v1.Health/Check", False, False),
    ("/grpc.health.v1.Health/Watch", False, True),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True),
]


async def send_raw(
    channel: aio.Channel, method: tuple[str, bool, bool], payload: bytes, metadata: Any = ()
) -> grpc.StatusCode:
    """Send `payload` as the request bytes of `method`; the status code it ends with."""
    return await send_raws(channel, method, [payload], metadata)


async def send_raws(
    channel: aio.Channel, method: tuple[str, bool, bool], payloads: list[bytes], metadata: Any = ()
) -> grpc.StatusCode:
    """Send `payloads` as the request messages of `method` (the first alone where it takes
    one); the status code it ends with."""
    path, client_streaming, server_streaming = method
    try:
        if client_streaming and server_streaming:
            async for _ in channel.stream_stream(path)(iter(payloads), metadata=metadata, timeout=20):
                pass
        elif client_streaming:
            await channel.stream_unary(path)(iter(payloads), metadata=metadata, timeout=20)
        elif server_streaming:
            async for _ in channel.unary_stream(path)(payloads[0], metadata=metadata, timeout=20):
                pass
        else:
            await channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=20)
    except aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", stad_methods() + OPEN_METHODS, ids=lambda m: m[0].rsplit(".", 1)[-1])
async def test_corrupt_bytes_are_invalid_argument_on_every_method(
    served: tuple[Any, aio.Channel], method: tuple[str, bool, bool]
) -> None:
    assert await send_raw(served[1], method, CORRUPT) is grpc.StatusCode.INVALID_ARGUMENT


def _training_chunk() -> bytes:
    data = series_pb2.Series(channels=["a", "b"], values=[0.5] * 4096)
    return training_pb2.StartTrainingRequest(data=data).SerializeToString()


@pytest.mark.parametrize(
    "first",
    [CORRUPT, training_pb2.StartTrainingRequest().SerializeToString()],
    ids=["corrupt bytes", "no spec"],
)
async def test_a_training_stream_refused_early_still_tells_the_client_why(
    model_dir: Path, first: bytes
) -> None:
    """The server refuses at the first message while the client is still writing; grpc's
    asyncio client then reports INTERNAL for some of the calls (a race, grpc/grpc#36066)
    unless the server reads the rest before it answers. The server runs on a loop of its
    own, as it does in production, for the race to happen."""
    start_training = ("/stad.v1.TrainingService/StartTraining", True, False)
    payloads = [first] + [_training_chunk()] * 200
    with EmbeddedServer(model_dir, device="cpu") as server:
        async with aio.insecure_channel(server.target) as channel:
            codes = Counter([await send_raws(channel, start_training, payloads) for _ in range(30)])
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT: 30}


async def test_the_token_is_checked_before_the_message_is_decoded(make_server: MakeServer) -> None:
    _, channel = await make_server(token=TOKEN)
    for method in stad_methods():
        assert await send_raw(channel, method, CORRUPT) is grpc.StatusCode.UNAUTHENTICATED, method
        with_token = (("authorization", f"Bearer {TOKEN}"),)
        assert await send_raw(channel, method, CORRUPT, with_token) is grpc.StatusCode.INVALID_ARGUMENT


async def test_health_reflection_and_metrics_stay_open_without_the_token(make_server: MakeServer) -> None:
    server, channel = await make_server(token=TOKEN, metrics_port=0)
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert "stad_requests_total" in text
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answers = [
        a
        async for a in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]))
    ]
    names = {s.name for s in answers[0].list_services_response.service}
    assert "stad.v1.ScoringService" in names
    with pytest.raises(aio.AioRpcError) as caught:
        await models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_token_file_allows_each_of_its_tokens(make_server: MakeServer, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# rotating: old, then new\nold-token\n\nnew-token\n")
    _, channel = await make_server(token_file=path)
    stub = models_pb2_grpc.ModelServiceStub(channel)
    for token in ("old-token", "new-token"):
        await stub.ListModels(
            models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    for metadata in ((("authorization", "Bearer other"),), (("authorization", "Bearer # rotating"),), ()):
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.ListModels(models_pb2.ListModelsRequest(), metadata=metadata)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_empty_or_missing_token_file_stops_start_up(model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n# nothing\n")
    for path, reason in ((empty, "has no token"), (tmp_path / "missing", "cannot read")):
        settings = Settings(model_dir=model_dir, device="cpu", token_file=path)
        with pytest.raises((ValueError, StartupError), match=reason):
            await create_server("127.0.0.1:0", settings)


async def test_calls_over_the_concurrency_cap_are_refused_at_once(make_server: MakeServer) -> None:
    _, channel = await make_server(max_concurrent_rpcs=2)
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
    try:
        for watch in watches:
            await watch.read()  # both calls are now in progress on the server
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for watch in watches:
            watch.cancel()
    await asyncio.sleep(0.2)  # the server sees the cancellations
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)


async def test_bad_calls_are_logged_rate_limited_and_without_a_traceback(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    _, channel = await make_server(token=TOKEN)
    with_token = (("authorization", f"Bearer {TOKEN}"),)
    method = ("/stad.v1.ScoringService/Score", False, False)
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            assert await send_raw(channel, method, CORRUPT) is grpc.StatusCode.UNAUTHENTICATED
            assert await send_raw(channel, method, CORRUPT, with_token) is grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    refused = [r.getMessage() for r in caplog.records if r.name == "stad.server.calls"]
    assert 2 <= len(refused) <= 10  # two kinds of bad call, five lines each a minute at most
    assert any("bearer token" in line for line in refused)
    assert any("does not decode" in line for line in refused)


def test_rate_limited_log_counts_the_lines_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("test.limited"), per_period=2, period_s=60, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        for _ in range(7):
            limited.warning("kind", "bad call")
        now[0] = 61.0
        limited.warning("kind", "bad call")
    assert [r.getMessage() for r in caplog.records] == [
        "bad call",
        "bad call",
        "bad call (5 more like it not logged)",
    ]


def test_client_certificates_need_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="client_ca needs tls_cert and tls_key"):
        Settings(model_dir=tmp_path, client_ca=tmp_path / "ca.pem")

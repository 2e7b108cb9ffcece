"""Idempotent calls are retried on UNAVAILABLE by gRPC's own retry policy (the channel's service config)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stad.client import Client, Unavailable


class FlakyHealth(health_pb2_grpc.HealthServicer):
    """Answers UNAVAILABLE `failures` times, then SERVING; counts the calls that reach it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def flaky() -> Iterator[tuple[str, FlakyHealth]]:
    servicer = FlakyHealth(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def test_an_idempotent_call_is_retried_until_it_succeeds(flaky: tuple[str, FlakyHealth]) -> None:
    target, servicer = flaky
    with Client(target, retries=3, timeout_s=30) as client:
        assert client.health().serving
    assert servicer.calls == 3  # two UNAVAILABLE, then SERVING


def test_without_retries_the_first_unavailable_is_the_answer(flaky: tuple[str, FlakyHealth]) -> None:
    target, servicer = flaky
    with Client(target, retries=0, timeout_s=30) as client, pytest.raises(Unavailable, match="warming up"):
        client.health()
    assert servicer.calls == 1


def test_retries_stop_after_the_allowed_attempts(flaky: tuple[str, FlakyHealth]) -> None:
    target, servicer = flaky
    with Client(target, retries=1, timeout_s=30) as client, pytest.raises(Unavailable):
        client.health()
    assert servicer.calls == 2

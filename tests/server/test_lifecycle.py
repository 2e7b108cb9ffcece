"""Health, reflection, metrics, graceful shutdown, the command line and the embedded server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stad.client import AsyncClient
from stad.server.app import SERVICE_NAMES, StadServer, main
from stad.server.detector import Detector
from stad.server.embedded import EmbeddedServer
from stad.v1 import models_pb2, models_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from tests.kit import make_values
from tests.server.conftest import MODEL, MakeServer, series_message
from tests.waiting import until


async def health_status(channel: aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def test_health_per_service_turns_not_serving_on_shutdown(
    served: tuple[StadServer, aio.Channel],
) -> None:
    server, channel = served
    for service in ("", *SERVICE_NAMES):
        assert await health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING
    await server.begin_shutdown()
    for service in ("", *SERVICE_NAMES):
        assert await health_status(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_and_describes_the_services(served: tuple[StadServer, aio.Channel]) -> None:
    _, channel = served
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        async for response in stub.ServerReflectionInfo(iter([request])):
            return response
        raise AssertionError("no reflection response")

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names
    described = await ask(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="stad.v1.ScoringService")
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"Score", "StreamScore"} <= methods


async def test_metrics_endpoint_serves_the_named_metrics(make_server: MakeServer) -> None:
    server, channel = await make_server(metrics_port=0, max_queue_delay_ms=1.0)
    await scoring_pb2_grpc.ScoringServiceStub(channel).Score(
        scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(40, 0))])
    )
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert 'stad_requests_total{method="Score",outcome="OK"} 1.0' in text
    assert 'stad_inference_windows_total{model="pump/1"} 4.0' in text  # 40 steps: 4 windows
    match = re.search(r'stad_inference_batches_total\{model="pump/1"\} (\d+)', text)
    assert match is not None and 1 <= int(match.group(1)) <= 4
    for name in (
        "stad_request_duration_seconds_bucket",
        "stad_inference_queue_duration_seconds_count",
        "stad_inference_compute_duration_seconds_count",
        "stad_inference_pending_windows 0.0",
        'stad_training_jobs{state="running"} 0.0',
        "stad_device_memory_bytes 0.0",
    ):
        assert name in text


async def test_shutdown_drains_in_flight_calls_and_refuses_new_ones(
    make_server: MakeServer, detector: Detector
) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    values = make_values(40, 3)
    in_flight = asyncio.ensure_future(
        stub.Score(scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values)]))
    )
    while server.engine.pending_windows == 0:  # queued, and would wait 10 minutes for company
        await asyncio.sleep(0.01)
    # Hold the device thread, so the in-flight call is still computing while we look.
    release = threading.Event()
    blocker = server.executor.submit(release.wait)
    stopping = asyncio.ensure_future(server.stop(grace_s=60))
    while server.engine.pending_windows:  # shutdown sent the queued batch to compute at once
        await asyncio.sleep(0.01)
    assert not in_flight.done()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Score(scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values)]))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in str(caught.value.details())
    assert await health_status(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    release.set()
    blocker.result()
    response = await in_flight
    np.testing.assert_array_equal(np.asarray(response.results[0].score), detector.score(values).score)
    await stopping
    with pytest.raises(aio.AioRpcError) as caught:
        await models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest())
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_call_cut_off_by_the_end_of_the_grace_counts_as_unavailable(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    release = threading.Event()
    server.executor.submit(release.wait)  # holds the device thread, so the call cannot finish
    call = scoring_pb2_grpc.ScoringServiceStub(channel).Score(
        scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(40, 3))])
    )
    await until(lambda: server.engine.pending_windows > 0, "the call's windows are queued")
    stopping = asyncio.ensure_future(server.stop(grace_s=0.2))
    threading.Timer(2.0, release.set).start()  # stop() then waits for the device thread
    assert await call.code() is grpc.StatusCode.UNAVAILABLE
    await stopping
    counts = {labels: child._value.get() for labels, child in server.metrics.requests._metrics.items()}
    assert counts == {("Score", "UNAVAILABLE"): 1}


def test_main_rejects_bad_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--model-dir", str(tmp_path), "--max-batch-windows", "0"]) == 2
    assert "max_batch_windows must be at least 1, got 0" in capsys.readouterr().err
    assert main(["--model-dir", str(tmp_path), "--device", "tpu"]) == 2
    assert "device must be one of" in capsys.readouterr().err


@pytest.mark.slow
async def test_serve_command_runs_until_sigterm(model_dir: Path) -> None:
    env = {**os.environ, "STAD_MODEL_DIR": str(model_dir), "STAD_MAX_BATCH_WINDOWS": "8"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stad.server",
        "--address",
        "127.0.0.1:0",
        "--device",
        "cpu",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    port = 0
    try:
        while not port:
            line = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
            assert line, "the server exited before serving"
            if found := re.search(r"serving stad.v1 on port (\d+)", line):
                port = int(found.group(1))
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = models_pb2_grpc.ModelServiceStub(channel)
            listed = await stub.ListModels(models_pb2.ListModelsRequest())
            assert [m.name for m in listed.models] == [MODEL]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        rest = (await process.stderr.read()).decode().splitlines()
        assert "shutting down: draining calls" in rest[0]
        assert rest[-1].endswith("INFO stad.server: stopped")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_embedded_server_serves_a_sync_channel(model_dir: Path, detector: Detector) -> None:
    values = make_values(64, 11)
    with EmbeddedServer(model_dir, device="cpu") as server:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", server.target)
        with grpc.insecure_channel(server.target) as channel:
            response = scoring_pb2_grpc.ScoringServiceStub(channel).Score(
                scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(values)])
            )
    np.testing.assert_array_equal(np.asarray(response.results[0].score), detector.score(values).score)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.target


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_tls(make_server: MakeServer, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    server, _ = await make_server(tls_cert=cert, tls_key=key)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        listed = await models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest())
    assert [m.name for m in listed.models] == [MODEL]
    async with AsyncClient(f"127.0.0.1:{server.port}", tls=cert) as client:  # the client's own TLS path
        assert [m.name for m in await client.models()] == [MODEL]
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:
        with pytest.raises(aio.AioRpcError) as caught:
            await models_pb2_grpc.ModelServiceStub(plain).ListModels(
                models_pb2.ListModelsRequest(), timeout=5
            )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def serve_error(*args: str) -> str:
    """Start `python -m stad.server` with these flags; it must fail: its stderr."""
    finished = subprocess.run(
        [sys.executable, "-m", "stad.server", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 2, finished.stderr
    return finished.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.slow
async def test_ports_in_use_are_one_line_naming_the_flag(model_dir: Path, busy_port: int) -> None:
    common = ("--model-dir", str(model_dir))
    stderr = await asyncio.to_thread(
        serve_error, *common, "--address", "127.0.0.1:0", "--metrics-port", str(busy_port)
    )
    assert stderr == (
        f"stad serve: cannot serve metrics on 127.0.0.1:{busy_port} (--metrics-port, --metrics-address): "
        "Address already in use\n"
    )
    stderr = await asyncio.to_thread(serve_error, *common, "--address", f"127.0.0.1:{busy_port}")
    assert stderr == (
        f"stad serve: cannot listen on '127.0.0.1:{busy_port}' (--address): Address already in use\n"
    )


@pytest.mark.slow
def test_model_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "models"
    a_file.write_text("")
    stderr = serve_error("--model-dir", str(a_file), "--address", "127.0.0.1:0")
    assert stderr == f"stad serve: the model dir '{a_file}' (--model-dir) is not a directory\n"
    below_a_file = a_file / "sub"
    stderr = serve_error("--model-dir", str(below_a_file), "--address", "127.0.0.1:0")
    assert (
        stderr == f"stad serve: cannot create the model dir '{below_a_file}' (--model-dir): Not a directory\n"
    )

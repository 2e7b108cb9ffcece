"""The stad gRPC server: wiring, start-up, graceful shutdown, and the `stad serve` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from stad.core.types import MIB
from stad.server import job_worker
from stad.server.detector import Detector
from stad.server.guard import CallGuard
from stad.server.intercept import DecodeCheck, RateLimitedLog, TokenCheck
from stad.server.intercept import log as calls_log
from stad.server.jobs import JobManager
from stad.server.metrics import ServerMetrics
from stad.server.model_service import ModelServicer
from stad.server.registry import Registry
from stad.server.request_memory import MemoryGate
from stad.server.scoring import BatchingSettings, ScoringEngine
from stad.server.scoring_service import ScoringServicer
from stad.server.settings import Settings, parse_settings, threads_for_torch
from stad.server.training_service import TrainingServicer
from stad.v1 import (
    models_pb2,
    models_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

log = logging.getLogger("stad.server")

SERVICE_NAMES = (
    scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name,
    training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
JOBS_DIR = ".jobs"
CUT_OFF_S = 1.0  # how long calls ended at the end of the grace get to send their status


class StartupError(Exception):
    """A setting the server cannot start with (a port in use, ...); `stad serve` exits 2 with it."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is present, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return device


class StadServer:
    """A running server; `stop()` shuts it down gracefully."""

    def __init__(
        self,
        settings: Settings,
        grpc_server: aio.Server,
        health_servicer: HealthServicer,
        guard: CallGuard,
        engine: ScoringEngine,
        jobs: JobManager,
        metrics: ServerMetrics,
        executor: ThreadPoolExecutor,
        registry: Registry[Detector],
        device: str,
    ) -> None:
        self.settings = settings
        self.grpc_server = grpc_server
        self.health = health_servicer
        self.guard = guard
        self.engine = engine
        self.jobs = jobs
        self.metrics = metrics
        self.registry = registry
        self.device = device
        self.port = 0
        self.metrics_port: int | None = None
        self.executor = executor  # the device thread: all scoring compute runs here
        self._stopping: asyncio.Task[None] | None = None

    async def begin_shutdown(self) -> None:
        """Health to NOT_SERVING, refuse new calls, run queued batches without waiting."""
        self.guard.draining = True
        await self.health.enter_graceful_shutdown()
        self.engine.flush()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain in-flight calls within `grace_s` (default: the settings'), then stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float | None) -> None:
        grace = self.settings.grace_s if grace_s is None else grace_s
        loop = asyncio.get_running_loop()
        began = loop.time()
        await self.begin_shutdown()
        await self.jobs.close()  # ends watch streams too
        if self.guard.in_flight:
            try:
                await asyncio.wait_for(self.guard.wait_idle(), max(0.0, grace - (loop.time() - began)))
            except TimeoutError:
                log.warning(
                    "%d calls still in flight after %.1f s; ending them with UNAVAILABLE",
                    self.guard.in_flight,
                    grace,
                )
                self.guard.cut_off()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.guard.wait_idle(), CUT_OFF_S)
        # Our calls are done (or out of time); what is left is health watches and
        # reflection streams, which need not hold the shutdown for the rest of the grace.
        await self.grpc_server.stop(min(1.0, max(0.0, grace - (loop.time() - began))))
        await self.engine.close()
        self.executor.shutdown(wait=True)
        self.metrics.close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def create_server(
    address: str, settings: Settings, *, job_runner: job_worker.JobRunner = job_worker.run
) -> tuple[StadServer, int]:
    """Build and start a server listening on `address` (port 0: any free port); `job_runner`
    runs each training job in its child process (tests pass one that fails)."""
    device = resolve_device(settings.device)
    tokens = settings.accepted_tokens()  # a bad token file fails start-up, before anything else
    credentials = _server_credentials(settings)
    _check_model_dir(Path(settings.model_dir))
    _check_address_free(address)
    import torch

    torch.set_num_threads(threads_for_torch(settings.torch_threads))
    registry: Registry[Detector] = Registry(
        settings.model_dir,
        lambda path: Detector.load(path, device=device),
        max_cached=settings.max_cached_models,
    )
    registry.remove_staging()
    metrics = ServerMetrics(device_memory=_device_memory if device.startswith("cuda") else None)
    guard = CallGuard(metrics)
    bad_calls = RateLimitedLog(calls_log)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stad-compute")
    engine = ScoringEngine(
        registry,
        BatchingSettings(
            max_batch_windows=settings.max_batch_windows,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            max_queue_windows=settings.max_queue_windows,
        ),
        executor=executor,
        metrics=metrics,
        device=device,
    )
    jobs = JobManager(
        registry,
        Path(settings.model_dir) / JOBS_DIR,
        device=device,
        max_concurrent=settings.max_concurrent_jobs,
        max_queued=settings.max_queued_jobs,
        max_queued_bytes=settings.max_queued_mb * MIB,
        limits=settings.job_limits,
        max_job_s=settings.max_job_s,
        metrics=metrics,
        runner=job_runner,
        torch_threads=threads_for_torch(settings.torch_threads),
        server_id=settings.server_name,
    )
    limit = settings.max_message_bytes
    server = aio.server(
        interceptors=[
            TokenCheck(tokens, metrics, bad_calls),
            MemoryGate(settings.request_memory_bytes, limit, metrics),
            DecodeCheck(bad_calls),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            # without BDP probing a stream's flow-control window stays small until its message
            # is read, so calls waiting for request memory do not fill it with their bytes
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(
        ScoringServicer(engine, guard, max_response_bytes=limit), server
    )
    training_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingServicer(jobs, guard, max_training_bytes=settings.max_training_mb * MIB), server
    )
    models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry, guard), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    stad_server = StadServer(
        settings, server, health_servicer, guard, engine, jobs, metrics, executor, registry, device
    )
    try:
        stad_server.port = _listen(server, address, credentials)
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.metrics_port is not None:
            stad_server.metrics_port = _serve_metrics(metrics, settings)
    except BaseException:
        await stad_server.stop(grace_s=0)
        raise
    return stad_server, stad_server.port


def _check_model_dir(path: Path) -> None:
    """Make the model dir if missing; refuse one that is a file or cannot be made."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"the model dir {str(path)!r} (--model-dir) is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the model dir {str(path)!r} (--model-dir): {exc.strerror or exc}"
        ) from exc


def _check_address_free(address: str) -> None:
    """Refuse a HOST:PORT that cannot be bound (in use, not of this host) up front, with the
    reason: gRPC would log a line of its own and not say why."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return  # not HOST:PORT, or any free port: left to gRPC
    try:
        candidates = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return  # left to gRPC
    for family, _, _, _, sockaddr in candidates:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise StartupError(f"cannot listen on {address!r} (--address): {exc.strerror}") from exc


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from --tls-cert/--tls-key, requiring client certificates signed by
    --client-ca when given; None: plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    key = _read_pem(settings.tls_key, "--tls-key")
    chain = _read_pem(settings.tls_cert, "--tls-cert")
    if settings.client_ca is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=_read_pem(settings.client_ca, "--client-ca"),
        require_client_auth=True,
    )


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {str(path)!r} ({flag}): {exc.strerror or exc}") from exc


def _listen(server: aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `address` (TLS with `credentials`); returns the port."""
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise StartupError(
            f"cannot listen on {address!r} (--address): in use, or not an address of this host"
        )
    return port


def _serve_metrics(metrics: ServerMetrics, settings: Settings) -> int:
    assert settings.metrics_port is not None
    try:
        return metrics.serve(settings.metrics_port, settings.metrics_address)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {settings.metrics_address}:{settings.metrics_port} "
            f"(--metrics-port, --metrics-address): {exc.strerror or exc}"
        ) from exc


def _device_memory() -> float:
    import torch

    return float(torch.cuda.memory_allocated())


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server, port = await create_server(settings.address, settings)
    log.info(
        "serving stad.v1 on port %d (device %s, models in %s%s)",
        port,
        server.device,
        settings.model_dir,
        f", metrics on :{server.metrics_port}" if server.metrics_port is not None else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down: draining calls for up to %.1f s", settings.grace_s)
        await server.stop()
        log.info("stopped")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """`stad serve`: returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_settings(list(argv) if argv is not None else None)
        asyncio.run(serve(settings))
    except (ValueError, StartupError) as exc:
        print(f"stad serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stad serve: {exc}", file=sys.stderr)
        return 1
    return 0

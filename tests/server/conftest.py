"""Fixtures for the server tests: a tiny trained model and real servers on loopback port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import torch
from grpc import aio

from stad.core.series import make_series, series_to_proto
from stad.core.types import MIB
from stad.server import job_worker
from stad.server.app import StadServer, create_server
from stad.server.detector import Detector
from stad.server.job_worker import JobRunner
from stad.server.registry import Registry
from stad.server.settings import Settings
from stad.v1 import series_pb2
from tests.kit import TINY, make_values

CHANNELS = ("temp", "pressure", "flow")
MODEL = "pump"

MakeServer = Callable[..., Awaitable[tuple[StadServer, aio.Channel]]]


def series_message(
    values: npt.NDArray[np.float64], channels: tuple[str, ...] = CHANNELS, t0_ns: int | None = None
) -> series_pb2.Series:
    stamps = None if t0_ns is None else t0_ns + np.arange(values.shape[0]) * 1_000_000_000
    return series_to_proto(make_series(values, channels=channels, timestamps_ns=stamps))


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector trained once per session, saved as a directory."""
    directory = tmp_path_factory.mktemp("saved") / "model"
    config = TINY.replace(max_windows_per_epoch=256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster on a busy shared CPU
    try:
        Detector(config).fit(make_values(600, seed=0), channels=CHANNELS).save(directory)
    finally:
        torch.set_num_threads(threads)
    return directory


@pytest.fixture
def model_dir(tmp_path: Path, saved_model: Path) -> Path:
    """A registry holding MODEL with version 1 active."""
    root = tmp_path / "models"
    Registry(root, Detector.load).register(MODEL, saved_model, description="fixture", activate=True)
    return root


@pytest.fixture
def detector(saved_model: Path) -> Detector:
    return Detector.load(saved_model)


@pytest.fixture
async def make_server(model_dir: Path) -> AsyncIterator[MakeServer]:
    """Start servers on 127.0.0.1 port 0 with settings overrides; stops them afterwards."""
    started: list[tuple[StadServer, aio.Channel]] = []

    async def start(
        job_runner: JobRunner = job_worker.run, **overrides: Any
    ) -> tuple[StadServer, aio.Channel]:
        settings = replace(Settings(model_dir=model_dir, device="cpu", torch_threads=1), **overrides)
        server, port = await create_server("127.0.0.1:0", settings, job_runner=job_runner)
        limit = 256 * MIB
        channel = aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
        )
        started.append((server, channel))
        return server, channel

    yield start
    for server, channel in started:
        await channel.close(None)
        await server.stop(grace_s=5)


@pytest.fixture
async def served(make_server: MakeServer) -> tuple[StadServer, aio.Channel]:
    """A server with default settings (short queue delay) and a channel to it."""
    return await make_server(max_queue_delay_ms=2.0)


def rpc_error(exc: BaseException) -> aio.AioRpcError:
    assert isinstance(exc, grpc.aio.AioRpcError), exc
    return exc

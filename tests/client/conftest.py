"""Fixtures for the client and CLI tests: one real server on loopback and one tiny trained model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stad.client import Client, JobStatus
from tests.client.support import BIG_STEPS, CHANNELS, MODEL, SPARE, Data, make_data
from tests.kit import TINY_SETTINGS


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real stad server on a loopback port; yields its target."""
    from stad.server.embedded import EmbeddedServer

    with EmbeddedServer(tmp_path_factory.mktemp("models"), device="cpu") as embedded:
        yield embedded.target


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real server whose max message size is 1 MiB (max_message_mb=1)."""
    from stad.server.embedded import EmbeddedServer
    from stad.server.settings import Settings

    model_dir = tmp_path_factory.mktemp("small-models")
    settings = Settings(model_dir=model_dir, max_message_mb=1)
    with EmbeddedServer(model_dir, device="cpu", settings=settings) as embedded:
        yield embedded.target


@pytest.fixture(scope="session")
def big_train_data() -> Data:
    """More than 1 MiB of training data once encoded."""
    return make_data(BIG_STEPS, seed=5)


@pytest.fixture(scope="session")
def small_trained(small_server: str, big_train_data: Data) -> JobStatus:
    """MODEL on the 1 MiB server, uploaded by a client whose max message size is 1 MiB too."""
    with Client(small_server, max_message_mb=1) as client:
        job = client.train(
            big_train_data.values,
            timestamps=big_train_data.timestamps_ns,
            channels=CHANNELS,
            model=MODEL,
            settings=TINY_SETTINGS,
        )
        return job.wait(timeout_s=300)


@pytest.fixture(scope="session")
def train_data() -> Data:
    return make_data(320, seed=1)


@pytest.fixture(scope="session")
def test_data() -> Data:
    return make_data(200, seed=2, anomaly=(120, 140))


@pytest.fixture(scope="session")
def training_events(server: str, train_data: Data) -> list[JobStatus]:
    """Every status seen while training the session's model MODEL (two epochs)."""
    with Client(server) as client:
        job = client.train(
            train_data.values,
            timestamps=train_data.timestamps_ns,
            channels=CHANNELS,
            model=MODEL,
            settings=replace(TINY_SETTINGS, epochs=2),
        )
        return list(job.watch(timeout_s=300))


@pytest.fixture(scope="session")
def trained(training_events: list[JobStatus]) -> JobStatus:
    """The final status of the session's trained model MODEL."""
    return training_events[-1]


@pytest.fixture(scope="session")
def spare(server: str, train_data: Data) -> tuple[str, str]:
    """Model SPARE with two versions, the second active; tests leave it so."""
    with Client(server) as client:
        versions = []
        for _ in range(2):
            status = client.train(
                train_data.values, channels=CHANNELS, model=SPARE, settings=TINY_SETTINGS
            ).wait()
            assert status.version is not None
            versions.append(status.version)
    return versions[0], versions[1]


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    with Client(server) as c:
        yield c


@pytest.fixture
def cli_env(server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the CLI at the session's server."""
    monkeypatch.setenv("STAD_SERVER", server)
    monkeypatch.setenv("STAD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STAD_TOKEN", raising=False)
    return server

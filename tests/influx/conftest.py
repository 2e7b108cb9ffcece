"""Fixtures: a real influxd on loopback (skipped when missing unless STAD_REQUIRE_INFLUXD=1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stad.core.demo_data import DemoData
from stad.influx_task.local_influxd import Influxd, influxd_path
from stad.influx_task.task import Task
from stad.server.embedded import EmbeddedServer
from tests.influx import kit


def _binary() -> str:
    binary = influxd_path()
    if binary is None:
        if os.environ.get("STAD_REQUIRE_INFLUXD") == "1":
            pytest.fail("influxd is not installed and STAD_REQUIRE_INFLUXD=1 (apt-get install influxdb)")
        pytest.skip("influxd is not installed (apt-get install influxdb)")
    return binary


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd shared by the session's tests; each test uses its own database."""
    server = Influxd(tmp_path_factory.mktemp("influxd"), binary=_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[Influxd]:
    """An influxd for one test, which may stop and restart it."""
    server = Influxd(tmp_path / "influxd", binary=_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database(influxd: Influxd, request: pytest.FixtureRequest) -> str:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influxd.query(f'DROP DATABASE "{name}"')
    influxd.query(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(model_dir, device="cpu") as running:
        yield running


@pytest.fixture(scope="session")
def trained(influxd: Influxd, server: EmbeddedServer) -> tuple[str, DemoData]:
    """Demo series in influxd and a model trained through the task on their quiet period."""
    database = "e2e"
    influxd.query(f'CREATE DATABASE "{database}"')
    data = kit.demo()
    kit.write_demo(influxd.url, database, data)
    job = kit.pipeline(database, data)
    seen: list[str] = []
    with Task(kit.config(influxd.url, server.target, (job,))) as task:
        quiet_stop = int(data.timestamps_ns[data.quiet_steps])
        final = task.train(
            "pumps",
            int(data.timestamps_ns[0]),
            quiet_stop,
            settings=kit.TINY,
            on_status=lambda s: seen.append(s.state.value),
            timeout_s=300,
        )
    assert final.version and final.steps == 2 * data.quiet_steps
    assert seen[-1] == "succeeded"
    return database, data


@pytest.fixture(scope="session")
def ranged(influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData]) -> str:
    """Model `pumps-ranged`: as `trained`'s, with range scores (a look-ahead) and smoothing 3."""
    source, data = trained
    job = kit.pipeline(source, data, model="pumps-ranged")
    with Task(kit.config(influxd.url, server.target, (job,))) as task:
        final = task.train(
            "pumps",
            int(data.timestamps_ns[0]),
            int(data.timestamps_ns[data.quiet_steps]),
            settings=replace(kit.TINY, range_scores=True, smoothing=3),
            timeout_s=300,
        )
    assert final.version
    return "pumps-ranged"

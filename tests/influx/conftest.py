"""Fixtures: a real influxd on loopback (skipped when missing unless STAD_REQUIRE_INFLUXD=1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stad.influx_task.local_influxd import Influxd, influxd_path


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

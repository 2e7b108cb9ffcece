"""Markers applied by what a test needs, so that `-m "not influx"` and `-m "not slow"` select well."""

from __future__ import annotations

import pytest

INFLUXD_FIXTURES = {"influxd", "own_influxd"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INFLUXD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.influx)

"""The end-to-end tests' shared setting: demo series for two pump units, a pipeline over them."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from stad.core.demo_data import DemoData, generate
from stad.influx_task.config import Connection, Pipeline, RetrySettings, ServerSettings, TaskConfig
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.points import Point
from stad.influx_task.transport import Transport
from stad.influx_task.writer import LineWriter
from tests.kit import TINY_SETTINGS

STEP_S = 600
STEP = STEP_S * 10**9
STEPS = 400
CONTEXT = 32
TINY = TINY_SETTINGS
WINDOW = 16
assert TINY.window == WINDOW
UNITS = ("1", "2")
# A clock this far past the data's last step makes every step final: its last window has ended,
# and so has the look-ahead of a range score (a range of at most a window: half of it after).
SETTLE = (1 + WINDOW + WINDOW // 2) * STEP
LOOKBACK = STEPS * STEP + SETTLE


def demo(start: str = "2026-01-05T00:00:00") -> DemoData:
    return generate(seed=3, steps=STEPS, channels=3, freq_s=STEP_S, start=start, quiet_fraction=0.5)


def write_demo(url: str, database: str, data: DemoData) -> None:
    write_rows(url, database, data, range(data.values.shape[0]))


def pipeline(database: str, data: DemoData, **extra: object) -> Pipeline:
    base: dict[str, object] = dict(
        name="pumps",
        database=database,
        measurement="pump",
        fields=data.channels,
        model="pumps",
        interval_ns=STEP,
        group_by=("unit",),
        tag_filter={"plant": ("p1",)},
        context_steps=CONTEXT,
        initial_lookback_ns=2 * STEPS * STEP,
        chunk_steps=1000,
        lateness_ns=0,
    )
    base.update(extra)
    return Pipeline(**base)  # type: ignore[arg-type]


def pipeline_toml(database: str, data: DemoData, *, name: str = "pumps", model: str = "pumps") -> str:
    """The start of a [[pipelines]] table in a config file for the demo data."""
    fields = str(list(data.channels)).replace("'", '"')
    return f"""[[pipelines]]
name = "{name}"
database = "{database}"
measurement = "pump"
fields = {fields}
model = "{model}"
interval = "{STEP_S}s"
lateness = "0s"
group_by = ["unit"]"""


def config(url: str, target: str, jobs: tuple[Pipeline, ...]) -> TaskConfig:
    return TaskConfig(
        connection=Connection(url=url),
        server=ServerSettings(target=target, timeout_s=60),
        retry=RetrySettings(base_ms=20, cap_ms=300, deadline_s=120),
        pipelines=jobs,
    )


def query(url: str, database: str, statement: str) -> list[dict[str, Any]]:
    transport = Transport(Connection(url=url))
    try:
        return InfluxQLReader(transport).query(statement, database=database)
    finally:
        transport.close()


def scores(url: str, database: str) -> list[dict[str, object]]:
    series = query(url, database, 'SELECT * FROM "anomaly_scores" GROUP BY *')
    rows = []
    for item in series:
        for values in item["values"]:
            rows.append({**item["tags"], **dict(zip(item["columns"], values, strict=True))})
    return rows


def written(url: str, database: str, measurement: str) -> dict[tuple[str, int], dict[str, object]]:
    """Every point of `measurement`, by (unit, time): what two runs must agree on bit for bit."""
    out = {}
    for item in query(url, database, f'SELECT * FROM "{measurement}" GROUP BY *'):
        for values in item["values"]:
            row = dict(zip(item["columns"], values, strict=True))
            out[(item["tags"]["unit"], int(row.pop("time")))] = row
    return out


def write_rows(url: str, database: str, data: DemoData, rows: range, *, shift: float = 0.0) -> None:
    """Write steps `rows` of both units (their values plus `shift`)."""
    transport = Transport(Connection(url=url))
    points = [
        Point(
            "pump",
            {"unit": unit, "plant": "p1"},
            {name: float(data.values[t, c]) + u + shift for c, name in enumerate(data.channels)},
            int(data.timestamps_ns[t]),
        )
        for u, unit in enumerate(UNITS)
        for t in rows
    ]
    LineWriter(transport).write(points, database=database)
    transport.close()


def write_real_clock_demo(url: str, database: str) -> DemoData:
    """Demo series ending SETTLE before now (every step final for a task on the real clock), written."""
    end = (time.time_ns() // STEP) * STEP - SETTLE
    start = dt.datetime.fromtimestamp((end - STEPS * STEP) / 1e9, dt.UTC).replace(tzinfo=None)
    data = demo(start.isoformat())
    write_demo(url, database, data)
    return data

"""`stad influx import`: a CSV/Parquet file (read as `stad train` reads it) written into InfluxDB."""

from __future__ import annotations

from collections.abc import Mapping

from stad.influx_task.points import Point, check_name
from stad.influx_task.writer import LineWriter


def parse_tags(pairs: list[str] | None) -> dict[str, str]:
    """`["site=north", "unit=7"]` -> {"site": "north", "unit": "7"}."""
    tags: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--tag {pair!r}: expected key=value")
        tags[check_name("tag", key)] = value
    return tags


def import_file(
    path: str,
    writer: LineWriter,
    *,
    database: str,
    measurement: str,
    tags: Mapping[str, str],
    retention_policy: str | None = None,
    time_column: str | None = None,
) -> tuple[int, tuple[str, ...]]:
    """Write every row of the file as one point (channels as fields); (points written, fields)."""
    from stad.client.data_files import read_table

    table = read_table(path, time_column=time_column)
    if table.timestamps_ns is None:
        raise ValueError(f"{path}: no time column found; name it with --time-column")
    for name in table.channels:
        check_name("field", name)
    points = [
        Point(
            check_name("measurement", measurement),
            tags,
            {name: float(table.values[t, c]) for c, name in enumerate(table.channels)},
            int(table.timestamps_ns[t]),
        )
        for t in range(table.steps)
    ]
    return writer.write(points, database=database, retention_policy=retention_policy), table.channels

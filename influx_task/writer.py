"""Line-protocol writes, synchronous and checked: `/write` (1.x) or `/api/v2/write`.

A write returns only after InfluxDB answered 204; anything else raises
InfluxError (InfluxUnavailable for 5xx/429/connection errors, retryable).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from stad.influx_task.transport import Transport

FieldValue = float | int | bool | str


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int


def _escape_key(text: str) -> str:
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(text: str) -> str:
    return text.replace(",", "\\,").replace(" ", "\\ ")


def _format_field(value: FieldValue) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return None if not math.isfinite(value) else repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_line(point: Point) -> str | None:
    """One line of line protocol; None when no field has a writable value (NaN is skipped)."""
    if not point.measurement:
        raise ValueError("point has an empty measurement name")
    fields = []
    for key in point.fields:
        text = _format_field(point.fields[key])
        if text is not None:
            fields.append(f"{_escape_key(key)}={text}")
    if not fields:
        return None
    head = _escape_measurement(point.measurement)
    for key in sorted(point.tags):
        value = point.tags[key]
        if value != "":
            head += f",{_escape_key(key)}={_escape_key(value)}"
    return f"{head} {','.join(fields)} {int(point.time_ns)}"


class LineWriter:
    """Writes points to one database/bucket, `batch_lines` lines per request."""

    def __init__(self, transport: Transport, *, batch_lines: int = 5000) -> None:
        if batch_lines <= 0:
            raise ValueError(f"batch_lines must be positive, got {batch_lines}")
        self.transport = transport
        self.batch_lines = batch_lines

    def write_lines(
        self, lines: Sequence[str], *, database: str, retention_policy: str | None = None
    ) -> None:
        connection = self.transport.connection
        for start in range(0, len(lines), self.batch_lines):
            body = ("\n".join(lines[start : start + self.batch_lines]) + "\n").encode()
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if connection.uses_v2_write:
                bucket = database + (f"/{retention_policy}" if retention_policy else "")
                params = {"bucket": bucket, "org": connection.org or "", "precision": "ns"}
                self.transport.request("POST", "/api/v2/write", params=params, body=body, headers=headers)
            else:
                params = {"db": database, "precision": "ns"}
                if retention_policy:
                    params["rp"] = retention_policy
                self.transport.request("POST", "/write", params=params, body=body, headers=headers)

    def write(self, points: Iterable[Point], *, database: str, retention_policy: str | None = None) -> int:
        """Write the points; returns how many lines were sent."""
        lines = [line for line in map(to_line, points) if line is not None]
        self.write_lines(lines, database=database, retention_policy=retention_policy)
        return len(lines)

"""Points and their line-protocol text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FieldValue = float | int | bool | str


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int


def escape_key(text: str) -> str:
    """A tag key, tag value or field key as line protocol writes it."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(text: str) -> str:
    return text.replace(",", "\\,").replace(" ", "\\ ")


def format_string(value: str) -> str:
    """A string field value, quoted and escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_field(value: FieldValue) -> str | None:
    """A field value as line protocol writes it; None for a float that is not finite (skipped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return None if not math.isfinite(value) else repr(value)
    return format_string(value)


def check_name(kind: str, name: str) -> str:
    """A measurement, tag or field name that line protocol can carry, or ValueError."""
    if not name or any(c in name for c in "\n\r\t\\") or name.startswith("_"):
        raise ValueError(f"{kind} {name!r}: must be non-empty, not start with '_', no newline/tab/backslash")
    return name


def line_head(measurement: str, tags: Mapping[str, str]) -> str:
    """The measurement and the tags (sorted by key, empty values left out) of a line."""
    if not measurement:
        raise ValueError("point has an empty measurement name")
    head = _escape_measurement(measurement)
    for key in sorted(tags):
        value = tags[key]
        if value != "":
            head += f",{escape_key(key)}={escape_key(value)}"
    return head


def to_line(point: Point) -> str | None:
    """One line of line protocol; None when no field has a writable value (NaN is skipped)."""
    head = line_head(point.measurement, point.tags)
    fields = []
    for key in point.fields:
        text = format_field(point.fields[key])
        if text is not None:
            fields.append(f"{escape_key(key)}={text}")
    if not fields:
        return None
    return f"{head} {','.join(fields)} {int(point.time_ns)}"


def point_lines(points: Iterable[Point]) -> list[str]:
    """The lines of the points that have a writable field."""
    return [line for line in map(to_line, points) if line is not None]

"""Points and their line-protocol text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def check_name(kind: str, name: str) -> str:
    """A measurement, tag or field name that line protocol can carry, or ValueError."""
    if not name or any(c in name for c in "\n\r\t\\") or name.startswith("_"):
        raise ValueError(f"{kind} {name!r}: must be non-empty, not start with '_', no newline/tab/backslash")
    return name


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

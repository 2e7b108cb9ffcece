"""Line protocol for many points of one series at once, built column by column.

`to_lines` gives, byte for byte, what `to_line` gives for each row's Point, at a
fraction of the CPU: each column is formatted in one pass, the measurement, tags,
field keys and constant fields are written once into a row template, and floats
are formatted by orjson from the array instead of one `repr` per value (both give
the shortest text that reads back as the same double; their notations agree for
0 and 1e-4 <= |x| < 1e16, and the values outside that range take `repr`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stad.influx_task.points import FieldValue, escape_key, format_field, format_string, line_head

# One value per row (a 1-D float, bool or integer array, or a list of strings),
# or a single value that every row carries.
FieldColumn = npt.NDArray[Any] | list[str] | FieldValue

_BOOL_TEXT = ("false", "true")
_ORJSON_LOW, _ORJSON_HIGH = 1e-4, 1e16  # where repr writes no exponent


def float_texts(values: npt.NDArray[Any]) -> list[str | None]:
    """`repr(float(v))` of each value, None where it is not finite."""
    values = np.ascontiguousarray(values, dtype=np.float64)  # float32: the same double float() gives
    if values.size == 0:
        return []
    texts: list[str | None] = list(
        orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")
    )
    magnitude = np.abs(values)
    same = ((magnitude >= _ORJSON_LOW) & (magnitude < _ORJSON_HIGH)) | (values == 0)
    odd = np.flatnonzero(~same)  # also NaN and inf
    for i, value in zip(odd.tolist(), values[odd].tolist(), strict=True):
        texts[i] = format_field(value)
    return texts


def _column_texts(
    name: str, values: npt.NDArray[Any] | list[str], rows: int
) -> tuple[list[str | None], npt.NDArray[np.bool_] | None]:
    """The texts of a column, and which rows it has no value for (None: none such)."""
    if isinstance(values, list):
        if len(values) != rows or not all(isinstance(v, str) for v in values):
            raise ValueError(f"field {name!r}: a list column must hold {rows} strings")
        texts = {v: format_string(v) for v in set(values)}
        return [texts[v] for v in values], None
    if values.shape != (rows,):
        raise ValueError(f"field {name!r}: {values.shape} values for {rows} rows")
    kind = values.dtype.kind
    if kind == "f":
        return float_texts(values), ~np.isfinite(values)
    if kind == "b":
        return [_BOOL_TEXT[v] for v in values.tolist()], None
    if kind in "iu":
        return [f"{v}i" for v in values.tolist()], None
    raise ValueError(f"field {name!r}: cannot write a column of dtype {values.dtype}")


def to_lines(
    measurement: str,
    tags: Mapping[str, str],
    fields: Sequence[tuple[str, FieldColumn]],
    times_ns: npt.NDArray[np.int64],
) -> list[str]:
    """The line of each row's point, in row order, as `to_line` writes it; a row with no
    writable field (all NaN) has none."""
    head = line_head(measurement, tags)
    rows = len(times_ns)
    layout: list[str | None] = []  # per written field: "key=text" when constant, None for a column
    column_keys: list[str] = []
    columns: list[list[str | None]] = []
    missing = np.zeros(rows, dtype=bool)
    for name, values in fields:
        key = escape_key(name)
        if isinstance(values, np.ndarray | list):
            texts, gaps = _column_texts(name, values, rows)
            columns.append(texts)
            column_keys.append(key)
            layout.append(None)
            if gaps is not None:
                missing |= gaps
        elif (text := format_field(values)) is not None:
            layout.append(f"{key}={text}")
    if not layout:
        return []
    slots = iter(column_keys)
    body = ",".join(
        f"{next(slots).replace('%', '%%')}=%s" if piece is None else piece.replace("%", "%%")
        for piece in layout
    )
    template = f"{head.replace('%', '%%')} {body} %d"
    times = np.asarray(times_ns, dtype=np.int64).tolist()
    lines = [template % row for row in zip(*columns, times, strict=True)]
    if not missing.any():
        return lines
    for index in np.flatnonzero(missing).tolist():
        texts = [column[index] for column in columns]
        lines[index] = _partial_line(head, layout, column_keys, texts, times[index]) or ""
    return [line for line in lines if line]  # a template line is never empty


def _partial_line(
    head: str, layout: list[str | None], column_keys: list[str], texts: list[str | None], time_ns: int
) -> str | None:
    """The line of a row where some column has no value (NaN), as `to_line` writes it."""
    cells = iter(zip(column_keys, texts, strict=True))
    pieces = []
    for piece in layout:
        if piece is None:
            key, text = next(cells)
            if text is not None:
                pieces.append(f"{key}={text}")
        else:
            pieces.append(piece)
    if not pieces:
        return None
    return f"{head} {','.join(pieces)} {time_ns}"

"""Reading series from CSV/Parquet files and writing score tables (needs pandas: the `cli` extra).

A data file has one row per time step: an optional time column (ISO-8601 text
or epoch numbers), numeric channel columns, and optionally a 0/1 label column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from stad.client._exceptions import DataError
from stad.client._types import ScoreResult
from stad.core.quoting import quote, quote_names
from stad.core.types import FloatArray, IntArray

TIME_NAMES = ("time", "timestamp", "datetime", "date", "ts", "_time")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Never taken as channels unless named: label-like columns of common data sets.
LABEL_NAMES = ("label", "labels", "anomaly", "is_anomaly", "changepoint")


@dataclass(frozen=True)
class DataTable:
    """A series read from a file."""

    values: FloatArray  # (T, C)
    channels: tuple[str, ...]
    timestamps_ns: IntArray | None  # (T,) or None when the file has no time column
    time_column: str | None
    labels: IntArray | None  # (T,) 0/1, when a label column was named

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise DataError("reading data files needs pandas: pip install 'stad[cli]'") from exc
    return pandas


def read_table(
    path: str | Path,
    *,
    time_column: str | None = None,
    channels: Sequence[str] | None = None,
    label_column: str | None = None,
    sep: str = ",",
) -> DataTable:
    """Read a CSV or Parquet file; raises DataError naming the bad column or value."""
    pd = _pandas()
    path = check_data_path(path)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=sep)
    except ImportError as exc:
        raise DataError(f"reading {path.name} needs pyarrow: pip install pyarrow") from exc
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    if frame.shape[0] == 0:
        raise DataError(f"{str(path)!r} has no rows")
    columns = [str(name) for name in frame.columns]
    frame.columns = columns
    for name in (time_column, label_column, *(channels or ())):
        if name is not None and name not in columns:
            raise DataError(f"no column {quote(name)} in {path.name}; columns are {quote_names(columns)}")
    if time_column is None:
        time_column = _guess_time_column(frame)
    timestamps = None if time_column is None else _parse_time(frame[time_column], time_column)
    labels = None if label_column is None else _parse_labels(frame[label_column], label_column)
    if channels is None:
        skip = {time_column, label_column}
        channels = [
            name
            for name in columns
            if name not in skip
            and name.lower() not in LABEL_NAMES
            and pd.api.types.is_numeric_dtype(frame[name])
        ]
        if not channels:
            raise DataError(f"{path.name} has no numeric channel columns; columns are {quote_names(columns)}")
    for name in channels:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            row = _first_bad_row(frame[name], pd.to_numeric(frame[name], errors="coerce"))
            raise DataError(
                f"channel column {quote(name)} is not numeric: {quote(frame[name].iloc[row])} at row {row}"
            )
    values = frame[list(channels)].to_numpy(dtype=np.float64, na_value=np.nan)  # (T, C)
    if np.isinf(values).any():
        row, col = np.argwhere(np.isinf(values))[0]
        raise DataError(f"column {channels[col]!r} has an infinite value at row {row}")
    return DataTable(
        values=values,
        channels=tuple(channels),
        timestamps_ns=timestamps,
        time_column=time_column,
        labels=labels,
    )


def check_data_path(path: str | Path) -> Path:
    """`path` as a Path; DataError unless it is a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory, not a data file")
    if not path.is_file():
        raise DataError(f"no such file: {str(path)!r}")
    return path


def _guess_time_column(frame: Any) -> str | None:
    pd = _pandas()
    for name in frame.columns:
        if str(name).lower() in TIME_NAMES:
            return str(name)
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            return str(name)
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            try:
                _parse_time(column.head(20), str(name))
            except DataError:
                continue
            return str(name)
    return None


def _parse_time(column: Any, name: str) -> IntArray:
    pd = _pandas()
    if column.isna().any():
        raise DataError(f"time column {name!r} has an empty value at row {int(column.isna().argmax())}")
    if pd.api.types.is_numeric_dtype(column):
        stamps = _epoch_to_ns(column.to_numpy(dtype=np.float64))
    else:
        parsed = None
        for fmt in ("ISO8601", "mixed"):
            try:
                parsed = pd.to_datetime(column, utc=True, format=fmt)
                break
            except (ValueError, TypeError):
                continue
        if parsed is None:
            row = _first_bad_row(column, pd.to_datetime(column, utc=True, format="mixed", errors="coerce"))
            raise DataError(
                f"time column {quote(name)} is not date-time text: {quote(column.iloc[row])} at row {row}"
            )
        stamps = np.asarray(parsed.dt.tz_localize(None).dt.as_unit("ns").astype("int64"), dtype=np.int64)
    steps = np.diff(stamps)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise DataError(f"time column {name!r} is not strictly increasing at row {row}")
    return stamps


def _first_bad_row(column: Any, converted: Any) -> int:
    """The first row whose value did not convert (NaN/NaT where the column has a value)."""
    bad = np.flatnonzero(np.asarray(converted.isna()) & np.asarray(column.notna()))
    return int(bad[0]) if bad.size else 0


def check_output_path(path: str | Path) -> None:
    """Raise DataError unless a file can be written at `path` ('-': stdout), before any work."""
    if str(path) == "-":
        return
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise DataError(f"cannot write {str(target)!r}: it is a directory")
    if not parent.is_dir():
        raise DataError(f"cannot write {str(target)!r}: no directory {str(parent)!r}")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise DataError(f"cannot write {str(target)!r}: permission denied")


def _epoch_to_ns(seconds_or_finer: npt.NDArray[np.float64]) -> IntArray:
    """Epoch numbers to ns, taking the unit from the magnitude (s, ms, us or ns)."""
    magnitude = float(np.nanmax(np.abs(seconds_or_finer)))
    scale = 1 if magnitude > 1e17 else 1_000 if magnitude > 1e14 else 1_000_000 if magnitude > 1e11 else 10**9
    return np.round(seconds_or_finer * scale).astype(np.int64)


def _parse_labels(column: Any, name: str) -> IntArray:
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if bad.size:
        raise DataError(f"label column {name!r} must hold 0 or 1, got {values[bad[0]]:g} at row {bad[0]}")
    return np.asarray(values, dtype=np.int64)


def format_times(timestamps_ns: IntArray) -> list[str]:
    """ISO-8601 UTC text for nanosecond timestamps, at the coarsest unit that loses nothing."""
    unit = "ns"
    for candidate, size in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if not (timestamps_ns % size).any():
            unit = candidate
            break
    return [str(t) + "Z" for t in timestamps_ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]")]


def write_scores(out: str | Path | IO[str], table: DataTable, result: ScoreResult) -> None:
    """Write the score table: time, score, raw_score, threshold, is_anomaly, per-channel columns."""
    pd = _pandas()
    columns: dict[str, Any] = {}
    if table.timestamps_ns is not None:
        stamps = result.timestamps_ns if result.timestamps_ns.size else table.timestamps_ns
        columns[table.time_column or "time"] = format_times(stamps)
    else:
        columns["step"] = np.arange(result.start_step, result.start_step + result.steps)
    columns["score"] = result.score
    columns["raw_score"] = result.raw_score
    columns["threshold"] = np.full(result.steps, result.threshold)
    columns["is_anomaly"] = result.is_anomaly.astype(np.int64)
    for index, channel in enumerate(result.channels):
        columns[f"{channel}_contribution"] = result.contributions[:, index]
        columns[f"{channel}_expected"] = result.expected[:, index]
    pd.DataFrame(columns).to_csv(out, index=False, float_format="%.6g")

"""Turning user input into series: arrays, DataFrames, timestamps of several kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from stad.client import DataError, make_series
from stad.client._convert import timestamps_to_ns, to_series
from stad.client._types import flag_spans

MINUTE_NS = 60 * 10**9
START_NS = 1704067200 * 10**9  # 2024-01-01T00:00:00Z


def test_dataframe_with_a_time_column_or_a_datetime_index() -> None:
    frame = pd.DataFrame(
        {"time": pd.date_range("2024-01-01", periods=3, freq="min"), "a": [1.0, 2.0, 3.0], "b": [4, 5, 6]}
    )
    for given in (frame, frame.set_index("time")):
        series = to_series(given)
        assert series.channels == ("a", "b")
        assert series.timestamps_ns is not None
        assert series.timestamps_ns.tolist() == [START_NS, START_NS + MINUTE_NS, START_NS + 2 * MINUTE_NS]
        assert series.values.tolist() == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]


def test_timezone_aware_index_is_converted_to_utc() -> None:
    index = pd.date_range("2024-01-01 01:00", periods=2, freq="min", tz="Europe/Paris")
    series = to_series(pd.DataFrame({"a": [1.0, 2.0]}, index=index))
    assert series.timestamps_ns is not None
    assert series.timestamps_ns.tolist() == [START_NS, START_NS + MINUTE_NS]


def test_non_numeric_dataframe_columns_are_named() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "state": ["ok", "bad"]})
    with pytest.raises(DataError, match=r"not numeric: \['state'\]"):
        to_series(frame)


@pytest.mark.parametrize(
    "stamps",
    [
        np.array([START_NS, START_NS + MINUTE_NS]),
        np.array(["2024-01-01T00:00", "2024-01-01T00:01"], dtype="datetime64[m]"),
        [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)],
        pd.Series(pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"])),
    ],
)
def test_timestamps_of_every_kind(stamps: object) -> None:
    assert timestamps_to_ns(stamps).tolist() == [START_NS, START_NS + MINUTE_NS]  # type: ignore[arg-type]


def test_bad_timestamps_and_arguments() -> None:
    with pytest.raises(DataError, match="strictly increasing"):
        to_series(np.ones((2, 1)), timestamps=[5, 5])
    with pytest.raises(DataError, match="timestamps must be integer nanoseconds or datetimes"):
        timestamps_to_ns(np.array([0.5, 1.5]))
    series = make_series(np.ones((2, 1)), channels=["a"])
    assert to_series(series) is series
    with pytest.raises(DataError, match="inside the SeriesData"):
        to_series(series, channels=["a"])


def test_flag_spans() -> None:
    assert flag_spans([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert flag_spans([]) == []
    assert flag_spans([1, 1]) == [(0, 2)]

"""Reading data files: time detection, channels, labels and the errors that name the bad value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stad.client import DataError
from stad.client.data_files import format_times, read_table


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_iso_time_column_is_found_and_parsed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.csv",
        "when,x,y,label\n2024-01-01T00:00:00Z,1,2,0\n2024-01-01T00:01:00Z,3,,1\n",
    )
    table = read_table(path, label_column="label")
    assert table.time_column == "when"
    assert table.channels == ("x", "y")
    assert table.timestamps_ns is not None
    assert table.timestamps_ns.tolist() == [1704067200 * 10**9, 1704067260 * 10**9]
    assert np.isnan(table.values[1, 1])
    assert table.labels is not None and table.labels.tolist() == [0, 1]


def test_skab_style_semicolons_named_time_and_label_like_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.csv",
        "datetime;Pressure;Temp;anomaly;changepoint\n"
        "2020-03-09 10:14:33;0.1;20.5;0.0;0.0\n"
        "2020-03-09 10:14:34;0.2;20.6;1.0;0.0\n",
    )
    table = read_table(path, sep=";")
    assert table.time_column == "datetime"
    assert table.channels == ("Pressure", "Temp")  # label-like columns are not channels
    chosen = read_table(path, sep=";", channels=["Temp"], label_column="anomaly")
    assert chosen.channels == ("Temp",)
    assert chosen.labels is not None and chosen.labels.tolist() == [0, 1]


def test_epoch_numbers_take_their_unit_from_the_magnitude(tmp_path: Path) -> None:
    seconds = _write(tmp_path / "s.csv", "time,x\n1700000000,1\n1700000060,2\n")
    millis = _write(tmp_path / "ms.csv", "time,x\n1700000000000,1\n1700000060000,2\n")
    for path in (seconds, millis):
        stamps = read_table(path).timestamps_ns
        assert stamps is not None
        assert stamps.tolist() == [1700000000 * 10**9, 1700000060 * 10**9]


def test_file_without_time_column(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path / "p.csv", "x,y\n1,2\n3,4\n"))
    assert table.time_column is None and table.timestamps_ns is None
    assert table.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"time": pd.date_range("2024-01-01", periods=3, freq="min", tz="UTC"), "x": [1.0, 2.0, 3.0]}
    )
    frame.to_parquet(tmp_path / "d.parquet")
    table = read_table(tmp_path / "d.parquet")
    assert table.time_column == "time"
    assert table.timestamps_ns is not None
    assert np.diff(table.timestamps_ns).tolist() == [60 * 10**9] * 2


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("time,x\n2024-01-01,1\n", {"time_column": "t"}, "no column 't'"),
        ("time,x\n2024-01-02,1\n2024-01-01,2\n", {}, "not strictly increasing at row 1"),
        ("x,label\n1,0\n2,3\n", {"label_column": "label"}, "must hold 0 or 1, got 3 at row 1"),
        ("x,name\n1,a\n", {"channels": ["name"]}, "channel column 'name' is not numeric"),
        ("name\na\n", {}, "no numeric channel columns"),
        ("time,x\n2024-01-01,1\n2024-01-02,inf\n", {}, "column 'x' has an infinite value at row 1"),
        ("time,x\n", {}, "has no rows"),
    ],
)
def test_bad_files_name_the_problem(
    tmp_path: Path, text: str, kwargs: dict[str, object], message: str
) -> None:
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        read_table(path, **kwargs)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")


def test_format_times_uses_the_coarsest_exact_unit() -> None:
    assert format_times(np.array([0, 60 * 10**9])) == ["1970-01-01T00:00:00Z", "1970-01-01T00:01:00Z"]
    assert format_times(np.array([1_500_000])) == ["1970-01-01T00:00:00.001500Z"]

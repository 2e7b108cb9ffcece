"""Column-wise line protocol (influx_task/lines.py) against the one-point `to_line`, byte for byte."""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt
import pytest

from stad.client import ScoreResult
from stad.influx_task.config import Pipeline
from stad.influx_task.lines import FieldColumn, float_texts, to_lines
from stad.influx_task.output import output_tags, score_lines
from stad.influx_task.points import FieldValue, Point, format_field, point_lines, to_line

S = 10**9
# Names that need escapes in line protocol, and '%' that must not reach a format string raw.
ODD_NAMES = ("a b", "c,d", "e=f", "p%s", "q%d", "r%%", "ü ñ", "plain")
ODD_TEXTS = ("", 'say "hi"', "back\\slash", "two\nlines", "a,b=c d", "%s%d%%", "ünï")


def _odd_floats(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    """Doubles of every kind: random bit patterns (subnormals, NaN, huge), the edges where
    orjson's notation and repr's part, integers, tiny and signed zeros."""
    edges = [1e-4, 1e15, 1e16, 2.0**53, 999999999999999.0, 5e-324, 0.1 + 0.2, 1e-5, 1.5e-7]
    edges += [np.nextafter(e, d) for e in (1e-4, 1e15) for d in (0.0, np.inf)]
    edges += [0.0, -0.0, np.nan, np.inf, -np.inf, -1e-5, -1e300]
    parts = [
        rng.integers(0, 2**64, size=n, dtype=np.uint64).view(np.float64),
        rng.choice([-1.0, 1.0], size=n) * 10 ** rng.uniform(-6, 17, size=n),
        np.round(10 ** rng.uniform(0, 16, size=n)),
        rng.normal(size=n),
        np.array(edges),
    ]
    return np.concatenate(parts)


def test_float_texts_are_repr_of_each_value() -> None:
    rng = np.random.default_rng(7)
    values = _odd_floats(rng, 200_000)
    expected = [format_field(v) for v in values.tolist()]
    assert float_texts(values) == expected
    assert float_texts(values[::3]) == expected[::3]  # not contiguous
    single = rng.normal(size=10_000).astype(np.float32)  # float() of a float32 is its exact double
    assert float_texts(single) == [format_field(float(v)) for v in single]
    assert float_texts(np.array([])) == []


def _random_columns(rng: np.random.Generator, rows: int, constants: bool) -> list[tuple[str, FieldColumn]]:
    floats = _odd_floats(rng, rows)
    columns: list[tuple[str, FieldColumn]] = []
    for index, name in enumerate(ODD_NAMES):
        kind = index % 4
        if kind == 0:
            columns.append((f"{name}_f", rng.permutation(floats)[:rows]))
        elif kind == 1:
            columns.append((f"{name}_b", rng.random(rows) < 0.5))
        elif kind == 2:
            columns.append((f"{name}_i", rng.integers(-(2**62), 2**62, size=rows)))
        else:
            columns.append((f"{name}_s", [ODD_TEXTS[k] for k in rng.integers(0, len(ODD_TEXTS), rows)]))
    if constants:
        fixed: list[FieldValue] = [0.25, float("nan"), -3, True, "v%s 1,2"]
        for value, name in zip(fixed, ODD_NAMES, strict=False):
            columns.insert(int(rng.integers(0, len(columns) + 1)), (f"{name}_const", value))
    return columns


def _row_value(column: FieldColumn, row: int) -> FieldValue:
    if isinstance(column, np.ndarray):
        value: FieldValue = column[row].item()
        return value
    if isinstance(column, list):
        return column[row]
    return column


def _one_by_one(
    measurement: str,
    tags: dict[str, str],
    columns: list[tuple[str, FieldColumn]],
    times: npt.NDArray[np.int64],
) -> list[str]:
    return point_lines(
        Point(measurement, tags, {name: _row_value(c, row) for name, c in columns}, int(t))
        for row, t in enumerate(times)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("constants", [False, True])
def test_to_lines_matches_to_line_on_odd_values_and_names(seed: int, constants: bool) -> None:
    rng = np.random.default_rng(seed)
    rows = 3000
    columns = _random_columns(rng, rows, constants)
    times = rng.integers(-(2**62), 2**62, size=rows)
    tags = {name: text for name, text in zip(ODD_NAMES, ODD_TEXTS, strict=False)}  # one value empty
    measurement = "m e,a%s=s"
    lines = to_lines(measurement, tags, columns, times)
    assert lines == _one_by_one(measurement, tags, columns, times)
    assert any("\\ " in line and "%s" in line for line in lines)


def test_rows_whose_fields_are_all_nan_have_no_line() -> None:
    nan, times = float("nan"), np.array([1, 2, 3, 4])
    columns: list[tuple[str, FieldColumn]] = [
        ("a", np.array([1.0, nan, nan, -0.0])),
        ("b", np.array([nan, nan, 2.5, np.inf])),
    ]
    lines = to_lines("m", {"t": "x"}, columns, times)
    assert lines == ["m,t=x a=1.0 1", "m,t=x b=2.5 3", "m,t=x a=-0.0 4"]
    assert lines == _one_by_one("m", {"t": "x"}, columns, times)
    assert to_lines("m", {}, [("a", nan)], times) == []  # only a NaN constant: nothing to write
    assert to_lines("m", {}, [("a", 1.5), ("b", "x")], times[:2]) == ['m a=1.5,b="x" 1', 'm a=1.5,b="x" 2']


@pytest.mark.parametrize(
    ("measurement", "columns", "message"),
    [
        ("", [("a", np.zeros(2))], "empty measurement"),
        ("m", [("a", np.zeros(3))], "field 'a': (3,) values for 2 rows"),
        ("m", [("a", np.zeros((2, 1)))], "field 'a'"),
        ("m", [("a", ["x"])], "field 'a': a list column must hold 2 strings"),
        ("m", [("a", np.array(["x", "y"]))], "cannot write a column of dtype <U1"),
    ],
)
def test_malformed_columns_are_refused(
    measurement: str, columns: list[tuple[str, FieldColumn]], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        to_lines(measurement, {}, columns, np.array([1, 2]))


def _score_point(pipeline: Pipeline, tags: dict[str, str], result: ScoreResult, i: int) -> Point:
    """One anomaly_scores point as the task wrote it step by step: the field list and its
    order are the contract that dashboards and queries read."""
    fields: dict[str, FieldValue] = {
        "score": float(result.score[i]),
        "raw_score": float(result.raw_score[i]),
        "threshold": float(result.threshold),
        "is_anomaly": bool(result.is_anomaly[i]),
        "severity": float(result.severity[i]),
    }
    channels = result.channels
    fields.update({f"contrib_{n}": float(result.contributions[i, c]) for c, n in enumerate(channels)})
    fields.update({f"expected_{n}": float(result.expected[i, c]) for c, n in enumerate(channels)})
    for c, name in enumerate(channels):
        fields[f"lower_{name}"] = float(result.lower[i, c])
        fields[f"upper_{name}"] = float(result.upper[i, c])
    fields["drift"] = bool(result.out_of_range[i])
    fields["drift_channels"] = ",".join(
        n for c, n in enumerate(channels) if result.out_of_range_channels[i, c]
    )
    fields["model_version"] = result.version
    return Point(
        pipeline.output_measurement, output_tags(pipeline, tags), fields, int(result.timestamps_ns[i])
    )


def test_score_lines_are_the_step_by_step_points() -> None:
    rng = np.random.default_rng(3)
    steps, channels = 2000, ("flow rate", "p,1", "t=2", "ok")
    shape = (steps, len(channels))

    def floats(*size: int) -> npt.NDArray[np.float64]:
        values = rng.normal(size=size) * 10 ** rng.uniform(-6, 6, size=size)
        values[rng.random(size) < 0.03] = np.nan
        return values

    expected = floats(*shape)
    expected[::50, 0] = -0.0
    result = ScoreResult(
        timestamps_ns=1_700_000_000 * S + np.arange(steps, dtype=np.int64) * 10 * S,
        score=np.abs(floats(steps)),
        raw_score=floats(steps),
        is_anomaly=rng.random(steps) < 0.1,
        severity=rng.random(steps) * 100,
        threshold=0.1 + 0.2,
        channels=channels,
        contributions=rng.dirichlet(np.ones(len(channels)) * 0.05, size=steps),  # many tiny shares
        expected=expected,
        model="m",
        version='7 "x"',
        lower=floats(*shape),
        upper=floats(*shape),
        out_of_range=rng.random(steps) < 0.2,
        out_of_range_channels=rng.random(shape) < 0.1,
    )
    pipeline = Pipeline(
        name="j", database="d", measurement="pump", fields=channels, model="m", interval_ns=10 * S
    )
    tags = {"site": "north 1", "unit": ""}
    keep = (rng.random(steps) < 0.9) & np.isfinite(result.score)
    lines = score_lines(pipeline, tags, result, keep)
    reference = [to_line(_score_point(pipeline, tags, result, i)) for i in np.flatnonzero(keep)]
    assert len(lines) == int(keep.sum())
    assert lines == reference
    assert score_lines(pipeline, tags, result, np.zeros(steps, dtype=bool)) == []

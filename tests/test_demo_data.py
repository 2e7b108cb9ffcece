"""The demo-data generator: determinism, shapes, labelled anomalies of every kind, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from stad.core import demo_data
from stad.core.demo_data import KINDS, generate


@pytest.fixture(scope="module")
def data() -> demo_data.DemoData:
    return generate(seed=3)


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, again, other = generate(seed=5), generate(seed=5), generate(seed=6)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.anomalies == again.anomalies
    assert not np.allclose(first.values, other.values)
    assert first.anomalies != other.anomalies


def test_shapes_and_time_axis(data: demo_data.DemoData) -> None:
    steps, channels = 14 * 1440, 8
    assert data.values.shape == (steps, channels)
    assert data.labels.shape == (steps,)
    assert data.timestamps_ns.shape == (steps,)
    assert len(data.channels) == len(set(data.channels)) == channels
    assert np.isfinite(data.values).all()
    assert (np.diff(data.timestamps_ns) == 60 * 10**9).all()
    assert data.timestamps_ns[0] == np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64)
    small = generate(steps=3000, channels=11, freq_s=120, start="2025-06-01T12:00:00Z")
    assert small.values.shape == (3000, 11)
    assert (np.diff(small.timestamps_ns) == 120 * 10**9).all()


def test_quiet_period_has_no_anomalies(data: demo_data.DemoData) -> None:
    assert data.quiet_steps == data.values.shape[0] // 2
    assert not data.labels[: data.quiet_steps].any()
    assert all(anomaly.start >= data.quiet_steps for anomaly in data.anomalies)
    assert data.train.shape == (data.quiet_steps, 8)


def test_every_kind_is_present_and_labelled(data: demo_data.DemoData) -> None:
    assert sorted({anomaly.kind for anomaly in data.anomalies}) == sorted(KINDS)
    covered = np.zeros_like(data.labels)
    for anomaly in data.anomalies:
        assert anomaly.end > anomaly.start
        assert data.labels[anomaly.start : anomaly.end].all()
        assert set(anomaly.channels) <= set(data.channels) and anomaly.channels
        covered[anomaly.start : anomaly.end] = True
    np.testing.assert_array_equal(covered, data.labels)  # nothing labelled outside them


@pytest.fixture(scope="module")
def clean() -> demo_data.DemoData:
    return generate(seed=3, anomalies_per_kind=0)


def test_anomalies_change_only_their_span_and_channels(
    data: demo_data.DemoData, clean: demo_data.DemoData
) -> None:
    assert clean.anomalies == () and not clean.labels.any()
    outside = ~data.labels
    np.testing.assert_array_equal(data.values[outside], clean.values[outside])
    for anomaly in data.anomalies:
        span = slice(anomaly.start, anomaly.end)
        changed = (data.values[span] != clean.values[span]).any(axis=0)
        assert tuple(np.array(data.channels)[changed]) == anomaly.channels, anomaly


def test_spikes_and_shifts_move_far(data: demo_data.DemoData, clean: demo_data.DemoData) -> None:
    spread = data.train.std(axis=0)
    moved = {"spike": 3.0, "level_shift": 1.0, "pattern_change": 0.3, "variance_change": 0.2}
    for anomaly in data.anomalies:
        if anomaly.kind not in moved:
            continue
        columns = [data.channels.index(name) for name in anomaly.channels]
        span = slice(anomaly.start, anomaly.end)
        gap = np.abs(data.values[span, columns] - clean.values[span, columns]).mean(axis=0)
        assert (gap / spread[columns] > moved[anomaly.kind]).all(), (anomaly, gap)


def test_correlation_break_stays_in_range_but_decouples(
    data: demo_data.DemoData, clean: demo_data.DemoData
) -> None:
    breaks = [a for a in data.anomalies if a.kind == "correlation_break"]
    assert breaks
    low, high = data.train.min(axis=0), data.train.max(axis=0)
    for anomaly in breaks:
        (name,) = anomaly.channels
        column = data.channels.index(name)
        span = slice(anomaly.start, anomaly.end)
        assert (data.values[span, column] >= low[column]).all()
        assert (data.values[span, column] <= high[column]).all()
        peers = [c for c in range(3) if c != column]  # flow_rate, pump_power, pressure
        for peer in peers:
            coupled = np.corrcoef(clean.values[span, column], clean.values[span, peer])[0, 1]
            broken = np.corrcoef(data.values[span, column], data.values[span, peer])[0, 1]
            assert coupled > 0.7, coupled
            assert broken < coupled - 0.5, (broken, coupled)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="channels must be >= 3, got 2"):
        generate(channels=2)
    with pytest.raises(ValueError, match="steps must cover at least two days"):
        generate(steps=100)
    with pytest.raises(ValueError, match="too little room"):
        generate(steps=2 * 1440, anomalies_per_kind=20)
    with pytest.raises(ValueError, match="start must be an ISO-8601 time, got 'yesterday'"):
        generate(start="yesterday")


def test_cli_writes_train_and_test(tmp_path: Path) -> None:
    assert demo_data.main(["--out", str(tmp_path), "--seed", "1", "--steps", "4320"]) == 0
    expected = generate(seed=1, steps=4320)
    with (tmp_path / "train.csv").open() as handle:
        train = list(csv.reader(handle))
    with (tmp_path / "test.csv").open() as handle:
        test = list(csv.reader(handle))
    assert train[0] == ["time", *expected.channels]
    assert test[0] == ["time", *expected.channels, "label"]
    assert len(train) - 1 == expected.quiet_steps
    assert len(test) - 1 == 4320 - expected.quiet_steps
    assert train[1][0] == "2026-01-05T00:00:00Z"
    assert float(train[1][1]) == pytest.approx(expected.values[0, 0], rel=1e-5)
    labels = np.array([int(row[-1]) for row in test[1:]])
    np.testing.assert_array_equal(labels, expected.labels[expected.quiet_steps :])
    listing = json.loads((tmp_path / "anomalies.json").read_text())["anomalies"]
    assert [item["kind"] for item in listing] == [a.kind for a in expected.anomalies]
    assert listing[0]["start"] == expected.anomalies[0].start - expected.quiet_steps


def test_cli_says_what_is_wrong_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_data.main(["--out", str(tmp_path), "--steps", "3000"]) == 2
    assert capsys.readouterr().err == (
        "python -m stad.core.demo_data: steps=3000 leaves too little room after the quiet period "
        "(1500 steps) for 10 anomalies; use more steps\n"
    )
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert demo_data.main(["--out", str(a_file), "--steps", "4320"]) == 2
    expected = f"python -m stad.core.demo_data: cannot write to {a_file}: File exists\n"
    assert capsys.readouterr().err == expected

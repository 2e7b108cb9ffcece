"""The InfluxDB step of `make demo`, on a short series and a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from stad.influx_task.demo import round_trip
from stad.influx_task.local_influxd import Influxd
from tests.kit import TINY_SETTINGS


@pytest.mark.slow
def test_round_trip_reads_scores_back_and_reports_metrics(
    influxd: Influxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFLUX_URL", influxd.url)
    assert round_trip(tmp_path, steps=4320, settings=TINY_SETTINGS) == 0
    out = capsys.readouterr().out
    steps_back = int(out.split("scores read back from anomaly_scores: ")[1].split()[0])
    assert steps_back == 2160  # the half after the quiet period, every step once
    for key in ("precision", "recall", "vus_pr", "standard_f1"):
        assert key in out
    assert (tmp_path / "influx_scores.png").read_bytes()[:4] == b"\x89PNG"


def test_round_trip_without_any_influxdb_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFLUX_URL", "http://127.0.0.1:9")  # nothing answers there
    monkeypatch.setattr("stad.influx_task.demo.influxd_path", lambda: None)  # and no influxd installed
    assert round_trip(tmp_path / "out", steps=4320, settings=TINY_SETTINGS) == 0
    assert "no InfluxDB" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()

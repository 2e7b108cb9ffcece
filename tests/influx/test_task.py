"""End to end: demo series in a real influxd, a real gRPC server, training and scoring through the task."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stad.client import Client
from stad.core.demo_data import DemoData
from stad.core.detector_config import ScoringConfig
from stad.core.events import EventFilter
from stad.core.series import make_series
from stad.influx_task.config import Connection, Pipeline
from stad.influx_task.geometry import Geometry
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.local_influxd import Influxd, free_port
from stad.influx_task.runner import ChunkReport, PassStats
from stad.influx_task.task import Task
from stad.influx_task.transport import Transport
from stad.server.embedded import EmbeddedServer
from tests.influx import kit
from tests.influx.kit import CONTEXT, LOOKBACK, SETTLE, STEP, STEP_S, STEPS, UNITS, WINDOW


def test_once_writes_scores_equal_to_direct_scoring(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData]
) -> None:
    database, data = trained
    end = int(data.timestamps_ns[-1]) + SETTLE
    first = STEPS - 300
    job = kit.pipeline(database, data, initial_lookback_ns=end - int(data.timestamps_ns[first]))
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: end) as task:
        outcome = task.once()
    stats = outcome["pumps"]
    assert not isinstance(stats, Exception)
    assert stats.steps == 2 * 300
    rows = kit.scores(influxd.url, database)
    assert len(rows) == 2 * 300
    assert {(r["model"], r["source_measurement"], r["plant"]) for r in rows} == {("pumps", "pump", "p1")}
    scoring = ScoringConfig()  # the model's event filter: the task sends its lookback too
    lookback = EventFilter(scoring.min_duration, scoring.merge_gap).lookback
    geometry = Geometry(
        window=WINDOW, stride=WINDOW // 2, smoothing=1, interval_ns=STEP, event_lookback=lookback
    )
    send_from = geometry.send_from(int(data.timestamps_ns[first]), CONTEXT)
    send_until = geometry.send_until(end)
    grid = np.arange(send_from, send_until, STEP, dtype=np.int64)
    values = np.full((grid.size, len(data.channels)), np.nan)
    values[: STEPS - (send_from - int(data.timestamps_ns[0])) // STEP] = data.values[
        (send_from - int(data.timestamps_ns[0])) // STEP :
    ]
    with Client(server.target) as client:
        for u, unit in enumerate(UNITS):
            series = make_series(values + u, channels=data.channels, timestamps_ns=grid)
            direct = client.score_many(
                [series], model="pumps", return_from_ns=int(data.timestamps_ns[first])
            )[0]
            direct = replace(
                direct,
                **{
                    name: getattr(direct, name)[:300]
                    for name in (
                        "timestamps_ns",
                        "score",
                        "raw_score",
                        "is_anomaly",
                        "contributions",
                        "expected",
                        "lower",
                        "upper",
                        "out_of_range",
                    )
                },
            )
            mine = sorted((r for r in rows if r["unit"] == unit), key=lambda r: int(r["time"]))  # type: ignore[call-overload]
            assert [r["time"] for r in mine] == direct.timestamps_ns.tolist()
            assert [r["score"] for r in mine] == direct.score.tolist()  # bit for bit
            np.testing.assert_array_equal([r["raw_score"] for r in mine], direct.raw_score)
            assert [r["is_anomaly"] for r in mine] == direct.is_anomaly.tolist()
            for c, name in enumerate(data.channels):
                np.testing.assert_array_equal([r[f"expected_{name}"] for r in mine], direct.expected[:, c])
                np.testing.assert_array_equal(
                    [r[f"contrib_{name}"] for r in mine], direct.contributions[:, c]
                )
                for side in ("lower", "upper"):
                    np.testing.assert_allclose(
                        [r[f"{side}_{name}"] for r in mine], getattr(direct, side)[:, c], rtol=1e-12
                    )
            assert [r["drift"] for r in mine] == direct.out_of_range.tolist()
            assert {r["model_version"] for r in mine} == {direct.version}
            episodes = direct.spans()
            events = kit.query(
                influxd.url, database, f'SELECT * FROM "anomaly_events" WHERE "unit" = \'{unit}\''
            )
            starts = [int(direct.timestamps_ns[a]) for a, _ in episodes]
            assert [v[0] for v in events[0]["values"]] == starts if starts else events == []
    # A second pass has nothing new; a backfill of the same range overwrites, never duplicates.
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: end) as task:
        again = task.once()["pumps"]
        assert not isinstance(again, Exception) and again.steps == 0
        task.backfill("pumps", int(data.timestamps_ns[first]), end)
    assert len(kit.scores(influxd.url, database)) == 2 * 300


def test_drift_is_written_flagged_and_logged(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, data = trained
    database = "drift"
    influxd.query(f'CREATE DATABASE "{database}"')
    values = data.values.copy()
    values[-20:, 1] = 1e6  # the second channel goes off-scale for the last 20 steps
    kit.write_demo(influxd.url, database, replace(data, values=values))
    end = int(data.timestamps_ns[-1]) + SETTLE
    job = kit.pipeline(database, data, initial_lookback_ns=end - int(data.timestamps_ns[STEPS - 100]))
    with (
        caplog.at_level("WARNING", logger="stad.influx_task"),
        Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: end) as task,
    ):
        stats = task.once()["pumps"]
    assert not isinstance(stats, Exception)
    rows = sorted(kit.scores(influxd.url, database), key=lambda r: int(r["time"]))  # type: ignore[call-overload]
    off = data.channels[1]
    for unit in UNITS:
        mine = [r for r in rows if r["unit"] == unit]
        assert len(mine) == 100
        # the demo's own anomalies may leave the range too; the off-scale steps always do
        assert all(r["drift"] and off in str(r["drift_channels"]).split(",") for r in mine[-20:])
        assert all(r["is_anomaly"] and r["score"] >= r["threshold"] for r in mine[-20:])  # type: ignore[operator]
        assert all(r["drift"] == (r["drift_channels"] != "") for r in mine)
    logged = [r.getMessage() for r in caplog.records if "warning: " in r.getMessage()]
    assert len(logged) == 2  # one per series
    assert all("(drift)" in line and f"{off} (" in line for line in logged)


def _count(url: str, database: str, measurement: str = "anomaly_scores") -> int:
    rows = kit.scores(url, database) if measurement == "anomaly_scores" else []
    if measurement != "anomaly_scores":
        series = kit.query(url, database, f'SELECT * FROM "{measurement}"')
        return sum(len(s["values"]) for s in series)
    return len(rows)


def _assert_no_gap_no_duplicate(url: str, database: str, data: DemoData) -> None:
    rows = kit.scores(url, database)
    assert len(rows) == 2 * STEPS  # exactly one point per data step and series
    for unit in UNITS:
        times = sorted(int(r["time"]) for r in rows if r["unit"] == unit)  # type: ignore[call-overload]
        assert times == data.timestamps_ns.tolist()


def _wait_for_scores(url: str, database: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait (up to 120 s) for the task in `process` to write its first scores."""
    deadline = time.monotonic() + 120
    while _count(url, database) == 0:
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)  # polling the condition


def test_kill_mid_run_and_restart_leaves_no_gap_no_duplicate(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], tmp_path: Path, database: str
) -> None:
    data = kit.write_real_clock_demo(influxd.url, database)
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
[influx]
url = "{influxd.url}"
[server]
target = "{server.target}"
[retry]
base_ms = 20
cap_ms = 300
{kit.pipeline_toml(database, data)}
tag_filter = {{ plant = "p1" }}
context = {CONTEXT}
initial_lookback = "{2 * STEPS * STEP_S}s"
chunk_steps = 10
""")
    command = [sys.executable, "-m", "stad.influx_task", "once", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_scores(influxd.url, database, process, log_path)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert 0 < _count(influxd.url, database) < 2 * STEPS  # it was killed mid-run
    finished = subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout.decode() + finished.stderr.decode()
    _assert_no_gap_no_duplicate(influxd.url, database, data)


def _fixed_job(database: str, data: DemoData) -> Pipeline:
    return kit.pipeline(database, data, chunk_steps=50, initial_lookback_ns=LOOKBACK)


def _once_through_outage(
    url: str,
    target: str,
    database: str,
    data: DemoData,
    *,
    stop: Callable[[], None],
    start: Callable[[], None],
) -> tuple[threading.Event, dict[str, PassStats | Exception], list[ChunkReport]]:
    """One pass over the data that calls `stop` after the first chunk and `start` once the task retries.

    Returns the retry event, the pass's outcome and the chunks reported.
    """
    end = int(data.timestamps_ns[-1]) + SETTLE
    failed = threading.Event()
    stopped = threading.Event()  # the other stages may fail while `stop` is still under way
    chunks: list[ChunkReport] = []

    def after_chunk(report: ChunkReport) -> None:
        chunks.append(report)
        if len(chunks) == 1:
            assert report.points > 0
            stop()
            stopped.set()

    def restart_when_failed() -> None:
        assert failed.wait(timeout=120) and stopped.wait(timeout=120)
        start()

    restarter = threading.Thread(target=restart_when_failed)
    restarter.start()
    with Task(
        kit.config(url, target, (_fixed_job(database, data),)),
        now_ns=lambda: end,
        on_chunk=after_chunk,
        on_retry=lambda *_: failed.set(),
    ) as task:
        outcome = task.once()
    restarter.join(timeout=130)
    return failed, outcome, chunks


def test_influxd_stopped_mid_run_retries_and_catches_up(
    own_influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData]
) -> None:
    own_influxd.query('CREATE DATABASE "d"')
    data = trained[1]
    kit.write_demo(own_influxd.url, "d", data)
    failed, outcome, chunks = _once_through_outage(
        own_influxd.url, server.target, "d", data, stop=own_influxd.stop, start=own_influxd.start
    )
    assert failed.is_set() and not isinstance(outcome["pumps"], Exception)
    assert len(chunks) == -(-LOOKBACK // (50 * STEP))
    _assert_no_gap_no_duplicate(own_influxd.url, "d", data)


def test_server_down_mid_run_retries_and_catches_up(
    influxd: Influxd, model_dir: Path, trained: tuple[str, DemoData], database: str
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    port = free_port()
    first = EmbeddedServer(model_dir, device="cpu")
    first.settings = replace(first.settings, address=f"127.0.0.1:{port}")
    first.start()
    second = EmbeddedServer(model_dir, device="cpu")
    second.settings = replace(second.settings, address=f"127.0.0.1:{port}")
    try:
        failed, outcome, _ = _once_through_outage(
            influxd.url, f"127.0.0.1:{port}", database, data, stop=first.stop, start=second.start
        )
    finally:
        first.stop()
        second.stop()
    assert failed.is_set() and not isinstance(outcome["pumps"], Exception)
    _assert_no_gap_no_duplicate(influxd.url, database, data)


def test_late_points_inside_offset_are_scored_next_pass(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    data = trained[1]
    late = 3  # the last three steps arrive late
    transport = Transport(Connection(url=influxd.url))
    on_time = replace(data, values=data.values[:-late], timestamps_ns=data.timestamps_ns[:-late])
    kit.write_demo(influxd.url, database, on_time)
    offset = late * STEP
    clock = [int(data.timestamps_ns[-late]) + offset]  # the late steps are not final yet
    job = kit.pipeline(database, data, offset_ns=offset, initial_lookback_ns=LOOKBACK)
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: clock[0]) as task:
        first = task.once()["pumps"]
        assert not isinstance(first, Exception)
        scored = {int(r["time"]) for r in kit.scores(influxd.url, database)}  # type: ignore[call-overload]
        assert max(scored) < int(data.timestamps_ns[-late])
        kit.write_demo(influxd.url, database, data)  # the late points land inside the offset
        clock[0] = int(data.timestamps_ns[-1]) + SETTLE + offset
        second = task.once()["pumps"]
    transport.close()
    assert not isinstance(second, Exception) and second.steps == 2 * STEPS - first.steps
    _assert_no_gap_no_duplicate(influxd.url, database, data)


def test_sigterm_finishes_the_chunk_and_exits_zero(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], tmp_path: Path, database: str
) -> None:
    data = kit.write_real_clock_demo(influxd.url, database)
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
[server]
target = "{server.target}"
{kit.pipeline_toml(database, data)}
context = {CONTEXT}
initial_lookback = "{LOOKBACK // 10**9}s"
chunk_steps = 5
every = "1h"
""")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stad.influx_task", "run", "--config", str(config), "--url", influxd.url],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_scores(influxd.url, database, process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    checkpoints = kit.query(
        influxd.url, database, 'SELECT last("next_ns") FROM "stad_checkpoint" GROUP BY "series"'
    )
    done = {s["tags"]["series"]: int(s["values"][0][1]) for s in checkpoints}
    rows = kit.scores(influxd.url, database)
    assert 0 < len(rows) < 2 * STEPS
    for unit in UNITS:
        times = sorted(int(r["time"]) for r in rows if r["unit"] == unit)  # type: ignore[call-overload]
        expected = [t for t in data.timestamps_ns.tolist() if t < done[f"pump,unit={unit}"]]
        assert times == expected  # exactly the chunks the checkpoint covers: nothing half done


def test_shards_split_series_between_workers(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    from stad.influx_task.runner import Shard

    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    end = int(data.timestamps_ns[-1]) + SETTLE
    job = kit.pipeline(database, data, initial_lookback_ns=LOOKBACK)
    owners = {}
    read = {}
    for index in range(2):
        before = {r["unit"] for r in kit.scores(influxd.url, database)}
        reports: list[ChunkReport] = []
        with Task(
            kit.config(influxd.url, server.target, (job,)),
            shard=Shard(index, 2),
            now_ns=lambda: end,
            on_chunk=reports.append,
        ) as task:
            task.once()
        owners[index] = {r["unit"] for r in kit.scores(influxd.url, database)} - before
        read[index] = sum(r.read for r in reports)
    assert owners[0] | owners[1] == set(UNITS) and not owners[0] & owners[1]
    assert read[0] + read[1] == data.values.size * len(UNITS)  # each shard reads its own series only
    assert {unit: Shard(0, 2).owns(f"pump,plant=p1,unit={unit}") for unit in UNITS} == {
        unit: unit in owners[0] for unit in UNITS
    }
    _assert_no_gap_no_duplicate(influxd.url, database, data)


def test_cli_reports_errors_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stad.influx_task.cli import main

    assert main(["once", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "FileNotFoundError" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[jobs]]\nname = "x"\ndatabase = "d"\nmeasurement = "m"\nfields = ["a"]\n'
        'model = "m"\ninterval = "ten seconds"\n'
    )
    assert main(["once", "--config", str(bad)]) == 1
    assert "ConfigError: [[pipelines]] 'x' interval: bad duration 'ten seconds'" in capsys.readouterr().err


def test_cli_backfill_shows_progress_and_writes(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    tmp_path: Path,
    database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stad.influx_task.cli import main

    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
{kit.pipeline_toml(database, data)}
context = {CONTEXT}
chunk_steps = 100
""")
    start, stop = int(data.timestamps_ns[100]), int(data.timestamps_ns[300])
    code = main(
        [
            "backfill",
            "--config",
            str(config),
            "--url",
            influxd.url,
            "--server",
            server.target,
            "--job",
            "pumps",
            "--start",
            str(start),
            "--stop",
            str(stop),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "100% 200/200 steps" in captured.err and "\r" not in captured.err  # stderr is no terminal
    assert "pumps: 2 series, 2 chunks, 400 steps scored" in captured.out
    times = sorted({int(r["time"]) for r in kit.scores(influxd.url, database)})  # type: ignore[call-overload]
    assert times == data.timestamps_ns[100:300].tolist()


def test_a_failing_job_does_not_stop_the_others(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    end = int(data.timestamps_ns[-1]) + SETTLE
    broken = kit.pipeline("no_such_db", data, name="broken")
    good = kit.pipeline(database, data, name="good", initial_lookback_ns=LOOKBACK)
    with Task(kit.config(influxd.url, server.target, (broken, good)), now_ns=lambda: end) as task:
        outcome = task.once()
    assert isinstance(outcome["broken"], Exception) and "no_such_db" in str(outcome["broken"])
    good_stats = outcome["good"]
    assert not isinstance(good_stats, Exception) and good_stats.steps == 2 * STEPS
    _assert_no_gap_no_duplicate(influxd.url, database, data)


@pytest.mark.slow
def test_cli_train_pulls_history_and_activates(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stad.influx_task.cli import main

    database, data = trained
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
[influx]
url = "{influxd.url}"
[server]
target = "{server.target}"
{kit.pipeline_toml(database, data, name="cli", model="pumps_cli")}
tag_filter = {{ unit = "1" }}
""")
    start, stop = int(data.timestamps_ns[0]), int(data.timestamps_ns[100])
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--job",
            "cli",
            "--start",
            str(start),
            "--stop",
            str(stop),
            "--activate",
            "--epochs",
            "1",
            "--window",
            "16",
            "--patch",
            "4",
            "--d-model",
            "16",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trained pumps_cli version 1 on 100 steps" in captured.out
    assert "succeeded" in captured.err
    with Client(server.target) as client:
        info = client.model("pumps_cli")
    assert info.active_version == "1"


@pytest.mark.slow
def test_grafana_dashboard_queries_run_on_the_output(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    import json

    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    end = int(data.timestamps_ns[-1]) + SETTLE
    with Task(
        kit.config(influxd.url, server.target, (kit.pipeline(database, data),)), now_ns=lambda: end
    ) as task:
        task.once()
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/dashboards/stad.json").read_text())
    transport = Transport(Connection(url=influxd.url))
    reader = InfluxQLReader(transport)
    time_filter = f"time >= {int(data.timestamps_ns[0])} AND time < {end}"
    chosen: dict[str, str] = {"timeFilter": time_filter, "__interval": "1h"}

    def expand(query: str) -> str:
        for name in sorted(chosen, key=len, reverse=True):  # $tag_value before $tag_key's prefix
            query = query.replace(f"${name}", chosen[name])
        assert "$" not in query.replace("$/", ""), query
        return query

    try:
        offered = {}
        for variable in dashboard["templating"]["list"]:  # in order, as Grafana resolves them
            found = reader.query(expand(variable["query"]), database=database)
            names = [
                row[1] if found[0]["columns"][:2] == ["key", "value"] else row[0]
                for row in found[0]["values"]
            ]
            pattern = variable.get("regex", "").strip("/")
            if pattern:
                matches = [re.match(pattern, name) for name in names]
                names = [m.group(m.lastindex or 0) for m in matches if m]
            offered[variable["name"]] = names
            pick = "unit" if variable["name"] == "tag_key" else names[0]
            chosen[variable["name"]] = "(" + "|".join(names) + ")" if variable.get("multi") else pick
        assert offered == {
            "model": ["pumps"],
            "measurement": ["pump"],
            "tag_key": ["plant", "unit"],
            "tag_value": list(UNITS),
            "channel": sorted(data.channels),
        }
        queries = [t["query"] for panel in dashboard["panels"] for t in panel["targets"]]
        queries += [a["query"] for a in dashboard["annotations"]["list"]]
        assert any("upper_$channel" in q and "lower_$channel" in q for q in queries)  # the bands
        for query in queries:
            found = reader.query(expand(query), database=database)
            columns = {c for series in found for c in series["columns"]}
            filled = {
                c
                for series in found
                for row in series["values"]
                for c, value in zip(series["columns"], row, strict=True)
                if value is not None
            }
            assert found and columns == filled, (expand(query), sorted(columns - filled))
    finally:
        transport.close()

"""`stad influx` from the operator's side: check, fail fast, signals, relative times, --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stad.core.demo_data import DemoData
from stad.influx_task.cli import main
from stad.influx_task.local_influxd import Influxd, free_port
from stad.server.embedded import EmbeddedServer
from tests.influx import kit


def _write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_check_validates_connects_and_dry_runs_writing_nothing(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    lookback_s = (time.time_ns() - int(data.timestamps_ns[100])) // 10**9
    good = (
        kit.pipeline_toml(database, data)
        + f'\ncontext = 32\ninitial_lookback = "{lookback_s}s"\nchunk_steps = 200\n'
    )

    typo = good.replace('name = "pumps"', 'name = "typo"').replace(
        'measurement = "pump"', 'measurement = "pmup"'
    )
    config = _write_config(tmp_path / "jobs.toml", good + "\n" + typo)
    common = ["--config", config, "--url", influxd.url, "--server", server.target]
    assert main(["check", *common]) == 1
    out = capsys.readouterr().out
    assert "pumps: ok: 2 series" in out
    assert "typo: FAILED ValueError: pipeline 'typo': no data for measurement 'pmup'" in out
    assert main(["check", *common, "--pipeline", "pumps", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pumps"]["ok"] and report["pumps"]["series"] == 2 and report["pumps"]["steps"] > 0
    assert kit.query(influxd.url, database, 'SELECT * FROM "anomaly_scores"') == []
    assert kit.query(influxd.url, database, 'SELECT * FROM "stad_checkpoint"') == []
    assert main(["once", *common, "--pipeline", "typo"]) == 0
    assert "typo: no data: no series matched the pipeline's measurement" in capsys.readouterr().out
    untrained = good.replace('name = "pumps"', 'name = "fresh"').replace('model = "pumps"', 'model = "fresh"')
    config = _write_config(tmp_path / "jobs.toml", good + "\n" + untrained)
    assert main(["check", "--config", config, "--url", influxd.url, "--server", server.target]) == 1
    out = capsys.readouterr().out
    assert "pumps: ok: 2 series" in out  # the other pipelines are still checked
    assert "fresh: FAILED NotFound: unknown model 'fresh'; train it first: stad influx train" in out


def test_context_shorter_than_the_model_window_is_refused(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    config = _write_config(tmp_path / "jobs.toml", kit.pipeline_toml(database, data) + "\ncontext = 8\n")
    assert main(["once", "--config", config, "--url", influxd.url, "--server", server.target, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)["pumps"]
    assert not result["ok"]
    assert "context = 8 steps is shorter than model 'pumps''s window of 16 steps" in result["error"]


def test_once_fails_fast_on_a_connection_that_never_worked(
    server: EmbeddedServer, trained: tuple[str, DemoData], tmp_path: Path
) -> None:
    data = trained[1]
    config = _write_config(
        tmp_path / "jobs.toml",
        "[retry]\ndeadline_s = 600\n" + kit.pipeline_toml("db", data),
    )
    typo = f"http://127.0.0.1:{free_port()}"
    for command in ("once", "backfill"):
        extra = ["--pipeline", "pumps", "--start", "-1d"] if command == "backfill" else []
        done = subprocess.run(
            [sys.executable, "-m", "stad.influx_task", command, "--config", config, "--url", typo, *extra],
            capture_output=True,
            timeout=120,  # the retry deadline is 600 s: only failing fast gets here
            check=False,
        )
        assert done.returncode == 1
        assert f"cannot reach InfluxDB at {typo}" in done.stderr.decode()


def test_sigterm_ends_a_retry_wait_at_once(trained: tuple[str, DemoData], tmp_path: Path) -> None:
    data = trained[1]
    config = _write_config(
        tmp_path / "jobs.toml",
        "[retry]\nbase_ms = 60000\ncap_ms = 60000\ndeadline_s = 3600\n" + kit.pipeline_toml("db", data),
    )
    log_path = tmp_path / "run.log"
    typo = f"http://127.0.0.1:{free_port()}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stad.influx_task", "run", "--config", config, "-v", "--url", typo],
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while "retrying in" not in log_path.read_text():
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
            time.sleep(0.05)  # polling the log, bounded by the deadline
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # the wait was up to 60 s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_relative_start_as_in_the_readme(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = trained[1]
    config = _write_config(tmp_path / "jobs.toml", kit.pipeline_toml(database, data))
    common = ["--config", config, "--url", influxd.url, "--server", server.target, "--pipeline", "pumps"]
    assert main(["train", *common, "--start", "-14d", "--stop", "-7d", "--activate"]) == 1
    assert "no data to train on in the given range" in capsys.readouterr().err  # parsed, and nothing there


def test_status_shows_checkpoints_lag_and_the_last_error(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = kit.write_real_clock_demo(influxd.url, database)
    good = (
        kit.pipeline_toml(database, data) + f'\ncontext = 32\ninitial_lookback = "{kit.LOOKBACK // 10**9}s"\n'
    )
    config = _write_config(tmp_path / "jobs.toml", good)
    common = ["--config", config, "--url", influxd.url, "--server", server.target]
    assert main(["once", *common]) == 0
    capsys.readouterr()
    assert main(["status", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["pumps"]
    assert report["last_error"] == ""
    assert set(report["series"]) == {f"pump,unit={u}" for u in kit.UNITS}
    for state in report["series"].values():
        assert state["next_ns"] > int(data.timestamps_ns[-1])  # every step scored
        assert 0 <= state["lag_s"] < (kit.SETTLE + kit.STEP) / 1e9
    broken = _write_config(tmp_path / "broken.toml", good.replace('model = "pumps"', 'model = "nope"'))
    assert main(["once", "--config", broken, "--url", influxd.url, "--server", server.target]) == 1
    capsys.readouterr()
    assert main(["status", "--config", broken, "--url", influxd.url, "--server", server.target]) == 0
    out = capsys.readouterr().out
    assert "pumps: 2 series, last error: NotFound" in out and "nope" in out
    assert "pump,unit=1: next step" in out


def test_import_writes_a_data_file_the_task_can_read(
    influxd: Influxd, database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "plant.csv"
    csv.write_text(
        "time,flow,temp\n2026-01-01T00:00:00Z,1.5,20\n2026-01-01T00:01:00Z,,21\n2026-01-01T00:02:00Z,2.5,22\n"
    )
    code = main(
        [
            *("import", str(csv), "--measurement", "plant", "--database", database),
            *("--tag", "unit=7", "--tag", "site=north", "--url", influxd.url, "--json"),
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "points": 3,
        "measurement": "plant",
        "fields": ["flow", "temp"],
    }
    series = kit.query(influxd.url, database, 'SELECT * FROM "plant" GROUP BY *')
    assert [s["tags"] for s in series] == [{"site": "north", "unit": "7"}]
    rows = [dict(zip(series[0]["columns"], v, strict=True)) for v in series[0]["values"]]
    assert [(r["flow"], r["temp"]) for r in rows] == [(1.5, 20), (None, 21), (2.5, 22)]
    assert rows[0]["time"] == 1767225600 * 10**9
    assert main(["import", str(csv), "--measurement", "plant", "--database", database, "--tag", "unit"]) == 1
    assert "--tag 'unit': expected key=value" in capsys.readouterr().err


def test_run_serves_metrics_liveness_and_readiness(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str, tmp_path: Path
) -> None:
    import urllib.error
    import urllib.request

    data = kit.write_real_clock_demo(influxd.url, database)
    config = _write_config(
        tmp_path / "jobs.toml",
        kit.pipeline_toml(database, data)
        + f'\ncontext = 32\ninitial_lookback = "{kit.LOOKBACK // 10**9}s"\n',
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "stad.influx_task", "run", "--config", config, "--json"),
                *("--url", influxd.url, "--server", server.target, "--metrics-port", "0"),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        deadline = time.monotonic() + 120
        while "serving /metrics" not in log_path.read_text():
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
            time.sleep(0.05)  # polling the log, bounded by the deadline
        port = int(log_path.read_text().split("on port ")[1].split()[0])
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/healthz")[0] == 200
        while get(base + "/readyz")[0] != 200:
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
            time.sleep(0.05)  # polling readiness, bounded by the deadline
        status, text = get(base + "/metrics")
        assert status == 200
        written = [line for line in text.splitlines() if line.startswith("stad_influx_points_written_total")]
        assert written and float(written[0].split()[-1]) >= 2 * kit.STEPS
        assert 'stad_influx_lag_seconds{pipeline="pumps"}' in text
        assert get(base + "/nothing")[0] == 404
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        first = json.loads(out.decode().splitlines()[0])
        assert first["pumps"]["ok"] and first["pumps"]["steps"] == 2 * kit.STEPS
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_demo_feeder_writes_history_trains_and_goes_live(
    influxd: Influxd, server: EmbeddedServer, database: str, tmp_path: Path
) -> None:
    from stad.client import Client
    from stad.influx_task.feeder import main as feeder

    config = _write_config(
        tmp_path / "demo.toml",
        f"""[influx]
url = "{influxd.url}"
[server]
target = "{server.target}"
[[pipelines]]
name = "plant"
database = "{database}"
measurement = "pump"
fields = ["flow", "pressure", "temp"]
model = "feeder_demo"
interval = "10m"
group_by = ["unit"]
""",
    )
    assert (
        feeder(
            ["--config", config, "--pipeline", "plant", "--units", "2", "--epochs", "1", "--live-steps", "1"]
        )
        == 0
    )
    counts = kit.query(influxd.url, database, 'SELECT count("flow") FROM "pump" GROUP BY "unit"')
    history = 2 * 86400 // 600
    assert {s["tags"]["unit"]: s["values"][0][1] for s in counts} == {"1": history + 1, "2": history + 1}
    last = kit.query(influxd.url, database, 'SELECT last("flow") FROM "pump"')[0]["values"][0][0]
    assert abs(last - time.time_ns()) < 2 * 600 * 10**9  # the live step is at the wall clock
    with Client(server.target) as client:
        assert client.model("feeder_demo").active_version == "1"

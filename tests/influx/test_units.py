"""Config, durations, grid, retry, episodes and sharding (no InfluxDB needed)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from stad.client import Cancelled, InvalidArgument, Unavailable
from stad.influx_task.config import ConfigError, load_config
from stad.influx_task.events import track_episodes
from stad.influx_task.grid import start_labels, to_grid
from stad.influx_task.retry import RetryPolicy, retry_call
from stad.influx_task.runner import Shard
from stad.influx_task.task import is_retryable as task_retryable
from stad.influx_task.times import parse_duration_ns, parse_time_ns
from stad.influx_task.transport import InfluxUnavailable, is_retryable, parse_retry_after

S = 10**9

TOML = """
[influx]
url = "http://toml:8086"
org = "acme"

[server]
target = "scorer:50051"

[[pipelines]]
name = "pumps"
bucket = "plant"
measurement = "pump"
fields = ["a", "b"]
model = "pumps"
interval = "10s"
every = "1m"
offset = "30s"
context = 32
tag_filter = { site = "north" }
group_by = ["unit"]
"""


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(TOML)
    env = {"INFLUX_URL": "http://env:8086", "INFLUXDB_V2_TOKEN": "tok", "STAD_SERVER": "envserver:1"}
    config = load_config(path, environ=env)
    assert config.connection.url == "http://env:8086"  # environment over the file
    assert config.connection.token == "tok"
    assert config.connection.org == "acme"  # the file fills what the environment lacks
    assert config.connection.uses_v2_write
    assert config.server.target == "envserver:1"
    job = config.pipeline("pumps")
    assert (job.database, job.interval_ns, job.every_ns, job.offset_ns) == ("plant", 10 * S, 60 * S, 30 * S)
    assert job.output_tag_keys == ("site", "unit")
    flagged = load_config(
        path, connection_overrides={"url": "http://flag:1", "token": None}, server_target="x:1", environ=env
    )
    assert flagged.connection.url == "http://flag:1" and flagged.connection.token == "tok"
    assert flagged.server.target == "x:1"
    assert load_config(path, environ={}).connection.url == "http://toml:8086"
    bare = load_config(
        None, environ={"INFLUXDB_V2_URL": "http://v2:8086", "INFLUX_USERNAME": "u", "INFLUX_PASSWORD": "p"}
    )
    assert bare.connection.url == "http://v2:8086" and bare.connection.username == "u"
    assert not bare.connection.uses_v2_write


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('target = "scorer:50051"', 'targt = "scorer:50051"', "[server]: unknown key 'targt'"),
        (
            "[server]",
            "[retry]\nbase_ms = '200'\n[server]",
            "[retry] base_ms: expected an integer, got a string '200'",
        ),
        ("[server]", "[retry]\nbsae_ms = 200\n[server]", "[retry]: unknown key 'bsae_ms'"),
        ('group_by = ["unit"]', 'group_by = "unit"', "group_by: expected a list of strings"),
        ('fields = ["a", "b"]', 'fields = "a"', "fields: expected a list of strings"),
        ('every = "1m"', 'every = "1m"\noutput_measurement = "a\\nb"', "output_measurement 'a\\nb'"),
        ('every = "1m"', 'every = "1m"\ncontxt = 5', "[[pipelines]] 'pumps': unknown key 'contxt'"),
        ('every = "1m"', "every = 60.5", "every: expected a duration"),
        ('model = "pumps"', "", "missing required key(s) ['model']"),
        ("[influx]", "[influxdb]", "unknown table(s) ['influxdb']"),
        ('fill = "null"', 'fill = "none"', "fill must be one of"),
    ],
)
def test_config_typos_are_one_line_errors_naming_table_and_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = TOML + 'fill = "null"\n' if old == 'fill = "null"' else TOML
    assert old in text
    path = tmp_path / "jobs.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_old_jobs_key_still_loads_with_a_deprecation_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(TOML.replace("[[pipelines]]", "[[jobs]]"))
    assert load_config(path, environ={}).pipeline("pumps").measurement == "pump"
    assert "[[jobs]] is deprecated; rename it [[pipelines]]" in caplog.text
    path.write_text(TOML + TOML[TOML.index("[[pipelines]]") :].replace("[[pipelines]]", "[[jobs]]"))
    with pytest.raises(ConfigError, match="both"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('interval = "10s"', "interval"),
        ('fill = "null"', "fill"),
        ('group_by = ["unit"]', "clash"),
        ('every = "1m"', "every"),
    ],
)
def test_bad_job_settings_name_the_value(tmp_path: Path, change: str, message: str) -> None:
    replacement = {
        'interval = "10s"': "",
        'fill = "null"': 'fill = "zero"',
        'group_by = ["unit"]': 'group_by = ["model"]',
        'every = "1m"': 'every = "1 minute"',
    }
    text = TOML.replace(change, replacement[change]) if change in TOML else TOML + replacement[change]
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path, environ={})


def test_durations_and_times() -> None:
    assert parse_duration_ns("1h30m") == 5400 * S
    assert parse_duration_ns("250ms") == 250_000_000
    assert parse_duration_ns(5) == 5 * S
    for bad in ("", "10", "1x", "-5s", "1h 30m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration_ns(bad)
    now = 1_000_000 * S
    assert parse_time_ns("now", now_ns=now) == now
    assert parse_time_ns("-2h", now_ns=now) == now - 7200 * S
    assert parse_time_ns("1970-01-01T00:00:01Z", now_ns=now) == S


def test_grid_fill_policies() -> None:
    times = np.array([0, 20, 50], dtype=np.int64) * S
    values = np.array([[1.0, np.nan], [3.0, 30.0], [6.0, 60.0]])
    grid_times, null = to_grid(times, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="null")
    assert grid_times.tolist() == [t * S for t in range(0, 60, 10)]
    np.testing.assert_array_equal(null[:, 0], [1, np.nan, 3, np.nan, np.nan, 6])
    _, previous = to_grid(times, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="previous")
    np.testing.assert_array_equal(previous[:, 0], [1, 1, 3, 3, 3, 6])
    np.testing.assert_array_equal(previous[:, 1], [np.nan, np.nan, 30, 30, 30, 60])
    _, linear = to_grid(times, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="linear")
    np.testing.assert_allclose(linear[:, 0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(linear[:2, 1], [np.nan, np.nan])  # never extrapolated
    _, limited = to_grid(
        times, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="previous", fill_limit=1
    )
    np.testing.assert_array_equal(limited[:, 0], [1, 1, 3, 3, np.nan, 6])  # a gap of 2 > 1 stays open
    _, limited = to_grid(
        times, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="linear", fill_limit=1
    )
    np.testing.assert_array_equal(limited[:, 0], [1, 2, 3, np.nan, np.nan, 6])
    with pytest.raises(ValueError, match="not on the"):
        to_grid(times + 1, values, start_ns=0, stop_ns=60 * S, interval_ns=10 * S, fill="null")
    assert start_labels(np.array([10 * S]), 10 * S, "stop").tolist() == [0]


def test_retry_backs_off_with_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0, max_attempts=0, deadline_s=1000.0, retry_after_max_s=60.0)
    rng = random.Random(0)
    ceilings = [1, 2, 4, 8, 8, 8]
    for attempt, ceiling in enumerate(ceilings, start=1):
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spans the range
    assert policy.delay_s(3, rng, retry_after_s=5.0) == 5.0
    assert policy.delay_s(3, rng, retry_after_s=50.0) == 50.0  # honoured beyond the backoff cap
    assert policy.delay_s(3, rng, retry_after_s=500.0) == 60.0

    waits: list[float] = []
    calls = iter([InfluxUnavailable("down", status=503, retry_after_s=2.0), InfluxUnavailable("down"), "ok"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_call(flaky, policy, is_retryable, sleep=waits.append, rng=rng) == "ok"
    assert waits[0] == 2.0 and 0 <= waits[1] <= 2.0


def test_retry_gives_up_on_permanent_errors_and_attempt_limit() -> None:
    policy = RetryPolicy(base_s=0.001, cap_s=0.001, max_attempts=3)
    attempts: list[int] = []

    def permanent() -> None:
        attempts.append(1)
        raise ValueError("bad query")

    with pytest.raises(ValueError):
        retry_call(permanent, policy, is_retryable, sleep=lambda _: None)
    assert len(attempts) == 1

    def always_down() -> None:
        attempts.append(1)
        raise InfluxUnavailable("down")

    with pytest.raises(InfluxUnavailable):
        retry_call(always_down, policy, is_retryable, sleep=lambda _: None)
    assert len(attempts) == 4


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_episodes_carry_across_chunks() -> None:
    times = np.arange(6, dtype=np.int64) * S
    flags = np.array([False, True, True, False, True, True])
    score = np.array([0.0, 5.0, 9.0, 0.0, 4.0, 6.0])
    contrib = np.tile([[0.8, 0.2]], (6, 1))  # (6, 2)
    touched, open_episode = track_episodes(None, times, flags, score, contrib, ("a", "b"))
    assert [(e.start_ns, e.last_ns, e.max_score, e.open) for e in touched] == [
        (1 * S, 2 * S, 9.0, False),
        (4 * S, 5 * S, 6.0, True),
    ]
    assert open_episode is touched[1] and open_episode.top_channels() == ["a", "b"]
    kept = replace(open_episode, contributions=dict(open_episode.contributions))
    more, still = track_episodes(
        open_episode,
        times + 6 * S,
        np.array([True, False, False, False, False, False]),
        score,
        contrib,
        ("a", "b"),
    )
    assert still is None and more[0].start_ns == 4 * S and more[0].last_ns == 6 * S
    assert not more[0].open
    assert open_episode == kept  # the state a checkpoint's snapshot may hold stays as it was


def test_shards_partition_series() -> None:
    keys = [f"pump,unit={i}" for i in range(200)]
    owners = [[Shard(i, 3).owns(k) for i in range(3)] for k in keys]
    assert all(sum(row) == 1 for row in owners)
    assert all(sum(row[i] for row in owners) > 10 for i in range(3))
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_example_jobs_file_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "jobs.example.toml", environ={})
    job = config.pipeline("pumps")
    assert job.fields == ("flow", "pressure", "current", "motor_temp")
    assert job.offset_ns == 120 * S and job.context_steps == 128


def test_public_names_are_all() -> None:
    import stad.influx_task as package

    public = {name for name in vars(package) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(package, name)).__name__ == "module"}
    assert public - modules == set(package.__all__)


def test_a_call_the_server_cut_off_is_retried_a_bad_request_is_not() -> None:
    assert task_retryable(Cancelled("server shutting down", code=grpc.StatusCode.CANCELLED))
    assert task_retryable(Unavailable("restarting", code=grpc.StatusCode.UNAVAILABLE))
    assert not task_retryable(InvalidArgument("bad series", code=grpc.StatusCode.INVALID_ARGUMENT))

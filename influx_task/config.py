"""Task configuration: connection settings and jobs, from a TOML file, flags and environment.

Precedence for connection settings: command-line flags, then the TOML `[influx]`
table, then environment variables (`INFLUX_URL`, `INFLUX_TOKEN`, `INFLUX_ORG`,
the `INFLUXDB_V2_URL`/`_TOKEN`/`_ORG`/`_TIMEOUT` names influxdb-client reads,
and `INFLUX_USERNAME`/`INFLUX_PASSWORD` for 1.x), then defaults. Durations are
strings such as "500ms", "10s", "5m", "1h", "2d" and are stored in nanoseconds.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READ_PATHS = ("influxql", "flux")
WRITE_APIS = ("auto", "v1", "v2")
AGGREGATES = ("mean", "median", "min", "max", "first", "last", "sum", "count")
FILLS = ("null", "previous", "linear", "none")
RESERVED_TAGS = ("model", "source_measurement")

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
}
_DURATION = re.compile(r"(\d+)(ns|us|ms|s|m|h|d|w)")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def parse_duration_ns(text: str | int) -> int:
    """Parse "1h30m", "10s", "250ms" (or an int of seconds) into nanoseconds."""
    if isinstance(text, bool):
        raise ValueError(f"duration must be a string like '10s', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text!r}")
        return text * 10**9
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"bad duration {text!r}: expected e.g. '10s', '5m', '1h30m', '500ms'")
    return sum(int(n) * _UNITS_NS[u] for n, u in parts)


@dataclass(frozen=True)
class Connection:
    """How to reach InfluxDB. `token` (2.x/3.x) or `username`/`password` (1.x)."""

    url: str = "http://localhost:8086"
    token: str | None = None
    org: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_ms: int = 30_000
    write_api: str = "auto"  # "v1" = /write, "v2" = /api/v2/write, "auto" = v2 when org is set

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB url must start with http:// or https://, got {self.url!r}")
        if self.write_api not in WRITE_APIS:
            raise ValueError(f"write_api must be one of {WRITE_APIS}, got {self.write_api!r}")
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be positive, got {self.timeout_ms}")

    @property
    def uses_v2_write(self) -> bool:
        return self.write_api == "v2" or (self.write_api == "auto" and bool(self.org))


@dataclass(frozen=True)
class ServerSettings:
    """How to reach the stad scoring server."""

    target: str = "localhost:50051"
    token: str | None = None
    timeout_s: float = 60.0


@dataclass(frozen=True)
class RetrySettings:
    base_ms: int = 200
    cap_ms: int = 30_000
    max_attempts: int = 0  # 0 = retry until the deadline
    deadline_s: float = 600.0
    retry_after_max_s: float = 300.0


@dataclass(frozen=True)
class Job:
    """One scoring job: which series to read, how to grid them, which model scores them."""

    name: str
    database: str  # 1.x database, or 2.x/3.x bucket
    measurement: str
    fields: tuple[str, ...]
    model: str
    interval_ns: int
    retention_policy: str | None = None
    tag_filter: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    aggregate: str = "mean"
    fill: str = "null"
    every_ns: int = 60 * 10**9
    offset_ns: int = 0
    context_steps: int = 64
    initial_lookback_ns: int = 3600 * 10**9
    chunk_steps: int = 1000
    series_per_call: int = 64
    version: str | None = None
    threshold: float | None = None
    read_path: str = "influxql"
    output_database: str | None = None
    output_retention_policy: str | None = None
    output_measurement: str = "anomaly_scores"
    events_measurement: str = "anomaly_events"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"job name {self.name!r}: use letters, digits, '-', '_', '.'")
        for key, value in (
            ("database", self.database),
            ("measurement", self.measurement),
            ("model", self.model),
        ):
            if not value:
                raise ValueError(f"job {self.name!r}: {key} must not be empty")
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise ValueError(
                f"job {self.name!r}: fields must be unique and non-empty, got {list(self.fields)}"
            )
        clash = [t for t in (*self.group_by, *self.tag_filter) if t in RESERVED_TAGS]
        if clash:
            raise ValueError(f"job {self.name!r}: tags {clash} clash with output tags {RESERVED_TAGS}")
        checks: list[tuple[str, object, tuple[str, ...]]] = [
            ("aggregate", self.aggregate, AGGREGATES),
            ("fill", self.fill, FILLS),
            ("read_path", self.read_path, READ_PATHS),
        ]
        for key, got, allowed in checks:
            if got not in allowed:
                raise ValueError(f"job {self.name!r}: {key} must be one of {allowed}, got {got!r}")
        for key, number in (
            ("interval", self.interval_ns),
            ("every", self.every_ns),
            ("context", self.context_steps),
            ("chunk_steps", self.chunk_steps),
            ("series_per_call", self.series_per_call),
        ):
            if number <= 0:
                raise ValueError(f"job {self.name!r}: {key} must be positive, got {number}")
        if self.offset_ns < 0:
            raise ValueError(f"job {self.name!r}: offset must not be negative, got {self.offset_ns}")

    @property
    def out_database(self) -> str:
        return self.output_database or self.database

    @property
    def output_tag_keys(self) -> tuple[str, ...]:
        """The source series' own tags that go into the fixed output tag set."""
        return tuple(sorted({*self.group_by, *(k for k, v in self.tag_filter.items() if len(v) == 1)}))


@dataclass(frozen=True)
class TaskConfig:
    connection: Connection
    server: ServerSettings
    retry: RetrySettings
    jobs: tuple[Job, ...]
    checkpoint_store: str = "influx"  # "influx" (measurement stad_checkpoint) or a file path

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise ValueError(f"no job named {name!r}; jobs are {[j.name for j in self.jobs]}")


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def connection_from(
    table: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Merge flags (`overrides`, None values ignored) over the TOML table over the environment."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {
        "url": _env(env, "INFLUX_URL", "INFLUXDB_V2_URL"),
        "token": _env(env, "INFLUX_TOKEN", "INFLUXDB_V2_TOKEN"),
        "org": _env(env, "INFLUX_ORG", "INFLUXDB_V2_ORG"),
        "username": _env(env, "INFLUX_USERNAME", "INFLUX_USER"),
        "password": _env(env, "INFLUX_PASSWORD"),
        "timeout_ms": _env(env, "INFLUXDB_V2_TIMEOUT"),
    }
    unknown = set(table) - {*merged, "write_api"}
    if unknown:
        raise ValueError(f"unknown keys in [influx]: {sorted(unknown)}")
    merged.update({k: v for k, v in table.items() if v is not None})
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    kwargs = {k: v for k, v in merged.items() if v is not None}
    if "timeout_ms" in kwargs:
        kwargs["timeout_ms"] = int(kwargs["timeout_ms"])
    return Connection(**kwargs)


_JOB_KEYS = {
    "name",
    "database",
    "bucket",
    "retention_policy",
    "measurement",
    "fields",
    "model",
    "version",
    "threshold",
    "interval",
    "aggregate",
    "fill",
    "every",
    "offset",
    "context",
    "initial_lookback",
    "chunk_steps",
    "series_per_call",
    "tag_filter",
    "group_by",
    "read_path",
    "output_database",
    "output_retention_policy",
    "output_measurement",
    "events_measurement",
}


def _duration(table: Mapping[str, Any], key: str, default: str, job: str) -> int:
    try:
        return parse_duration_ns(table.get(key, default))
    except ValueError as exc:
        raise ValueError(f"job {job!r}: {key}: {exc}") from exc


def job_from_table(table: Mapping[str, Any]) -> Job:
    """Build a Job from one `[[jobs]]` TOML table."""
    unknown = set(table) - _JOB_KEYS
    name = str(table.get("name", ""))
    if unknown:
        raise ValueError(f"job {name!r}: unknown keys {sorted(unknown)}")
    database = table.get("database", table.get("bucket"))
    if database is None:
        raise ValueError(f"job {name!r}: set 'database' (1.x) or 'bucket' (2.x)")
    filters: dict[str, tuple[str, ...]] = {}
    for key, value in dict(table.get("tag_filter", {})).items():
        values = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        if not values:
            raise ValueError(f"job {name!r}: tag_filter {key!r} has no values")
        filters[str(key)] = values
    if "interval" not in table:
        raise ValueError(f"job {name!r}: 'interval' (grid step, e.g. '10s') is required")
    threshold = table.get("threshold")
    return Job(
        name=name,
        database=str(database),
        measurement=str(table.get("measurement", "")),
        fields=tuple(str(f) for f in table.get("fields", ())),
        model=str(table.get("model", "")),
        version=table.get("version"),
        threshold=None if threshold is None else float(threshold),
        interval_ns=_duration(table, "interval", "", name),
        retention_policy=table.get("retention_policy"),
        tag_filter=filters,
        group_by=tuple(str(t) for t in table.get("group_by", ())),
        aggregate=str(table.get("aggregate", "mean")),
        fill=str(table.get("fill", "null")),
        every_ns=_duration(table, "every", "1m", name),
        offset_ns=_duration(table, "offset", "0s", name),
        context_steps=int(table.get("context", 64)),
        initial_lookback_ns=_duration(table, "initial_lookback", "1h", name),
        chunk_steps=int(table.get("chunk_steps", 1000)),
        series_per_call=int(table.get("series_per_call", 64)),
        read_path=str(table.get("read_path", "influxql")),
        output_database=table.get("output_database"),
        output_retention_policy=table.get("output_retention_policy"),
        output_measurement=str(table.get("output_measurement", "anomaly_scores")),
        events_measurement=str(table.get("events_measurement", "anomaly_events")),
    )


def load_config(
    path: str | Path | None,
    *,
    connection_overrides: Mapping[str, Any] | None = None,
    server_target: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> TaskConfig:
    """Read the TOML file (or nothing) and merge flags and environment over it."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    unknown = set(data) - {"influx", "server", "retry", "state", "jobs"}
    if unknown:
        raise ValueError(f"unknown tables in {path}: {sorted(unknown)}")
    env = os.environ if environ is None else environ
    server_table = dict(data.get("server", {}))
    target = server_target or server_table.get("target") or env.get("STAD_SERVER") or "localhost:50051"
    server = ServerSettings(
        target=str(target),
        token=server_table.get("token") or env.get("STAD_TOKEN"),
        timeout_s=float(server_table.get("timeout_s", 60.0)),
    )
    retry = RetrySettings(**dict(data.get("retry", {})))
    jobs = tuple(job_from_table(t) for t in data.get("jobs", []))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    store = str(dict(data.get("state", {})).get("checkpoint", "influx"))
    return TaskConfig(
        connection=connection_from(dict(data.get("influx", {})), connection_overrides, env),
        server=server,
        retry=retry,
        jobs=jobs,
        checkpoint_store=store,
    )


def parse_time_ns(text: str, *, now_ns: int) -> int:
    """A time as RFC3339 ("2024-01-01T00:00:00Z"), integer ns, "now", or relative "-2h"."""
    value = text.strip()
    if value == "now":
        return now_ns
    if value.startswith("-"):
        return now_ns - parse_duration_ns(value[1:])
    if value.isdigit():
        return int(value)
    from stad.influx_task.flux import ns_from_rfc3339

    return ns_from_rfc3339(value)

"""Task configuration: one strict schema for the TOML file, merged with flags and environment.

Precedence: command-line flags, then environment variables, then the file,
then defaults. Every table is a dataclass below; its fields are the schema:
an unknown key, a wrong type or a bad value is one `ConfigError` line naming
the table and the key. Durations are strings such as "500ms", "10s", "5m",
"1h", "2d" and are stored in nanoseconds (fields ending in `_ns`, whose TOML
key drops the suffix).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stad.influx_task.grid import FILLS
from stad.influx_task.points import check_name
from stad.influx_task.times import parse_duration_ns

log = logging.getLogger("stad.influx_task")

READ_PATHS = ("influxql", "flux")
WRITE_APIS = ("auto", "v1", "v2")
AGGREGATES = ("mean", "median", "min", "max", "first", "last", "sum", "count")
RESERVED_TAGS = ("model", "source_measurement")
SECTION = "pipelines"  # the TOML array of scoring pipelines; `jobs` is its deprecated name


class ConfigError(ValueError):
    """The configuration is wrong; the message names the table and key."""


def _duration(default: str) -> Any:
    return field(default=parse_duration_ns(default), metadata={"duration": True})


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
            raise ConfigError(f"[influx] url must start with http:// or https://, got {self.url!r}")
        if self.write_api not in WRITE_APIS:
            raise ConfigError(f"[influx] write_api must be one of {WRITE_APIS}, got {self.write_api!r}")
        if self.timeout_ms <= 0:
            raise ConfigError(f"[influx] timeout_ms must be positive, got {self.timeout_ms}")

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

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.cap_ms or self.max_attempts < 0 or self.deadline_s <= 0:
            raise ConfigError(
                f"[retry] need 0 < base_ms <= cap_ms, max_attempts >= 0, deadline_s > 0: {self}"
            )


@dataclass(frozen=True)
class StateSettings:
    checkpoint: str = "influx"  # "influx" (measurement stad_checkpoint) or a file path


@dataclass(frozen=True)
class Pipeline:
    """One scoring pipeline: which series to read, how to grid them, which model scores them."""

    name: str
    database: str  # 1.x database, or 2.x/3.x bucket (TOML: `database` or `bucket`)
    measurement: str
    fields: tuple[str, ...]
    model: str
    interval_ns: int = field(metadata={"duration": True})
    retention_policy: str | None = None
    tag_filter: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    aggregate: str = "mean"
    fill: str = "null"
    every_ns: int = _duration("1m")
    offset_ns: int = _duration("0s")
    lateness_ns: int = _duration("1h")
    context_steps: int = field(default=64, metadata={"key": "context"})
    initial_lookback_ns: int = _duration("1h")
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
        where = f"[[{SECTION}]] {self.name!r}"
        for kind, name in (
            ("name", self.name),
            ("measurement", self.measurement),
            ("output_measurement", self.output_measurement),
            ("events_measurement", self.events_measurement),
            *(("field", f) for f in self.fields),
            *(("tag", t) for t in (*self.group_by, *self.tag_filter)),
        ):
            try:
                check_name(kind, name)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        for key in ("database", "model"):
            if not getattr(self, key):
                raise ConfigError(f"{where}: {key} must not be empty")
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise ConfigError(f"{where}: fields must be unique and non-empty, got {list(self.fields)}")
        clash = [t for t in (*self.group_by, *self.tag_filter) if t in RESERVED_TAGS]
        if clash:
            raise ConfigError(f"{where}: tags {clash} clash with output tags {RESERVED_TAGS}")
        if any(not values for values in self.tag_filter.values()):
            raise ConfigError(f"{where}: every tag_filter entry needs at least one value")
        for key, allowed in (("aggregate", AGGREGATES), ("fill", FILLS), ("read_path", READ_PATHS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{where}: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("interval_ns", "every_ns", "context_steps", "chunk_steps", "series_per_call"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}: {_toml_key(key)} must be positive, got {getattr(self, key)}")
        for key in ("offset_ns", "lateness_ns", "initial_lookback_ns"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{where}: {_toml_key(key)} must not be negative")

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
    pipelines: tuple[Pipeline, ...]
    checkpoint_store: str = "influx"  # "influx" (measurement stad_checkpoint) or a file path

    def pipeline(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise ConfigError(f"no pipeline named {name!r}; pipelines are {[j.name for j in self.pipelines]}")


# -- the schema, read off the dataclasses -------------------------------------------


def _toml_key(name: str) -> str:
    return name.removesuffix("_ns")


def _schema(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata.get("key") or _toml_key(f.name): f for f in dataclasses.fields(cls)}


def _type_name(value: object) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _convert(where: str, key: str, spec: dataclasses.Field[Any], value: Any, hints: Mapping[str, Any]) -> Any:
    """The TOML value as the field's type, or ConfigError saying what was expected."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{where} {key}: expected {expected}, got {_type_name(value)} {value!r}")

    if spec.metadata.get("duration"):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise wrong("a duration such as '10s' or '5m'")
        try:
            return parse_duration_ns(value)
        except ValueError as exc:
            raise ConfigError(f"{where} {key}: {exc}") from None
    hint = hints[spec.name]
    options = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    options.discard(type(None))
    kind = next(iter(options))
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong('a list of strings, such as ["a", "b"]')
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, dict):
            raise wrong('a table such as { site = "north" }')
        out = {}
        for tag, values in value.items():
            listed = [values] if isinstance(values, str) else values
            if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
                raise ConfigError(
                    f"{where} {key}.{tag}: expected a string or a list of strings, got {values!r}"
                )
            out[str(tag)] = tuple(listed)
        return out
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    raise TypeError(f"no TOML conversion for {hint}")


def build(
    cls: type, table: Mapping[str, Any], where: str, *, aliases: Mapping[str, str] | None = None
) -> Any:
    """An instance of the dataclass `cls` from a TOML table, strictly."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_type_name(table)}")
    schema = _schema(cls)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        canonical = (aliases or {}).get(key, key)
        spec = schema.get(canonical)
        if spec is None:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        kwargs[spec.name] = _convert(where, key, spec, value, hints)
    missing = [
        key
        for key, spec in schema.items()
        if spec.name not in kwargs
        and spec.default is dataclasses.MISSING
        and spec.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def job_from_table(table: Mapping[str, Any], index: int = 0) -> Pipeline:
    """Build a Pipeline from one `[[pipelines]]` TOML table."""
    where = f"[[{SECTION}]] {table.get('name', f'#{index + 1}')!r}"
    if "database" in table and "bucket" in table:
        raise ConfigError(f"{where}: set 'database' (1.x) or 'bucket' (2.x), not both")
    pipeline: Pipeline = build(Pipeline, table, where, aliases={"bucket": "database"})
    return pipeline


# -- merging the sources ----------------------------------------------------------

ENVIRONMENT = {
    ("influx", "url"): ("INFLUX_URL", "INFLUXDB_V2_URL"),
    ("influx", "token"): ("INFLUX_TOKEN", "INFLUXDB_V2_TOKEN"),
    ("influx", "org"): ("INFLUX_ORG", "INFLUXDB_V2_ORG"),
    ("influx", "username"): ("INFLUX_USERNAME", "INFLUX_USER"),
    ("influx", "password"): ("INFLUX_PASSWORD",),
    ("influx", "timeout_ms"): ("INFLUXDB_V2_TIMEOUT",),
    ("server", "target"): ("STAD_SERVER",),
    ("server", "token"): ("STAD_TOKEN",),
}


def _from_environment(environ: Mapping[str, str], table: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (name, key), variables in ENVIRONMENT.items():
        value = next((environ[v] for v in variables if environ.get(v)), None)
        if name == table and value is not None:
            if key == "timeout_ms":
                try:
                    out[key] = int(value)
                except ValueError:
                    raise ConfigError(
                        f"environment {variables[0]}: expected an integer, got {value!r}"
                    ) from None
            else:
                out[key] = value
    return out


def _merged(
    file: Mapping[str, Any], environ: Mapping[str, str], name: str, flags: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Flags over environment over the file table."""
    if not isinstance(file, Mapping):
        raise ConfigError(f"[{name}]: expected a table, got {_type_name(file)}")
    return {
        **file,
        **_from_environment(environ, name),
        **{k: v for k, v in (flags or {}).items() if v is not None},
    }


def connection_from(
    table: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Flags (`overrides`, None values ignored) over the environment over the TOML table."""
    env = os.environ if environ is None else environ
    connection: Connection = build(Connection, _merged(table, env, "influx", overrides), "[influx]")
    return connection


def load_config(
    path: str | Path | None,
    *,
    connection_overrides: Mapping[str, Any] | None = None,
    server_target: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> TaskConfig:
    """Read the TOML file (or nothing) and merge environment and flags over it."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = {"influx", "server", "retry", "state", SECTION, "jobs"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (known: {sorted(known - {'jobs'})})")
    if "jobs" in data:
        if SECTION in data:
            raise ConfigError(f"{path}: both [[jobs]] and [[{SECTION}]]: rename [[jobs]] to [[{SECTION}]]")
        log.warning("%s: [[jobs]] is deprecated; rename it [[%s]]", path, SECTION)
    tables = data.get(SECTION, data.get("jobs", []))
    if not isinstance(tables, list):
        raise ConfigError(
            f"{path}: [[{SECTION}]] must be an array of tables ([[{SECTION}]], not [{SECTION}])"
        )
    env = os.environ if environ is None else environ
    jobs = tuple(job_from_table(t, i) for i, t in enumerate(tables))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"pipeline names must be unique, got {names}")
    server = build(
        ServerSettings, _merged(data.get("server", {}), env, "server", {"target": server_target}), "[server]"
    )
    state: StateSettings = build(StateSettings, data.get("state", {}), "[state]")
    return TaskConfig(
        connection=connection_from(data.get("influx", {}), connection_overrides, env),
        server=server,
        retry=build(RetrySettings, data.get("retry", {}), "[retry]"),
        pipelines=jobs,
        checkpoint_store=state.checkpoint,
    )

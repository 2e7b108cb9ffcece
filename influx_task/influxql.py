"""InfluxQL read path over HTTP `/query`: InfluxDB 1.x, 2.x (through DBRP mappings) and 3.x."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import orjson

from stad.influx_task.config import Pipeline
from stad.influx_task.grid import SeriesBlock
from stad.influx_task.transport import InfluxError, InfluxUnavailable, Transport

log = logging.getLogger("stad.influx_task")


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def source_clause(database: str, retention_policy: str | None, measurement: str) -> str:
    rp = quote_ident(retention_policy) if retention_policy else ""
    return f"{quote_ident(database)}.{rp}.{quote_ident(measurement)}"


def tag_condition(tag_filter: dict[str, tuple[str, ...]]) -> str:
    """`("a" = 'x' OR "a" = 'y') AND ...`, or "" when there is no filter."""
    parts = []
    for key in sorted(tag_filter):
        options = " OR ".join(f"{quote_ident(key)} = {quote_string(v)}" for v in tag_filter[key])
        parts.append(f"({options})")
    return " AND ".join(parts)


def build_select(pipeline: Pipeline, start_ns: int, stop_ns: int) -> str:
    """One query for every series of the pipeline over [start_ns, stop_ns), aggregated on the grid."""
    if stop_ns <= start_ns:
        raise ValueError(f"empty time range: start {start_ns} >= stop {stop_ns}")
    columns = ", ".join(
        f"{pipeline.aggregate}({quote_ident(f)}) AS {quote_ident(f)}" for f in pipeline.fields
    )
    where = f"time >= {start_ns} AND time < {stop_ns}"
    condition = tag_condition(dict(pipeline.tag_filter))
    if condition:
        where += f" AND {condition}"
    group = ", ".join(
        [f"time({pipeline.interval_ns}ns)", *(quote_ident(t) for t in pipeline.output_tag_keys)]
    )
    source = source_clause(pipeline.database, pipeline.retention_policy, pipeline.measurement)
    return f"SELECT {columns} FROM {source} WHERE {where} GROUP BY {group} fill(null)"


def build_show_series(pipeline: Pipeline) -> str:
    """The series keys of the pipeline's measurement that pass its tag filter."""
    source = source_clause(pipeline.database, pipeline.retention_policy, pipeline.measurement)
    condition = tag_condition(dict(pipeline.tag_filter))
    return f"SHOW SERIES FROM {source}" + (f" WHERE {condition}" if condition else "")


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
_ESCAPE = re.compile(r"\\([ ,=\\])")


def parse_series_key(key: str) -> dict[str, str]:
    """The tags of a series key as SHOW SERIES gives it: `m,k=v,k2=v\\ 2` (line-protocol escapes)."""
    tags = {}
    for pair in _UNESCAPED_COMMA.split(key)[1:]:
        name, value = [*_UNESCAPED_EQUALS.split(pair, maxsplit=1), ""][:2]
        tags[_ESCAPE.sub(r"\1", name)] = _ESCAPE.sub(r"\1", value)
    return tags


def parse_response(payload: bytes) -> list[dict[str, Any]]:
    """The series of the first statement's result; raises InfluxError on a query error."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InfluxError(f"InfluxQL answer is not JSON: {payload[:200]!r}") from exc
    errors = [document["error"]] if "error" in document else []
    results = document.get("results", [])
    errors += [result["error"] for result in results if "error" in result]
    if errors:
        # an influxd that is shutting down answers queries in flight with these: worth retrying
        transient = any(str(e) in ("query engine shutdown", "query interrupted") for e in errors)
        raise (InfluxUnavailable if transient else InfluxError)(f"InfluxQL error: {errors[0]}")
    if not results:
        return []
    return list(results[0].get("series", []))


def blocks_from_series(series: list[dict[str, Any]], fields: tuple[str, ...]) -> list[SeriesBlock]:
    """Turn InfluxQL series (start-labelled) into blocks with columns in `fields` order."""
    blocks = []
    for item in series:
        columns = list(item["columns"])
        missing = [f for f in fields if f not in columns]
        if missing or columns[0] != "time":
            raise InfluxError(f"InfluxQL series lacks columns {missing or ['time']}: {columns}")
        rows = item.get("values", [])
        picks = [columns.index(f) for f in fields]
        times = np.array([row[0] for row in rows], dtype=np.int64)
        # None (an empty window) becomes NaN; the time column is read apart, as floats lose its ns
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))[:, picks]  # (T, C)
        tags = {k: str(v) for k, v in (item.get("tags") or {}).items()}
        blocks.append(SeriesBlock(tags=tags, timestamps_ns=times, values=values))
    return blocks


class InfluxQLReader:
    """Reads pipeline series with InfluxQL."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._cannot_list: set[str] = set()  # pipelines whose series the server could not list

    def query(
        self,
        statement: str,
        *,
        database: str | None = None,
        post: bool = False,
    ) -> list[dict[str, Any]]:
        params = {"q": statement, "epoch": "ns"}
        if database:
            params["db"] = database
        body = self.transport.request("POST" if post else "GET", "/query", params=params)
        return parse_response(body)

    def read(self, pipeline: Pipeline, start_ns: int, stop_ns: int) -> list[SeriesBlock]:
        series = self.query(build_select(pipeline, start_ns, stop_ns), database=pipeline.database)
        return blocks_from_series(series, pipeline.fields)

    def series_tags(self, pipeline: Pipeline) -> list[dict[str, str]] | None:
        """The group_by tags of every series of the pipeline (its measurement, tag filter), once
        each; None when the server cannot list series (InfluxDB 3 has no SHOW SERIES: said once)."""
        if pipeline.name in self._cannot_list:
            return None
        try:
            found = self.query(build_show_series(pipeline), database=pipeline.database)
        except InfluxError as exc:
            if isinstance(exc, InfluxUnavailable):
                raise
            log.warning("cannot list the series of %s, every shard reads all: %s", pipeline.name, exc)
            self._cannot_list.add(pipeline.name)
            return None
        keys = [str(row[0]) for item in found for row in item.get("values", [])]
        seen = {tuple((k, parse_series_key(key).get(k, "")) for k in pipeline.group_by) for key in keys}
        return [dict(tags) for tags in sorted(seen)]

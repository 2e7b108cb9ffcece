"""Flux read path: query builder, annotated-CSV parser, and a reader on influxdb-client.

The parser follows the documented annotated CSV format
(https://docs.influxdata.com/influxdb/v2/reference/syntax/annotated-csv/):
`#datatype`, `#group` and `#default` annotation rows, a header row, data rows;
a new annotation block or a blank line starts a new table schema. Flux labels
each aggregate window by its stop; `read` shifts labels to window starts.

Why not influxdb-client's own FluxCsvParser: it turns `_time` into a `datetime`
(microseconds), and grid steps need exact nanoseconds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from stad.influx_task.config import Connection, Pipeline
from stad.influx_task.grid import SeriesBlock, start_labels
from stad.influx_task.times import ns_from_rfc3339, rfc3339_from_ns
from stad.influx_task.transport import InfluxError, InfluxUnavailable


def flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def build_flux(pipeline: Pipeline, start_ns: int, stop_ns: int) -> str:
    """A Flux query for every series of the pipeline over [start_ns, stop_ns), on the grid."""
    if stop_ns <= start_ns:
        raise ValueError(f"empty time range: start {start_ns} >= stop {stop_ns}")
    bucket = pipeline.database + (f"/{pipeline.retention_policy}" if pipeline.retention_policy else "")
    fields = " or ".join(f"r._field == {flux_string(f)}" for f in pipeline.fields)
    lines = [
        f"from(bucket: {flux_string(bucket)})",
        f"  |> range(start: {rfc3339_from_ns(start_ns)}, stop: {rfc3339_from_ns(stop_ns)})",
        f"  |> filter(fn: (r) => r._measurement == {flux_string(pipeline.measurement)})",
        f"  |> filter(fn: (r) => {fields})",
    ]
    for key in sorted(pipeline.tag_filter):
        options = " or ".join(f"r[{flux_string(key)}] == {flux_string(v)}" for v in pipeline.tag_filter[key])
        lines.append(f"  |> filter(fn: (r) => {options})")
    group = ", ".join(flux_string(c) for c in ("_field", *pipeline.output_tag_keys))
    keep = ", ".join(flux_string(c) for c in ("_time", "_value", "_field", *pipeline.output_tag_keys))
    lines.append(f"  |> group(columns: [{group}])")
    if pipeline.aggregate in ("first", "last"):
        lines.append('  |> sort(columns: ["_time"])')  # group() interleaves series; selectors need order
    lines += [
        f"  |> aggregateWindow(every: {pipeline.interval_ns}ns, fn: {pipeline.aggregate}, createEmpty: true)",
        f"  |> keep(columns: [{keep}])",
    ]
    return "\n".join(lines)


def _convert(value: str, datatype: str) -> Any:
    if value == "":
        return None
    if datatype == "double":
        return float(value)
    if datatype in ("long", "unsignedLong"):
        return int(value)
    if datatype == "boolean":
        return value == "true"
    if datatype.startswith("dateTime"):
        return ns_from_rfc3339(value)
    return value


def parse_annotated_csv(text: str) -> Iterator[dict[str, Any]]:
    """Yield one dict per data row, typed by `#datatype`, empty cells taking `#default`.

    Raises InfluxError when the response is a Flux error table (columns error, reference).
    """
    datatypes: list[str] = []
    defaults: list[str] = []
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or all(cell == "" for cell in row):
            header = None
            continue
        first = row[0]
        if first.startswith("#"):
            if header is not None:
                header, datatypes, defaults = None, [], []
            if first == "#datatype":
                datatypes = row[1:]
            elif first == "#default":
                defaults = row[1:]
            continue
        if header is None:
            header = row
            continue
        cells = row[1:]
        names = header[1:]
        if len(cells) != len(names):
            raise InfluxError(f"annotated CSV row has {len(cells)} cells for {len(names)} columns: {row}")
        types = datatypes or ["string"] * len(names)
        record: dict[str, Any] = {}
        for i, name in enumerate(names):
            cell = cells[i] if cells[i] != "" else (defaults[i] if i < len(defaults) else "")
            record[name] = _convert(cell, types[i] if i < len(types) else "string")
        if "error" in record and "reference" in record and "_value" not in record:
            raise InfluxError(f"Flux error: {record['error']}")
        yield record


def blocks_from_records(
    records: list[dict[str, Any]],
    pipeline: Pipeline,
    *,
    label: str = "stop",
) -> list[SeriesBlock]:
    """Pivot long rows (one per time, field, tag set) into one block per tag set."""
    tag_keys = pipeline.output_tag_keys
    columns = {name: i for i, name in enumerate(pipeline.fields)}
    cells: dict[tuple[str, ...], dict[int, dict[int, float]]] = {}
    for record in records:
        field = record.get("_field")
        if field not in columns or record.get("_time") is None:
            continue
        key = tuple(str(record.get(t) or "") for t in tag_keys)
        value = record.get("_value")
        row = cells.setdefault(key, {}).setdefault(int(record["_time"]), {})
        row[columns[field]] = np.nan if value is None else float(value)
    blocks = []
    for key in sorted(cells):
        by_time = cells[key]
        times = np.array(sorted(by_time), dtype=np.int64)
        values = np.full((times.size, len(pipeline.fields)), np.nan)  # (T, C)
        for t_index, t in enumerate(times.tolist()):
            for c_index, value in by_time[t].items():
                values[t_index, c_index] = value
        blocks.append(
            SeriesBlock(
                tags=dict(zip(tag_keys, key, strict=True)),
                timestamps_ns=start_labels(times, pipeline.interval_ns, label),
                values=values,
            )
        )
    return blocks


class FluxReader:
    """Reads pipeline series with Flux through influxdb-client's query API (2.x, 1.8+)."""

    def __init__(self, connection: Connection) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient

        token = connection.token or (
            f"{connection.username}:{connection.password or ''}" if connection.username else ""
        )
        self._client = InfluxDBClient(
            url=connection.url, token=token, org=connection.org or "-", timeout=connection.timeout_ms
        )
        self._api = self._client.query_api()

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def query_csv(self, query: str) -> str:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = self._api.query_raw(query)
        except ApiException as exc:
            status = int(exc.status or 0)
            message = f"Flux query -> HTTP {status}: {str(exc.body or exc.reason)[:300]}"
            if status == 429 or status >= 500 or status == 0:
                raise InfluxUnavailable(message, status=status) from exc
            raise InfluxError(message, status=status) from exc
        except HTTPError as exc:
            raise InfluxUnavailable(f"Flux query: {exc}") from exc
        return bytes(response.data).decode()

    def read(self, pipeline: Pipeline, start_ns: int, stop_ns: int) -> list[SeriesBlock]:
        records = list(parse_annotated_csv(self.query_csv(build_flux(pipeline, start_ns, stop_ns))))
        return blocks_from_records(records, pipeline, label="stop")

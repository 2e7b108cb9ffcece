"""Deleting what a rescore replaces: the `anomaly_scores` and `anomaly_events` points of some
series over a span of time, so that a rescore leaves exactly what it scores now.

InfluxDB 1.x: one InfluxQL `DELETE` per span and measurement, the series ORed (an absent tag
is matched by `tag = ''`); `DELETE` acts on every retention policy of the database. With the
v2 write API: `/api/v2/delete`, one request per series, span and measurement (its predicate has
no OR). A server without that endpoint (InfluxDB 3 Core) answers 404/405/501: the task says so
once and goes on without deleting, so a rescore overwrites but stale points may remain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from stad.influx_task.config import Pipeline
from stad.influx_task.influxql import parse_response, quote_ident, quote_string
from stad.influx_task.output import output_tags
from stad.influx_task.times import rfc3339_from_ns
from stad.influx_task.transport import InfluxError, Transport

log = logging.getLogger("stad.influx_task")
SERIES_PER_STATEMENT = 100
Spans = Mapping[tuple[int, int], Sequence[Mapping[str, str]]]  # [start, stop) -> source tag sets


def _tag_values(pipeline: Pipeline, tags: Mapping[str, str]) -> dict[str, str]:
    """Every output tag key with its value, "" for a tag the series lacks."""
    out = output_tags(pipeline, tags)
    return {key: out.get(key, "") for key in (*pipeline.output_tag_keys, "model", "source_measurement")}


def delete_statement(
    measurement: str, series: Sequence[Mapping[str, str]], start_ns: int, stop_ns: int
) -> str:
    """`DELETE FROM m WHERE (<series> OR ...) AND time >= start AND time < stop`."""
    if stop_ns <= start_ns or not series:
        raise ValueError(f"nothing to delete: {len(series)} series over [{start_ns}, {stop_ns})")
    ored = " OR ".join(
        "(" + " AND ".join(f"{quote_ident(k)} = {quote_string(v)}" for k, v in sorted(s.items())) + ")"
        for s in series
    )
    span = f"time >= {start_ns} AND time < {stop_ns}"
    return f"DELETE FROM {quote_ident(measurement)} WHERE ({ored}) AND {span}"


def delete_predicate(measurement: str, tags: Mapping[str, str]) -> str:
    """A /api/v2/delete predicate: `_measurement="m" AND k="v" ...`."""
    parts = [("_measurement", measurement), *sorted(tags.items())]
    return " AND ".join(f"{key}={_double_quoted(value)}" for key, value in parts)


def _double_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SpanEraser:
    """Deletes a pipeline's output points of given series over given spans."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.unsupported = False  # the server has no delete endpoint (said once)

    def erase(self, pipeline: Pipeline, spans: Spans) -> None:
        if self.unsupported:
            return
        for (start, stop), sources in spans.items():
            series = [_tag_values(pipeline, tags) for tags in sources]
            for measurement in (pipeline.output_measurement, pipeline.events_measurement):
                if self.transport.connection.uses_v2_write:
                    for tags in series:
                        if not self._delete_v2(pipeline, measurement, tags, start, stop):
                            return
                else:
                    for first in range(0, len(series), SERIES_PER_STATEMENT):
                        batch = series[first : first + SERIES_PER_STATEMENT]
                        self._delete_v1(pipeline, delete_statement(measurement, batch, start, stop))

    def _delete_v1(self, pipeline: Pipeline, statement: str) -> None:
        # One statement per request: influxd 1.x may skip a second DELETE in the same request.
        body = urlencode({"q": statement}).encode()
        answer = self.transport.request(
            "POST",
            "/query",
            params={"db": pipeline.out_database},
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        parse_response(answer)

    def _delete_v2(
        self, pipeline: Pipeline, measurement: str, tags: Mapping[str, str], start: int, stop: int
    ) -> bool:
        """One /api/v2/delete; False when the server has no such endpoint."""
        connection = self.transport.connection
        retention = pipeline.output_retention_policy
        bucket = pipeline.out_database + (f"/{retention}" if retention else "")
        body = {
            "start": rfc3339_from_ns(start),
            "stop": rfc3339_from_ns(stop - 1),  # the endpoint's stop is inclusive
            "predicate": delete_predicate(measurement, tags),
        }
        try:
            self.transport.request(
                "POST",
                "/api/v2/delete",
                params={"org": connection.org or "", "bucket": bucket},
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        except InfluxError as exc:
            if exc.status not in (404, 405, 501):
                raise
            self.unsupported = True
            log.warning(
                "InfluxDB at %s cannot delete points (%s): a rescore overwrites the points it "
                "writes again, but events and scores it no longer writes stay (said once)",
                connection.url,
                exc,
            )
            return False
        return True

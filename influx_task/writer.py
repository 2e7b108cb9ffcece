"""Line-protocol writes, synchronous and checked: `/write` (1.x) or `/api/v2/write`.

A write returns only after InfluxDB answered 204; anything else raises
InfluxError (InfluxUnavailable for 5xx/429/connection errors, retryable). The one
exception: points older than the retention policy keeps, which InfluxDB drops
(HTTP 400/422 "points beyond retention policy dropped"), count as written: they
would be deleted at once anyway, and retrying them would stall the task for good.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from stad.influx_task.points import Point, point_lines
from stad.influx_task.transport import InfluxError, Transport

log = logging.getLogger("stad.influx_task")
_BEYOND_RETENTION = re.compile(r"points beyond retention policy dropped=(\d+)")


class LineWriter:
    """Writes points to one database/bucket, `batch_lines` lines per request."""

    def __init__(self, transport: Transport, *, batch_lines: int = 5000) -> None:
        if batch_lines <= 0:
            raise ValueError(f"batch_lines must be positive, got {batch_lines}")
        self.transport = transport
        self.batch_lines = batch_lines
        self.dropped_by_retention = 0  # points InfluxDB dropped as older than the retention policy

    def _post(self, path: str, params: dict[str, str], body: bytes, headers: dict[str, str]) -> None:
        try:
            self.transport.request("POST", path, params=params, body=body, headers=headers)
        except InfluxError as exc:
            found = _BEYOND_RETENTION.search(str(exc))
            if exc.status not in (400, 422) or found is None:
                raise
            if self.dropped_by_retention == 0:
                log.warning(
                    "InfluxDB dropped points older than the retention policy of %s; they count as "
                    "written (said once): %s",
                    params.get("rp") or params.get("bucket") or params.get("db"),
                    exc,
                )
            self.dropped_by_retention += int(found.group(1))

    def write_lines(self, lines: Sequence[str], *, database: str, retention_policy: str | None = None) -> int:
        """Write the lines (each a point of line protocol); returns how many were sent."""
        connection = self.transport.connection
        for start in range(0, len(lines), self.batch_lines):
            body = ("\n".join(lines[start : start + self.batch_lines]) + "\n").encode()
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if connection.uses_v2_write:
                bucket = database + (f"/{retention_policy}" if retention_policy else "")
                params = {"bucket": bucket, "org": connection.org or "", "precision": "ns"}
                self._post("/api/v2/write", params, body, headers)
            else:
                params = {"db": database, "precision": "ns"}
                if retention_policy:
                    params["rp"] = retention_policy
                self._post("/write", params, body, headers)
        return len(lines)

    def write(self, points: Iterable[Point], *, database: str, retention_policy: str | None = None) -> int:
        """Write the points; returns how many lines were sent."""
        return self.write_lines(point_lines(points), database=database, retention_policy=retention_policy)

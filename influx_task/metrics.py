"""The task's Prometheus metrics and its liveness/readiness endpoints, on one HTTP port.

GET /metrics   Prometheus text: points read and written, steps scored, failures by
               kind, lag and last pass per pipeline, pass durations
GET /healthz   200 while the run loop is alive (it moved within `alive_s`), else 503
GET /readyz    200 once every pipeline's last pass succeeded, else 503 naming the others
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class TaskMetrics:
    def __init__(self, pipelines: Iterable[str], *, alive_s: float) -> None:
        self.registry = CollectorRegistry()
        self.alive_s = alive_s
        labels = ["pipeline"]
        self.points_read = Counter(
            "stad_influx_points_read", "field values read from InfluxDB", labels, registry=self.registry
        )
        self.points_written = Counter(
            "stad_influx_points_written", "points written (scores and events)", labels, registry=self.registry
        )
        self.steps_scored = Counter(
            "stad_influx_steps_scored", "steps scored", labels, registry=self.registry
        )
        self.failures = Counter(
            "stad_influx_failures",
            "failures by kind: a retried call (retry) or a failed pass (the error's type)",
            ["pipeline", "kind"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "stad_influx_lag_seconds",
            "now - offset minus the oldest checkpoint",
            labels,
            registry=self.registry,
        )
        self.last_pass = Gauge(
            "stad_influx_last_pass_timestamp_seconds", "end of the last pass", labels, registry=self.registry
        )
        self.pass_duration = Histogram(
            "stad_influx_pass_duration_seconds", "one pass over a pipeline", labels, registry=self.registry
        )
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._outcome: dict[str, str | None] = dict.fromkeys(pipelines)  # None: no pass yet

    def beat(self) -> None:
        with self._lock:
            self._beat = time.monotonic()

    def chunk(self, pipeline: str, read: int, steps: int, points: int) -> None:
        self.beat()
        self.points_read.labels(pipeline).inc(read)
        self.steps_scored.labels(pipeline).inc(steps)
        self.points_written.labels(pipeline).inc(points)

    def retry(self, pipeline: str) -> None:
        self.beat()
        self.failures.labels(pipeline, "retry").inc()

    def pass_done(
        self, pipeline: str, error: str, *, seconds: float | None = None, lag_s: float | None = None
    ) -> None:
        self.beat()
        with self._lock:
            self._outcome[pipeline] = error
        if error:
            self.failures.labels(pipeline, error.split(":", 1)[0]).inc()
        if seconds is not None:
            self.pass_duration.labels(pipeline).observe(seconds)
        if lag_s is not None:
            self.lag.labels(pipeline).set(lag_s)
        self.last_pass.labels(pipeline).set(time.time())

    def alive(self) -> bool:
        with self._lock:
            return time.monotonic() - self._beat <= self.alive_s

    def not_ready(self) -> list[str]:
        """Pipelines without a successful last pass."""
        with self._lock:
            return sorted(name for name, error in self._outcome.items() if error is None or error)


class MetricsServer:
    """Serves a TaskMetrics on 127.0.0.1 or all interfaces; a context manager."""

    def __init__(self, metrics: TaskMetrics, port: int, host: str = "0.0.0.0") -> None:
        handler = type("Handler", (_Handler,), {"metrics": metrics})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    metrics: TaskMetrics  # set on the subclass MetricsServer makes

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            alive = self.metrics.alive()
            self._answer(200 if alive else 503, b"alive\n" if alive else b"stalled\n")
        elif self.path == "/readyz":
            waiting = self.metrics.not_ready()
            text = "ready\n" if not waiting else f"not ready: {', '.join(waiting)}\n"
            self._answer(503 if waiting else 200, text.encode())
        else:
            self._answer(404, b"not found\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

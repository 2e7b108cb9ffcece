"""Prometheus metrics of one server, served over HTTP.

Names follow the style of model servers (Triton, TorchServe): counters end in
`_total`, durations are histograms in seconds. The average batch size is
`stad_inference_windows_total / stad_inference_batches_total`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stad.core.jobs import JOB_STATES

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServerMetrics:
    """The server's metrics in a registry of their own (several servers can share a process)."""

    def __init__(self, device_memory: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stad_requests_total",
            "RPCs handled, by method and outcome (the gRPC status code name).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "stad_request_duration_seconds",
            "Time from receiving an RPC to its last response, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.windows = Counter(
            "stad_inference_windows_total",
            "Windows scored, by model.",
            ["model"],
            registry=self.registry,
        )
        self.batches = Counter(
            "stad_inference_batches_total",
            "Batch executions (compute calls), by model.",
            ["model"],
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "stad_inference_queue_duration_seconds",
            "Time windows waited in the batching queue before compute, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "stad_inference_compute_duration_seconds",
            "Compute time of one batch execution, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pending_windows = Gauge(
            "stad_inference_pending_windows",
            "Windows waiting in the batching queues.",
            registry=self.registry,
        )
        self.request_memory = Gauge(
            "stad_request_memory_bytes",
            "Memory reserved for the scoring requests being served (--max-request-memory-mb).",
            registry=self.registry,
        )
        self.request_memory_waits = Counter(
            "stad_request_memory_waits_total",
            "Scoring calls that waited for request memory before their message was read.",
            registry=self.registry,
        )
        self.training_jobs = Gauge(
            "stad_training_jobs",
            "Training jobs known to the server, by state.",
            ["state"],
            registry=self.registry,
        )
        for state in JOB_STATES:
            self.training_jobs.labels(state=state.value).set(0)
        self.device_memory = Gauge(
            "stad_device_memory_bytes",
            "Memory allocated on the CUDA device (0 on CPU).",
            registry=self.registry,
        )
        if device_memory is not None:
            self.device_memory.set_function(device_memory)
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observer(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint (`/metrics`); returns the bound port."""
        self._http, self._thread = start_http_server(port, addr=address, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class ModelObserver:
    """Feeds one model version's batching events into the metrics (a BatchObserver)."""

    def __init__(self, metrics: ServerMetrics, model: str) -> None:
        self._metrics = metrics
        self._model = model

    def queued(self, wait_s: float) -> None:
        self._metrics.queue_seconds.labels(model=self._model).observe(wait_s)

    def batch_done(self, windows: int, compute_s: float) -> None:
        self._metrics.windows.labels(model=self._model).inc(windows)
        self._metrics.batches.labels(model=self._model).inc()
        self._metrics.compute_seconds.labels(model=self._model).observe(compute_s)

    def pending_changed(self, delta: int) -> None:
        self._metrics.pending_windows.inc(delta)

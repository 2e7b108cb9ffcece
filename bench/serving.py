"""Serving throughput and latency of the stad gRPC server under concurrent load.

`python -m bench.serving` (or `make bench-serving`) prints a table and writes
bench/results/serving.json:

    {"device": "cpu", "reference_windows_per_s": ..., "full_batch_compute_ms": ...,
     "in_process_batching_gain": ...,
     "runs": [{"clients", "request": "window" | "series", "batching", "windows_per_s",
               "p50_ms", "p99_ms", "avg_batch", "errors"}, ...],
     "cpu": {the same figures}, "cuda": {the same, when run on a GPU}}

Two servers run as child processes (`python -m stad.server`, each its own
interpreter) on loopback ports: one batching (max batch 64 windows, 5 ms max
queue delay unless --max-queue-delay-ms says otherwise), one not (max batch 1).
A load generator with 1, 8, 32 and 128 concurrent clients sends single-window
requests (one window of steps) and 1,000-step requests. Every combination runs
in short bursts over several rounds, batching on and off alternating and followed by a burst of the in-process
reference (`Detector.score` at its best batch size), so that a busy spell of a
shared machine hits all of them alike: the ratios are what count. Calls in flight
when a burst ends are cancelled and not counted. `avg_batch` comes from the
server's own metrics. torch runs one intra-op thread everywhere."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from grpc import aio

from bench.report import write_json
from stad.core.series import make_series, series_to_proto
from stad.server.detector import Detector, DetectorConfig
from stad.server.registry import Registry
from stad.v1 import scoring_pb2, scoring_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
MODEL = "bench"
CHANNELS = 8
CLIENTS = (1, 8, 32, 128)
MAX_BATCH = 64
QUEUE_DELAY_MS = 5.0
SERIES_STEPS = 1000
REFERENCE_BATCHES = (1, 8, 32, 64, 128, 256)
# One intra-op thread for the reference and the server alike: on a CPU shared with
# other busy processes, torch's spinning worker threads are many times slower.
TORCH_THREADS = 1


def _values(steps: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=CHANNELS)
    return np.sin(t / 9 + phase) + 0.1 * rng.normal(size=(steps, CHANNELS))  # (T, C)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_model(model_dir: Path) -> Detector:
    """A default-size detector, briefly trained (speed does not depend on the weights)."""
    config = DetectorConfig().replace(epochs=1, max_windows_per_epoch=256)
    channels = [f"c{i}" for i in range(CHANNELS)]
    detector = Detector(config).fit(_values(2000, seed=0), channels=channels)
    with tempfile.TemporaryDirectory() as saved:
        detector.save(saved)
        Registry(model_dir, Detector.load).register(MODEL, Path(saved), activate=True)
    return detector


def reference(detector: Detector, seconds: float) -> tuple[float, dict[int, float], float]:
    """Best in-process windows/s over batch sizes, all of them, and one full batch's compute ms."""
    values = _values(8000, seed=1)
    n_windows = int(detector.plan_windows(values).windows.shape[0])
    per_batch: dict[int, float] = {}
    for batch in REFERENCE_BATCHES:
        count, began = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - began < seconds:
            detector.score(values, batch_size=batch)
            count += n_windows
        per_batch[batch] = count / (time.perf_counter() - began)
    windows = detector.plan_windows(values).windows[:MAX_BATCH]
    detector.score_windows(windows)
    began = time.perf_counter()
    for _ in range(5):
        detector.score_windows(windows)
    full_batch_ms = 1000 * (time.perf_counter() - began) / 5
    return max(per_batch.values()), per_batch, full_batch_ms


class ServerProcess:
    """`python -m stad.server` on a free loopback port."""

    def __init__(
        self, model_dir: Path, max_batch: int, delay_ms: float, device: str, queue_windows: int = 65536
    ) -> None:
        self.port = _free_port()
        self.metrics_port = _free_port()
        command = [
            sys.executable,
            "-m",
            "stad.server",
            "--address",
            f"127.0.0.1:{self.port}",
            "--model-dir",
            str(model_dir),
            "--device",
            device,
            "--metrics-port",
            str(self.metrics_port),
            "--max-batch-windows",
            str(max_batch),
            "--max-queue-delay-ms",
            str(delay_ms),
            "--max-queue-windows",
            str(queue_windows),
            "--torch-threads",
            str(TORCH_THREADS),
        ]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "serving stad.v1" in line:
                break
        else:
            raise RuntimeError(f"the server exited with {self.process.wait()} before serving")

    def counters(self) -> tuple[float, float]:
        """(windows scored, batch executions) so far, from the metrics endpoint."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()

        def total(name: str) -> float:
            return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))

        return total("stad_inference_windows_total"), total("stad_inference_batches_total")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@dataclass
class Tally:
    """What the bursts of one (clients, request, batching) combination added up to."""

    windows: int = 0
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    scored: float = 0.0  # windows the server computed, from its metrics
    batches: float = 0.0


async def burst(
    stub: scoring_pb2_grpc.ScoringServiceAsyncStub,
    clients: int,
    request: scoring_pb2.ScoreRequest,
    windows_per_request: int,
    seconds: float,
    tally: Tally,
) -> None:
    """`clients` concurrent callers, each sending `request` back to back for `seconds`.

    Calls still in flight at the end are cancelled and not counted.
    """

    async def client() -> None:
        while True:
            began = time.perf_counter()
            try:
                await stub.Score(request, timeout=120)
            except aio.AioRpcError:
                tally.errors += 1
                continue
            tally.latencies.append(time.perf_counter() - began)
            tally.windows += windows_per_request

    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tally.seconds += seconds


def reference_burst(detector: Detector, values: npt.NDArray[np.float64], batch: int, seconds: float) -> Tally:
    n_windows = int(detector.plan_windows(values).windows.shape[0])
    tally = Tally()
    began = time.perf_counter()
    while tally.windows == 0 or time.perf_counter() - began < seconds:
        detector.score(values, batch_size=batch)
        tally.windows += n_windows
    tally.seconds = time.perf_counter() - began
    return tally


async def measure(
    servers: dict[bool, ServerProcess],
    detector: Detector,
    requests: dict[str, tuple[scoring_pb2.ScoreRequest, int]],
    best_batch: int,
    rounds: int,
    seconds: float,
) -> tuple[list[dict[str, Any]], Tally]:
    """Bursts of every combination, batching on and off alternating with in-process
    reference bursts, so that a busy spell of the shared machine hits all alike."""
    reference = Tally()
    ref_values = _values(4000, seed=1)
    tallies: dict[tuple[int, str, bool], Tally] = {}
    channels = {b: aio.insecure_channel(f"127.0.0.1:{srv.port}") for b, srv in servers.items()}
    stubs = {b: scoring_pb2_grpc.ScoringServiceStub(ch) for b, ch in channels.items()}
    for request, _ in requests.values():
        for stub in stubs.values():
            await stub.Score(request)  # warm: connection and model load
    for round_ in range(rounds):
        for kind, (request, per_request) in requests.items():
            for clients in CLIENTS:
                for batching in (True, False) if round_ % 2 == 0 else (False, True):
                    tally = tallies.setdefault((clients, kind, batching), Tally())
                    before = servers[batching].counters()
                    await burst(stubs[batching], clients, request, per_request, seconds, tally)
                    await asyncio.sleep(0.3)  # let a batch cut off by the cancel finish
                    after = servers[batching].counters()
                    tally.scored += after[0] - before[0]
                    tally.batches += after[1] - before[1]
                part = reference_burst(detector, ref_values, best_batch, seconds / 2)
                reference.windows += part.windows
                reference.seconds += part.seconds
        print(f"round {round_ + 1}/{rounds} done", flush=True)
    for channel in channels.values():
        await channel.close(None)
    runs = []
    for (clients, kind, batching), tally in tallies.items():
        lat_ms = 1000 * np.asarray(tally.latencies) if tally.latencies else np.asarray([np.nan])
        runs.append(
            {
                "clients": clients,
                "request": kind,
                "batching": batching,
                "windows_per_s": tally.windows / tally.seconds,
                "p50_ms": float(np.percentile(lat_ms, 50)),
                "p99_ms": float(np.percentile(lat_ms, 99)),
                "avg_batch": tally.scored / tally.batches if tally.batches else 0.0,
                "errors": tally.errors,
            }
        )
    runs.sort(key=lambda r: (not r["batching"], r["request"] != "window", r["clients"]))
    return runs, reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per combination")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=QUEUE_DELAY_MS,
        help="the batching server's max queue delay",
    )
    args = parser.parse_args(argv)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(TORCH_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        detector = train_model(model_dir)
        if device == "cuda":
            detector = Detector.load(model_dir / MODEL / "1", device="cuda")
        window = detector.config.model.window
        _, per_batch, full_batch_ms = reference(detector, seconds=1.0)
        best_batch = max(per_batch, key=per_batch.__getitem__)
        print(
            "in-process windows/s by batch size: "
            + ", ".join(f"{b}: {v:.0f}" for b, v in per_batch.items())
            + f"; the reference bursts use {best_batch}",
            flush=True,
        )
        names = list(detector.channels_)
        requests = {
            kind: (
                scoring_pb2.ScoreRequest(
                    model=MODEL, series=[series_to_proto(make_series(_values(steps, 2), channels=names))]
                ),
                int(detector.plan_windows(_values(steps, 2)).windows.shape[0]),
            )
            for kind, steps in (("window", window), ("series", SERIES_STEPS))
        }
        servers = {
            b: ServerProcess(model_dir, MAX_BATCH if b else 1, args.max_queue_delay_ms, device)
            for b in (True, False)
        }
        try:
            runs, ref = asyncio.run(
                measure(servers, detector, requests, best_batch, args.rounds, args.seconds)
            )
        finally:
            for server in servers.values():
                server.stop()
    figures = {
        "device": device,
        "reference_windows_per_s": ref.windows / ref.seconds,
        "reference_batch_size": best_batch,
        "reference_by_batch": {str(b): v for b, v in per_batch.items()},
        "full_batch_compute_ms": full_batch_ms,
        # What batching alone gains in-process (best batch vs batch 1): with the server's
        # per-call overhead on top, about the most batching on/off can reach on this device.
        "in_process_batching_gain": max(per_batch.values()) / per_batch[1],
        "settings": {
            "max_batch_windows": MAX_BATCH,
            "max_queue_delay_ms": args.max_queue_delay_ms,
            "rounds": args.rounds,
            "seconds_per_burst": args.seconds,
            "channels": CHANNELS,
            "window": window,
            "series_steps": SERIES_STEPS,
            "cpu_count": os.cpu_count(),
            "torch_threads": TORCH_THREADS,
            "load_average": os.getloadavg(),
        },
        "runs": runs,
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    document = {**figures, **{k: v for k, v in previous.items() if k in ("cpu", "cuda")}, device: figures}
    write_json(args.out, document)
    print(_table(runs))
    print(_verdict(figures))
    print(f"wrote {args.out}")
    return 0


def _row(run: dict[str, Any]) -> str:
    return (
        f"{run['clients']:>7} {run['request']:>7} {('on' if run['batching'] else 'off'):>8} "
        f"{run['windows_per_s']:>10.0f} {run['p50_ms']:>8.1f} {run['p99_ms']:>8.1f} "
        f"{run['avg_batch']:>9.1f} {run['errors']:>6}"
    )


def _table(runs: list[dict[str, Any]]) -> str:
    head = f"{'clients':>7} {'request':>7} {'batching':>8} {'windows/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
    head += f"{'avg batch':>9} {'errors':>6}"
    return "\n".join([head, *(_row(r) for r in runs)])


def _verdict(figures: dict[str, Any]) -> str:
    def pick(batching: bool) -> dict[str, Any]:
        return next(
            r
            for r in figures["runs"]
            if r["clients"] == 32 and r["request"] == "window" and r["batching"] is batching
        )

    on, off = pick(True), pick(False)
    bound = figures["settings"]["max_queue_delay_ms"] + 3 * figures["full_batch_compute_ms"]
    return (
        f"reference {figures['reference_windows_per_s']:.0f} windows/s. 32 single-window clients: "
        f"batching on/off = {on['windows_per_s'] / off['windows_per_s']:.2f}x (target >= 2), "
        f"on/reference = {on['windows_per_s'] / figures['reference_windows_per_s']:.0%} (target >= 70%), "
        f"p99 {on['p99_ms']:.1f} ms vs bound {bound:.1f} ms (max queue delay + 3 x full-batch compute); "
        f"in-process, batching alone gains {figures['in_process_batching_gain']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())

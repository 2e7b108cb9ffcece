"""Serving throughput and latency of the stad gRPC server under concurrent load.

`python -m bench.serving` (or `make bench-serving`) prints a table and writes
bench/results/serving.json:

    {"device": "cpu", "reference_windows_per_s": ..., "full_batch_compute_ms": ...,
     "runs": [{"clients", "request": "window" | "series", "batching", "windows_per_s",
               "p50_ms", "p99_ms", "avg_batch", "errors"}, ...],
     "cpu": {the same figures}, "cuda": {the same, when run on a GPU}}

One run of this module: the server runs in a child process (`python -m
stad.server`, so it has its own interpreter) on a loopback port, once with
batching (max batch 64 windows, 5 ms max queue delay) and once without (max batch
1). A load generator with 1, 8, 32 and 128 concurrent clients sends
single-window requests (64 steps) and 1,000-step requests, each for a fixed time.
The reference is in-process `Detector.score` throughput at its best batch size,
measured in the same run. `avg_batch` comes from the server's own metrics.
"""

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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from grpc import aio

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
    config = DetectorConfig(epochs=1, max_windows_per_epoch=256)
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

    def __init__(self, model_dir: Path, max_batch: int, device: str) -> None:
        self.port = _free_port()
        self.metrics_port = _free_port()
        command = [
            sys.executable, "-m", "stad.server",
            "--address", f"127.0.0.1:{self.port}", "--model-dir", str(model_dir),
            "--device", device, "--metrics-port", str(self.metrics_port),
            "--max-batch-windows", str(max_batch), "--max-queue-delay-ms", str(QUEUE_DELAY_MS),
            "--max-queue-windows", "65536", "--torch-threads", str(TORCH_THREADS),
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


async def load(
    target: str, clients: int, request: scoring_pb2.ScoreRequest, windows_per_request: int, seconds: float
) -> dict[str, Any]:
    """`clients` concurrent callers, each sending `request` back to back for `seconds`."""
    latencies: list[float] = []
    errors = 0
    async with aio.insecure_channel(target) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        await stub.Score(request)  # warm: connection, model load
        async def client() -> None:
            nonlocal errors
            while True:
                began = time.perf_counter()
                try:
                    await stub.Score(request, timeout=120)
                except aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)

        # Calls still in flight at the end are cancelled and not counted.
        tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = seconds
    lat_ms = 1000 * np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "windows_per_s": len(latencies) * windows_per_request / elapsed,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load run")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(TORCH_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        detector = train_model(model_dir)
        if device == "cuda":
            detector = Detector.load(model_dir / MODEL / "1", device="cuda")
        window = detector.config.window
        best, per_batch, full_batch_ms = reference(detector, seconds=min(args.seconds, 2.0))
        print(f"in-process reference: {best:.0f} windows/s (by batch: "
              + ", ".join(f"{b}: {v:.0f}" for b, v in per_batch.items()) + ")")
        names = list(detector.channels_)
        requests = {
            "window": scoring_pb2.ScoreRequest(
                model=MODEL, series=[series_to_proto(make_series(_values(window, 2), channels=names))]
            ),
            "series": scoring_pb2.ScoreRequest(
                model=MODEL, series=[series_to_proto(make_series(_values(SERIES_STEPS, 3), channels=names))]
            ),
        }
        windows_per = {
            "window": 1,
            "series": int(detector.plan_windows(_values(SERIES_STEPS, 3)).windows.shape[0]),
        }
        runs = []
        for batching in (True, False):
            server = ServerProcess(model_dir, MAX_BATCH if batching else 1, device)
            try:
                for kind in ("window", "series"):
                    for clients in CLIENTS:
                        before = server.counters()
                        figures = asyncio.run(
                            load(f"127.0.0.1:{server.port}", clients, requests[kind],
                                 windows_per[kind], args.seconds)
                        )
                        after = server.counters()
                        batches = after[1] - before[1]
                        run = {
                            "clients": clients, "request": kind, "batching": batching, **figures,
                            "avg_batch": (after[0] - before[0]) / batches if batches else 0.0,
                        }
                        runs.append(run)
                        print(_row(run), flush=True)
            finally:
                server.stop()
    figures = {
        "device": device,
        "reference_windows_per_s": best,
        "reference_by_batch": {str(b): v for b, v in per_batch.items()},
        "full_batch_compute_ms": full_batch_ms,
        "settings": {"max_batch_windows": MAX_BATCH, "max_queue_delay_ms": QUEUE_DELAY_MS,
                     "seconds_per_run": args.seconds, "channels": CHANNELS, "window": window,
                     "series_steps": SERIES_STEPS, "cpu_count": os.cpu_count(),
                     "torch_threads": TORCH_THREADS, "load_average": os.getloadavg()},
        "runs": runs,
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    document = {**figures, **{k: v for k, v in previous.items() if k in ("cpu", "cuda")}, device: figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
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
            r for r in figures["runs"]
            if r["clients"] == 32 and r["request"] == "window" and r["batching"] is batching
        )

    on, off = pick(True), pick(False)
    bound = QUEUE_DELAY_MS + 3 * figures["full_batch_compute_ms"]
    return (
        f"32 single-window clients: batching on/off = {on['windows_per_s'] / off['windows_per_s']:.2f}x "
        f"(target >= 2), on/reference = {on['windows_per_s'] / figures['reference_windows_per_s']:.0%} "
        f"(target >= 70%), p99 {on['p99_ms']:.1f} ms vs bound {bound:.1f} ms "
        f"(max queue delay + 3 x full-batch compute)"
    )


if __name__ == "__main__":
    sys.exit(main())

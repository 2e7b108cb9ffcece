"""Scoring one long series end to end: 10^6 steps x 8 channels by default.

`python -m bench.long_series` prints a table and writes bench/results/long_series.json:

    {"steps", "channels", "config", "paths": {"in_process" | "client_score" | "stream_score":
     {"seconds", "steps_per_s", "calls"?, "equal_to_in_process"}}, "ratios": {...}, ...}

A default-size detector (briefly trained: speed does not depend on the weights) scores
the same series three ways, side by side in one run: in process (`Detector.score`), through
`Client.score` (the series cut in overlapping chunks, one Score call each, joined) and
through one StreamScore call of the whole series (`chunk_steps` = its length: the server
queues its windows in turns). The server is a
child process (`python -m stad.server`) with default settings (max message 64 MiB, queue
8,192 windows, batch 64) on a loopback port; torch runs one intra-op thread everywhere.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import write_json
from bench.serving import CHANNELS, MODEL, TORCH_THREADS, ServerProcess, _values, train_model
from stad.client import Client, ScoreResult
from stad.client._channel import DEFAULT_MAX_MESSAGE_MB
from stad.client._chunks import default_chunk_steps, join_results
from stad.core.types import MIB
from stad.server.detector import ScoreOutput
from stad.server.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "long_series.json"
NAMES = [f"c{i}" for i in range(CHANNELS)]


def _same(result: ScoreResult, reference: ScoreOutput) -> bool:
    return bool(
        np.array_equal(result.score, reference.score)
        and np.array_equal(result.contributions, reference.contributions)
        and np.array_equal(result.expected, reference.expected)
    )


def _timed(fn: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    defaults = Settings(model_dir=Path("."))
    values = _values(args.steps, seed=2)  # (T, 8)
    with tempfile.TemporaryDirectory() as model_dir:
        detector = train_model(Path(model_dir))
        reference, in_process_s = _timed(
            lambda: detector.score(values, batch_size=defaults.max_batch_windows)
        )
        server = ServerProcess(
            Path(model_dir),
            defaults.max_batch_windows,
            defaults.max_queue_delay_ms,
            "cpu",
            queue_windows=defaults.max_queue_windows,
        )
        try:
            with Client(f"127.0.0.1:{server.port}", timeout_s=None) as client:
                chunked, client_s = _timed(lambda: client.score(values, channels=NAMES, model=MODEL))
                streamed, stream_s = _timed(
                    lambda: join_results(
                        list(client.stream_score(values, channels=NAMES, model=MODEL, chunk_steps=args.steps))
                    )
                )
        finally:
            server.stop()
    chunk_steps = default_chunk_steps(CHANNELS, DEFAULT_MAX_MESSAGE_MB * MIB)
    paths = {
        "in_process": {"seconds": in_process_s, "equal_to_in_process": True},
        "client_score": {
            "seconds": client_s,
            "calls": math.ceil(args.steps / chunk_steps),
            "chunk_steps": chunk_steps,
            "equal_to_in_process": _same(chunked, reference),
        },
        "stream_score": {"seconds": stream_s, "calls": 1, "equal_to_in_process": _same(streamed, reference)},
    }
    for figures in paths.values():
        figures["steps_per_s"] = args.steps / float(figures["seconds"])
    document = {
        "steps": args.steps,
        "channels": CHANNELS,
        "config": {
            k: v
            for k, v in asdict(detector.config).items()
            if k in ("window", "patch", "d_model", "n_layers", "score_stride")
        },
        "server": {
            "max_message_mb": defaults.max_message_mb,
            "max_queue_windows": defaults.max_queue_windows,
            "max_batch_windows": defaults.max_batch_windows,
        },
        "paths": paths,
        "ratios": {
            "client_score_over_in_process_time": client_s / in_process_s,
            "stream_score_over_in_process_time": stream_s / in_process_s,
        },
        "torch_threads": TORCH_THREADS,
        "load_average_1m": os.getloadavg()[0],
    }
    print(f"{args.steps:,} steps x {CHANNELS} channels")
    print(f"{'path':<14} {'seconds':>8} {'steps/s':>10} {'calls':>6}  equal")
    for name, figures in paths.items():
        calls = figures.get("calls", "-")
        print(
            f"{name:<14} {figures['seconds']:8.1f} {figures['steps_per_s']:10,.0f} {calls!s:>6}  "
            f"{figures['equal_to_in_process']}"
        )
    write_json(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Backfill throughput of the InfluxDB task against a local influxd, and the raw parts alone.

    make bench-influx            # python -m bench.influx [--series 100 --fields 8 --steps 10000]

One run: a throwaway influxd on loopback, an embedded scoring server with a
model trained briefly on one series, S series x C fields x T points written.
Then, side by side on the same data:
- the task: `backfill` over the whole range (read, score, write, checkpoint-free);
  steps_per_s = S*T / wall time;
- the raw parts, each timed alone (into another database): one InfluxQL query of everything (query_s),
  scoring every series whole through the same server (score_s; all series in
  as few Score calls as the message limit allows, no context overlap), one write of
  every anomaly_scores point (write_s); raw_steps_per_s = S*T / their sum.
overhead_ratio = steps_per_s / raw_steps_per_s (target >= 0.7). Raw and task
runs alternate `--repeats` times and the fastest of each counts, since this
machine is shared with other work.
Prints a table and writes bench/results/influx.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stad.client import Client, TrainingSettings
from stad.core.demo_data import generate
from stad.core.series import make_series
from stad.influx_task.config import Connection, Pipeline, RetrySettings, ServerSettings, TaskConfig
from stad.influx_task.grid import to_grid
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.local_influxd import Influxd, influxd_path
from stad.influx_task.output import score_points
from stad.influx_task.points import Point
from stad.influx_task.task import Task
from stad.influx_task.transport import Transport
from stad.influx_task.writer import LineWriter
from stad.server.embedded import EmbeddedServer

RESULTS = Path(__file__).parent / "results" / "influx.json"
STEP_S = 300  # 5-minute steps: the demo generator needs two days of steps at least
SETTINGS = TrainingSettings(epochs=1, window=64, patch=8, d_model=64, n_layers=2, n_heads=4, seed=0)


def _load(url: str, series: int, fields: int, steps: int) -> tuple[tuple[str, ...], int, int]:
    transport = Transport(Connection(url=url, timeout_ms=300_000))
    writer = LineWriter(transport, batch_lines=10_000)
    channels: tuple[str, ...] = ()
    start = end = 0
    for index in range(series):
        data = generate(seed=index, steps=steps, channels=fields, freq_s=STEP_S, anomalies_per_kind=1)
        channels = data.channels
        start, end = int(data.timestamps_ns[0]), int(data.timestamps_ns[-1]) + STEP_S * 10**9
        points = [
            Point(
                "plant",
                {"unit": f"u{index:03d}"},
                {name: float(data.values[t, c]) for c, name in enumerate(channels)},
                int(data.timestamps_ns[t]),
            )
            for t in range(steps)
        ]
        writer.write(points, database="bench")
    transport.close()
    return channels, start, end


def run(series: int, fields: int, steps: int, chunk_steps: int, repeats: int) -> dict[str, Any]:
    binary = influxd_path()
    if binary is None:
        raise SystemExit("influxd is not installed (apt-get install influxdb)")
    root = Path(tempfile.mkdtemp(prefix="stad-bench-influx-"))
    try:
        with Influxd(root / "influxd", binary=binary) as influxd, EmbeddedServer(root / "models") as server:
            for name in ("bench", "out_task", "out_raw"):
                influxd.query(f'CREATE DATABASE "{name}"')
            t0 = time.perf_counter()
            channels, start, end = _load(influxd.url, series, fields, steps)
            load_s = time.perf_counter() - t0
            job = Pipeline(
                name="bench",
                database="bench",
                measurement="plant",
                fields=channels,
                model="bench",
                interval_ns=STEP_S * 10**9,
                group_by=("unit",),
                context_steps=SETTINGS.window or 64,
                chunk_steps=chunk_steps,
                series_per_call=series,
                output_database="out_task",
            )
            trainer = Pipeline(**{**vars(job), "name": "bench_train", "tag_filter": {"unit": ("u000",)}})
            config = TaskConfig(
                connection=Connection(url=influxd.url, timeout_ms=300_000),
                server=ServerSettings(target=server.target, timeout_s=600),
                retry=RetrySettings(),
                pipelines=(job, trainer),
            )
            with Task(config) as task:
                t0 = time.perf_counter()
                task.train(
                    "bench_train",
                    start,
                    start + min(steps, 2000) * STEP_S * 10**9,
                    settings=SETTINGS,
                    timeout_s=1800,
                )  # one series: training is not measured
                train_s = time.perf_counter() - t0
                runs = []
                for _ in range(repeats):  # alternate raw and task so both see the same machine load
                    raw = _raw(influxd.url, server.target, job, start, end)
                    t0 = time.perf_counter()
                    stats = task.backfill("bench", start, end, restart=True)
                    runs.append({**raw, "task_s": time.perf_counter() - t0})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = series * steps
    best = {key: min(r[key] for r in runs) for key in runs[0]}  # least disturbed by other jobs
    task_s = best["task_s"]
    steps_per_s = total / task_s
    raw_s = best["query_s"] + best["score_s"] + best["write_s"]
    parts = {"query": best["query_s"], "score": best["score_s"], "write": best["write_s"]}
    return {
        "series": series,
        "fields": fields,
        "steps_per_series": steps,
        "total_steps": total,
        "chunk_steps": chunk_steps,
        "context_steps": job.context_steps,
        "repeats": repeats,
        "steps_scored_by_task": stats.steps,
        "points_written_by_task": stats.points,
        "task_s": round(task_s, 3),
        "steps_per_s": round(steps_per_s, 1),
        **{k: round(best[k], 3) for k in ("query_s", "score_s", "write_s")},
        "raw_steps_per_s": round(total / raw_s, 1),
        "overhead_ratio": round(steps_per_s / (total / raw_s), 3),
        "bottleneck": max(parts, key=lambda k: parts[k]),
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "load_s": round(load_s, 3),
        "train_s": round(train_s, 3),
        "model": {k: v for k, v in vars(SETTINGS).items() if v is not None},
        "scoring_device": "cpu (EmbeddedServer device=auto)",
        "influxdb": "influxd 1.6.7 (Debian package), loopback, InfluxQL read path, /write",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; shared with other jobs",
    }


def _raw(url: str, target: str, job: Pipeline, start: int, end: int) -> dict[str, float]:
    transport = Transport(Connection(url=url, timeout_ms=600_000))
    t0 = time.perf_counter()
    blocks = InfluxQLReader(transport).read(job, start, end)
    query_s = time.perf_counter() - t0
    grids = [
        (
            b,
            *to_grid(
                b.timestamps_ns,
                b.values,
                start_ns=start,
                stop_ns=end,
                interval_ns=job.interval_ns,
                fill=job.fill,
            ),
        )
        for b in blocks
    ]
    t0 = time.perf_counter()
    results = []
    steps, fields = grids[0][2].shape
    response_bytes = steps * (2 * fields + 5) * 8  # per series: 5 per-step columns + 2 per channel
    per_call = max(1, 32 * 2**20 // response_bytes)  # half the 64 MiB message limit, both ways
    with Client(target, timeout_s=1800) as client:
        for first in range(0, len(grids), per_call):
            group = grids[first : first + per_call]
            results += client.score_many(
                [make_series(v, channels=job.fields, timestamps_ns=t) for _, t, v in group], model=job.model
            )
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw_job = Pipeline(**{**vars(job), "output_database": "out_raw"})
    points: list[Point] = []
    for (block, _, values), result in zip(grids, results, strict=True):
        observed = np.asarray(~np.isnan(values).all(axis=1), dtype=np.bool_)
        keep = observed & (result.timestamps_ns >= start) & np.isfinite(result.score)
        points += score_points(raw_job, dict(block.tags), result, keep)
    LineWriter(transport, batch_lines=10_000).write(points, database="out_raw")
    write_s = time.perf_counter() - t0
    transport.close()
    return {"query_s": query_s, "score_s": score_s, "write_s": write_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chunk-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="raw/task rounds; the best of each counts")
    parser.add_argument("--note", default="", help="kept in the JSON (e.g. why the size was scaled)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.series, args.fields, args.steps, args.chunk_steps, args.repeats)
    if args.note:
        result["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'metric':<24}{'value':>14}")
    for key in (
        "series",
        "fields",
        "steps_per_series",
        "steps_per_s",
        "raw_steps_per_s",
        "query_s",
        "score_s",
        "write_s",
        "task_s",
        "overhead_ratio",
        "bottleneck",
    ):
        print(f"{key:<24}{result[key]!s:>14}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

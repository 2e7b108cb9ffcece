"""Throughput of the InfluxDB task's pipeline against a local influxd, beside each stage alone.

    make bench-influx            # python -m bench.influx [--series 100 --fields 8 --steps 10000]

One run: a throwaway influxd on loopback, an embedded scoring server with a
model trained briefly on one series, S series x C fields x T points written.
Then, for 1 and for 4 shards (the shards' workers running at once, as threads of
this process), side by side:
- each stage alone, the shards in parallel (into another database): one InfluxQL
  query per shard of the series it owns (query_s), scoring every series whole
  through the same server (score_s), one write of every anomaly_scores point
  (write_s); a stage's steps/s = S*T / its seconds;
- the same three stages again, all at once (`together`): each stage's seconds
  while the other two compete for the same cores, as they do inside the task;
- the task: `backfill` over the whole range, its read, score and write stages
  overlapping; steps_per_s = S*T / wall time.
pipeline_ratio = end-to-end steps/s / the slowest stage's own steps/s, each stage
alone (issue 11's target: >= 0.85). pipeline_ratio_together = the same against
the slowest stage while the three run at once: like with like where the stages
are CPU-bound on few cores (2 here), since each stage alone has the whole
machine and the task runs all stages of all shards at once; on a machine with
cores to spare for every stage the two agree. For 1 shard at the top level and per shard count under `shards`.
Stage and task runs alternate `--repeats` times and the fastest of each counts,
since this machine is shared with other work. Prints a table and writes
bench/results/influx.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_json
from bench.serving import ServerProcess
from stad.client import Client, TrainingSettings
from stad.core.demo_data import generate
from stad.core.series import make_series
from stad.influx_task.config import Connection, Pipeline, RetrySettings, ServerSettings, TaskConfig
from stad.influx_task.grid import to_grid
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.local_influxd import Influxd, influxd_path
from stad.influx_task.output import score_lines
from stad.influx_task.points import Point
from stad.influx_task.runner import PassStats, Shard, owned_only
from stad.influx_task.task import Task
from stad.influx_task.transport import Transport
from stad.influx_task.writer import LineWriter

RESULTS = Path(__file__).parent / "results" / "influx.json"
PROCESSES = ("client", "server", "influxd")
STEP_S = 300  # 5-minute steps: the demo generator needs two days of steps at least
SETTINGS = TrainingSettings(epochs=1, window=64, patch=8, d_model=64, n_layers=2, n_heads=4, seed=0)


class CpuMeter:
    """CPU seconds (user + system, all threads) of this process, the scoring server and influxd."""

    def __init__(self, server_pid: int, influxd_pid: int) -> None:
        self.pids = {"server": server_pid, "influxd": influxd_pid}
        self.tick_s = 1 / os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float]:
        found = {"client": time.process_time()}
        for name, pid in self.pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[name] = (int(fields[11]) + int(fields[12])) * self.tick_s  # utime, stime
        return found

    def since(self, before: dict[str, float], phase: str) -> dict[str, float]:
        """`<phase>_cpu_<process>_s` for each process since `before`."""
        now = self.read()
        return {f"{phase}_cpu_{name}_s": now[name] - before[name] for name in PROCESSES}


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
    server: ServerProcess | None = None
    try:
        server = ServerProcess(root / "models", max_batch=64, delay_ms=5.0, device="cpu")
        with Influxd(root / "influxd", binary=binary) as influxd:
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
                server=ServerSettings(target=f"127.0.0.1:{server.port}", timeout_s=600),
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
            assert server.process.pid and influxd.pid
            meter = CpuMeter(server.process.pid, influxd.pid)
            by_shards = {}
            for shards in (1, 4):
                runs = []
                for _ in range(repeats):  # alternate stages and task so both see the same machine load
                    stages = _stages(influxd.url, f"127.0.0.1:{server.port}", job, start, end, shards, meter)
                    before = meter.read()
                    task_s, stats = _backfill(config, start, end, shards)
                    runs.append({**stages, "task_s": task_s, **meter.since(before, "task")})
                by_shards[str(shards)] = _figures(runs, series * steps, stats)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    one = by_shards["1"]
    return {
        "series": series,
        "fields": fields,
        "steps_per_series": steps,
        "total_steps": series * steps,
        "chunk_steps": chunk_steps,
        "context_steps": job.context_steps,
        "repeats": repeats,
        **{
            k: one[k]
            for k in (
                "steps_per_s",
                "query_s",
                "score_s",
                "write_s",
                "task_s",
                "pipeline_ratio",
                "pipeline_ratio_together",
            )
        },
        "bottleneck": one["bottleneck"],
        "shards": by_shards,
        "load_s": round(load_s, 3),
        "train_s": round(train_s, 3),
        "model": {k: v for k, v in vars(SETTINGS).items() if v is not None},
        "scoring_device": "cpu (`python -m stad.server` in its own process)",
        "influxdb": "influxd 1.6.7 (Debian package), loopback, InfluxQL read path, /write",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; shared with other jobs",
    }


STAGES = ("query", "score", "write")


def _figures(runs: list[dict[str, float]], total: int, stats: PassStats) -> dict[str, Any]:
    best = {key: min(r[key] for r in runs) for key in runs[0]}  # least disturbed by other jobs
    stage_rates = {k: total / best[f"{k}_s"] for k in STAGES}
    together_rates = {k: total / best[f"together_{k}_s"] for k in STAGES}
    slowest = min(stage_rates, key=lambda k: stage_rates[k])
    slowest_together = min(together_rates, key=lambda k: together_rates[k])
    steps_per_s = total / best["task_s"]
    return {
        "steps_per_s": round(steps_per_s, 1),
        **{f"{k}_steps_per_s": round(v, 1) for k, v in stage_rates.items()},
        **{k: round(best[k], 3) for k in ("query_s", "score_s", "write_s", "task_s")},
        "bottleneck": slowest,
        "together": {
            **{f"{k}_steps_per_s": round(v, 1) for k, v in together_rates.items()},
            **{f"{k}_s": round(best[f"together_{k}_s"], 3) for k in STAGES},
            "bottleneck": slowest_together,
        },
        "pipeline_ratio": round(steps_per_s / stage_rates[slowest], 3),
        "pipeline_ratio_together": round(steps_per_s / together_rates[slowest_together], 3),
        "steps_scored_by_task": stats.steps,
        "points_written_by_task": stats.points,
        "stage_busy_s_in_task": {k: round(v, 3) for k, v in stats.stage_s.items()},
        # CPU seconds per process: the three stages alone (summed) and the task; a task that
        # used about as much CPU as its stages added no work, and on C cores it cannot end
        # before its total CPU seconds / C
        "cpu_s": {
            phase: {name: round(sum(best[f"{s}_cpu_{name}_s"] for s in stages), 3) for name in PROCESSES}
            for phase, stages in (("stages_alone", STAGES), ("task", ("task",)))
        },
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
    }


def _in_parallel(work: list[Callable[[], Any]]) -> tuple[float, list[Any]]:
    """Run the calls in threads at once; the wall time and their results."""
    results: list[Any] = [None] * len(work)

    def call(i: int) -> None:
        results[i] = work[i]()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(work))]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0, results


def _backfill(config: TaskConfig, start: int, end: int, shards: int) -> tuple[float, PassStats]:
    tasks = [Task(config, shard=Shard(i, shards)) for i in range(shards)]
    try:
        wall, outcome = _in_parallel(
            [lambda t=t: t.backfill("bench", start, end, restart=True) for t in tasks]  # type: ignore[misc]
        )
    finally:
        for task in tasks:
            task.close()
    total = PassStats()
    for stats in outcome:
        total.steps += stats.steps
        total.points += stats.points
        for key, value in stats.stage_s.items():
            total.stage_s[key] = max(total.stage_s[key], value)
    return wall, total


def _stages(
    url: str, target: str, job: Pipeline, start: int, end: int, shards: int, meter: CpuMeter
) -> dict[str, float]:
    """Each stage over all series, the shards' parts in parallel: its wall time alone, and
    its wall time with all three stages started at once (`together_<stage>_s`)."""
    transport = Transport(Connection(url=url, timeout_ms=600_000))

    def query() -> tuple[float, list[Any]]:
        return _in_parallel(
            [lambda i=i: _query_part(transport, job, start, end, Shard(i, shards)) for i in range(shards)]  # type: ignore[misc]
        )

    def score(parts: list[Any]) -> tuple[float, list[Any]]:
        return _in_parallel([lambda p=p: _score_part(target, job, p) for p in parts])  # type: ignore[misc]

    before = meter.read()
    query_s, parts = query()
    cpu = meter.since(before, "query")
    before = meter.read()
    score_s, scored = score(parts)
    cpu |= meter.since(before, "score")
    raw_job = Pipeline(**{**vars(job), "output_database": "out_raw"})
    writer = LineWriter(transport, batch_lines=10_000)

    def write() -> tuple[float, list[Any]]:
        return _in_parallel(
            [
                lambda g=g, r=r: _write_part(writer, raw_job, g, r, start)  # type: ignore[misc]
                for g, r in zip(parts, scored, strict=True)
            ]
        )

    before = meter.read()
    write_s, _ = write()
    cpu |= meter.since(before, "write")
    _, together = _in_parallel([lambda: query()[0], lambda: score(parts)[0], lambda: write()[0]])
    transport.close()
    return {
        "query_s": query_s,
        "score_s": score_s,
        "write_s": write_s,
        **{f"together_{k}_s": seconds for k, seconds in zip(STAGES, together, strict=True)},
        **cpu,
    }


def _write_part(writer: LineWriter, job: Pipeline, grids: list[Any], results: list[Any], start: int) -> int:
    """What one shard of the task does to commit its scores: build the lines, write them."""
    lines = [
        line
        for (block, _, values), result in zip(grids, results, strict=True)
        for line in score_lines(
            job,
            dict(block.tags),
            result,
            (~np.isnan(values).all(axis=1)) & (result.timestamps_ns >= start) & np.isfinite(result.score),
        )
    ]
    return writer.write_lines(lines, database=job.out_database)


def _query_part(transport: Transport, job: Pipeline, start: int, end: int, shard: Shard) -> list[Any]:
    """What one shard of the task reads: the series it owns (see PipelineRunner._read)."""
    reader = InfluxQLReader(transport)
    listed = reader.series_tags(job) if shard.count > 1 else None
    owned = job if listed is None else owned_only(job, shard, listed)
    blocks = reader.read(owned, start, end) if owned is not None else []
    return [
        (b, *to_grid(b.timestamps_ns, b.values, start_ns=start, stop_ns=end, interval_ns=job.interval_ns))
        for b in blocks
    ]


def _score_part(target: str, job: Pipeline, grids: list[Any]) -> list[Any]:
    if not grids:
        return []
    results: list[Any] = []
    steps, fields = grids[0][2].shape
    response_bytes = steps * (2 * fields + 5) * 8  # per series: 5 per-step columns + 2 per channel
    per_call = max(1, 32 * 2**20 // response_bytes)  # half the 64 MiB message limit, both ways
    with Client(target, timeout_s=1800) as client:
        for first in range(0, len(grids), per_call):
            group = grids[first : first + per_call]
            results += client.score_many(
                [make_series(v, channels=job.fields, timestamps_ns=t) for _, t, v in group], model=job.model
            )
    return results


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
    write_json(args.out, result)
    print(f"{'steps/s':<30}{'1 shard':>14}{'4 shards':>14}")
    rows: list[tuple[str, tuple[str, ...]]] = [(f"{k} alone", (k + "_steps_per_s",)) for k in STAGES]
    rows += [(f"{k} together", ("together", k + "_steps_per_s")) for k in STAGES]
    rows += [(k, (k,)) for k in ("steps_per_s", "pipeline_ratio", "pipeline_ratio_together", "bottleneck")]
    for label, path in rows:
        cells = []
        for n in ("1", "4"):
            value: Any = result["shards"][n]
            for key in path:
                value = value[key]
            cells.append(f"{value!s:>14}")
        print(f"{label:<30}" + "".join(cells))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

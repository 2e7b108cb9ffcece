"""The InfluxDB round trip of the demo: demo series into InfluxDB, train, run the task, read back.

    python -m stad.influx_task.demo [--out demo_out/influx] [--epochs 3]

Uses the InfluxDB 1.x at INFLUX_URL when it answers /ping, else starts a
throwaway `influxd` on loopback when one is on the PATH; with neither it says
how to get one and returns 0 (the rest of `make demo` is the file-based path).
Prints metrics of the scores read back from `anomaly_scores` against the
labels and writes a plot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stad.client import TrainingSettings
from stad.core.demo_data import DemoData, generate
from stad.influx_task.config import Connection, Pipeline, RetrySettings, ServerSettings, TaskConfig
from stad.influx_task.influxql import InfluxQLReader
from stad.influx_task.local_influxd import Influxd, influxd_path
from stad.influx_task.points import Point
from stad.influx_task.transport import InfluxError, Transport
from stad.influx_task.writer import LineWriter

DATABASE = "stad_demo"
HOW_TO = (
    "no InfluxDB: set INFLUX_URL to a reachable InfluxDB 1.x, or install one "
    "(Debian/Ubuntu: apt-get install influxdb) so that `influxd` is on the PATH"
)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=3) as response:
            return bool(response.status == 204)
    except OSError:
        return False


@contextlib.contextmanager
def influxdb() -> Iterator[str | None]:
    """The URL of an InfluxDB to use (a throwaway one if need be), or None."""
    url = os.environ.get("INFLUX_URL")
    if url and _answers(url):
        yield url
        return
    binary = influxd_path()
    if binary is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="stad-demo-influxd-"))
    try:
        with Influxd(root, binary=binary) as server:
            print(f"started a throwaway influxd at {server.url}")
            yield server.url
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _load(transport: Transport, data: DemoData) -> None:
    InfluxQLReader(transport).query(f'CREATE DATABASE "{DATABASE}"', post=True)
    points = [
        Point(
            "station",
            {"site": "demo"},
            {name: float(data.values[t, c]) for c, name in enumerate(data.channels)},
            int(data.timestamps_ns[t]),
        )
        for t in range(data.values.shape[0])
    ]
    LineWriter(transport, batch_lines=5000).write(points, database=DATABASE)


def _read_scores(transport: Transport, data: DemoData, start: int) -> dict[str, np.ndarray]:
    channel = data.channels[0]
    series = InfluxQLReader(transport).query(
        f'SELECT "score", "threshold", "is_anomaly", "expected_{channel}" FROM "anomaly_scores" '
        f"WHERE time >= {start} AND \"site\" = 'demo'",
        database=DATABASE,
    )
    if not series:
        raise InfluxError("no anomaly_scores came back")
    rows = series[0]["values"]
    return {
        "time": np.array([r[0] for r in rows], dtype=np.int64),
        "score": np.array([r[1] for r in rows], dtype=np.float64),
        "threshold": np.array([r[2] for r in rows], dtype=np.float64),
        "is_anomaly": np.array([bool(r[3]) for r in rows]),
        "expected": np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=np.float64),
    }


def _plot(path: Path, data: DemoData, scores: dict[str, np.ndarray], first: int) -> None:
    from matplotlib.figure import Figure

    x = data.timestamps_ns[first:].astype("datetime64[ns]")
    labels = data.labels[first:]
    figure = Figure(figsize=(14, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(x, data.values[first:, 0], lw=0.6, label=f"observed {data.channels[0]}")
    top.plot(scores["time"].astype("datetime64[ns]"), scores["expected"], lw=0.6, label="expected")
    bottom.plot(scores["time"].astype("datetime64[ns]"), scores["score"], lw=0.6, label="score")
    bottom.plot(
        scores["time"].astype("datetime64[ns]"), scores["threshold"], "r--", lw=0.8, label="threshold"
    )
    for axis in (top, bottom):
        axis.fill_between(
            x,
            0,
            1,
            where=labels,
            transform=axis.get_xaxis_transform(),
            alpha=0.15,
            color="red",
            label="labelled anomaly",
        )
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle("stad: scores read back from InfluxDB (anomaly_scores)")
    figure.savefig(path, dpi=110)


def round_trip(
    out: Path,
    *,
    epochs: int = 3,
    seed: int = 0,
    steps: int | None = None,
    settings: TrainingSettings | None = None,
) -> int:
    """Run the InfluxDB round trip; returns an exit status (0 also when no InfluxDB is found).

    `steps` shortens the demo series and `settings` replaces the training settings (tests use both).
    """
    from stad.core.metrics import evaluate
    from stad.influx_task.task import Task
    from stad.server.embedded import EmbeddedServer

    with influxdb() as url:
        if url is None:
            print(HOW_TO)
            return 0
        out.mkdir(parents=True, exist_ok=True)
        data = generate(seed=seed) if steps is None else generate(seed=seed, steps=steps)
        transport = Transport(Connection(url=url, timeout_ms=120_000))
        _load(transport, data)
        print(f"wrote {data.values.shape[0]} points x {len(data.channels)} fields to {url} db={DATABASE}")
        step = int(data.timestamps_ns[1] - data.timestamps_ns[0])
        pipeline = Pipeline(
            name="demo",
            database=DATABASE,
            measurement="station",
            fields=data.channels,
            model="demo_influx",
            interval_ns=step,
            group_by=("site",),
            context_steps=128,
        )
        with EmbeddedServer(out / "models") as server:
            config = TaskConfig(
                connection=Connection(url=url, timeout_ms=120_000),
                server=ServerSettings(target=server.target, timeout_s=600),
                retry=RetrySettings(),
                pipelines=(pipeline,),
            )
            with Task(config) as task:
                quiet_end = int(data.timestamps_ns[data.quiet_steps])
                print("training through the task on the quiet period ...")
                final = task.train(
                    "demo",
                    int(data.timestamps_ns[0]),
                    quiet_end,
                    settings=settings or TrainingSettings(epochs=epochs, seed=seed),
                    timeout_s=3600,
                )
                print(f"trained demo_influx version {final.version}")
                stats = task.backfill("demo", quiet_end, int(data.timestamps_ns[-1]) + step)
                print(f"task: {stats.steps} steps scored, {stats.points} points written")
        scores = _read_scores(transport, data, quiet_end)
        transport.close()
    first = data.quiet_steps
    index = np.searchsorted(data.timestamps_ns, scores["time"])
    labels = data.labels[index]
    metrics = evaluate(scores["score"], labels, predictions=scores["is_anomaly"])
    print(f"\nscores read back from anomaly_scores: {scores['score'].size} steps")
    for key in ("precision", "recall", "f1", "auc_roc", "auc_pr", "vus_pr", "standard_f1", "pa_f1"):
        print(f"  {key:<14}{metrics[key]:8.3f}")
    plot = out / "influx_scores.png"
    _plot(plot, data, scores, first)
    print(f"plot: {plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.influx_task.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out/influx"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return round_trip(args.out, epochs=args.epochs, seed=args.seed)
    except (InfluxError, OSError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

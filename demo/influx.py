"""The InfluxDB round trip of the demo: demo series into InfluxDB, train and score through
`stad influx` against a `stad serve` process, read the scores back.

    python -m stad.demo.influx [--out demo_out/influx] [--epochs 3]

Uses the InfluxDB 1.x at INFLUX_URL when it answers /ping, else starts a
throwaway `influxd` on loopback when one is on the PATH; with neither it says
how to get one and returns 0 (the rest of `make demo` is the file-based path).
Prints metrics of the scores read back from `anomaly_scores` against the
labels and writes a plot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stad.client import cli
from stad.core.demo_data import DemoData, generate
from stad.core.metrics import evaluate
from stad.demo.server import ServerProcess
from stad.influx_task.local_influxd import Influxd, influxd_path

DATABASE = "stad_demo"
MODEL = "demo_influx"
HOW_TO = (
    "no InfluxDB: set INFLUX_URL to a reachable InfluxDB 1.x, or install one "
    "(Debian/Ubuntu: apt-get install influxdb) so that `influxd` is on the PATH"
)
LINES_PER_WRITE = 5000


class RoundTripFailed(RuntimeError):
    """A step of the round trip failed; the message says which."""


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


def _http(url: str, path: str, params: dict[str, str], body: bytes | None = None) -> Any:
    """One call of InfluxDB 1.x's HTTP API; the decoded JSON answer (None when empty)."""
    request = urllib.request.Request(f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}", data=body)
    with urllib.request.urlopen(request, timeout=120) as response:
        text = response.read()
    return json.loads(text) if text else None


def _load(url: str, data: DemoData) -> None:
    """The demo series as measurement `station`, tag site=demo, one field per channel."""
    _http(url, "/query", {"q": f'CREATE DATABASE "{DATABASE}"'}, body=b"")
    lines = [
        "station,site=demo "
        + ",".join(f"{name}={float(data.values[t, c])!r}" for c, name in enumerate(data.channels))
        + f" {int(data.timestamps_ns[t])}"
        for t in range(data.values.shape[0])
    ]
    for first in range(0, len(lines), LINES_PER_WRITE):
        body = "\n".join(lines[first : first + LINES_PER_WRITE]).encode()
        _http(url, "/write", {"db": DATABASE, "precision": "ns"}, body=body)


def _jobs_toml(url: str, target: str, data: DemoData, out: Path) -> Path:
    step_s = int(data.timestamps_ns[1] - data.timestamps_ns[0]) // 10**9
    path = out / "jobs.toml"
    path.write_text(f"""
[influx]
url = "{url}"
timeout_ms = 120000

[server]
target = "{target}"
timeout_s = 600

[state]
checkpoint = "{out / "checkpoints.json"}"

[[pipelines]]
name = "demo"
database = "{DATABASE}"
measurement = "station"
fields = {json.dumps(list(data.channels))}
group_by = ["site"]
model = "{MODEL}"
interval = "{step_s}s"
context = 128
""")
    return path


def _stad(*args: str) -> None:
    print(f"\n$ stad {' '.join(args)}", flush=True)
    code = cli.main(list(args))
    if code != 0:
        raise RoundTripFailed(f"`stad {' '.join(args)}` exited with {code}")


def _read_scores(url: str, data: DemoData, start: int) -> dict[str, np.ndarray]:
    channel = data.channels[0]
    query = (
        f'SELECT "score", "threshold", "is_anomaly", "expected_{channel}" FROM "anomaly_scores" '
        f"WHERE time >= {start} AND \"site\" = 'demo'"
    )
    answer = _http(url, "/query", {"db": DATABASE, "q": query, "epoch": "ns"})
    series = answer["results"][0].get("series") if answer else None
    if not series:
        raise RoundTripFailed("no anomaly_scores came back")
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
    times = scores["time"].astype("datetime64[ns]")
    figure = Figure(figsize=(14, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(x, data.values[first:, 0], lw=0.6, label=f"observed {data.channels[0]}")
    top.plot(times, scores["expected"], lw=0.6, label="expected")
    bottom.plot(times, scores["score"], lw=0.6, label="score")
    bottom.plot(times, scores["threshold"], "r--", lw=0.8, label="threshold")
    for axis in (top, bottom):
        axis.fill_between(
            x,
            0,
            1,
            where=data.labels[first:],
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
    train_flags: Sequence[str] = (),
    device: str = "auto",
) -> int:
    """Run the InfluxDB round trip; returns an exit status (0 also when no InfluxDB is found).

    `steps` shortens the demo series and `train_flags` adds `stad influx train` flags (tests use both).
    """
    with influxdb() as url:
        if url is None:
            print(HOW_TO)
            return 0
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints.json").unlink(missing_ok=True)  # the state of an earlier demo's influxd
        data = generate(seed=seed) if steps is None else generate(seed=seed, steps=steps)
        _load(url, data)
        print(f"wrote {data.values.shape[0]} points x {len(data.channels)} fields to {url} db={DATABASE}")
        step = int(data.timestamps_ns[1] - data.timestamps_ns[0])
        quiet_end = int(data.timestamps_ns[data.quiet_steps])
        with ServerProcess(out / "models", device=device) as server:
            print(f"started `stad serve` at {server.target}")
            config = str(_jobs_toml(url, server.target, data, out))
            pipeline = ("--config", config, "--pipeline", "demo")
            history = ("--start", str(int(data.timestamps_ns[0])), "--stop", str(quiet_end))
            rest = ("--start", str(quiet_end), "--stop", str(int(data.timestamps_ns[-1]) + step))
            settings = ("--epochs", str(epochs), "--seed", str(seed), *train_flags)
            _stad("influx", "train", *pipeline, *history, *settings)
            _stad("influx", "backfill", *pipeline, *rest)
        scores = _read_scores(url, data, quiet_end)
    index = np.searchsorted(data.timestamps_ns, scores["time"])
    metrics = evaluate(scores["score"], data.labels[index], predictions=scores["is_anomaly"])
    print(f"\nscores read back from anomaly_scores: {scores['score'].size} steps")
    for key in ("precision", "recall", "f1", "auc_roc", "auc_pr", "vus_pr", "standard_f1", "pa_f1"):
        print(f"  {key:<14}{metrics[key]:8.3f}")
    plot = out / "influx_scores.png"
    _plot(plot, data, scores, data.quiet_steps)
    print(f"plot: {plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.demo.influx", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out/influx"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return round_trip(args.out, epochs=args.epochs, seed=args.seed)
    except (OSError, RuntimeError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

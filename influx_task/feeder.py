"""The compose stack's demo feeder: generated plant data into InfluxDB, history then live.

    python -m stad.influx_task.feeder --config /etc/stad/jobs.toml --pipeline pumps [--units 3]

For each of `--units` series (the pipeline's first `group_by` tag) it writes two
days of history up to now, trains the pipeline's model on the quiet first half
when the server has none yet (activating it), then writes one step per
`interval` at the wall clock until SIGTERM (`--live-steps N`: stop after N).
The generated sensors take the pipeline's field names, in order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Sequence

from stad.client import Client, NotFound, TrainingSettings
from stad.core.demo_data import DemoData, generate
from stad.influx_task.config import Pipeline, load_config
from stad.influx_task.points import Point
from stad.influx_task.task import Task
from stad.influx_task.transport import Transport
from stad.influx_task.writer import LineWriter

log = logging.getLogger("stad.influx_task.feeder")
HISTORY_DAYS = 2
MODEL = TrainingSettings(window=32, patch=8, d_model=32, n_layers=1, n_heads=2, seed=0)


def _points(pipeline: Pipeline, unit: str, data: DemoData, rows: range, shift_ns: int) -> list[Point]:
    tag = pipeline.group_by[0] if pipeline.group_by else "unit"
    fixed = {k: v[0] for k, v in pipeline.tag_filter.items() if len(v) == 1}
    return [
        Point(
            pipeline.measurement,
            {**fixed, tag: unit},
            {name: float(data.values[t % data.values.shape[0], c]) for c, name in enumerate(pipeline.fields)},
            int(data.timestamps_ns[0]) + t * pipeline.interval_ns + shift_ns,
        )
        for t in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stad.influx_task.feeder", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--units", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--live-steps", type=int, default=0, help="stop after this many live steps (0: never)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = load_config(args.config)
    pipeline = config.pipeline(args.pipeline)
    step_s = pipeline.interval_ns // 10**9
    if not 1 <= step_s <= 3600 or pipeline.interval_ns % 10**9:
        raise SystemExit(f"pipeline {pipeline.name}: the feeder needs an interval of whole seconds, 1s..1h")
    history = HISTORY_DAYS * 86400 // step_s
    now = time.time_ns() // pipeline.interval_ns * pipeline.interval_ns
    units = [str(u + 1) for u in range(args.units)]
    series = {
        unit: generate(
            seed=u, steps=history, channels=len(pipeline.fields), freq_s=step_s, anomalies_per_kind=1
        )
        for u, unit in enumerate(units)
    }
    transport = Transport(config.connection)
    writer = LineWriter(transport)
    first = now - history * pipeline.interval_ns  # history: [first, now)
    for unit, data in series.items():
        shift = first - int(data.timestamps_ns[0])
        writer.write(_points(pipeline, unit, data, range(history), shift), database=pipeline.database)
    log.info("wrote %d steps of history for %d series", history, len(units))
    with Client(config.server.target, token=config.server.token) as client:
        try:
            client.model(pipeline.model)
            log.info("model %s is in place", pipeline.model)
        except NotFound:
            quiet = series[units[0]].quiet_steps
            with Task(config) as task:
                final = task.train(
                    pipeline.name,
                    first,
                    first + quiet * pipeline.interval_ns,
                    settings=TrainingSettings(**{**vars(MODEL), "epochs": args.epochs}),
                    activate=True,
                )
            log.info("trained %s version %s", final.model, final.version)
    step = history
    while not stop.is_set() and (args.live_steps == 0 or step < history + args.live_steps):
        stop.wait(max(0.0, (first + step * pipeline.interval_ns - time.time_ns()) / 1e9))
        for unit, data in series.items():
            shift = first - int(data.timestamps_ns[0])
            writer.write(
                _points(pipeline, unit, data, range(step, step + 1), shift), database=pipeline.database
            )
        log.info(
            "live step at %s", dt.datetime.fromtimestamp((first + step * pipeline.interval_ns) / 1e9, dt.UTC)
        )
        step += 1
    transport.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

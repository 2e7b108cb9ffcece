"""`stad influx ...`: once, run, backfill, train and check over the pipelines of a TOML file.

    stad influx once     --config jobs.toml
    stad influx run      --config jobs.toml [--shard 0/2]
    stad influx backfill --config jobs.toml --pipeline pumps --start 2024-01-01T00:00:00Z --stop now
    stad influx train    --config jobs.toml --pipeline pumps --start -7d --stop -1d --no-activate
    stad influx check    --config jobs.toml

Errors print as `Name: message` on stderr with exit status 1. SIGTERM (and
Ctrl-C) finish the chunks already read; `run` then exits 0, an interrupted `backfill`
exits 128 + the signal number and says where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from stad.client import NotFound
from stad.client.cli.options import add_global_options
from stad.client.cli.training_flags import add_training_flags, training_settings
from stad.core.progress import Progress, TrainingDisplay
from stad.influx_task.config import load_config
from stad.influx_task.retry import Interrupted
from stad.influx_task.runner import ChunkReport, PassStats, Shard
from stad.influx_task.times import parse_time_ns
from stad.influx_task.transport import InfluxError

if TYPE_CHECKING:
    from stad.influx_task.task import Task

TIME_FLAGS = ("--start", "--stop")


def _parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help="InfluxDB URL (else INFLUX_URL / INFLUXDB_V2_URL, else the file)")
    connection.add_argument("--token", help="InfluxDB token (else INFLUX_TOKEN / INFLUXDB_V2_TOKEN)")
    connection.add_argument("--org", help="InfluxDB 2.x organisation (else INFLUX_ORG / INFLUXDB_V2_ORG)")
    connection.add_argument("--username", help="InfluxDB 1.x user (else INFLUX_USERNAME)")
    connection.add_argument("--password", help="InfluxDB 1.x password (else INFLUX_PASSWORD)")
    connection.add_argument("--write-api", choices=["auto", "v1", "v2"], help="write endpoint")
    add_global_options(connection, names=("json",), default=None)
    connection.add_argument("-v", "--verbose", action="store_true", help="log each pass and retry")
    common = argparse.ArgumentParser(add_help=False, parents=[connection])
    common.add_argument("--config", required=True, help="pipelines TOML file (see jobs.example.toml)")
    add_global_options(common, names=("server", "timeout"), default=None)
    common.add_argument("--shard", default="0/1", help="i/n: handle the series whose key hashes to i")

    parser = argparse.ArgumentParser(prog="stad influx", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("once", parents=[common], help="one pass over every pipeline")
    once.add_argument(
        "--pipeline", "--job", action="append", dest="pipeline", help="only this one (repeatable)"
    )
    run = commands.add_parser("run", parents=[common], help="pass over each pipeline every `every`")
    run.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics (Prometheus), /healthz and /readyz on this port (0: any free port)",
    )
    check = commands.add_parser(
        "check", parents=[common], help="validate the file, connect, dry-run one chunk per pipeline"
    )
    check.add_argument("--pipeline", "--job", action="append", dest="pipeline", help="only this one")
    status = commands.add_parser("status", parents=[common], help="per pipeline and series: checkpoint, lag")
    status.add_argument("--pipeline", "--job", action="append", dest="pipeline", help="only this one")
    importer = commands.add_parser(
        "import",
        parents=[connection],
        help="write a CSV/Parquet file (as `stad train` reads it) into InfluxDB",
    )
    importer.add_argument("file")
    importer.add_argument("--measurement", required=True)
    importer.add_argument("--database", "--bucket", required=True, dest="database")
    importer.add_argument("--retention-policy")
    importer.add_argument("--tag", action="append", help="key=value, a tag on every point (repeatable)")
    importer.add_argument("--time-column", help="default: the first of time, timestamp, date, ...")
    importer.add_argument("--config", help="read [influx] from this file (flags and environment win)")
    backfill = commands.add_parser("backfill", parents=[common], help="score a time range")
    train = commands.add_parser("train", parents=[common], help="train the pipeline's model on history")
    for sub in (backfill, train):
        sub.add_argument("--pipeline", "--job", required=True, dest="pipeline")
        sub.add_argument("--start", required=True, help="RFC3339, ns since epoch, 'now' or '-7d'")
        sub.add_argument("--stop", default="now")
    backfill.add_argument("--no-progress", action="store_true")
    backfill.add_argument("--restart", action="store_true", help="ignore the progress of an earlier run")
    add_training_flags(train)
    return parser


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """`--start -14d` -> `--start=-14d`: argparse would take `-14d` for an option."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in TIME_FLAGS and i + 1 < len(args) and args[i + 1].startswith("-"):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def _stats_dict(stats: PassStats | Exception) -> dict[str, object]:
    if isinstance(stats, Exception):
        return {"ok": False, "error": f"{type(stats).__name__}: {stats}"}
    return {
        "ok": True,
        "chunks": stats.chunks,
        "steps": stats.steps,
        "points": stats.points,
        "series": len(stats.series),
        "rescored_series": len(stats.rescored),
        "lag_s": stats.lag_s,
        "interrupted": stats.interrupted,
    }


def _print_stats(name: str, stats: PassStats | Exception) -> None:
    if isinstance(stats, Exception):
        print(f"{name}: FAILED {type(stats).__name__}: {stats}")
    elif not stats.series:
        print(f"{name}: no data: no series matched the pipeline's measurement, fields and tags")
    else:
        print(
            f"{name}: {len(stats.series)} series, {stats.chunks} chunks, {stats.steps} steps scored, "
            f"{stats.points} points written"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `stad influx`; returns the exit status."""
    args = _parser().parse_args(_glue_relative_times(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    from stad.client import StadError
    from stad.influx_task.task import Task

    try:
        overrides = {
            "url": args.url,
            "token": args.token,
            "org": args.org,
            "username": args.username,
            "password": args.password,
            "write_api": args.write_api,
        }
        if args.command == "import":
            return _import(args, overrides)
        config = load_config(args.config, connection_overrides=overrides, server_target=args.server)
        if args.timeout is not None:
            config = replace(config, server=replace(config.server, timeout_s=args.timeout))
        with Task(config, shard=Shard.parse(args.shard), stop=stop) as task:
            if args.command == "run":
                return _run(task, args)
            if args.command == "status":
                return _status(task, args)
            task.probe()
            if args.command == "once":
                return _once(task, args)
            if args.command == "check":
                return _check(task, args)
            now = time.time_ns()
            start, stop_ns = parse_time_ns(args.start, now_ns=now), parse_time_ns(args.stop, now_ns=now)
            if args.command == "backfill":
                return _backfill(task, args, start, stop_ns, received)
            return _train(task, args, start, stop_ns)
    except Interrupted as exc:
        print(f"interrupted by signal {received[0] if received else '?'}: {exc}", file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGTERM)
    except (StadError, InfluxError, ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(task: Task, args: argparse.Namespace) -> int:
    from stad.influx_task.metrics import MetricsServer, TaskMetrics

    def report(name: str, outcome: PassStats | Exception) -> None:
        if args.json:
            print(json.dumps({name: _stats_dict(outcome)}), flush=True)

    if args.metrics_port is None:
        task.run(report)
        return 0
    config = task.config
    slowest = max([p.every_ns / 1e9 for p in config.pipelines] + [config.retry.cap_ms / 1000, 30.0])
    task.metrics = TaskMetrics([p.name for p in config.pipelines], alive_s=3 * slowest)
    with MetricsServer(task.metrics, args.metrics_port) as server:
        logging.getLogger("stad.influx_task").info("metrics on port %d", server.port)
        print(f"serving /metrics, /healthz, /readyz on port {server.port}", file=sys.stderr, flush=True)
        task.run(report)
    return 0


def _import(args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from stad.influx_task.importer import import_file, parse_tags
    from stad.influx_task.transport import Transport
    from stad.influx_task.writer import LineWriter

    config = load_config(args.config, connection_overrides=overrides)
    transport = Transport(config.connection)
    try:
        written, fields = import_file(
            args.file,
            LineWriter(transport),
            database=args.database,
            measurement=args.measurement,
            tags=parse_tags(args.tag),
            retention_policy=args.retention_policy,
            time_column=args.time_column,
        )
    finally:
        transport.close()
    if args.json:
        print(json.dumps({"points": written, "measurement": args.measurement, "fields": list(fields)}))
    else:
        print(f"wrote {written} points of {args.measurement} (fields {', '.join(fields)}) to {args.database}")
    return 0


def _status(task: Task, args: argparse.Namespace) -> int:
    report = task.status(args.pipeline)
    if args.json:
        print(json.dumps(report))
        return 0
    for name, entry in report.items():
        error = entry["last_error"] or "none"
        print(f"{name}: {len(entry['series'])} series, last error: {error}")
        for series, state in entry["series"].items():
            episode = ", episode open" if state["episode_open"] else ""
            print(f"  {series}: next step {state['next']} (lag {state['lag_s']:.0f} s{episode})")
    return 0


def _once(task: Task, args: argparse.Namespace) -> int:
    outcome = task.once(args.pipeline)
    if args.json:
        print(json.dumps({name: _stats_dict(stats) for name, stats in outcome.items()}))
    else:
        for name, stats in outcome.items():
            _print_stats(name, stats)
    return 1 if any(isinstance(s, Exception) for s in outcome.values()) else 0


def _check(task: Task, args: argparse.Namespace) -> int:
    results: dict[str, dict[str, object]] = {}
    for pipeline in task.config.pipelines:
        if args.pipeline and pipeline.name not in args.pipeline:
            continue
        try:
            report = task.check(pipeline)
            results[pipeline.name] = {"ok": True, "series": report.series, "steps": report.steps}
        except NotFound as exc:
            hint = f"train it first: stad influx train --config F --pipeline {pipeline.name} --start ..."
            results[pipeline.name] = {"ok": False, "error": f"NotFound: {exc}; {hint}"}
        except (ValueError, InfluxError, OSError) as exc:
            results[pipeline.name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if args.json:
        print(json.dumps(results))
    else:
        for name, result in results.items():
            if result["ok"]:
                print(f"{name}: ok: {result['series']} series, {result['steps']} steps scored (dry run)")
            else:
                print(f"{name}: FAILED {result['error']}")
    return 0 if all(r["ok"] for r in results.values()) else 1


def _backfill(task: Task, args: argparse.Namespace, start: int, stop_ns: int, received: list[int]) -> int:
    pipeline = task.config.pipeline(args.pipeline)
    step = pipeline.interval_ns
    show = not args.no_progress and not args.json
    total = max(0, (stop_ns - start) // step)
    with Progress(f"backfill {pipeline.name}", total=total if show else None) as bar:

        def advance(report: ChunkReport) -> None:
            if show:
                bar.advance(
                    max(0, min(report.stop_ns, stop_ns) // step - max(report.start_ns, start) // step)
                )

        task.on_chunk = advance
        stats = task.backfill(pipeline.name, start, stop_ns, restart=args.restart)
    if args.json:
        print(json.dumps({pipeline.name: _stats_dict(stats)}))
    else:
        _print_stats(pipeline.name, stats)
    if stats.interrupted:
        signum = received[0] if received else signal.SIGTERM
        print(
            f"backfill of {pipeline.name} interrupted by signal {signum}: run the same command to resume",
            file=sys.stderr,
        )
        return 128 + signum
    return 0


def _train(task: Task, args: argparse.Namespace, start: int, stop_ns: int) -> int:
    settings = training_settings(args)
    with Progress(f"training {args.pipeline}") as progress:
        final = task.train(
            args.pipeline,
            start,
            stop_ns,
            activate=args.activate,
            settings=settings,
            on_status=TrainingDisplay(progress).update,
        )
    if args.json:
        print(json.dumps({"model": final.model, "version": final.version, "steps": final.steps}))
    else:
        print(f"trained {final.model} version {final.version} on {final.steps} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

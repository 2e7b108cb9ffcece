"""`stad influx ...`: once, run, backfill and train over the jobs of a TOML file.

    stad influx once --config jobs.toml
    stad influx run --config jobs.toml [--shard 0/2]
    stad influx backfill --config jobs.toml --job pumps --start 2024-01-01T00:00:00Z --stop now
    stad influx train --config jobs.toml --job pumps --start -7d --stop -1d --activate

Errors print as `Name: message` on stderr with exit status 1. SIGTERM (and
Ctrl-C) finish the current chunk, then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from stad.core.progress import Progress, TrainingDisplay
from stad.influx_task.config import load_config, parse_time_ns
from stad.influx_task.runner import PassStats, Shard
from stad.influx_task.transport import InfluxError

if TYPE_CHECKING:
    from stad.influx_task.task import Task


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="jobs TOML file (see jobs.example.toml)")
    common.add_argument("--url", help="InfluxDB URL (else INFLUX_URL / INFLUXDB_V2_URL)")
    common.add_argument("--token", help="InfluxDB token (else INFLUX_TOKEN / INFLUXDB_V2_TOKEN)")
    common.add_argument("--org", help="InfluxDB 2.x organisation (else INFLUX_ORG / INFLUXDB_V2_ORG)")
    common.add_argument("--username", help="InfluxDB 1.x user (else INFLUX_USERNAME)")
    common.add_argument("--password", help="InfluxDB 1.x password (else INFLUX_PASSWORD)")
    common.add_argument("--write-api", choices=["auto", "v1", "v2"], help="write endpoint")
    common.add_argument("--server", help="stad server target host:port (else STAD_SERVER)")
    common.add_argument("--shard", default="0/1", help="i/n: handle the series whose key hashes to i")
    common.add_argument("-v", "--verbose", action="store_true")

    parser = argparse.ArgumentParser(prog="stad influx", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("once", parents=[common], help="one pass over every job")
    once.add_argument("--job", action="append", help="only this job (repeatable)")
    commands.add_parser("run", parents=[common], help="pass over each job every `every`")
    backfill = commands.add_parser("backfill", parents=[common], help="score a time range")
    train = commands.add_parser("train", parents=[common], help="train the job's model on history")
    for sub in (backfill, train):
        sub.add_argument("--job", required=True)
        sub.add_argument("--start", required=True, help="RFC3339, ns since epoch, 'now' or '-7d'")
        sub.add_argument("--stop", default="now")
    backfill.add_argument("--no-progress", action="store_true")
    train.add_argument("--activate", action="store_true", help="make the new version active")
    for name in ("epochs", "window", "patch", "d_model", "n_layers", "n_heads", "batch_size", "seed"):
        train.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    train.add_argument("--timeout-s", type=float, default=None)
    return parser


def _print_stats(name: str, stats: PassStats | Exception) -> None:
    if isinstance(stats, Exception):
        print(f"{name}: FAILED {type(stats).__name__}: {stats}")
    else:
        print(f"{name}: {stats.chunks} chunks, {stats.steps} steps scored, {stats.points} points written")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `stad influx`; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
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
        config = load_config(args.config, connection_overrides=overrides, server_target=args.server)
        with Task(config, shard=Shard.parse(args.shard), stop=stop) as task:
            if args.command == "once":
                outcome = task.once(args.job)
                for name, stats in outcome.items():
                    _print_stats(name, stats)
                return 1 if any(isinstance(s, Exception) for s in outcome.values()) else 0
            if args.command == "run":
                task.run()
                return 0
            now = time.time_ns()
            start, stop_ns = parse_time_ns(args.start, now_ns=now), parse_time_ns(args.stop, now_ns=now)
            if args.command == "backfill":
                _print_stats(args.job, task.backfill(args.job, start, stop_ns, progress=not args.no_progress))
                return 0
            return _train(task, args, start, stop_ns)
    except (StadError, InfluxError, ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _train(task: Task, args: argparse.Namespace, start: int, stop_ns: int) -> int:
    from stad.client import TrainingSettings

    names = ("epochs", "window", "patch", "d_model", "n_layers", "n_heads", "batch_size", "seed")
    settings = TrainingSettings(**{n: getattr(args, n) for n in names})

    with Progress(f"training {args.job}") as progress:
        final = task.train(
            args.job,
            start,
            stop_ns,
            activate=args.activate,
            settings=settings,
            on_status=TrainingDisplay(progress).update,
            timeout_s=args.timeout_s,
        )
    print(f"trained {final.model} version {final.version} on {final.steps} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

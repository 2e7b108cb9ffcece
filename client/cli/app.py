"""The `stad` parser and entry point: global options, the command groups, errors and exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from stad.client._exceptions import StadError
from stad.client.cli import dispatch, health, jobs, models, scoring, train
from stad.client.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_STDOUT_CLOSED, EXIT_USAGE, UsageError
from stad.client.cli.options import Commands, HelpFormatter, add_global_options, opt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stad",
        description="Train, score and evaluate stad anomaly models.",
        formatter_class=HelpFormatter,
    )
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = Commands(subparsers)
    for group in (train, scoring, models, jobs, health):
        group.register(commands)
    dispatch.register(commands, subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(opt(args, "debug"))
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a reader that went away shows here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # the parser of `serve` or `influx`: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except UsageError as exc:
        _error(exc, debug)
        return EXIT_USAGE
    except (StadError, OSError) as exc:  # reported as one line; --debug shows the traceback
        _error(exc, debug)
        return EXIT_FAILURE


def _stdout_closed() -> int:
    """The reader of stdout went away (`stad ... | head`): stop quietly, as other tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    return EXIT_STDOUT_CLOSED


def _error(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)

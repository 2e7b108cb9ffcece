"""`stad serve ...` and `stad influx ...`: handed to their own parsers, imported only when used.

Global options given before `influx` are handed on after its subcommand
(`stad --json influx once ...` runs `influx once --json ...`).
"""

from __future__ import annotations

import argparse

from stad.client.cli.errors import UsageError, import_extra
from stad.client.cli.options import GLOBAL_OPTIONS, Commands

# The global options `stad influx` takes (its --token is InfluxDB's; the stad token is [server] token).
INFLUX_GLOBALS = ("server", "timeout", "json")


def register(commands: Commands, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text in [
        ("serve", "run the gRPC server (stad serve --help)"),
        ("influx", "score series in InfluxDB (stad influx --help)"),
    ]:
        # no option prefix: every word after the name goes to the command's own parser
        child = subparsers.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        child.add_argument("rest", nargs=argparse.REMAINDER)
        child.set_defaults(handler=cmd_serve if name == "serve" else cmd_influx)


def _given_globals(args: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(args, name) for name in GLOBAL_OPTIONS if hasattr(args, name)}


def _flag(name: str) -> str:
    return GLOBAL_OPTIONS[name][0][0]


def cmd_serve(args: argparse.Namespace) -> int:
    given = _given_globals(args)
    if given:
        flags = ", ".join(_flag(name) for name in given)
        raise UsageError(f"stad serve takes its own options after `serve` (stad serve --help), not {flags}")
    module = import_extra("stad.server.app", "server", "stad serve")
    return int(module.main(list(args.rest)))


def cmd_influx(args: argparse.Namespace) -> int:
    given = _given_globals(args)
    unused = [_flag(name) for name in given if name not in INFLUX_GLOBALS]
    if unused:
        raise UsageError(
            f"stad influx does not use {', '.join(unused)}; it takes "
            + ", ".join(_flag(name) for name in INFLUX_GLOBALS)
        )
    handed: list[str] = []
    for name, value in given.items():
        handed += [_flag(name)] if value is True else [_flag(name), str(value)]
    rest = list(args.rest)
    at = 1 if rest and not rest[0].startswith("-") else len(rest)  # after the subcommand
    module = import_extra("stad.influx_task.cli", "influx", "stad influx")
    return int(module.main([*rest[:at], *handed, *rest[at:]]))

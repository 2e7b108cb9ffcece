"""The global options (before or after any command), value checks, and the help formatter."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

# (flags, argparse keywords) of every global option, by dest
GLOBAL_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _declare(*flags: str, **keywords: Any) -> None:
    dest = flags[0].removeprefix("--").replace("-", "_")
    GLOBAL_OPTIONS[dest] = (flags, keywords)


_declare(
    "--server",
    metavar="ADDR",
    help="stad server address host:port (default: $STAD_SERVER, else an embedded server; "
    "for stad influx: the jobs file's [server] target, then $STAD_SERVER)",
)
_declare("--token", help="bearer token (default: $STAD_TOKEN)")
_declare(
    "--token-file",
    metavar="FILE",
    help="read the bearer token from the first line of FILE, out of `ps` (default: $STAD_TOKEN_FILE)",
)
_declare("--tls", action="store_true", help="use TLS with the system's root certificates")
_declare("--ca-cert", metavar="PEM", help="use TLS trusting this CA certificate")
_declare(
    "--client-cert",
    metavar="PEM",
    help="present this client certificate, for servers run with --client-ca (default: $STAD_CLIENT_CERT)",
)
_declare("--client-key", metavar="PEM", help="the key of --client-cert (default: $STAD_CLIENT_KEY)")
_declare(
    "--timeout",
    type=positive_float,
    metavar="S",
    help="deadline of each call in seconds (default: 60; stad influx: the jobs file's [server] timeout_s)",
)
_declare(
    "--max-message-mb",
    type=positive_int,
    metavar="MIB",
    help="largest gRPC message either way, in MiB (default: $STAD_MAX_MESSAGE_MB, the server's variable "
    "too, else 64)",
)
_declare("--home", metavar="DIR", help="embedded server's data directory (default: $STAD_HOME)")
_declare("--device", help="embedded server's device: auto, cpu, cuda")
_declare("--json", action="store_true", help="print JSON for scripts")
_declare("--debug", action="store_true", help="print tracebacks")


class DeprecatedAlias(argparse.Action):
    """An old flag name: works as its new one (the dest's flag), with a warning on stderr."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_global_options(
    parser: argparse.ArgumentParser,
    *,
    names: Collection[str] = GLOBAL_OPTIONS,
    default: Any = argparse.SUPPRESS,
) -> None:
    """The global options `names` on `parser`; SUPPRESS (the default) leaves unset ones unset, so the
    same options can sit on a parser and on its commands' parsers."""
    group = parser.add_argument_group("global options (before or after the command)")
    for name in names:
        flags, keywords = GLOBAL_OPTIONS[name]
        group.add_argument(*flags, default=default, **keywords)
    if "timeout" in names:  # `stad influx train` called it --timeout-s
        group.add_argument(
            "--timeout-s",
            dest="timeout",
            type=positive_float,
            action=DeprecatedAlias,
            default=default,
            help=argparse.SUPPRESS,
        )


def opt(args: argparse.Namespace, name: str) -> Any:
    """A global option's value, None when it was not given."""
    return getattr(args, name, None)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default when it has a real one (not None/False, not already in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default not in (None, False, "", argparse.SUPPRESS) and action.option_strings
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


Handler = Callable[[argparse.Namespace], int]


class Commands:
    """Adds commands to a subparsers action, each with the global options and its handler."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers

    def add(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        child: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        add_global_options(child)
        child.set_defaults(handler=handler)
        return child

    def group(self, name: str, help_text: str) -> Commands:
        """A command whose actions are subcommands (`stad models list`)."""
        parent = self.add(name, _missing_action, help_text)
        return Commands(parent.add_subparsers(dest="action", required=True, metavar="ACTION"))


def _missing_action(args: argparse.Namespace) -> int:
    from stad.client.cli.errors import UsageError

    raise UsageError(f"{args.command} needs an action")

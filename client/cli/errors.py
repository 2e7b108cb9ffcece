"""Exit codes, the CLI's own errors, and importing a command that needs an optional extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from stad.client._exceptions import StadError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_STDOUT_CLOSED = 0, 1, 2, 130, 141


class UsageError(StadError):
    """Bad command-line usage that argparse cannot see (exit code 2)."""


class ExtraMissing(StadError):
    """A command needs an optional extra (server: torch; influx: influxdb-client) that is not installed."""


def import_extra(module_name: str, extra: str, what: str) -> ModuleType:
    """`module_name`, or ExtraMissing saying that `what` needs `pip install 'stad[extra]'`."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ExtraMissing(
            f"{what} needs the {extra} extra (missing {exc.name or exc}): pip install 'stad[{extra}]'"
        ) from exc

"""The `stad` command line: a thin layer over `stad.client.Client`, one module per command group.

Built on argparse (stdlib: no extra dependency for the torch-free client; flags derived from the
settings declaration are a loop; `--help` shows defaults through the help formatter).

Exit codes: 0 ok, 1 a failure reported by the server or in the data, 2 bad
usage, 130 interrupted, 141 stdout closed early (`stad ... | head`). Errors
print one line `Name: message` on stderr (a traceback only with --debug).
"""

from stad.client.cli.app import build_parser, main

__all__ = ["build_parser", "main"]

"""The data-file arguments of train, score and evaluate, and reading the file they name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from stad.client.data_files import DataTable, read_table


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV file (Parquet when pyarrow is installed)")
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument(
        "--time-column", help="time column (default: one named time/timestamp/... or holding dates)"
    )
    parser.add_argument(
        "--channels", help="comma-separated channel columns (default: the model's, else every numeric column)"
    )
    parser.add_argument("--sep", default=",", help="CSV field separator")


def read(
    args: argparse.Namespace, *, channels: Sequence[str] | None = None, label_column: str | None = None
) -> DataTable:
    """The table of the command's file: --channels, else `channels`, else every numeric column."""
    given = [name.strip() for name in args.channels.split(",") if name.strip()] if args.channels else None
    return read_table(
        args.file,
        time_column=args.time_column,
        channels=given or channels,
        label_column=label_column,
        sep=args.sep,
    )

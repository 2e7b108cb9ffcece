"""Printing results: JSON for scripts (--json), aligned tables and numbers for people."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np

from stad.client.cli.options import opt
from stad.core.data_warnings import DataWarning


def warn(warnings: Iterable[DataWarning]) -> None:
    """One `warning: ...` line on stderr per warning of a result."""
    for warning in warnings:
        print(f"warning: {warning.message}", file=sys.stderr)


def jsonable(value: Any) -> Any:
    """Plain JSON data for dataclasses, enums, datetimes, numpy values and sets (NaN/inf: null)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {key: jsonable(item) for key, item in asdict(value).items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(item) for item in value)
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def emit_json(value: Any) -> None:
    print(json.dumps(jsonable(value), indent=2))


def emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """`value` as JSON with --json, else `text`."""
    if opt(args, "json"):
        emit_json(value)
    else:
        print(text)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def number(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"

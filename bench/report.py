"""Writing a benchmark's JSON document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, document: Any, *, indent: int = 2) -> None:
    """Write `document` as indented JSON to `path`, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=indent) + "\n")

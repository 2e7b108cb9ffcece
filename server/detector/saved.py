"""The saved detector's metadata format (plain JSON beside the weights; NumPy-free).

Version 2 saves the config nested by group (`DetectorConfig.to_dict`); version 1
saved it flat and is converted on reading. Unknown settings are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stad.core.detector_config import DetectorConfig, SettingError

FORMAT = "stad-detector"
FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"


def upgrade(meta: Mapping[str, Any], source: str = "metadata") -> dict[str, Any]:
    """Metadata of any readable version as the current version, its config validated.

    ValueError names `source` and what is wrong (an unknown format or version, or a
    bad setting, named with its rule).
    """
    version = meta.get("format_version")
    if meta.get("format") != FORMAT or version not in (1, FORMAT_VERSION):
        raise ValueError(f"{source}: unsupported format {meta.get('format')!r} version {version!r}")
    raw = meta.get("config")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: the config must be a table of settings, got {raw!r}")
    try:
        config = DetectorConfig.from_flat(raw) if version == 1 else DetectorConfig.from_dict(raw)
    except SettingError as exc:
        raise ValueError(f"{source}: saved config: {exc}") from exc
    return {**meta, "format_version": FORMAT_VERSION, "config": config.to_dict()}


def read_warnings(directory: Path) -> list[dict[str, str]]:
    """The training warnings saved in a model directory's metadata (none when absent)."""
    meta = json.loads((directory / METADATA_FILE).read_text())
    return [{"code": str(w["code"]), "message": str(w["message"])} for w in meta.get("warnings") or []]


def config_of(meta: Mapping[str, Any]) -> DetectorConfig:
    """The config of metadata already `upgrade`d; a saved model holds the window it chose."""
    config = DetectorConfig.from_dict(meta["config"])
    if config.model.window == 0:
        raise SettingError("window", 0, "a saved model must hold the window its fit chose, not 0")
    return config

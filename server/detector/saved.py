"""The saved detector's metadata format (plain JSON beside the weights; NumPy-free).

Version 2 saves the config nested by group (`DetectorConfig.to_dict`); version 1
saved it flat and is converted on reading. Unknown settings are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def config_of(meta: Mapping[str, Any]) -> DetectorConfig:
    """The config of metadata already `upgrade`d."""
    return DetectorConfig.from_dict(meta["config"])

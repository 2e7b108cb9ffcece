"""The on-disk model registry.

Layout::

    <model-dir>/<name>/<version>/model.safetensors   weights (written by Detector.save)
    <model-dir>/<name>/<version>/metadata.json       the detector's metadata
    <model-dir>/<name>/<version>/version.json        registry record: created_at_ns, description
    <model-dir>/<name>/ACTIVE                        the active version's name (absent: none)
    <model-dir>/.versions/<name>                     the highest version number ever given

Versions are "1", "2", ... in order of registration; a number is never given twice
under one name, even after that version or the whole model was deleted, so a
name and version always mean the same weights. A version is assembled in a
hidden temporary directory and renamed into place, so readers never see a partial
one, and it is never modified afterwards. Loaded models are kept in a bounded
least-recently-used cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from stad.core.quoting import quote
from stad.server.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
ACTIVE_FILE = "ACTIVE"
VERSION_FILE = "version.json"
METADATA_FILE = "metadata.json"
HIGH_WATER_DIR = ".versions"

M = TypeVar("M")


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: str
    created_at_ns: int
    description: str
    metadata: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class ModelRecord:
    name: str
    active_version: str  # "" when none is active
    versions: tuple[VersionRecord, ...]  # oldest first


def check_model_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise InvalidArgumentError(
            f"bad model name {quote(name)}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        )
    return name


class Registry(Generic[M]):
    """Named models with immutable versions on disk; `load` returns cached loaded models."""

    def __init__(self, root: Path, loader: Callable[[Path], M], *, max_cached: int = 8) -> None:
        if max_cached < 1:
            raise ValueError(f"max_cached must be at least 1, got {max_cached}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._loader = loader
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[str, str], M] = OrderedDict()
        self._lock = threading.RLock()

    # -- reading ---------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(
            entry.name for entry in self.root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
        )

    def _model_root(self, name: str) -> Path:
        path = self.root / check_model_name(name)
        if not path.is_dir():
            raise NotFoundError(f"unknown model {name!r}")
        return path

    def versions(self, name: str) -> list[str]:
        root = self._model_root(name)
        found = [e.name for e in root.iterdir() if e.is_dir() and e.name.isdigit()]
        return sorted(found, key=int)

    def active_version(self, name: str) -> str:
        pointer = self._model_root(name) / ACTIVE_FILE
        try:
            version = pointer.read_text().strip()
        except FileNotFoundError:
            return ""
        return version if (pointer.parent / version).is_dir() else ""

    def version_record(self, name: str, version: str) -> VersionRecord:
        path = self._model_root(name) / version
        if not version.isdigit() or not path.is_dir():
            raise NotFoundError(f"model {name!r} has no version {version!r}")
        record = json.loads((path / VERSION_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
        return VersionRecord(
            name=name,
            version=version,
            created_at_ns=int(record["created_at_ns"]),
            description=str(record.get("description", "")),
            metadata=metadata,
            path=path,
        )

    def model_record(self, name: str, version: str = "") -> ModelRecord:
        versions: tuple[VersionRecord, ...]
        if version:
            versions = (self.version_record(name, version),)
        else:
            versions = tuple(self.version_record(name, v) for v in self.versions(name))
        return ModelRecord(name=name, active_version=self.active_version(name), versions=versions)

    def resolve(self, name: str, version: str = "") -> str:
        """The version to use: `version` itself (checked), or the active one."""
        if version:
            if not version.isdigit() or not (self._model_root(name) / version).is_dir():
                raise NotFoundError(f"model {name!r} has no version {version!r}")
            return version
        active = self.active_version(name)
        if not active:
            raise FailedPreconditionError(
                f"model {name!r} has no active version; name a version or activate one"
            )
        return active

    def cached(self, name: str, version: str) -> M | None:
        """The loaded model if it is in the cache (no disk access), else None."""
        with self._lock:
            model = self._cache.get((name, version))
            if model is not None:
                self._cache.move_to_end((name, version))
            return model

    def load(self, name: str, version: str) -> M:
        """The loaded model of `name`/`version` (which must exist), from the cache when there."""
        key = (name, version)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        path = self.version_record(name, version).path
        model = self._loader(path)
        with self._lock:
            self._cache[key] = model
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return model

    # -- writing ---------------------------------------------------------------------

    def register(self, name: str, source: Path, *, description: str = "", activate: bool = False) -> str:
        """Copy a saved model directory in as the next version; returns the version."""
        model_root = self.root / check_model_name(name)
        if not (Path(source) / METADATA_FILE).is_file():
            raise InvalidArgumentError(f"{source} holds no {METADATA_FILE}: not a saved model")
        model_root.mkdir(exist_ok=True)
        staging = model_root / f".tmp-{uuid.uuid4().hex}"
        shutil.copytree(source, staging)
        record = {"created_at_ns": time.time_ns(), "description": description}
        (staging / VERSION_FILE).write_text(json.dumps(record))
        with self._lock:
            number = max([self._highest_given(name), *map(int, self.versions(name))])
            while True:
                number += 1
                try:
                    os.rename(staging, model_root / str(number))
                except OSError:
                    if (model_root / str(number)).exists():
                        continue  # taken meanwhile: try the next number
                    raise
                break
            version = str(number)
            self._record_highest_given(name, number)
            if activate:
                self.set_active(name, version)
        return version

    def _highest_given(self, name: str) -> int:
        path = self.root / HIGH_WATER_DIR / name
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _record_highest_given(self, name: str, number: int) -> None:
        directory = self.root / HIGH_WATER_DIR
        directory.mkdir(exist_ok=True)
        staging = directory / f".tmp-{uuid.uuid4().hex}"
        staging.write_text(str(number))
        os.replace(staging, directory / name)

    def set_active(self, name: str, version: str) -> None:
        self.version_record(name, version)
        model_root = self._model_root(name)
        staging = model_root / f".tmp-active-{uuid.uuid4().hex}"
        staging.write_text(version)
        os.replace(staging, model_root / ACTIVE_FILE)

    def delete(self, name: str, version: str = "") -> None:
        """Delete one version, or the whole model when `version` is empty."""
        with self._lock:
            model_root = self._model_root(name)
            if version:
                target = self.version_record(name, version).path
                if self.active_version(name) == version:
                    (model_root / ACTIVE_FILE).unlink(missing_ok=True)
                doomed = model_root / f".deleted-{uuid.uuid4().hex}"
            else:
                target = model_root
                doomed = self.root / f".deleted-{uuid.uuid4().hex}"
            os.rename(target, doomed)
            for key in [k for k in self._cache if k[0] == name and (not version or k[1] == version)]:
                del self._cache[key]
        shutil.rmtree(doomed, ignore_errors=True)

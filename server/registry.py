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
hidden temporary directory (`.tmp-*`, cleared at start-up when a crash left one)
and renamed into place, so readers never see a partial one, and it is never
modified afterwards. A version, the ACTIVE pointer and the high-water mark are
flushed to disk (fsync) before they count, so they survive a power loss.

A version directory that cannot be read (empty, half-deleted, corrupt files) is
skipped in listings with a logged warning, and naming it gets DATA_LOSS; the
model's other versions keep working. Client messages never carry server paths.
Listing is cheap: version records are cached, keyed by their directory's
identity, so a listing reads no JSON it read before. Loaded models are kept in a
bounded least-recently-used cache.
"""

from __future__ import annotations

import json
import logging
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

import grpc

from stad.core.quoting import quote
from stad.server.durable import fsync_dir, fsync_tree, remove_staging, staging_path, write_atomic
from stad.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    StadServerError,
)

log = logging.getLogger("stad.server.registry")

NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
VERSION_PATTERN = re.compile(r"[0-9]{1,18}")
MAX_DESCRIPTION_CHARS = 4096
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


class BrokenVersionError(StadServerError):
    """A version directory on the server cannot be read (details in the server log)."""

    code = grpc.StatusCode.DATA_LOSS


def check_model_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise InvalidArgumentError(
            f"bad model name {quote(name)}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        )
    return name


def _is_version(version: str) -> bool:
    return VERSION_PATTERN.fullmatch(version) is not None


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
        self._records: dict[tuple[str, str], tuple[tuple[int, int], VersionRecord | None]] = {}
        self._lock = threading.RLock()

    def remove_staging(self) -> None:
        """Delete the half-assembled versions and pointers a crash left (`.tmp-*`), and
        models or versions whose deletion it cut short (`.deleted-*`)."""
        for directory in (self.root, self.root / HIGH_WATER_DIR, *self._model_dirs()):
            for path in remove_staging(directory):
                log.warning("removed %s, left by a crash", path)
            for path in directory.glob(".deleted-*"):
                shutil.rmtree(path, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------

    def _model_dirs(self) -> list[Path]:
        return [entry for entry in self.root.iterdir() if entry.is_dir() and not entry.name.startswith(".")]

    def model_names(self) -> list[str]:
        return sorted(entry.name for entry in self._model_dirs())

    def _model_root(self, name: str) -> Path:
        path = self.root / check_model_name(name)
        if not path.is_dir():
            raise NotFoundError(f"unknown model {name!r}")
        return path

    def versions(self, name: str) -> list[str]:
        root = self._model_root(name)
        found = [e.name for e in root.iterdir() if e.is_dir() and _is_version(e.name)]
        return sorted(found, key=int)

    def active_version(self, name: str) -> str:
        pointer = self._model_root(name) / ACTIVE_FILE
        try:
            version = pointer.read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return ""
        return version if _is_version(version) and (pointer.parent / version).is_dir() else ""

    def _version_dir(self, name: str, version: str) -> Path:
        path = self._model_root(name) / version
        if not _is_version(version) or not path.is_dir():
            raise NotFoundError(f"model {name!r} has no version {quote(version)}")
        return path

    def version_record(self, name: str, version: str) -> VersionRecord:
        """The version's record; BrokenVersionError (DATA_LOSS) when it cannot be read."""
        record = self._cached_record(name, version, self._version_dir(name, version))
        if record is None:
            raise BrokenVersionError(
                f"model {name!r} version {version} cannot be read on the server (see its log)"
            )
        return record

    def _cached_record(self, name: str, version: str, path: Path) -> VersionRecord | None:
        """The record from the cache while the directory is the same one, else read (None
        and one warning for a version that cannot be read)."""
        try:
            stat = path.stat()
        except OSError:
            return None
        identity = (stat.st_ino, stat.st_mtime_ns)
        with self._lock:
            known = self._records.get((name, version))
        if known is not None and known[0] == identity:
            return known[1]
        record = _read_record(name, version, path)
        with self._lock:
            self._records[(name, version)] = (identity, record)
        return record

    def model_record(self, name: str, version: str = "") -> ModelRecord:
        """The model with one version, or with every readable version (others are skipped)."""
        versions: tuple[VersionRecord, ...]
        if version:
            versions = (self.version_record(name, version),)
        else:
            found = (self._cached_record(name, v, self._model_root(name) / v) for v in self.versions(name))
            versions = tuple(record for record in found if record is not None)
        return ModelRecord(name=name, active_version=self.active_version(name), versions=versions)

    def resolve(self, name: str, version: str = "") -> str:
        """The version to use: `version` itself (checked), or the active one."""
        if version:
            self._version_dir(name, version)
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
        try:
            model = self._loader(path)
        except Exception as exc:
            log.warning(
                "cannot load model %r version %s from %s: %s: %s",
                name,
                version,
                path,
                type(exc).__name__,
                exc,
            )
            raise BrokenVersionError(
                f"model {name!r} version {version} cannot be loaded on the server (see its log)"
            ) from None
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
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgumentError(
                f"description has {len(description):,} characters, more than {MAX_DESCRIPTION_CHARS:,}"
            )
        model_root.mkdir(exist_ok=True)
        fsync_dir(self.root)
        staging = staging_path(model_root)
        shutil.copytree(source, staging)
        record = {"created_at_ns": time.time_ns(), "description": description}
        (staging / VERSION_FILE).write_text(json.dumps(record))
        fsync_tree(staging)
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
            fsync_dir(model_root)
            version = str(number)
            self._record_highest_given(name, number)
            if activate:
                self.set_active(name, version)
        return version

    def _highest_given(self, name: str) -> int:
        path = self.root / HIGH_WATER_DIR / name
        try:
            return int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _record_highest_given(self, name: str, number: int) -> None:
        directory = self.root / HIGH_WATER_DIR
        directory.mkdir(exist_ok=True)
        write_atomic(directory / name, str(number))

    def set_active(self, name: str, version: str) -> None:
        self.version_record(name, version)
        write_atomic(self._model_root(name) / ACTIVE_FILE, version)

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
            fsync_dir(doomed.parent)
            for cache in (self._cache, self._records):
                for key in [k for k in cache if k[0] == name and (not version or k[1] == version)]:
                    del cache[key]
        shutil.rmtree(doomed, ignore_errors=True)


def _read_record(name: str, version: str, path: Path) -> VersionRecord | None:
    """The version's record from its files; None, with a warning, when they cannot be read."""
    try:
        record = json.loads((path / VERSION_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
        if not isinstance(metadata, dict):
            raise TypeError(f"{METADATA_FILE} holds {type(metadata).__name__}, not an object")
        return VersionRecord(
            name=name,
            version=version,
            created_at_ns=int(record["created_at_ns"]),
            description=str(record.get("description", ""))[:MAX_DESCRIPTION_CHARS],
            metadata=metadata,
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("skipping model %r version %s in %s: cannot read it: %s", name, version, path, exc)
        return None

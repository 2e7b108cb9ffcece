"""Writes that survive a crash or a power loss: whole or not at all, and on disk once done.

A file is written to a staging name beside its target, flushed to disk (fsync),
renamed over the target, and the directory is flushed too, so the rename itself
is on disk. Staging names start with `.tmp-`; `remove_staging` clears those a
crash left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

STAGING_PREFIX = ".tmp-"


def staging_path(directory: Path, label: str = "") -> Path:
    """A fresh staging name in `directory` (which remove_staging clears after a crash)."""
    return Path(directory) / f"{STAGING_PREFIX}{label}{uuid.uuid4().hex}"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root`, and `root` itself."""
    for directory, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(directory) / name)
        fsync_dir(Path(directory))


def write_atomic(target: Path, text: str) -> None:
    """Replace `target` with `text`, durably: readers see the old or the new file, whole."""
    target = Path(target)
    staging = staging_path(target.parent, f"{target.name}-")
    try:
        with open(staging, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
    fsync_dir(target.parent)


def remove_staging(directory: Path) -> list[Path]:
    """Delete the staging files and directories a crash left in `directory`; returns them."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in Path(directory).iterdir():
            if not entry.name.startswith(STAGING_PREFIX):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed

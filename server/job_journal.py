"""Training job history on disk: one small JSON record per job, so jobs outlive a restart.

Layout (beside the jobs' working directories, inside the registry's hidden `.jobs`)::

    <model-dir>/.jobs/<job-id>.json      the job's last recorded state (never its data)

Each record is written to a temporary file, flushed to disk and renamed over the
old one (see durable), so a reader sees a whole record or the previous one, even
after a power loss. A record that cannot be read or
parsed is skipped with a warning: history is a convenience, never a reason not
to serve.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stad.server.durable import remove_staging, write_atomic

log = logging.getLogger("stad.server.jobs")

RECORD_SUFFIX = ".json"

T = TypeVar("T")


class JobJournal:
    """Job records in `directory`, keyed by job id."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}{RECORD_SUFFIX}"

    def write(self, job_id: str, record: Mapping[str, Any]) -> None:
        """Replace the job's record atomically; a failure is logged, not raised."""
        target = self.path(job_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(target, json.dumps(record))
        except (OSError, TypeError, ValueError) as exc:
            log.warning("cannot record training job %s in %s: %s", job_id, target, exc)

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's record as written, or None when there is none or it cannot be read."""
        try:
            record = json.loads(self.path(job_id).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def remove_staging(self) -> None:
        """Delete half-written records a crash left behind."""
        remove_staging(self.directory)

    def remove(self, job_id: str) -> None:
        try:
            self.path(job_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the record of training job %s: %s", job_id, exc)

    def load(self, parse: Callable[[str, dict[str, Any]], T]) -> list[T]:
        """Every record parsed by `parse(job_id, record)`; unreadable or bad ones are skipped."""
        if not self.directory.is_dir():
            return []
        loaded = []
        for path in sorted(self.directory.glob(f"*{RECORD_SUFFIX}")):
            try:
                loaded.append(parse(path.stem, json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable training job record %s: %s", path, exc)
        return loaded

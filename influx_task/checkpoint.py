"""Per-series checkpoints: the first grid step not yet scored, and any open episode.

Default store: the measurement `stad_checkpoint` in the job's output database,
default retention policy (tags job, series; fields next_ns, episode, late). It
lives where the scores live, so a restarted or rescheduled worker (another
container, another host, another shard layout) finds it, and it needs no
volume. Each advance is a new point stamped with the wall clock (so a short
output retention policy cannot drop it); the latest per series wins. `FileCheckpointStore` keeps the same
state in a local JSON file (atomic replace) for deployments without InfluxQL.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stad.influx_task.events import Episode
from stad.influx_task.influxql import InfluxQLReader, quote_ident, quote_string, source_clause
from stad.influx_task.lateness import LateState
from stad.influx_task.points import Point
from stad.influx_task.writer import LineWriter

CHECKPOINT_MEASUREMENT = "stad_checkpoint"
STATUS_MEASUREMENT = "stad_status"  # tag job, field error: the last pass's outcome


@dataclass
class Checkpoint:
    series: str
    next_ns: int
    episode: Episode | None = None
    late: LateState = field(default_factory=LateState)


def _fields(c: Checkpoint) -> dict[str, int | str]:
    return {
        "next_ns": c.next_ns,
        "episode": c.episode.to_json() if c.episode else "",
        "late": c.late.to_json(),
    }


class CheckpointStore(Protocol):
    def load(self, job: str) -> dict[str, Checkpoint]: ...

    def save(self, job: str, checkpoints: Sequence[Checkpoint]) -> None: ...

    def record_outcome(self, job: str, error: str) -> None:
        """The outcome of the pipeline's last pass: "" for success, else the error."""

    def last_error(self, job: str) -> str: ...


class InfluxCheckpointStore:
    """Checkpoints as points of `stad_checkpoint` in InfluxDB."""

    def __init__(
        self,
        reader: InfluxQLReader,
        writer: LineWriter,
        *,
        database: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.database = database
        self._last_ns = 0

    def load(self, job: str) -> dict[str, Checkpoint]:
        source = source_clause(self.database, None, CHECKPOINT_MEASUREMENT)
        query = (
            f"SELECT * FROM {source} WHERE {quote_ident('job')} = "
            f"{quote_string(job)} GROUP BY {quote_ident('series')} ORDER BY time DESC LIMIT 1"
        )
        found: dict[str, Checkpoint] = {}
        for item in self.reader.query(query, database=self.database):
            series = str((item.get("tags") or {}).get("series", ""))
            columns = list(item["columns"])
            row = item["values"][0]
            cell = dict(zip(columns, row, strict=True))
            found[series] = Checkpoint(
                series=series,
                next_ns=int(cell["next_ns"]),
                episode=Episode.from_json(cell.get("episode") or ""),
                late=LateState.from_json(cell.get("late") or ""),
            )
        return found

    def save(self, job: str, checkpoints: Sequence[Checkpoint]) -> None:
        stamp = self._stamp()
        points = [
            Point(CHECKPOINT_MEASUREMENT, {"job": job, "series": c.series}, _fields(c), stamp)
            for c in checkpoints
        ]
        self.writer.write(points, database=self.database)

    def _stamp(self) -> int:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def record_outcome(self, job: str, error: str) -> None:
        point = Point(STATUS_MEASUREMENT, {"job": job}, {"error": error}, self._stamp())
        self.writer.write([point], database=self.database)

    def last_error(self, job: str) -> str:
        source = source_clause(self.database, None, STATUS_MEASUREMENT)
        query = f'SELECT last("error") FROM {source} WHERE {quote_ident("job")} = {quote_string(job)}'
        found = self.reader.query(query, database=self.database)
        return str(found[0]["values"][0][1]) if found else ""


OUTCOME_KEY = "#outcome"  # beside the series of a job in the file: the last pass's outcome


class FileCheckpointStore:
    """Checkpoints in one JSON file, replaced atomically on every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read_all(self) -> dict[str, dict[str, dict[str, object]]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data: dict[str, dict[str, dict[str, object]]] = json.load(handle)
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"checkpoint file {self.path} is not valid JSON: {exc}") from exc
        return data

    def load(self, job: str) -> dict[str, Checkpoint]:
        out = {}
        for series, item in self._read_all().get(job, {}).items():
            if series == OUTCOME_KEY:
                continue
            next_ns = item["next_ns"]
            episode = item.get("episode") or ""
            late = item.get("late") or ""
            if not isinstance(next_ns, int) or not isinstance(episode, str) or not isinstance(late, str):
                raise ValueError(f"checkpoint file {self.path}: bad entry for {series!r}: {item}")
            out[series] = Checkpoint(series, next_ns, Episode.from_json(episode), LateState.from_json(late))
        return out

    def record_outcome(self, job: str, error: str) -> None:
        data = self._read_all()
        data.setdefault(job, {})[OUTCOME_KEY] = {"error": error}
        self._replace(data)

    def last_error(self, job: str) -> str:
        return str(self._read_all().get(job, {}).get(OUTCOME_KEY, {}).get("error", ""))

    def save(self, job: str, checkpoints: Sequence[Checkpoint]) -> None:
        data = self._read_all()
        entries = data.setdefault(job, {})
        for c in checkpoints:
            entries[c.series] = dict(_fields(c).items())
        self._replace(data)

    def _replace(self, data: dict[str, dict[str, dict[str, object]]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

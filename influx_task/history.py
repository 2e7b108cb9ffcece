"""Reading back what a pipeline wrote: which episodes were open at a time (for backfill)."""

from __future__ import annotations

from stad.influx_task.config import Pipeline
from stad.influx_task.grid import series_key
from stad.influx_task.influxql import InfluxQLReader, quote_ident, quote_string, source_clause


class WrittenHistory:
    """Queries a pipeline's output measurements over InfluxQL."""

    def __init__(self, reader: InfluxQLReader) -> None:
        self.reader = reader

    def _last_before(
        self, pipeline: Pipeline, measurement: str, field: str, before_ns: int
    ) -> dict[str, tuple[int, object]]:
        """Per series, the time and value of `field`'s last point before `before_ns`."""
        source = source_clause(pipeline.out_database, pipeline.output_retention_policy, measurement)
        query = (
            f"SELECT last({quote_ident(field)}) FROM {source} WHERE time < {before_ns} AND "
            f"{quote_ident('model')} = {quote_string(pipeline.model)} AND "
            f"{quote_ident('source_measurement')} = {quote_string(pipeline.measurement)} GROUP BY *"
        )
        found = {}
        for item in self.reader.query(query, database=pipeline.out_database):
            tags = {k: v for k, v in (item.get("tags") or {}).items() if k in pipeline.output_tag_keys and v}
            time_ns, value = item["values"][0][:2]
            found[series_key(pipeline.measurement, tags)] = (int(time_ns), value)
        return found

    def open_episode_starts(self, pipeline: Pipeline, before_ns: int) -> dict[str, int]:
        """Series whose last scored step before `before_ns` was anomalous: their episode's start."""
        flagged = self._last_before(pipeline, pipeline.output_measurement, "is_anomaly", before_ns)
        open_series = {key for key, (_, anomalous) in flagged.items() if anomalous is True}
        if not open_series:
            return {}
        starts = self._last_before(pipeline, pipeline.events_measurement, "max_score", before_ns)
        return {key: starts[key][0] for key in open_series if key in starts}

"""The InfluxDB worker: reads series windows, scores them through the server, writes scores back.

    from stad.influx_task import Task, load_config

    with Task(load_config("jobs.toml")) as task:
        task.once()

Modules: config (the TOML schema: pipelines, connection settings), times
(durations, timestamps), influxql and flux (the two read paths), points and
writer (line protocol), output (the points a pipeline writes), history (reading
them back), grid (time-grid normalisation), geometry (where scoring windows
fall), lateness (late-data state), checkpoint, retry, events (anomaly
episodes), runner (the passes, pipelined), task (wiring), metrics (Prometheus,
health), importer (`stad influx import`), cli (`stad influx ...`),
local_influxd (a throwaway influxd), demo, feeder (the compose demo's data).
"""

from stad.influx_task.cli import main
from stad.influx_task.config import Connection, Pipeline, TaskConfig, load_config
from stad.influx_task.runner import PassStats, PipelineRunner, Shard
from stad.influx_task.task import Task

__all__ = [
    "Connection",
    "PassStats",
    "Pipeline",
    "PipelineRunner",
    "Shard",
    "Task",
    "TaskConfig",
    "load_config",
    "main",
]

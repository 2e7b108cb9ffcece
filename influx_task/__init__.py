"""The InfluxDB worker: reads series windows, scores them through the server, writes scores back.

    from stad.influx_task import Task, load_config

    with Task(load_config("jobs.toml")) as task:
        task.once()

Modules: config (TOML jobs, connection settings), influxql and flux (the two
read paths), writer (line protocol), grid (time-grid normalisation),
checkpoint, retry, events (anomaly episodes), runner (the passes), task
(wiring), cli (`stad influx ...`), local_influxd (a throwaway influxd).
"""

from stad.influx_task.cli import main
from stad.influx_task.config import Connection, Job, TaskConfig, load_config
from stad.influx_task.runner import JobRunner, PassStats, Shard
from stad.influx_task.task import Task

__all__ = [
    "Connection",
    "Job",
    "JobRunner",
    "PassStats",
    "Shard",
    "Task",
    "TaskConfig",
    "load_config",
    "main",
]

"""`stad jobs list|watch|cancel`: training jobs."""

from __future__ import annotations

import argparse

from stad.client.cli.connect import connect
from stad.client.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from stad.client.cli.options import Commands, opt
from stad.client.cli.output import emit, emit_json, table
from stad.client.cli.progress import follow, report_job
from stad.core.jobs import JobState


def register(commands: Commands) -> None:
    jobs = commands.group("jobs", "list, watch or cancel training jobs")
    listing = jobs.add("list", cmd_list, "list training jobs, newest first")
    listing.add_argument("--model")
    watch = jobs.add("watch", cmd_watch, "follow a job's progress until it ends")
    watch.add_argument("job_id")
    cancel = jobs.add("cancel", cmd_cancel, "cancel a job")
    cancel.add_argument("job_id")


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        jobs = client.jobs(model=args.model)
    if opt(args, "json"):
        emit_json(jobs)
    elif jobs:
        rows = [
            [
                job.job_id,
                job.model,
                job.state.value,
                job.version or "-",
                job.created_at.isoformat(timespec="seconds") if job.created_at else "-",
                job.error[:60],
            ]
            for job in jobs
        ]
        print(table(rows, ["job", "model", "state", "version", "created", "error"]))
    else:
        print("no jobs")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = follow(client.job(args.job_id), embedded=False)
    if status is None:
        return EXIT_INTERRUPTED
    report_job(args, status)
    return EXIT_OK if status.state is JobState.SUCCEEDED else EXIT_FAILURE


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.job(args.job_id).cancel()
    emit(args, status, f"job {status.job_id}: {status.state.value}")
    return EXIT_OK

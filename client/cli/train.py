"""`stad train`: train a new model version on a data file and follow the job."""

from __future__ import annotations

import argparse
import time

from stad.client.cli.connect import connect, server_given
from stad.client.cli.data import add_data_options, read
from stad.client.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError
from stad.client.cli.options import Commands, opt
from stad.client.cli.progress import follow, report_job
from stad.client.cli.training_flags import add_training_flags, training_settings
from stad.core.jobs import JobState


def register(commands: Commands) -> None:
    train = commands.add("train", cmd_train, "train a new model version on a data file")
    add_data_options(train)
    train.add_argument(
        "--label-column", help="0/1 label column: fine-tunes on labels and calibrates the threshold"
    )
    train.add_argument("--description", default="", help="free text kept with the version")
    train.add_argument("--detach", action="store_true", help="start the job and return (needs --server)")
    add_training_flags(train)


def cmd_train(args: argparse.Namespace) -> int:
    settings = training_settings(args)
    embedded = not server_given(args)
    if args.detach and embedded:
        raise UsageError("--detach needs --server: the embedded server stops when stad exits")
    table = read(args, label_column=args.label_column)
    with connect(args, long_running=True) as client:
        job = client.train(
            table.values,
            timestamps=table.timestamps_ns,
            channels=table.channels,
            labels=table.labels,
            model=args.model,
            settings=settings,
            activate=args.activate,
            description=args.description,
        )
        if not opt(args, "json"):
            print(
                f"job {job.job_id}: training {args.model} on {table.steps} steps"
                f" x {len(table.channels)} channels",
                flush=True,
            )
        if args.detach:
            report_job(args, job.status)
            return EXIT_OK
        started = time.monotonic()
        status = follow(job, embedded=embedded)
        if status is None:
            return EXIT_INTERRUPTED
        report_job(args, status, seconds=time.monotonic() - started)
        return EXIT_OK if status.state is JobState.SUCCEEDED else EXIT_FAILURE

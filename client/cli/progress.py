"""Following a training job to its end: the progress display on stderr, Ctrl-C, the final report."""

from __future__ import annotations

import argparse
import sys

from stad.client._client import TrainingJob
from stad.client._types import JobStatus
from stad.client.cli.options import opt
from stad.client.cli.output import emit_json, warn
from stad.core.jobs import JobState
from stad.core.progress import Progress, TrainingDisplay, duration


def follow(job: TrainingJob, *, embedded: bool) -> JobStatus | None:
    """Watch a job with the progress display on stderr until it ends (None: interrupted).

    Ctrl-C cancels the job only when the user answers "y" at a terminal; any other
    answer, or no terminal, leaves it running on the server and stops watching. A
    job on the embedded server cannot outlive stad, so there "no" keeps watching.
    """
    while True:
        progress = Progress()
        display = TrainingDisplay(progress)
        try:
            with progress:
                for status in job.watch():
                    display.update(status)
            return job.status
        except KeyboardInterrupt:
            progress.close()
            if _confirm(f"cancel training job {job.job_id}? [y/N] "):
                status = job.cancel()
                print(f"job {job.job_id}: {status.state.value}", file=sys.stderr)
                return None
            if not embedded:
                print(_detached(job.job_id), file=sys.stderr)
                return None
            if not sys.stdin.isatty():
                print(
                    f"job {job.job_id} ends with the embedded server; "
                    "train with --server to keep jobs running after stad exits",
                    file=sys.stderr,
                )
                return None


def _detached(job_id: str) -> str:
    return (
        f"stopped watching; job {job_id} keeps running on the server\n"
        f"  watch it again: stad jobs watch {job_id}\n"
        f"  cancel it:      stad jobs cancel {job_id}"
    )


def _confirm(question: str) -> bool:
    """True only for "y" or "yes" typed at a terminal; no terminal, EOF, Ctrl-C or anything else is no."""
    if not sys.stdin.isatty():
        return False
    answer = ""
    try:  # a Ctrl-C right after the question is written is a "no" too
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    if not answer.endswith("\n"):  # EOF or Ctrl-C: end the prompt's line
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def report_job(args: argparse.Namespace, status: JobStatus, seconds: float | None = None) -> None:
    warn(status.warnings)
    """A job's end state on stdout."""
    if opt(args, "json"):
        emit_json(status)
        return
    if status.state is JobState.SUCCEEDED:
        took = f" in {duration(seconds)}" if seconds is not None else ""
        print(f"job {status.job_id}: {status.model} version {status.version} trained{took}")
    else:
        reason = f": {status.error}" if status.error else ""
        print(f"job {status.job_id}: {status.state.value}{reason}")

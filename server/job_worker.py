"""The body of a training job, run in a child process of its own.

The parent writes the job's data to a directory (request.json and .npy arrays,
no pickle), starts `run` in a spawned process, and reads messages from the pipe:

    ("progress", {TrainingProgress fields})   any number of times
    ("done", "<directory of the saved model>")
    ("cancelled", "")
    ("failed", "<reason>")

Whatever the child does (raise, crash, run out of memory), the parent only ever
sees one of these messages or the pipe closing; the registry is written by the
parent alone, after "done". `run` is the default `JobRunner` of the JobManager.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np

# Runs one job in its child process: (job_dir, conn, cancel, device, torch_threads).
JobRunner = Callable[[str, Connection, Event, str, int], None]

REQUEST_FILE = "request.json"
VALUES_FILE = "values.npy"
LABELS_FILE = "labels.npy"
TIMESTAMPS_FILE = "timestamps_ns.npy"
MODEL_DIR = "model"


def run(job_dir: str, conn: Connection, cancel: Event, device: str, torch_threads: int = 0) -> None:
    """Train the job in `job_dir`, reporting over `conn`; `cancel` set means stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when jobs end
    try:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        conn.send(_train(Path(job_dir), conn, cancel, device))
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _train(directory: Path, conn: Connection, cancel: Event, device: str) -> tuple[str, str]:
    from stad.server.detector import Detector, DetectorConfig, TrainingCancelled, TrainingProgress

    request: dict[str, Any] = json.loads((directory / REQUEST_FILE).read_text())
    values = np.load(directory / VALUES_FILE)
    labels = np.load(directory / LABELS_FILE) if (directory / LABELS_FILE).exists() else None
    stamps = np.load(directory / TIMESTAMPS_FILE) if (directory / TIMESTAMPS_FILE).exists() else None

    def progress(event: TrainingProgress) -> None:
        conn.send(("progress", asdict(event)))

    detector = Detector(DetectorConfig.from_flat(request["config"]), device=device)
    try:
        detector.fit(
            values,
            labels,
            channels=list(request["channels"]),
            timestamps_ns=stamps,
            progress=progress,
            should_stop=cancel.is_set,
        )
    except TrainingCancelled:
        return ("cancelled", "")
    out = directory / MODEL_DIR
    detector.save(out)
    return ("done", str(out))

"""Job runners that fail as a training job can, injected into the server by its tests.

Each runs in the job's child process (so it must be importable by name) and wraps the
real worker, `stad.server.job_worker.run`, with `Detector.fit` replaced.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from stad.server import job_worker
from stad.server.detector.estimator import Detector

CRASH_EXIT_CODE = 70


def crashing(job_dir: str, conn: Connection, cancel: Event, device: str, torch_threads: int = 0) -> None:
    """Dies in the middle of training, as a crash or the OOM killer would: no last message."""

    def fit(self: Detector, *args: Any, **kwargs: Any) -> Detector:
        os._exit(CRASH_EXIT_CODE)

    Detector.fit = fit  # type: ignore[method-assign]
    job_worker.run(job_dir, conn, cancel, device, torch_threads)


def raising(job_dir: str, conn: Connection, cancel: Event, device: str, torch_threads: int = 0) -> None:
    """Raises in the middle of training, as a bug would."""

    def fit(self: Detector, *args: Any, **kwargs: Any) -> Detector:
        raise RuntimeError("injected training failure")

    Detector.fit = fit  # type: ignore[method-assign]
    job_worker.run(job_dir, conn, cancel, device, torch_threads)

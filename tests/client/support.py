"""Test data shared by the client and CLI tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stad.client import TrainingJob
from tests.kit import make_values

CHANNELS = ("a", "b", "c")
MODEL = "tiny"
SPARE = "spare"
# Steps of three channels with timestamps: more than 1 MiB as one message.
BIG_STEPS = 40_000
START_NS = 1_700_000_000 * 10**9
STEP_NS = 60 * 10**9


@dataclass(frozen=True)
class Data:
    values: npt.NDArray[np.float64]  # (T, C)
    timestamps_ns: npt.NDArray[np.int64]  # (T,)
    labels: npt.NDArray[np.int64]  # (T,)


def make_data(steps: int, *, seed: int, anomaly: tuple[int, int] | None = None) -> Data:
    """The kit's three coupled channels, timestamped; `anomaly` adds a level shift on channel b."""
    values = make_values(steps, seed)
    labels = np.zeros(steps, dtype=np.int64)
    if anomaly is not None:
        start, stop = anomaly
        values[start:stop, 1] += 4.0
        labels[start:stop] = 1
    stamps = START_NS + np.arange(steps, dtype=np.int64) * STEP_NS
    return Data(values=values, timestamps_ns=stamps, labels=labels)


def write_csv(path: Path, data: Data, *, with_time: bool = True, with_labels: bool = False) -> Path:
    lines = []
    header = (["time"] if with_time else []) + list(CHANNELS) + (["label"] if with_labels else [])
    lines.append(",".join(header))
    times = data.timestamps_ns.astype("datetime64[ns]").astype("datetime64[s]")
    for row in range(data.values.shape[0]):
        cells = [str(times[row]) + "Z"] if with_time else []
        cells += [f"{v:.6f}" for v in data.values[row]]
        if with_labels:
            cells.append(str(int(data.labels[row])))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_until_running(job: TrainingJob) -> None:
    """Follow the job until training reports progress (cancelling a running job is what tests exercise)."""
    for status in job.watch(timeout_s=120):
        if status.progress is not None or status.state.finished:
            return

"""Anomaly episodes: runs of anomalous steps, carried across chunks and passes.

An episode opens at the first anomalous step and closes at the next scored step
that is not anomalous; steps with no data neither extend nor close it. Each
episode becomes one `anomaly_events` point at its start time, rewritten while
it grows, so re-runs overwrite instead of duplicating.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt


@dataclass
class Episode:
    start_ns: int
    last_ns: int  # start label of the last anomalous step
    max_score: float
    contributions: dict[str, float] = field(default_factory=dict)  # summed per channel
    open: bool = True

    def end_ns(self, interval_ns: int) -> int:
        return self.last_ns + interval_ns

    def top_channels(self, k: int = 3) -> list[str]:
        ranked = sorted(self.contributions.items(), key=lambda item: (-item[1], item[0]))
        return [name for name, _ in ranked[:k]]

    def to_json(self) -> str:
        return json.dumps(
            {
                "start_ns": self.start_ns,
                "last_ns": self.last_ns,
                "max_score": self.max_score,
                "contributions": self.contributions,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Episode | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            start_ns=int(data["start_ns"]),
            last_ns=int(data["last_ns"]),
            max_score=float(data["max_score"]),
            contributions={str(k): float(v) for k, v in data["contributions"].items()},
        )


def track_episodes(
    current: Episode | None,
    timestamps_ns: npt.NDArray[np.int64],
    is_anomaly: npt.NDArray[np.bool_],
    score: npt.NDArray[np.float64],
    contributions: npt.NDArray[np.float64],  # (N, C)
    channels: Sequence[str],
) -> tuple[list[Episode], Episode | None]:
    """Advance episode state over scored steps in time order.

    Returns every episode touched (closed ones with open=False, and the one
    still open, if any) and the episode left open for the next chunk. `current`
    itself is left as it was: a checkpoint's snapshot of the state may hold it.
    """
    touched: list[Episode] = []
    if current is not None:
        current = replace(current, contributions=dict(current.contributions))
        touched.append(current)
    for i in range(timestamps_ns.shape[0]):
        t = int(timestamps_ns[i])
        if bool(is_anomaly[i]):
            if current is None:
                current = Episode(start_ns=t, last_ns=t, max_score=float(score[i]))
                touched.append(current)
            current.last_ns = t
            current.max_score = max(current.max_score, float(score[i]))
            for c, name in enumerate(channels):
                weight = float(contributions[i, c])
                if np.isfinite(weight):
                    current.contributions[name] = current.contributions.get(name, 0.0) + weight
        elif current is not None:
            current.open = False
            current = None
    return touched, current

"""Anomaly events: per-step flags turned into runs that a person would call one anomaly.

Two settings shape them, as Prometheus' alerting rules do with `for` and
`keep_firing_for`:

    confirmed(t) = flagged(s) for every s in [t - min_duration + 1, t]
    event(t)     = confirmed(s) for some s in [t - merge_gap - min_duration + 1, t]

So a run must last `min_duration` steps before it counts, and flagged runs
separated by at most `merge_gap` unflagged steps are one event (which also
stays open that long after its last flag). Both look only backwards, over
a bounded span, which keeps a step's value independent of how the series was
cut into requests: `EventFilter` carries the last steps across chunks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stad.core.types import BoolArray

__all__ = ["EventFilter", "spans"]


def spans(flags: npt.ArrayLike) -> list[tuple[int, int]]:
    """Runs of True in a 1-D boolean array as half-open (start, stop) index pairs."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _trailing_all(flags: BoolArray, span: int) -> BoolArray:
    """out[i] = flags[i - span + 1 .. i] all True (False where fewer than `span` steps precede)."""
    counts = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    out = np.zeros(flags.shape[0], dtype=bool)
    if flags.shape[0] >= span:
        out[span - 1 :] = counts[span:] - counts[:-span] == span
    return out


def _trailing_any(flags: BoolArray, span: int) -> BoolArray:
    """out[i] = any of flags[i - span + 1 .. i]."""
    counts = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    index = np.arange(1, flags.shape[0] + 1)
    out: BoolArray = counts[index] - counts[np.maximum(index - span, 0)] > 0
    return out


class EventFilter:
    """Causal min-duration / merge-gap filter over consecutive chunks of one series."""

    def __init__(self, min_duration: int = 1, merge_gap: int = 0) -> None:
        if min_duration < 1 or merge_gap < 0:
            raise ValueError(f"need min_duration >= 1 and merge_gap >= 0, got {min_duration}, {merge_gap}")
        self.min_duration = min_duration
        self.merge_gap = merge_gap
        self._history = np.zeros(0, dtype=bool)  # the last flags, enough to decide the next steps

    @property
    def lookback(self) -> int:
        """Steps before t that event(t) depends on."""
        return 2 * (self.min_duration - 1) + self.merge_gap

    def add(self, flags: npt.ArrayLike) -> BoolArray:
        """The event state of each of the next steps, given their raw flags."""
        new = np.asarray(flags, dtype=bool)
        joined = np.concatenate([self._history, new])
        hold = self.merge_gap + self.min_duration
        event = _trailing_any(_trailing_all(joined, self.min_duration), hold)
        self._history = joined[max(0, joined.shape[0] - self.lookback) :]
        result: BoolArray = event[joined.shape[0] - new.shape[0] :]
        return result

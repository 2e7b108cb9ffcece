"""Where scoring windows fall, so that a step's score depends on the series and the model alone.

The server cuts what it is sent into windows of `window` steps every `stride`
steps from the first step sent, plus one ending at the last step. The task
sends every series from a step whose index (time / interval) is a multiple of
`stride` and up to a window end on that same grid, so every window lies on one
grid fixed by the epoch, whatever the chunk or pass. A step's score is the mean
over the windows covering it, smoothed over the `smoothing` steps up to it (and
with range scores the highest over a centred range: `core.score_reach`), so it is
final once the last window starting at or before it, and the range after it, have
all their data: steps before `align_down(horizon - window, stride) + stride -
range_after` of a series whose data is final up to `horizon`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stad.core.score_reach import ScoreReach


def align_down(t_ns: int, step_ns: int) -> int:
    return (t_ns // step_ns) * step_ns


@dataclass(frozen=True)
class Geometry:
    """A model's scoring windows, in grid steps of `interval_ns`."""

    window: int
    stride: int
    smoothing: int
    interval_ns: int
    event_lookback: int = 0  # flags before a step that its event state depends on (core.events)
    range_span: int = 1  # the centred range of a range score (core.score_reach)
    range_mean_span: int = 1  # the centred mean within it

    def __post_init__(self) -> None:
        if not 1 <= self.stride <= self.window or self.smoothing < 1 or self.interval_ns <= 0:
            raise ValueError(f"bad scoring geometry {self}")

    @property
    def block_ns(self) -> int:
        """The window grid's pitch: windows start at multiples of this."""
        return self.stride * self.interval_ns

    def lead_steps(self, context: int) -> int:
        """Steps to send before a step so that every window and smoothing step it needs is there."""
        return max(context, self.window - self.stride + self.reach.before)

    @property
    def reach(self) -> ScoreReach:
        return ScoreReach(
            self.window,
            self.stride,
            self.smoothing,
            self.range_span,
            self.event_lookback,
            self.range_mean_span,
        )

    @property
    def after_ns(self) -> int:
        """How far past a step its score looks (a range score's second half)."""
        return self.reach.range_after * self.interval_ns

    def send_from(self, first_ns: int, context: int) -> int:
        """Where to start the series sent to score steps from `first_ns` on (on the window grid)."""
        return align_down(first_ns - self.lead_steps(context) * self.interval_ns, self.block_ns)

    def send_until(self, horizon_ns: int) -> int:
        """End of the last whole grid window within data final up to `horizon_ns` (exclusive)."""
        return align_down(horizon_ns - self.window * self.interval_ns, self.block_ns) + (
            self.window * self.interval_ns
        )

    def final_until(self, horizon_ns: int) -> int:
        """Steps before this have every window they need within data final up to `horizon_ns`."""
        last = align_down(horizon_ns - self.window * self.interval_ns, self.block_ns) + self.block_ns
        return last - self.after_ns


def geometry_from_metadata(metadata: Mapping[str, Any], interval_ns: int) -> Geometry:
    """The geometry a saved model scores with (its `config` and `data_choices` metadata)."""
    reach = ScoreReach.from_metadata(metadata)
    if reach is None:
        raise ValueError("the model's metadata has no detector config with a usable window")
    return Geometry(
        window=reach.window,
        stride=reach.stride,
        smoothing=reach.smoothing,
        interval_ns=interval_ns,
        event_lookback=reach.event_lookback,
        range_span=reach.range_span,
        range_mean_span=reach.range_mean_span,
    )

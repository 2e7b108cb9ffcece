"""How far a step's score reaches into the series around it, read from a model's metadata.

Step t's score depends on the windows covering it (they start on the model's stride
grid), on the `smoothing` raw scores up to it, with range scores on the centred range
of `range_span` smoothed scores around it (each first averaged over the centred
`range_mean_span` around it), and through the event filter on the flags of the
`event_lookback` steps before it. Whoever scores a long series in pieces (the
chunking client, the InfluxDB task) sends `before` steps ahead of the first step it
keeps, starting on the stride grid, and `after` steps beyond the last, and keeps what
one call over the whole series gives, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stad.core.events import EventFilter


@dataclass(frozen=True)
class ScoreReach:
    window: int
    stride: int
    smoothing: int = 1
    range_span: int = 1
    event_lookback: int = 0
    range_mean_span: int = 1

    @property
    def range_before(self) -> int:
        return self.range_span // 2 + self.range_mean_span // 2

    @property
    def range_after(self) -> int:
        return _after(self.range_span) + _after(self.range_mean_span)

    @property
    def before(self) -> int:
        """Steps before a step, past the first window covering it, that its score depends on."""
        return self.smoothing - 1 + self.range_before + self.event_lookback

    @property
    def context(self) -> int:
        """Steps before a step that its score depends on, its windows' included."""
        return self.window - 1 + self.before

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ScoreReach | None:
        """The reach of a saved model (None when its metadata says no window)."""
        config = metadata.get("config")
        if not isinstance(config, Mapping):
            return None
        window = _setting(config, "window", 0)
        if window < 2:
            return None
        stride = _setting(config, "score_stride", 0) or max(1, window // 2)  # 0: the detector's default
        events = EventFilter(
            max(1, _setting(config, "min_duration", 1)), max(0, _setting(config, "merge_gap", 0))
        )
        choices = metadata.get("data_choices")
        if not isinstance(choices, Mapping):
            choices = {}
        span = int(choices.get("range_span", 1))
        mean_span = int(choices.get("range_mean_span", 1))
        return cls(
            window=window,
            stride=stride,
            smoothing=max(1, _setting(config, "smoothing", 1)),
            range_span=max(1, span),
            event_lookback=events.lookback,
            range_mean_span=max(1, mean_span),
        )


def _after(span: int) -> int:
    """Steps after the centre of a centred range of `span` steps."""
    return span - 1 - span // 2


def _setting(config: Mapping[str, Any], name: str, default: int) -> int:
    """A setting from a saved config, flat or grouped ({"scoring": {"smoothing": 4}})."""
    if name in config:
        return int(config[name])
    for group in config.values():
        if isinstance(group, Mapping) and name in group:
            return int(group[name])
    return default

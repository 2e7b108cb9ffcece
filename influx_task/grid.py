"""Time-grid normalisation shared by both read paths.

Every grid step is labelled by the START of its aggregate window, as InfluxQL's
`GROUP BY time()` does; Flux's `aggregateWindow` labels a window by its stop, so
Flux rows are shifted back one interval. Windows are aligned to the Unix epoch,
which both query languages do by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FILLS = ("null", "previous", "linear")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SeriesBlock:
    """Rows of one source series (one tag set): start-labelled times and T x C values."""

    tags: Mapping[str, str]
    timestamps_ns: IntArray  # (T,)
    values: FloatArray  # (T, C), NaN = missing


def align_down(t_ns: int, interval_ns: int) -> int:
    return (t_ns // interval_ns) * interval_ns


def start_labels(times_ns: IntArray, interval_ns: int, label: str) -> IntArray:
    """Convert window labels to window starts; `label` is "start" or "stop"."""
    if label == "start":
        return times_ns
    if label == "stop":
        return times_ns - interval_ns
    raise ValueError(f"window label must be 'start' or 'stop', got {label!r}")


def to_grid(
    times_ns: IntArray,
    values: FloatArray,
    *,
    start_ns: int,
    stop_ns: int,
    interval_ns: int,
    fill: str = "null",
    fill_limit: int = 0,
) -> tuple[IntArray, FloatArray]:
    """Place start-labelled rows on the grid [start_ns, stop_ns) and apply the fill policy.

    fill: "null" leaves NaN in empty steps, "previous" carries the last value
    forward, "linear" interpolates between neighbours (not past the ends); both
    fill gaps of at most `fill_limit` steps (0: any gap), so a filled value
    never depends on data further back than that.
    """
    if start_ns % interval_ns or stop_ns % interval_ns:
        raise ValueError(f"grid bounds {start_ns}, {stop_ns} are not multiples of {interval_ns} ns")
    n_steps = max(0, (stop_ns - start_ns) // interval_ns)
    grid_times = start_ns + interval_ns * np.arange(n_steps, dtype=np.int64)
    grid = np.full((n_steps, values.shape[1]), np.nan)  # (T, C)
    if times_ns.size:
        offsets = times_ns - start_ns
        if (offsets % interval_ns).any():
            bad = int(times_ns[np.argmax(offsets % interval_ns != 0)])
            raise ValueError(f"timestamp {bad} is not on the {interval_ns} ns grid")
        index = offsets // interval_ns
        inside = (index >= 0) & (index < n_steps)
        grid[index[inside]] = values[inside]
    return grid_times, filled(grid, fill, fill_limit)


def filled(grid: FloatArray, fill: str, fill_limit: int = 0) -> FloatArray:
    """The (T, C) grid with the fill policy applied (see `to_grid`); "null" returns it as is."""
    if fill == "null":
        return grid
    limit = fill_limit or grid.shape[0]
    if fill == "previous":
        return _forward_fill(grid, limit)
    if fill == "linear":
        return _interpolate(grid, limit)
    raise ValueError(f"fill must be one of {FILLS}; got {fill!r}")


def _forward_fill(grid: FloatArray, limit: int) -> FloatArray:
    out = grid.copy()
    age = np.zeros(grid.shape[1], dtype=np.int64)  # steps since the carried value was observed
    for t in range(1, out.shape[0]):
        seen = ~np.isnan(grid[t])
        age = np.where(seen, 0, age + 1)
        gaps = ~seen & (age <= limit)
        out[t, gaps] = out[t - 1, gaps]
    return out


def _interpolate(grid: FloatArray, limit: int) -> FloatArray:
    out = grid.copy()
    for c in range(grid.shape[1]):
        seen = np.flatnonzero(~np.isnan(grid[:, c]))
        for a, b in zip(seen[:-1].tolist(), seen[1:].tolist(), strict=True):
            if 1 < b - a <= limit + 1:
                out[a + 1 : b, c] = np.interp(np.arange(a + 1, b), [a, b], grid[[a, b], c])
    return out


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """A stable identity for a series: measurement plus its sorted tags."""
    return ",".join([measurement, *(f"{k}={tags[k]}" for k in sorted(tags))])

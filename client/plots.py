"""Plots of scores (needs matplotlib: the `cli` extra).

One figure: a panel per channel (observed vs expected), the calibrated score
with its threshold, and the per-channel contributions over time. Labelled
anomaly spans are shaded across every panel, detected ones are drawn as a strip
along the bottom of each panel, and the strongest detected spans are annotated
with their top contributing channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.client._exceptions import DataError
from stad.client._types import ScoreResult, flag_spans
from stad.client.data_files import DataTable
from stad.core.types import FloatArray

MAX_CHANNEL_PANELS = 6
MAX_ANNOTATED_SPANS = 6
MIN_SPAN_WIDTH = 0.003  # of the x range, so that one-step spans stay visible
MIN_LABEL_GAP = 0.12  # of the x range, between two annotations
OBSERVED_COLOR = "#1f77b4"
EXPECTED_COLOR = "#2ca02c"
LABEL_COLOR = "#d62728"
DETECTED_COLOR = "#ff7f0e"


def plot_scores(
    path: str | Path,
    table: DataTable,
    result: ScoreResult,
    *,
    labels: npt.ArrayLike | None = None,
    title: str = "",
) -> Path:
    """Draw the score figure for `result` (scores of `table`) into a PNG; returns the path."""
    try:
        import matplotlib.dates as mdates
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise DataError("plots need matplotlib: pip install 'stad[cli]'") from exc
    if result.steps != table.steps:
        raise DataError(f"the result has {result.steps} steps but the table {table.steps}")
    dated = table.timestamps_ns is not None
    x: FloatArray = np.arange(table.steps, dtype=np.float64)
    if table.timestamps_ns is not None:
        x = np.asarray(mdates.date2num(table.timestamps_ns.astype("datetime64[ns]")), dtype=np.float64)  # type: ignore[no-untyped-call]
    detected = result.spans()
    labelled = flag_spans(np.asarray(labels) != 0) if labels is not None else []
    shown = _channels_to_show(table, result, detected)

    n_panels = len(shown) + 2
    heights = [1.0] * len(shown) + [1.4, 0.3 + 0.12 * len(result.channels)]
    fig = Figure(figsize=(13, 1.6 * n_panels + 1.0), layout="constrained")
    axes = fig.subplots(n_panels, 1, sharex=True, gridspec_kw={"height_ratios": heights})
    result_index = {name: i for i, name in enumerate(result.channels)}
    for ax, name in zip(axes, shown, strict=False):
        column = table.channels.index(name)
        ax.plot(x, table.values[:, column], color=OBSERVED_COLOR, lw=0.8, label="observed")
        ax.plot(
            x, result.expected[:, result_index[name]], color=EXPECTED_COLOR, lw=0.8, ls="--", label="expected"
        )
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        _shade(ax, x, labelled, detected)

    score_ax = axes[len(shown)]
    score_ax.plot(x, result.score, color="black", lw=0.8, label="score")
    score_ax.axhline(
        result.threshold, color=DETECTED_COLOR, ls="--", lw=1.2, label=f"threshold {result.threshold:.3g}"
    )
    # symlog: linear up to the threshold, logarithmic above, so that both stay readable
    score_ax.set_yscale("symlog", linthresh=max(abs(result.threshold), 1e-3))
    score_ax.set_ylabel("score", rotation=0, ha="right", va="center", fontsize=9)
    _shade(score_ax, x, labelled, detected)
    _annotate_spans(score_ax, x, result, detected)

    handles, names = axes[0].get_legend_handles_labels()
    more, more_names = score_ax.get_legend_handles_labels()
    handles += more
    names += more_names
    if labels is not None:
        handles.append(Patch(color=LABEL_COLOR, alpha=0.2))
        names.append("labelled anomaly")
    handles.append(Patch(color=DETECTED_COLOR))
    names.append("detected anomaly")
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=8, frameon=False)

    _contribution_map(fig, axes[-1], x, result)
    if dated:
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        axes[-1].set_xlabel("time (UTC)")
    else:
        axes[-1].set_xlabel("step")
    axes[-1].set_xlim(x[0], x[-1])
    hidden = len(table.channels) - len(shown)
    fig.suptitle(
        (title or f"model {result.model} v{result.version}")
        + f": {len(detected)} detected span(s)"
        + (f", {len(labelled)} labelled" if labels is not None else "")
        + (f"; the {hidden} channel(s) contributing least not drawn" if hidden else ""),
        fontsize=11,
        x=0.01,
        ha="left",
    )
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out


def _channels_to_show(table: DataTable, result: ScoreResult, detected: list[tuple[int, int]]) -> list[str]:
    if len(table.channels) <= MAX_CHANNEL_PANELS:
        return list(table.channels)
    mask = np.zeros(result.steps, dtype=bool)
    for start, stop in detected:
        mask[start:stop] = True
    rows = result.contributions[mask] if mask.any() else result.contributions
    weight = np.nan_to_num(np.nanmean(rows, axis=0))  # (C,)
    order = np.argsort(-weight)[:MAX_CHANNEL_PANELS]
    chosen = {result.channels[i] for i in order}
    return [name for name in table.channels if name in chosen]


def _extent(x: FloatArray, start: int, stop: int) -> tuple[float, float]:
    """x range of steps [start, stop), widened to a visible minimum."""
    left, right = float(x[start]), float(x[min(stop, len(x) - 1)])
    minimum = (float(x[-1]) - float(x[0])) * MIN_SPAN_WIDTH
    if right - left < minimum:
        middle = (left + right) / 2
        left, right = middle - minimum / 2, middle + minimum / 2
    return left, right


def _shade(ax: Any, x: FloatArray, labelled: list[tuple[int, int]], detected: list[tuple[int, int]]) -> None:
    for start, stop in labelled:
        ax.axvspan(*_extent(x, start, stop), color=LABEL_COLOR, alpha=0.2, lw=0)
    for start, stop in detected:
        ax.axvspan(*_extent(x, start, stop), ymin=0.0, ymax=0.1, color=DETECTED_COLOR, lw=0)


def _annotate_spans(ax: Any, x: FloatArray, result: ScoreResult, detected: list[tuple[int, int]]) -> None:
    """Name the top channels of the strongest detected spans, skipping ones that would overlap."""
    peaks = [(float(np.nanmax(result.score[start:stop])), start, stop) for start, stop in detected]
    placed: list[float] = []
    gap = (float(x[-1]) - float(x[0])) * MIN_LABEL_GAP
    for peak, start, stop in sorted(peaks, reverse=True):
        if len(placed) == MAX_ANNOTATED_SPANS:
            break
        middle = (float(x[start]) + float(x[stop - 1])) / 2
        if any(abs(middle - other) < gap for other in placed):
            continue
        placed.append(middle)
        names = "\n".join(name for name, _ in result.top_channels(start, stop, k=2))
        ax.annotate(
            names,
            xy=(middle, peak),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#8c2d04",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": DETECTED_COLOR, "lw": 0.6, "alpha": 0.9},
        )
    top = float(np.nanmax(result.score)) if result.steps else 1.0
    bottom = min(0.0, float(np.nanmin(result.score))) if result.steps else 0.0
    ax.set_ylim(bottom=bottom, top=top * 8 if top > 0 else None)  # room for the annotations


def _contribution_map(fig: Any, ax: Any, x: FloatArray, result: ScoreResult) -> None:
    matrix = np.nan_to_num(result.contributions.T)  # (C, N)
    image = ax.imshow(
        matrix,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        extent=(float(x[0]), float(x[-1]), len(result.channels) - 0.5, -0.5),
        vmin=0.0,
        vmax=1.0,
    )
    ax.set_yticks(range(len(result.channels)))
    ax.set_yticklabels(result.channels, fontsize=7)
    ax.set_ylabel("contribution", rotation=0, ha="right", va="center", fontsize=9)
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02)

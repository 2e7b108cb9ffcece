"""Plots of scores (needs matplotlib: the `cli` extra).

One figure: a panel per channel (observed vs expected), the calibrated score
with its threshold, and the per-channel contributions over time; labelled and
detected anomaly spans are shaded, and each detected span is annotated with its
top contributing channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.client._exceptions import DataError
from stad.client._types import ScoreResult, flag_spans
from stad.client.data_files import DataTable

MAX_CHANNEL_PANELS = 6
MAX_ANNOTATED_SPANS = 8
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
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DataError("plots need matplotlib: pip install 'stad[cli]'") from exc
    if result.steps != table.steps:
        raise DataError(f"the result has {result.steps} steps but the table {table.steps}")
    x: Any = np.arange(table.steps)
    if table.timestamps_ns is not None:
        x = table.timestamps_ns.astype("datetime64[ns]")
    detected = result.spans()
    labelled = flag_spans(np.asarray(labels) != 0) if labels is not None else []
    shown = _channels_to_show(table, result, detected)

    n_panels = len(shown) + 2
    heights = [1.0] * len(shown) + [1.3, 1.1]
    fig = Figure(figsize=(13, 1.7 * n_panels + 1.0), layout="constrained")
    axes = fig.subplots(n_panels, 1, sharex=True, gridspec_kw={"height_ratios": heights})
    result_index = {name: i for i, name in enumerate(result.channels)}
    for ax, name in zip(axes, shown, strict=False):
        column = table.channels.index(name)
        ax.plot(x, table.values[:, column], color="#1f77b4", lw=0.9, label="observed")
        ax.plot(x, result.expected[:, result_index[name]], color="#2ca02c", lw=0.9, ls="--", label="expected")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        _shade(ax, x, labelled, detected)
    axes[0].legend(loc="upper left", fontsize=8, ncol=2)

    score_ax = axes[len(shown)]
    score_ax.plot(x, result.score, color="black", lw=0.9, label="score")
    score_ax.axhline(
        result.threshold, color=DETECTED_COLOR, ls="--", lw=1.2, label=f"threshold {result.threshold:.3g}"
    )
    score_ax.set_ylabel("score", rotation=0, ha="right", va="center", fontsize=9)
    _shade(score_ax, x, labelled, detected)
    _annotate_spans(score_ax, x, result, detected)
    handles, names = score_ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    if labelled:
        handles.append(Patch(color=LABEL_COLOR, alpha=0.18))
        names.append("labelled anomaly")
    handles.append(Patch(color=DETECTED_COLOR, alpha=0.35))
    names.append("detected anomaly")
    score_ax.legend(handles, names, loc="upper left", fontsize=8, ncol=len(names))

    heat_ax = axes[-1]
    extent_x = (0, table.steps) if table.timestamps_ns is None else None
    _contribution_map(fig, heat_ax, x, result, extent_x)
    heat_ax.set_xlabel("time (UTC)" if table.timestamps_ns is not None else "step")
    hidden = len(table.channels) - len(shown)
    fig.suptitle(
        (title or f"model {result.model} v{result.version}")
        + f": {len(detected)} detected span(s)"
        + (f", {len(labelled)} labelled" if labels is not None else "")
        + (f"; {hidden} channel(s) with the least contribution not drawn" if hidden else ""),
        fontsize=11,
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


def _shade(ax: Any, x: Any, labelled: list[tuple[int, int]], detected: list[tuple[int, int]]) -> None:
    last = len(x) - 1
    for start, stop in labelled:
        ax.axvspan(x[start], x[min(stop, last)], color=LABEL_COLOR, alpha=0.18, lw=0)
    for start, stop in detected:
        ax.axvspan(x[start], x[min(stop, last)], ymin=0.0, ymax=0.12, color=DETECTED_COLOR, alpha=0.6, lw=0)
        ax.axvspan(x[start], x[min(stop, last)], color=DETECTED_COLOR, alpha=0.12, lw=0)


def _annotate_spans(ax: Any, x: Any, result: ScoreResult, detected: list[tuple[int, int]]) -> None:
    biggest = sorted(detected, key=lambda span: span[1] - span[0], reverse=True)[:MAX_ANNOTATED_SPANS]
    top = float(np.nanmax(result.score)) if result.steps else 1.0
    for start, stop in sorted(biggest):
        names = ", ".join(name for name, _ in result.top_channels(start, stop, k=2))
        ax.annotate(
            names,
            xy=(x[start], top),
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=7,
            rotation=30,
            color="#8c2d04",
            va="bottom",
        )
    ax.set_ylim(top=top * 1.35 if top > 0 else None)


def _contribution_map(
    fig: Any, ax: Any, x: Any, result: ScoreResult, extent_x: tuple[int, int] | None
) -> None:
    import matplotlib.dates as mdates

    matrix = np.nan_to_num(result.contributions.T)  # (C, N)
    if extent_x is None:
        left, right = mdates.date2num(x[0]), mdates.date2num(x[-1])  # type: ignore[no-untyped-call]
    else:
        left, right = extent_x
    image = ax.imshow(
        matrix,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        extent=(left, right, len(result.channels) - 0.5, -0.5),
        vmin=0.0,
        vmax=1.0,
    )
    ax.set_yticks(range(len(result.channels)))
    ax.set_yticklabels(result.channels, fontsize=7)
    ax.set_ylabel("contribution", rotation=0, ha="right", va="center", fontsize=9)
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02)

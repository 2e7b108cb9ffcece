"""Anomaly-detection metrics on per-step scores and binary labels (numpy only).

Conventions: a higher score means more anomalous; labels are 0/1 (1 = anomaly);
a step is predicted anomalous when its score is >= the threshold.

Threshold-free metrics follow the TSB-AD reference implementation
(`TSB_AD.evaluation.metrics.get_metrics`, tsb-ad 1.5):

- `roc_auc`, `pr_auc` (average precision, as scikit-learn computes it),
- `best_f1` ("Standard-F1": best F1 over all thresholds, no point adjustment),
- `vus` (volume under the range-aware ROC / PR surfaces over buffer sizes
  0..sliding_window, 250 thresholds, as TSB-AD computes VUS-ROC and VUS-PR),
- `event_scores`: event-level precision, recall and F1 (a labelled run is
  found when a flagged run overlaps it; a flagged run is right when it
  overlaps a labelled one),
- `pa_f1`: *point-adjusted* F1, where a whole labelled segment counts as found
  when any one of its steps is flagged. It flatters detectors (random scores
  reach high PA-F1); report it only beside the honest metrics.

Ranking metrics need both classes in `labels` and raise ValueError otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stad.core.types import BoolArray, FloatArray

DEFAULT_SLIDING_WINDOW = 100
VUS_THRESHOLDS = 250
PA_THRESHOLDS = 100

__all__ = [
    "DEFAULT_SLIDING_WINDOW",
    "BestF1",
    "Confusion",
    "EventScores",
    "best_f1",
    "confusion_matrix",
    "evaluate",
    "event_scores",
    "f1",
    "find_period",
    "pa_f1",
    "point_adjust",
    "pr_auc",
    "precision",
    "recall",
    "roc_auc",
    "vus",
    "vus_pr",
    "vus_roc",
]


@dataclass(frozen=True)
class Confusion:
    """Counts of a binary prediction against labels (positive = anomaly)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing is predicted."""
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when there are no anomalies."""
        positives = self.tp + self.fn
        return self.tp / positives if positives else 0.0

    @property
    def f1(self) -> float:
        """TP / (TP + (FP + FN) / 2); 0 when TP = 0."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def far(self) -> float:
        """False-alarm rate FP / (FP + TN); 0 when there are no normal steps."""
        negatives = self.fp + self.tn
        return self.fp / negatives if negatives else 0.0

    @property
    def mar(self) -> float:
        """Missed-alarm rate FN / (FN + TP); 0 when there are no anomalies."""
        positives = self.fn + self.tp
        return self.fn / positives if positives else 0.0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)


@dataclass(frozen=True)
class BestF1:
    """The best F1 over thresholds and where it is reached."""

    f1: float
    threshold: float
    precision: float
    recall: float


def _labels(labels: npt.ArrayLike, length: int | None = None) -> BoolArray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{array.shape[0]} labels for {length} scores")
    if array.size == 0:
        raise ValueError("labels are empty")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"labels must be numeric 0/1, got dtype {array.dtype}")
        bad = ~np.isin(array, (0, 1))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(f"labels must be 0 or 1, got {array[index]!r} at step {index}")
    return array.astype(np.bool_)


def _scores(scores: npt.ArrayLike) -> FloatArray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("scores are empty")
    if not np.isfinite(array).all():
        index = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"scores must be finite, got {array[index]} at step {index}")
    return array


def _pair(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    """Validate scores and labels for a ranking metric: same length, both classes present."""
    values = _scores(scores)
    truth = _labels(labels, values.shape[0])
    positives = int(truth.sum())
    if positives == 0:
        raise ValueError("labels contain no anomalies: ranking metrics are undefined")
    if positives == truth.size:
        raise ValueError("labels contain only anomalies: ranking metrics are undefined")
    return values, truth


def confusion_matrix(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> Confusion:
    """Pooled TP/FP/TN/FN of boolean `predictions` against `labels`."""
    truth = _labels(labels)
    predicted = _labels(predictions, truth.shape[0])
    tp = int(np.count_nonzero(truth & predicted))
    fp = int(np.count_nonzero(~truth & predicted))
    fn = int(np.count_nonzero(truth & ~predicted))
    return Confusion(tp=tp, fp=fp, tn=truth.size - tp - fp - fn, fn=fn)


def precision(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    return confusion_matrix(labels, predictions).precision


def recall(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    return confusion_matrix(labels, predictions).recall


def f1(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    return confusion_matrix(labels, predictions).f1


def _ranked(values: FloatArray, truth: BoolArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative TP and FP counts at each distinct threshold, highest score first."""
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    hits = truth[order].astype(np.float64)
    last = np.flatnonzero(np.diff(ranked) != 0)  # last index of each distinct score but the lowest
    cut = np.concatenate([last, [ranked.size - 1]])
    tps = np.cumsum(hits)[cut]
    fps = (cut + 1) - tps
    return ranked[cut], tps, fps


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve (trapezoids over distinct thresholds)."""
    values, truth = _pair(scores, labels)
    _, tps, fps = _ranked(values, truth)
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Average precision: sum over thresholds of (recall gain) x precision."""
    values, truth = _pair(scores, labels)
    _, tps, fps = _ranked(values, truth)
    recall_at = tps / tps[-1]
    precision_at = tps / (tps + fps)
    return float(np.sum(np.diff(recall_at, prepend=0.0) * precision_at))


def best_f1(scores: npt.ArrayLike, labels: npt.ArrayLike) -> BestF1:
    """Standard-F1: the best F1 over all thresholds, without point adjustment."""
    values, truth = _pair(scores, labels)
    thresholds, tps, fps = _ranked(values, truth)
    positives = tps[-1]
    f1_at = 2 * tps / (tps + fps + positives)
    best = int(np.argmax(f1_at))
    return BestF1(
        f1=float(f1_at[best]),
        threshold=float(thresholds[best]),
        precision=float(tps[best] / (tps[best] + fps[best])),
        recall=float(tps[best] / positives),
    )


def _segments(truth: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Starts and inclusive ends of the runs of True."""
    edges = np.diff(truth.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def _segment_max(values: FloatArray, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> FloatArray:
    """Maximum of `values` over each inclusive [start, end] (disjoint, sorted segments)."""
    padded = np.append(values, -np.inf)  # so that end + 1 is always a valid index
    bounds = np.stack([starts, ends + 1], axis=1).ravel()  # (2S,)
    return np.maximum.reduceat(padded, bounds)[::2]


def point_adjust(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> BoolArray:
    """Point adjustment: flag every step of a labelled segment that has any flagged step."""
    truth = _labels(labels)
    predicted = _labels(predictions, truth.shape[0]).copy()
    for start, end in zip(*_segments(truth), strict=True):
        if predicted[start : end + 1].any():
            predicted[start : end + 1] = True
    return predicted


def pa_f1(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    predictions: npt.ArrayLike | None = None,
) -> float:
    """Point-adjusted F1 (inflated; see the module docstring).

    With `predictions`, the F1 of those predictions after point adjustment.
    Without, the best over 100 evenly spaced thresholds between the lowest and
    the highest score, a step being flagged when its score is above the
    threshold (TSB-AD's PA-F1).
    """
    values = _scores(scores)
    truth = _labels(labels, values.shape[0])
    if predictions is not None:
        return confusion_matrix(truth, point_adjust(predictions, truth)).f1
    positives = int(truth.sum())
    if positives == 0:
        raise ValueError("labels contain no anomalies: PA-F1 is undefined")
    starts, ends = _segments(truth)
    lengths = (ends - starts + 1).astype(np.float64)
    peaks = _segment_max(values, starts, ends)
    thresholds = np.linspace(values.min(), values.max(), PA_THRESHOLDS)
    # A segment is found at a threshold when its highest score is above it.
    found = peaks[None, :] > thresholds[:, None]  # (K, S)
    tp = found.astype(np.float64) @ lengths
    normal = np.sort(values[~truth])
    fp = normal.size - np.searchsorted(normal, thresholds, side="right")
    fn = positives - tp
    return float(np.max(2 * tp / (2 * tp + fp + fn)))


def _merged_ranges(
    starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], half: int, length: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Segments widened by `half` steps on each side, overlapping ones merged, clipped."""
    split = ends[:-1] + half < starts[1:] - half
    first = np.concatenate([[0], np.flatnonzero(split) + 1])
    last = np.concatenate([np.flatnonzero(split), [starts.size - 1]])
    return np.maximum(starts[first] - half, 0), np.minimum(ends[last] + half, length - 1)


def _soft_labels(
    truth: BoolArray, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], window: int
) -> FloatArray:
    """Labels with a buffer of window // 2 steps each side decaying as sqrt(1 - d / window)."""
    soft = truth.astype(np.float64)
    half = window // 2
    if half == 0:
        return soft
    distance = np.arange(1, half + 1)
    weight = np.sqrt(1 - distance / window)
    for index in (ends[:, None] + distance, starts[:, None] - distance):  # (S, half) each
        inside = (index >= 0) & (index < truth.size)
        np.add.at(soft, index[inside], np.broadcast_to(weight, index.shape)[inside])
    return np.minimum(soft, 1.0)


def vus(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    sliding_window: int = DEFAULT_SLIDING_WINDOW,
    thresholds: int = VUS_THRESHOLDS,
) -> tuple[float, float]:
    """(VUS-ROC, VUS-PR): range-aware ROC-AUC and AP averaged over buffers 0..sliding_window.

    Same definition as TSB-AD's `RangeAUC_volume_opt`: for each buffer size w
    the labels get soft margins of w // 2 steps, recall is weighted by the
    share of (widened) anomaly ranges touched, and the thresholds are the
    scores at `thresholds` evenly spaced ranks.
    """
    values, truth = _pair(scores, labels)
    if isinstance(sliding_window, bool) or not isinstance(sliding_window, int | np.integer):
        raise ValueError(f"sliding_window must be an int, got {sliding_window!r}")
    if sliding_window < 0:
        raise ValueError(f"sliding_window must be >= 0, got {sliding_window}")
    if thresholds < 1:
        raise ValueError(f"thresholds must be >= 1, got {thresholds}")
    length = values.size
    positives = float(truth.sum())
    starts, ends = _segments(truth)

    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    cutoffs = ranked[np.linspace(0, length - 1, thresholds).astype(int)]  # descending
    ascending = ranked[::-1]
    flagged = length - np.searchsorted(ascending, cutoffs, side="left")  # steps >= cutoff
    top = flagged - 1  # the flagged steps are order[: flagged]
    hits_on_labels = np.cumsum(truth[order].astype(np.float64))[top]

    roc_areas = np.empty(sliding_window + 1)
    pr_areas = np.empty(sliding_window + 1)
    for window in range(sliding_window + 1):
        soft = _soft_labels(truth, starts, ends, window)
        tp = np.cumsum(soft[order])[top]
        range_starts, range_ends = _merged_ranges(starts, ends, window // 2, length)
        peaks = np.sort(_segment_max(values, range_starts, range_ends))
        touched = peaks.size - np.searchsorted(peaks, cutoffs, side="left")
        # Soft positives counted half-way between the hard labels and the hit soft labels.
        positives_w = positives + (tp - hits_on_labels) / 2
        tpr = np.minimum(tp / positives_w, 1.0) * touched / peaks.size
        fpr = (flagged - tp) / (length - positives_w)
        precision_at = tp / flagged
        tpr_curve = np.concatenate([[0.0], tpr, [1.0]])
        fpr_curve = np.concatenate([[0.0], fpr, [1.0]])
        roc_areas[window] = np.dot(np.diff(fpr_curve), (tpr_curve[1:] + tpr_curve[:-1]) / 2)
        pr_areas[window] = np.dot(np.diff(tpr_curve[:-1]), precision_at)
    return float(roc_areas.mean()), float(pr_areas.mean())


def vus_pr(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, sliding_window: int = DEFAULT_SLIDING_WINDOW
) -> float:
    return vus(scores, labels, sliding_window=sliding_window)[1]


def vus_roc(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, sliding_window: int = DEFAULT_SLIDING_WINDOW
) -> float:
    return vus(scores, labels, sliding_window=sliding_window)[0]


def find_period(values: npt.ArrayLike, *, max_lag: int = 400) -> int:
    """The dominant period of a 1-D series from its autocorrelation (TSB-AD's rule).

    `dominant_period`, or 125 when there is none. TSB-AD uses it, on channel 0, as
    the VUS sliding window.
    """
    series = np.asarray(values, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"find_period needs a 1-D series, got shape {series.shape}")
    if not np.isfinite(series).all():
        raise ValueError("find_period needs finite values")
    period = dominant_period(series, max_lag=max_lag)
    return 125 if period is None else period


def dominant_period(series: FloatArray, *, max_lag: int = 400) -> int | None:
    """The lag (>= 3) of the highest local maximum of the autocorrelation of a finite 1-D
    series up to `max_lag`, from its first 20,000 steps; None when there is none or it
    lies outside 6..303 steps."""
    series = series[:20000] - series[:20000].mean()
    base = 3
    size = series.size
    if size < base + 3:
        return None
    spectrum = np.fft.rfft(series, n=2 * size)
    autocov = np.fft.irfft(spectrum * np.conj(spectrum), n=2 * size)[: min(max_lag, size - 1) + 1]
    if autocov[0] <= 0:
        return None
    autocorr = (autocov / autocov[0])[base:]
    inner = autocorr[1:-1]
    peaks = np.flatnonzero((inner > autocorr[:-2]) & (inner > autocorr[2:])) + 1
    if peaks.size == 0:
        return None
    best = int(peaks[np.argmax(autocorr[peaks])])
    if best < 3 or best > 300:
        return None
    return best + base


def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    threshold: float | None = None,
    predictions: npt.ArrayLike | None = None,
    sliding_window: int = DEFAULT_SLIDING_WINDOW,
) -> dict[str, float]:
    """All metrics of `scores` against `labels` as a flat dict.

    Always: auc_roc, auc_pr, vus_roc, vus_pr, standard_f1 (best F1, no point
    adjustment), standard_f1_threshold, pa_f1 (point-adjusted, best over
    thresholds). With `threshold` (flag score >= threshold) or explicit
    `predictions` (not both): precision, recall, f1, far, mar, tp, fp, tn, fn,
    pa_f1_at_threshold (point-adjusted, of those predictions) and
    event_precision, event_recall, event_f1 (see `event_scores`).
    """
    values, truth = _pair(scores, labels)
    if threshold is not None and predictions is not None:
        raise ValueError("give threshold or predictions, not both")
    roc_volume, pr_volume = vus(values, truth, sliding_window=sliding_window)
    best = best_f1(values, truth)
    result: dict[str, float] = {
        "auc_roc": roc_auc(values, truth),
        "auc_pr": pr_auc(values, truth),
        "vus_roc": roc_volume,
        "vus_pr": pr_volume,
        "standard_f1": best.f1,
        "standard_f1_threshold": best.threshold,
        "pa_f1": pa_f1(values, truth),
    }
    if threshold is not None:
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        predictions = values >= threshold
    if predictions is not None:
        flagged = _labels(predictions, values.shape[0])
        counts = confusion_matrix(truth, flagged)
        result.update(
            precision=counts.precision,
            recall=counts.recall,
            f1=counts.f1,
            far=counts.far,
            mar=counts.mar,
            tp=float(counts.tp),
            fp=float(counts.fp),
            tn=float(counts.tn),
            fn=float(counts.fn),
            pa_f1_at_threshold=pa_f1(values, truth, predictions=flagged),
        )
        events = event_scores(truth, flagged)
        result.update(event_precision=events.precision, event_recall=events.recall, event_f1=events.f1)
    return result


@dataclass(frozen=True)
class EventScores:
    """Event-level precision and recall: a labelled event is found when a detected one overlaps it,
    and a detected event is right when it overlaps a labelled one."""

    precision: float
    recall: float
    f1: float
    labelled: int
    detected: int


def event_scores(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> EventScores:
    """Event precision, recall and F1 of flagged runs against labelled runs (NaN when undefined)."""
    truth = _labels(labels)
    flagged = _labels(predictions, truth.shape[0])
    true_starts, true_ends = _segments(truth)
    found_starts, found_ends = _segments(flagged)
    hits = np.concatenate([[0], np.cumsum(flagged)])  # flagged steps before each index
    truths = np.concatenate([[0], np.cumsum(truth)])
    found = int(np.count_nonzero(hits[true_ends + 1] - hits[true_starts]))
    right = int(np.count_nonzero(truths[found_ends + 1] - truths[found_starts]))
    recall_ = found / true_starts.size if true_starts.size else float("nan")
    precision_ = right / found_starts.size if found_starts.size else float("nan")
    total = precision_ + recall_
    f1_ = 2 * precision_ * recall_ / total if total > 0 else (float("nan") if np.isnan(total) else 0.0)
    return EventScores(precision_, recall_, f1_, int(true_starts.size), int(found_starts.size))

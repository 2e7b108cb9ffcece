"""From raw per-step scores to calibrated scores, thresholds and severity.

The calibrated score is the raw (smoothed) score divided by a reference: the
`threshold_quantile` quantile of the raw scores of held-out normal data. So on
every model a score of 1.0 means "as high as the q-quantile of normal data",
and the default unlabelled threshold is `threshold_factor` on that scale
(1.0 unless configured). Severity maps the calibrated score to 0..100 as
100 * (1 - 2**-score): 0 at score 0, 50 at score 1, 75 at score 2, ...
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Floor of the reference scale, in raw units, so that a perfectly predicted
# (e.g. constant) training series does not make every later score infinite.
MIN_REFERENCE = 1e-6


def smooth_trailing(raw: FloatArray, steps: int) -> FloatArray:
    """Mean over a trailing window of `steps` steps (shorter at the start)."""
    return TrailingMean(steps).add(raw)


class TrailingMean:
    """Means over a trailing window of `steps` steps (shorter at the start), fed piece
    by piece: the pieces' results equal one call over the whole series, float for float,
    because it keeps the running prefix sums of the last `steps` steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._prefix = np.zeros(1)  # prefix sums at steps seen - len + 1 .. seen
        self._seen = 0

    def add(self, raw: FloatArray) -> FloatArray:
        """The trailing means of the next raw.shape[0] steps."""
        if self.steps <= 1:
            return raw.copy()
        sums = np.concatenate((self._prefix[:-1], np.cumsum(np.concatenate((self._prefix[-1:], raw)))))
        first = self._seen - (self._prefix.shape[0] - 1)  # the series step of sums[0]
        idx = np.arange(self._seen + 1, self._seen + raw.shape[0] + 1)
        lo = np.maximum(idx - self.steps, 0)
        out: FloatArray = (sums[idx - first] - sums[lo - first]) / (idx - lo)
        self._prefix = sums[-(self.steps + 1) :]
        self._seen += raw.shape[0]
        return out


def reference_scale(normal_raw: FloatArray, quantile: float) -> float:
    """The `quantile` of held-out normal raw scores, floored at MIN_REFERENCE."""
    if normal_raw.size == 0:
        raise ValueError("no normal scores to calibrate on")
    return float(max(np.quantile(normal_raw, quantile), MIN_REFERENCE))


def severity(score: FloatArray) -> FloatArray:
    """0..100, monotone in the calibrated score; 50 at score 1."""
    out: FloatArray = 100.0 * (1.0 - np.exp2(-np.maximum(score, 0.0)))
    return out


def best_f1_threshold(score: FloatArray, labels: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Threshold maximising point-wise F1 (no point adjustment) of `score >= threshold`.

    Returns (threshold, f1). The threshold lies midway between the best cut's
    score and the next lower one, so it generalises a little past the data.
    """
    if score.shape != labels.shape:
        raise ValueError(f"score shape {score.shape} != labels shape {labels.shape}")
    positives = int(labels.sum())
    if positives == 0:
        raise ValueError("labels contain no anomalies; cannot choose a best-F1 threshold")
    order = np.argsort(-score, kind="stable")
    sorted_score = score[order]
    tp = np.cumsum(labels[order])
    predicted = np.arange(1, score.shape[0] + 1)
    # Only cut between distinct scores: the last index of each run of equal scores.
    last_of_run = np.append(sorted_score[1:] != sorted_score[:-1], True)
    f1 = np.where(last_of_run, 2 * tp / (predicted + positives), -1.0)
    best = int(np.argmax(f1))
    if best + 1 < score.shape[0]:
        threshold = 0.5 * (sorted_score[best] + sorted_score[best + 1])
    else:
        threshold = float(sorted_score[best])
    return float(threshold), float(f1[best])

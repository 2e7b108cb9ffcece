"""Metrics of the accuracy benchmark: TSB-AD's reference code, and event scores as JSON fields."""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt

from stad.core import metrics

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def reference_metrics(scores: FloatArray, labels: BoolArray, window: int) -> dict[str, float]:
    """TSB-AD's own get_metrics (tsb-ad 1.5), the benchmark's reference implementation."""
    from TSB_AD.evaluation.metrics import get_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on thresholds that flag nothing
        result = get_metrics(scores, labels.astype(int), slidingWindow=window)
    return {
        "vus_pr": float(result["VUS-PR"]),
        "vus_roc": float(result["VUS-ROC"]),
        "auc_pr": float(result["AUC-PR"]),
        "auc_roc": float(result["AUC-ROC"]),
        "standard_f1": float(result["Standard-F1"]),
        "pa_f1_point_adjusted": float(result["PA-F1"]),
    }


def event_row(labels: BoolArray, flags: BoolArray) -> dict[str, float | None]:
    """stad.core.metrics.event_scores as JSON-ready fields (None where undefined)."""
    scores = metrics.event_scores(labels, flags)
    return {
        "event_precision": _finite_or_none(scores.precision),
        "event_recall": _finite_or_none(scores.recall),
        "event_f1": _finite_or_none(scores.f1),
        "events_labelled": scores.labelled,
        "events_flagged": scores.detected,
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None

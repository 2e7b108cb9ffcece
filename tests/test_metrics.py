"""stad.core.metrics against the TSB-AD reference (tsb-ad 1.5) and on edge cases."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from stad.core import metrics

# Reference Standard-F1 divides by (precision + recall + 1e-5); ours is exact.
# The difference is at most 1e-5 / 2.
F1_EPSILON_SLACK = 1e-5
TIGHT = 1e-12


def reference(scores: npt.NDArray[Any], labels: npt.NDArray[Any], window: int) -> dict[str, float]:
    pytest.importorskip("sklearn")
    from TSB_AD.evaluation.metrics import get_metrics

    with warnings.catch_warnings():
        # The reference's own sklearn calls warn on thresholds that flag nothing.
        warnings.simplefilter("ignore")
        result: dict[str, float] = get_metrics(scores, labels, slidingWindow=window)
    return result


def segments_labels(length: int, spans: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    labels = np.zeros(length, dtype=np.int64)
    for start, stop in spans:
        labels[start:stop] = 1
    return labels


def random_case(seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    return rng.random(700), (rng.random(700) < 0.1).astype(np.int64)


def perfect_case() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    labels = segments_labels(1200, [(100, 130), (500, 520), (900, 1000)])
    return labels.astype(np.float64) + 0.01 * np.arange(1200) / 1200, labels


def shifted_case() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    # The detector fires 15 steps late, on a noisy background; scores rounded to make ties.
    rng = np.random.default_rng(3)
    labels = segments_labels(1500, [(200, 260), (700, 710), (1100, 1180)])
    scores = np.round(rng.random(1500) * 0.5 + np.roll(labels, 15), 2)
    return scores, labels


def varied_segments_case() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    # Single points, short and long segments, two of them close together; weak signal.
    rng = np.random.default_rng(4)
    spans = [(50, 51), (120, 123), (126, 140), (400, 401), (600, 700), (1200, 1205), (1390, 1399)]
    labels = segments_labels(1400, spans)
    scores = rng.normal(size=1400) + 0.8 * labels
    return scores, labels


CASES = {
    "random-0": (random_case(0), 40),
    "random-1": (random_case(1), 7),
    "perfect": (perfect_case(), 25),
    "shifted": (shifted_case(), 30),
    "varied-segments": (varied_segments_case(), 0),
    "varied-segments-w1": (varied_segments_case(), 1),
    "varied-segments-w64": (varied_segments_case(), 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name: str) -> None:
    (scores, labels), window = CASES[name]
    expected = reference(scores, labels, window)
    ours = metrics.evaluate(scores, labels, sliding_window=window)
    assert ours["auc_roc"] == pytest.approx(expected["AUC-ROC"], abs=TIGHT)
    assert ours["auc_pr"] == pytest.approx(expected["AUC-PR"], abs=TIGHT)
    assert ours["vus_pr"] == pytest.approx(expected["VUS-PR"], abs=1e-10)
    assert ours["vus_roc"] == pytest.approx(expected["VUS-ROC"], abs=1e-10)
    assert ours["standard_f1"] == pytest.approx(expected["Standard-F1"], abs=F1_EPSILON_SLACK)
    assert ours["standard_f1"] >= expected["Standard-F1"]
    assert ours["pa_f1"] == pytest.approx(expected["PA-F1"], abs=TIGHT)


def test_perfect_scores_get_perfect_metrics() -> None:
    scores, labels = perfect_case()
    result = metrics.evaluate(scores, labels, sliding_window=0)
    for key in ("auc_roc", "auc_pr", "standard_f1", "pa_f1", "vus_pr", "vus_roc"):
        assert result[key] == pytest.approx(1.0), key


def test_constant_scores_match_reference() -> None:
    labels = segments_labels(800, [(100, 150), (400, 420)])
    scores = np.full(800, 0.3)
    expected = reference(scores, labels, 10)
    ours = metrics.evaluate(scores, labels, sliding_window=10)
    assert ours["auc_roc"] == pytest.approx(0.5)
    assert ours["auc_pr"] == pytest.approx(labels.mean())
    assert ours["auc_pr"] == pytest.approx(expected["AUC-PR"], abs=TIGHT)
    assert ours["vus_pr"] == pytest.approx(expected["VUS-PR"], abs=1e-10)
    assert ours["standard_f1"] == pytest.approx(expected["Standard-F1"], abs=F1_EPSILON_SLACK)


def test_point_adjustment_inflates_random_scores() -> None:
    rng = np.random.default_rng(7)
    labels = segments_labels(5000, [(s, s + 100) for s in range(300, 4800, 600)])
    scores = rng.random(5000)
    honest = metrics.best_f1(scores, labels).f1
    adjusted = metrics.pa_f1(scores, labels)
    assert honest < 0.4
    assert adjusted > 0.8


def test_threshold_metrics_and_confusion() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1, 0, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.1, 0.3, 0.2])
    result = metrics.evaluate(scores, labels, threshold=0.7, sliding_window=2)
    # flagged: steps 1, 2, 4 -> TP 2 (2, 4), FP 1 (1), FN 2 (3, 7), TN 5
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 1, 2, 5)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(2 / (2 + 1.5))
    assert result["far"] == pytest.approx(1 / 6)
    assert result["mar"] == pytest.approx(0.5)
    # point adjustment completes the segment 2..4 but not the missed one at 7
    assert result["pa_f1_at_threshold"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_predictions_equal_threshold_route() -> None:
    scores, labels = shifted_case()
    by_threshold = metrics.evaluate(scores, labels, threshold=0.9, sliding_window=5)
    by_predictions = metrics.evaluate(scores, labels, predictions=scores >= 0.9, sliding_window=5)
    assert by_threshold == by_predictions
    with pytest.raises(ValueError, match="not both"):
        metrics.evaluate(scores, labels, threshold=0.9, predictions=scores >= 0.9)


def test_best_f1_threshold_reproduces_f1() -> None:
    scores, labels = varied_segments_case()
    best = metrics.best_f1(scores, labels)
    assert metrics.f1(labels, scores >= best.threshold) == pytest.approx(best.f1)
    assert metrics.precision(labels, scores >= best.threshold) == pytest.approx(best.precision)
    assert metrics.recall(labels, scores >= best.threshold) == pytest.approx(best.recall)


def test_confusion_edge_cases() -> None:
    no_anomalies = metrics.confusion_matrix([0, 0, 0], [0, 1, 0])
    assert (no_anomalies.recall, no_anomalies.mar, no_anomalies.f1) == (0.0, 0.0, 0.0)
    assert no_anomalies.far == pytest.approx(1 / 3)
    nothing_flagged = metrics.confusion_matrix([1, 0, 1], [0, 0, 0])
    assert (nothing_flagged.precision, nothing_flagged.f1, nothing_flagged.mar) == (0.0, 0.0, 1.0)
    all_anomalies = metrics.confusion_matrix([1, 1], [1, 1])
    assert (all_anomalies.f1, all_anomalies.far) == (1.0, 0.0)
    pooled = metrics.Confusion(1, 2, 3, 4) + metrics.Confusion(10, 20, 30, 40)
    assert pooled == metrics.Confusion(11, 22, 33, 44)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.zeros(50), "no anomalies"), (np.ones(50), "only anomalies")],
)
def test_one_class_labels_raise(labels: npt.NDArray[np.float64], message: str) -> None:
    scores = np.linspace(0, 1, 50)
    for function in (metrics.roc_auc, metrics.pr_auc, metrics.best_f1, metrics.vus_pr):
        with pytest.raises(ValueError, match=message):
            function(scores, labels)
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(scores, labels)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, np.nan, 0.3], [0, 1, 0], "finite.*nan"),
        ([0.1, np.inf, 0.3], [0, 1, 0], "finite.*inf"),
        ([0.1, 0.2], [0, 1, 0], "3 labels for 2 scores"),
        ([0.1, 0.2, 0.3], [0, 2, 0], "0 or 1.*2.*step 1"),
        ([[0.1, 0.2]], [0, 1], "one-dimensional"),
        ([], [], "empty"),
    ],
)
def test_bad_input_raises(scores: Any, labels: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(scores, labels)


def test_bad_sliding_window_raises() -> None:
    scores, labels = perfect_case()
    with pytest.raises(ValueError, match="sliding_window must be >= 0, got -1"):
        metrics.vus(scores, labels, sliding_window=-1)


def test_vus_is_fast_enough_for_long_series() -> None:
    # 40k steps with a 100-step window must run in one vectorised pass; this only
    # checks the result is sane (timings are measured in bench/, not asserted here).
    rng = np.random.default_rng(0)
    labels = segments_labels(40_000, [(s, s + 60) for s in range(1000, 39_000, 2000)])
    scores = rng.random(40_000) + labels
    roc_volume, pr_volume = metrics.vus(scores, labels, sliding_window=100)
    assert 0.9 < roc_volume <= 1.0
    assert 0.5 < pr_volume <= 1.0


def test_find_period_recovers_a_sine_period() -> None:
    steps = np.arange(5000)
    rng = np.random.default_rng(1)
    assert metrics.find_period(np.sin(2 * np.pi * steps / 48) + 0.1 * rng.normal(size=5000)) == 48
    assert metrics.find_period(np.ones(1000)) == 125  # no period: TSB-AD's fallback


def test_find_period_autocorrelation_matches_direct_sum() -> None:
    rng = np.random.default_rng(2)
    steps = np.arange(600)
    series = np.sin(2 * np.pi * steps / 37) + 0.5 * np.sin(2 * np.pi * steps / 90)
    series = series + 0.3 * rng.normal(size=600)
    centred = series - series.mean()
    direct = np.array([np.dot(centred[: 600 - k], centred[k:]) for k in range(401)])
    direct = direct[3:] / direct[0]
    inner = direct[1:-1]
    peaks = np.flatnonzero((inner > direct[:-2]) & (inner > direct[2:])) + 1
    best = int(peaks[np.argmax(direct[peaks])]) if peaks.size else -1
    expected = best + 3 if 3 <= best <= 300 else 125
    assert metrics.find_period(series) == expected


def test_public_names_and_light_imports() -> None:
    missing = [name for name in metrics.__all__ if not hasattr(metrics, name)]
    assert missing == []
    check = "import sys, stad.core.metrics; print(sorted({'torch', 'sklearn', 'scipy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

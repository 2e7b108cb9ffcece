"""Anomaly events: the causal min-duration / merge-gap filter and event-level metrics."""

import numpy as np
import pytest

from stad.core.events import EventFilter, spans
from stad.core.metrics import evaluate, event_scores


def _reference(flags: np.ndarray, min_duration: int, merge_gap: int) -> np.ndarray:
    """The definition, step by step."""
    n = flags.shape[0]
    confirmed = [i >= min_duration - 1 and bool(flags[i - min_duration + 1 : i + 1].all()) for i in range(n)]
    hold = merge_gap + min_duration - 1
    return np.array([any(confirmed[max(0, i - hold) : i + 1]) for i in range(n)])


@pytest.mark.parametrize(("min_duration", "merge_gap"), [(1, 0), (3, 0), (1, 4), (3, 5)])
def test_filter_matches_its_definition_whatever_the_chunking(min_duration: int, merge_gap: int) -> None:
    rng = np.random.default_rng(min_duration * 10 + merge_gap)
    flags = rng.random(500) < 0.3
    expected = _reference(flags, min_duration, merge_gap)
    assert np.array_equal(EventFilter(min_duration, merge_gap).add(flags), expected)
    for cut in ([1] * 30, [7, 1, 50, 2], [499]):
        chunks, start, events = [], 0, EventFilter(min_duration, merge_gap)
        for size in [*cut, 500]:
            chunks.append(events.add(flags[start : start + size]))
            start += size
        assert np.array_equal(np.concatenate(chunks), expected), cut


def test_a_fragmented_anomaly_becomes_one_event_and_a_blip_none() -> None:
    flags = np.zeros(100, dtype=bool)
    flags[[10]] = True  # a one-step blip
    flags[40:44] = flags[46:50] = flags[52:60] = True  # one anomaly with two short gaps
    events = EventFilter(min_duration=3, merge_gap=3).add(flags)
    assert spans(events) == [(42, 65)]  # confirmed at its 3rd step, open until 2 + 3 steps after
    assert spans(flags) == [(10, 11), (40, 44), (46, 50), (52, 60)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_duration"):
        EventFilter(min_duration=0)


def test_event_scores_count_overlaps() -> None:
    labels = np.zeros(100, dtype=int)
    labels[10:20] = labels[50:60] = 1
    flags = np.zeros(100, dtype=bool)
    flags[15:17] = flags[30:32] = True  # finds the first event; one false event; misses the second
    scores = event_scores(labels, flags)
    assert (scores.labelled, scores.detected) == (2, 2)
    assert scores.recall == 0.5 and scores.precision == 0.5 and scores.f1 == 0.5
    perfect = event_scores(labels, labels.astype(bool))
    assert perfect.f1 == 1.0
    metrics = evaluate(flags.astype(float), labels, threshold=0.5)
    assert metrics["event_f1"] == 0.5 and metrics["event_recall"] == 0.5
    assert np.isnan(event_scores(labels, np.zeros(100, dtype=bool)).precision)

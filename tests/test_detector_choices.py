"""Fit-time data choices, range scores, held-out blocks and the training false-alarm bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stad.core.data_warnings import SMALL_CALIBRATION
from stad.core.detector_config import DetectorConfig
from stad.core.events import EventFilter
from stad.core.score_reach import ScoreReach
from stad.server.detector.choices import (
    AUTO_WINDOW_FALLBACK,
    DataChoices,
    channel_kind,
    choose,
    largest_auto_window,
    window_for_period,
)
from stad.server.detector.estimator import Detector, holdout_blocks
from stad.server.detector.steps import bounded_threshold, range_max, range_mean

# Range scores (on by default) set explicitly, so these tests do not depend on the default.
RANGES = DetectorConfig().replace(range_scores=True)


def sine(steps: int, period: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(steps) / period) + 0.05 * rng.standard_normal(steps)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.full(50, 3.0), "constant"),
        (np.array([np.nan] * 10 + [2.0] * 40), "constant"),
        (np.array([np.nan] * 50), "constant"),
        (np.tile([0.0, 1.0], 25), "binary"),
        (np.array([0.0] * 97 + [1.0, 2.0, 3.0]), "near_constant"),
        (np.arange(50, dtype=float), "varying"),
    ],
)
def test_channel_kind(values: np.ndarray, kind: str) -> None:
    assert channel_kind(values) == kind


def test_choices_take_the_period_of_varying_channels_and_leave_constant_ones_unscored() -> None:
    train = np.stack([sine(2000, 40), sine(2000, 40, seed=1), np.zeros(2000), np.tile([0.0, 1.0], 1000)], 1)
    choices = choose(train, RANGES)
    assert choices.kinds == ("varying", "varying", "constant", "binary")
    assert choices.period == 40
    assert choices.span == 40  # the period, within the default window of 64
    assert choices.mean_span == 20  # half of it
    np.testing.assert_array_equal(choices.scored, [True, True, False, True])
    assert choices.to_dict()["scored_channels"] == 3
    assert DataChoices.from_dict(choices.to_dict(), 4, 64) == choices


def test_range_span_is_capped_by_the_window_and_falls_back_without_a_period() -> None:
    long_period = np.stack([sine(3000, 150)], 1)
    assert choose(long_period, RANGES).span == 64
    noise = np.random.default_rng(0).standard_normal((3000, 2)).cumsum(axis=0)  # no periodic peak
    choices = choose(noise, RANGES)
    assert choices.period is None and choices.span == 64 and choices.mean_span == 32
    off = choose(np.stack([sine(2000, 40)], 1), DetectorConfig().replace(range_scores=False))
    assert off.span == 1 and off.mean_span == 1 and off.period == 40


def test_binary_channels_are_left_out_of_the_step_score_beside_varying_ones() -> None:
    flag = np.tile([0.0] * 7 + [1.0] * 3, 200)
    beside = choose(np.stack([sine(2000, 40), flag, np.zeros(2000)], 1), RANGES)
    np.testing.assert_array_equal(beside.scored, [True, True, False])  # the flag is an input
    np.testing.assert_array_equal(beside.counted, [True, False, False])
    assert beside.to_dict()["counted_channels"] == 1
    alone = choose(np.stack([flag, 1.0 - flag], 1), RANGES)  # nothing else to score
    np.testing.assert_array_equal(alone.counted, [True, True])
    kept = choose(np.stack([sine(2000, 40), flag], 1), RANGES.replace(binary_in_score=True))
    np.testing.assert_array_equal(kept.counted, [True, True])
    saved = beside.to_dict()
    del saved["binary_in_score"]  # a model saved before the setting keeps counting them
    np.testing.assert_array_equal(DataChoices.from_dict(saved, 3, 64).counted, [True, True, False])


@pytest.mark.slow
@pytest.mark.parametrize("in_score", [False, True])
def test_a_binary_channels_errors_count_only_when_asked(in_score: bool) -> None:
    torch.set_num_threads(1)
    flag = (np.random.default_rng(4).random(3000) < 0.3).astype(float)  # toggles at random
    train = np.stack([sine(3000, 40), flag], 1)
    detector = Detector(TINY.replace(binary_in_score=in_score)).fit(train, channels=["a", "flag"])
    out = detector.score(train)
    assert ((out.contributions[:, 1] == 0).all()) is not in_score
    assert detector.metadata_["data_choices"]["counted_channels"] == (2 if in_score else 1)


def test_every_channel_constant_still_scores_them_all() -> None:
    choices = choose(np.zeros((200, 3)), DetectorConfig())
    assert choices.kinds == ("constant",) * 3
    np.testing.assert_array_equal(choices.scored, [True, True, True])


def test_a_model_saved_before_choices_scores_every_channel_without_ranges() -> None:
    old = DataChoices.from_dict(None, 3, 64)
    assert old.span == 1
    np.testing.assert_array_equal(old.scored, [True, True, True])


def test_a_model_saved_before_range_means_takes_none() -> None:
    saved = choose(np.stack([sine(2000, 40)], 1), RANGES).to_dict()
    del saved["range_mean_span"]
    assert DataChoices.from_dict(saved, 1, 64).mean_span == 1


@pytest.mark.parametrize("span", [1, 2, 5, 8])
def test_range_mean_is_the_centred_mean(span: int) -> None:
    raw = np.random.default_rng(span).standard_normal(40)
    before, after = span // 2, span - 1 - span // 2
    naive = [raw[max(0, t - before) : t + after + 1].mean() for t in range(40)]
    np.testing.assert_allclose(range_mean(raw, span), naive, rtol=1e-12)


def test_range_mean_of_a_step_does_not_depend_on_where_the_array_starts() -> None:
    raw = np.random.default_rng(3).standard_normal(500) * 1e3
    whole = range_mean(raw, 16)
    for start in (1, 7, 100):
        np.testing.assert_array_equal(range_mean(raw[start:], 16)[8:], whole[start + 8 :])


def test_range_score_ranks_a_run_of_errors_above_one_sharp_point() -> None:
    raw = np.zeros(200)
    raw[50] = 4.0  # one sharp point
    raw[140:150] = 2.0  # a run, half as high
    out = range_max(range_mean(raw, 8), 16)
    assert out[140:150].min() > out[50]


@pytest.mark.parametrize("span", [1, 2, 5, 8])
def test_range_max_is_the_centred_maximum(span: int) -> None:
    raw = np.random.default_rng(span).standard_normal(40)
    before, after = span // 2, span - 1 - span // 2
    naive = [raw[max(0, t - before) : t + after + 1].max() for t in range(40)]
    np.testing.assert_array_equal(range_max(raw, span), naive)


def test_range_max_turns_a_sharp_peak_into_a_range() -> None:
    raw = np.zeros(30)
    raw[15] = 5.0
    out = range_max(raw, 7)
    np.testing.assert_array_equal(np.flatnonzero(out == 5.0), np.arange(12, 19))


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.5])
def test_bounded_threshold_flags_at_most_the_rate(rate: float) -> None:
    score = np.random.default_rng(1).exponential(size=1000)
    score[:100] = score[100]  # ties at many levels
    threshold = bounded_threshold(score, rate)
    assert (score >= threshold).mean() <= rate
    assert (score >= threshold * 0.99).mean() > 0 or rate == 0.0


@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_bounded_threshold_bounds_the_flags_events_hold_open(rate: float) -> None:
    # Scattered spikes: each raw flag opens an event that stays open merge_gap steps.
    score = np.random.default_rng(2).exponential(size=2000)
    score[::97] += 20.0
    raw_bound = bounded_threshold(score, rate)
    assert EventFilter(1, 20).add(score >= raw_bound).mean() > rate  # a raw bound is not enough
    threshold = bounded_threshold(score, rate, 1, 20)
    assert EventFilter(1, 20).add(score >= threshold).mean() <= rate
    lower = np.sort(score)[np.sort(score) < threshold][-1]  # the next lower cut breaks the bound
    assert EventFilter(1, 20).add(score >= lower).mean() > rate


def test_bounded_threshold_of_all_zero_scores_flags_none() -> None:
    assert (np.zeros(10) >= bounded_threshold(np.zeros(10), 0.01)).sum() == 0


def test_holdout_blocks_spread_over_the_whole_series() -> None:
    held = holdout_blocks(4000, 64, 0.2)
    assert held.sum() == 800
    starts = np.flatnonzero(np.diff(np.concatenate([[0], held.astype(int)])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([held.astype(int), [0]])) == -1) + 1
    assert len(starts) == 5 and (ends - starts >= 64).all()
    np.testing.assert_array_equal(ends, [800, 1600, 2400, 3200, 4000])  # one per fifth of the series


def test_holdout_blocks_shrink_to_whole_windows_or_none() -> None:
    short = holdout_blocks(400, 64, 0.2)
    assert short.sum() == 80 and short[-80:].all()  # one block: at most 80 // 64 of them
    assert not holdout_blocks(100, 64, 0.2).any()  # the rest would not hold a window
    assert not holdout_blocks(4000, 64, 0.0).any()


TINY = RANGES.replace(
    window=32, patch=4, d_model=16, n_heads=2, n_layers=1, epochs=2, max_windows_per_epoch=128
)


@pytest.fixture(scope="module")
def with_dead_channel() -> tuple[Detector, np.ndarray]:
    torch.set_num_threads(1)
    train = np.stack([sine(3000, 40), sine(3000, 40, seed=2), np.zeros(3000)], 1)  # 600 held out
    return Detector(TINY).fit(train, channels=["a", "b", "dead"]), train


@pytest.mark.slow
def test_fit_records_its_choices_and_bounds_training_false_alarms(
    with_dead_channel: tuple[Detector, np.ndarray],
) -> None:
    detector, train = with_dead_channel
    meta = detector.metadata_
    assert meta["data_choices"]["channel_kinds"] == ["varying", "varying", "constant"]
    assert meta["data_choices"]["range_span"] == 32  # period 40, capped by the window
    assert meta["thresholds"]["calibration_source"] == "held-out blocks"
    assert "calibration_warning" not in meta["thresholds"]
    out = detector.score(train)
    assert out.is_anomaly.mean() <= DetectorConfig().scoring.max_train_flag_rate


@pytest.mark.slow
def test_a_channel_constant_in_training_is_left_to_the_drift_check(
    with_dead_channel: tuple[Detector, np.ndarray],
) -> None:
    detector, train = with_dead_channel
    moved = train.copy()
    moved[:, 2] = 1e3
    out, clean = detector.score(moved), detector.score(train)
    np.testing.assert_array_equal(out.raw_score, clean.raw_score)  # the network never sees it
    assert (out.contributions[:, 2] == 0).all()
    assert out.out_of_range_channels[:, 2].all() and not clean.out_of_range_channels.any()
    assert out.is_anomaly.all()  # drift is flagged, never scored as normal


@pytest.mark.slow
def test_little_held_out_data_still_calibrates_out_of_sample_and_warns() -> None:
    torch.set_num_threads(1)
    train = np.stack([sine(300, 40), sine(300, 40, seed=3)], 1)
    detector = Detector(TINY).fit(train)
    thresholds = detector.metadata_["thresholds"]
    assert thresholds["calibration_source"] == "held-out blocks"  # 60 steps, never trained on
    assert thresholds["calibration_steps"] == 60
    assert "min_calibration_steps=500" in thresholds["calibration_warning"]
    assert [w.code for w in detector.warnings_] == [SMALL_CALIBRATION]
    assert detector.score(train).is_anomaly.mean() <= thresholds["max_train_flag_rate"]


@pytest.mark.slow
def test_nothing_held_out_calibrates_on_the_whole_series_and_warns() -> None:
    torch.set_num_threads(1)
    detector = Detector(TINY.replace(val_fraction=0.0)).fit(
        np.stack([sine(300, 40), sine(300, 40, seed=3)], 1)
    )
    thresholds = detector.metadata_["thresholds"]
    assert thresholds["calibration_source"] == "training series"
    assert "no held-out steps" in thresholds["calibration_warning"]
    assert "none held out" in detector.warnings_[0].message


@pytest.mark.parametrize(
    ("period", "steps", "patch", "window"),
    [
        (40, 5000, 8, 40),  # one period
        (50, 5000, 8, 48),  # to the nearest multiple of patch
        (6, 5000, 8, 32),  # at least AUTO_WINDOW_LOW
        (300, 5000, 8, 256),  # at most AUTO_WINDOW_HIGH
        (None, 5000, 8, AUTO_WINDOW_FALLBACK),
        (100, 300, 8, 72),  # at most a quarter of the training steps
        (100, 40, 8, 16),  # and never under two patches
        (40, 5000, 7, 42),
    ],
)
def test_window_for_period(period: int | None, steps: int, patch: int, window: int) -> None:
    chosen = window_for_period(period, steps, patch)
    assert chosen == window and chosen % patch == 0
    assert chosen <= largest_auto_window(patch)


AUTO = TINY.replace(window=0, range_scores=False)


@pytest.mark.slow
def test_window_zero_is_chosen_from_the_period_recorded_and_scores_the_same_after_reload(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    train = np.stack([sine(1600, 52), sine(1600, 52, seed=4)], 1)
    detector = Detector(AUTO).fit(train)
    assert detector.config.model.window == 52  # the period, a multiple of patch 4
    meta = detector.metadata_
    assert meta["config"]["model"]["window"] == 52
    assert meta["data_choices"]["window_from_period"] is True
    assert meta["data_choices"]["dominant_period"] == 52
    reach = ScoreReach.from_metadata(meta)
    assert reach is not None and reach.window == 52 and reach.stride == 26
    detector.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert loaded.config.model.window == 52 and loaded.choices_.window_from_period
    test = train.copy()
    test[700:720, 0] += 3.0
    before, after = detector.score(test), loaded.score(test)
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.is_anomaly, after.is_anomaly)


@pytest.mark.slow
def test_window_zero_without_a_period_takes_the_fallback() -> None:
    torch.set_num_threads(1)
    walk = np.random.default_rng(0).standard_normal((3000, 2)).cumsum(axis=0)  # no periodic peak
    detector = Detector(AUTO).fit(walk)
    assert detector.choices_.period is None
    assert detector.config.model.window == AUTO_WINDOW_FALLBACK
    assert detector.metadata_["data_choices"]["window_from_period"] is True


def test_a_set_window_is_kept_and_not_marked_as_chosen() -> None:
    choices = choose(np.stack([sine(2000, 40)], 1), DetectorConfig().replace(window=128))
    assert choices.window == 128 and not choices.window_from_period

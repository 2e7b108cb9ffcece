"""What a score or a fit tells beside the scores: drift, bands, events and training warnings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from stad.core.data_warnings import DRIFT, DataWarning, drift_warning
from stad.core.events import EventFilter
from stad.server.detector import Detector, DetectorConfig
from stad.server.detector.bands import BAND_Z
from stad.server.detector.checks import early_stopping
from stad.server.detector.drift import ValueRange
from stad.server.detector.estimator import holdout_blocks
from tests import kit

CHANNELS = ["a", "b", "c", "d"]
# A tiny model trained briefly: what is tested here does not depend on its accuracy.
# 1200 steps hold out 240 for validation, enough for min_calibration_steps=200.
QUICK = kit.TINY.replace(max_windows_per_epoch=128, seed=0, min_calibration_steps=200)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with kit.one_torch_thread():
        yield


def series(steps: int, seed: int = 0) -> np.ndarray:
    """Four channels at different levels: 10 + a cycle, 100 + 20 x it, its negative, a shifted cycle."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    base = np.sin(2 * np.pi * t / 40)
    values: np.ndarray = np.stack([10 + base, 100 + 20 * base, -base, np.cos(2 * np.pi * t / 40)], axis=1)
    return values + 0.05 * rng.normal(size=values.shape) * np.array([1, 20, 1, 1])


@pytest.fixture(scope="module")
def fitted() -> Detector:
    return Detector(QUICK).fit(series(1200), channels=CHANNELS)


# ---------------------------------------------------------------- drift


def test_clean_data_is_not_drift(fitted: Detector) -> None:
    clean = series(600, seed=7)
    clean[100:110, 1] = np.nan  # missing is never drift
    out = fitted.score(clean)
    assert not out.out_of_range.any()
    assert drift_warning(out.channels, out.out_of_range_channels) is None


OFF_SCALE: dict[str, tuple[Callable[[np.ndarray], np.ndarray], set[str]]] = {
    "every channel at 10x": (lambda x: 10 * x, {"a", "b", "c", "d"}),
    "every channel at 1e6": (lambda x: np.full_like(x, 1e6), {"a", "b", "c", "d"}),
    "one channel off-scale": (lambda x: x + np.array([0.0, 0.0, 0.0, 50.0]), {"d"}),
}


@pytest.mark.parametrize("case", list(OFF_SCALE))
def test_off_scale_data_is_flagged_as_drift(fitted: Detector, case: str) -> None:
    change, channels = OFF_SCALE[case]
    clean = series(400, seed=7)
    out = fitted.score(change(clean))
    drifted = out.out_of_range
    share = dict(zip(CHANNELS, out.out_of_range_channels.mean(axis=0), strict=True))
    assert {name for name, value in share.items() if value > 0} == channels
    assert drifted.mean() > 0.9  # 10x leaves the few steps near a zero crossing in range
    assert out.is_anomaly[drifted].all()  # never scored as normal
    assert (out.score[drifted] >= out.threshold).all()
    warning = drift_warning(out.channels, out.out_of_range_channels)
    assert warning is not None and warning.code == DRIFT
    for name in CHANNELS:
        assert (f"{name} (" in warning.message) == (name in channels)


def test_the_range_tolerance_is_a_share_of_the_training_span() -> None:
    train = np.array([[0.0, 5.0], [10.0, 5.0]])  # channel 1 constant
    rng = ValueRange.fit(train)
    probe = np.array([[12.4, 5.0], [-2.6, 5.0], [np.nan, 5.1]])
    assert rng.outside(probe, 0.25).tolist() == [[False, False], [True, False], [False, True]]
    assert rng.outside(probe, 0.3).tolist() == [[False, False], [False, False], [False, True]]
    assert ValueRange.from_dict(rng.to_dict()).to_dict() == rng.to_dict()
    excess = rng.excess(probe, 0.25)  # in training spans beyond the limits (-2.5 and 12.5 on channel 0)
    np.testing.assert_allclose(excess[:2, 0], [0.0, 0.01])
    assert excess[2, 0] == 0.0 and excess[:2, 1].tolist() == [0.0, 0.0]  # missing, unchanged
    assert excess[2, 1] > 1e4  # a constant channel's span is floored near 0: any change is far out


def test_the_further_out_of_range_the_higher_the_score(fitted: Detector) -> None:
    clean = series(400, seed=7)
    near = fitted.score(clean + np.array([0.0, 0.0, 0.0, 3.0]))  # channel d just beyond its range
    far = fitted.score(clean + np.array([0.0, 0.0, 0.0, 300.0]))
    both = near.out_of_range & far.out_of_range
    assert both.mean() > 0.5
    assert (far.score[both] > near.score[both]).all()
    assert (near.score[both] >= near.threshold).all()


def test_drift_travels_through_save_and_load(fitted: Detector, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    again = Detector.load(tmp_path)
    off = 10 * series(200, seed=7)
    before, after = fitted.score(off), again.score(off)
    assert np.array_equal(before.out_of_range_channels, after.out_of_range_channels)
    assert before.out_of_range.any()
    np.testing.assert_array_equal(before.lower, after.lower)
    assert again.warnings_ == fitted.warnings_


# ---------------------------------------------------------------- bands


def test_the_band_is_expected_plus_minus_z_rms_error(fitted: Detector) -> None:
    out = fitted.score(series(600, seed=7))
    half = fitted.scorer_.band
    assert half is not None and (half > 0).all()
    np.testing.assert_allclose(out.upper - out.expected, np.broadcast_to(half, out.expected.shape))
    np.testing.assert_allclose(out.expected - out.lower, np.broadcast_to(half, out.expected.shape))
    # in data units: channel b has 20x the spread of a, and so has its band, roughly
    assert 5 < half[1] / half[0] < 80
    assert BAND_Z == 2.0


def test_most_normal_values_lie_in_the_band(fitted: Detector) -> None:
    clean = series(600, seed=7)
    out = fitted.score(clean)
    inside = (out.lower <= clean) & (clean <= out.upper)
    assert inside.mean() > 0.8


# ---------------------------------------------------------------- events


def test_flags_become_events_the_same_way_whatever_the_batches() -> None:
    config = QUICK.replace(min_duration=3, merge_gap=5, threshold_factor=0.5)
    detector = Detector(config).fit(series(1200), channels=CHANNELS)
    data = series(500, seed=9)
    data[200:203, 0] += 3.0  # a short burst inside the range: a score event, not drift
    whole = detector.score(data, batch_size=10_000)
    pieces = detector.score(data, batch_size=1)
    assert np.array_equal(whole.is_anomaly, pieces.is_anomaly)
    raw = whole.raw_score / detector.reference_ >= whole.threshold  # the own scores' flags
    assert raw.any() and not np.array_equal(whole.is_anomaly, raw)  # the filter changed something
    drift = whole.out_of_range
    assert np.array_equal(whole.is_anomaly, EventFilter(3, 5).add(raw | drift) | drift)


# ---------------------------------------------------------------- training warnings


def codes(detector: Detector) -> list[str]:
    return [w.code for w in detector.warnings_]


def test_a_clean_fit_has_no_warnings(fitted: Detector) -> None:
    assert fitted.warnings_ == ()
    assert fitted.metadata_["warnings"] == []


def test_a_constant_channel_is_warned_about() -> None:
    data = series(1200)
    data[:, 2] = 3.0
    detector = Detector(QUICK).fit(data, channels=CHANNELS)
    assert codes(detector) == ["constant_channels"]
    assert "c;" in detector.warnings_[0].message and "1 of 4" in detector.warnings_[0].message
    assert DataWarning.list_from(detector.metadata_["warnings"]) == detector.warnings_


def test_a_counter_is_warned_about_and_its_later_values_are_drift() -> None:
    data = series(1200)
    rng = np.random.default_rng(3)
    data[:, 3] = np.cumsum(rng.integers(0, 50, 1200))  # bytes sent: it only rises
    data[900:, 3] -= data[900, 3]  # one reset (a restart): it counts up from 0 again
    detector = Detector(QUICK).fit(data, channels=CHANNELS)
    assert codes(detector) == ["monotonic_channels"]
    assert "1 of 4" in detector.warnings_[0].message and ": d;" in detector.warnings_[0].message
    later = series(300, seed=4)
    later[:, 3] = 1.3 * data[:, 3].max() + np.cumsum(rng.integers(1, 50, 300))  # past the margin
    assert detector.score(later).out_of_range_channels[:, 3].all()  # what the warning said


def test_a_channel_that_wanders_both_ways_is_not_a_counter() -> None:
    data = series(1200)
    steps = np.where(np.arange(1199) % 60 == 0, -1.0, 1.0)  # falls on 1 change in 60: not a counter
    data[:, 3] = np.concatenate([[0.0], np.cumsum(steps)])
    detector = Detector(QUICK).fit(data, channels=CHANNELS)
    assert "monotonic_channels" not in codes(detector)


def test_too_few_held_out_steps_are_warned_about() -> None:
    detector = Detector(QUICK.replace(min_calibration_steps=500)).fit(series(1200), channels=CHANNELS)
    assert codes(detector) == ["small_calibration"]
    assert "min_calibration_steps (500)" in detector.warnings_[0].message


def test_a_quiet_calibration_stretch_is_warned_about() -> None:
    data = series(1200)
    held = holdout_blocks(1200, QUICK.model.window, QUICK.training.val_fraction)
    data[held] = data[held] * 0.1 + np.array([9.0, 90.0, 0.0, 0.0])  # the held-out steps barely move
    detector = Detector(QUICK).fit(data, channels=CHANNELS)
    assert codes(detector) == ["unrepresentative_calibration"]


def test_early_stopping_is_warned_about() -> None:
    config = DetectorConfig().replace(epochs=30, patience=5)
    warning = early_stopping({"stopped_early": True, "epochs_run": 9}, config)
    assert warning is not None and "after 9 of 30 epochs" in warning.message
    assert early_stopping({"stopped_early": False, "epochs_run": 30}, config) is None

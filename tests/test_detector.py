"""The detector end to end on short synthetic series with a tiny model."""

from __future__ import annotations

import copy
import dataclasses
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stad.core.data_warnings import EARLY_STOPPING
from stad.core.events import EventFilter
from stad.server.detector import (
    Detector,
    DetectorConfig,
    ScoreOutput,
    TrainingCancelled,
    TrainingProgress,
    WindowOutput,
)
from stad.server.detector.steps import range_max, range_mean, smooth_trailing
from stad.server.detector.train import MIN_PRETRAIN_STEPS
from tests import kit

# The kit's tiny config, big enough to learn the coupled series below.
TINY = kit.TINY.replace(window=32, d_model=32, n_heads=4, n_layers=2, epochs=8, learning_rate=3e-3, seed=3)
# Smaller, for tests that only need some training.
SMALL = kit.TINY.replace(window=32, epochs=2, batch_size=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with kit.one_torch_thread():
        yield


# Four channels: two copies of one cycle, its negative, and the cycle a quarter on.
COUPLED_FOUR = (
    kit.Wave(period=40, level=10),
    kit.Wave(period=40, level=100, amplitude=20, noise=1.0),
    kit.Wave(period=40, amplitude=-1),
    kit.Wave(period=40, phase=kit.QUARTER),
)


def coupled_series(steps: int, seed: int = 0) -> np.ndarray:
    return kit.make_values(steps, seed, waves=COUPLED_FOUR)


@pytest.fixture(scope="module")
def fitted() -> Detector:
    return Detector(TINY).fit(coupled_series(1200), channels=["a", "b", "c", "d"])


@pytest.mark.slow
def test_fit_and_score_shapes(fitted: Detector) -> None:
    X = coupled_series(300, seed=1)
    out = fitted.score(X)
    assert out.score.shape == out.raw_score.shape == out.severity.shape == (300,)
    assert out.is_anomaly.dtype == np.bool_ and out.is_anomaly.shape == (300,)
    assert out.contributions.shape == out.expected.shape == (300, 4)
    assert out.channels == ("a", "b", "c", "d") == fitted.channels_
    np.testing.assert_allclose(out.contributions.sum(axis=1), 1.0, atol=1e-9)
    assert ((out.severity >= 0) & (out.severity <= 100)).all()
    assert out.threshold == fitted.threshold_
    scoring = fitted.config.scoring
    events = EventFilter(scoring.min_duration, scoring.merge_gap).add(out.score >= out.threshold)
    np.testing.assert_array_equal(out.is_anomaly, events | out.out_of_range)
    np.testing.assert_array_equal(fitted.predict(X), out.is_anomaly)
    # Expected values are in the data's own units: channel b sits near 100.
    assert np.abs(out.expected - X).mean(axis=0)[1] < 5.0
    assert np.abs(out.expected[:, 1].mean() - 100) < 5


def test_normal_data_mostly_below_threshold(fitted: Detector) -> None:
    out = fitted.score(coupled_series(800, seed=2))
    assert out.is_anomaly.mean() < 0.02


@pytest.mark.parametrize("kind", ["spike", "level_shift", "decoupled"])
def test_injected_anomalies_score_higher(fitted: Detector, kind: str) -> None:
    X = coupled_series(600, seed=4)
    clean = fitted.score(X).score
    span = slice(400, 440)
    if kind == "spike":
        X[420, 0] += 3.0
        span = slice(420, 421)
    elif kind == "level_shift":
        X[span, 1] += 40.0
    else:
        X[span, 3] = np.cos(2 * np.pi * np.arange(40) / 40 + np.pi)  # right range, wrong phase
    out = fitted.score(X)
    assert out.score[span].max() > 3 * np.quantile(clean, 0.99)
    assert out.score[span].mean() > out.threshold
    culprit = {"spike": 0, "level_shift": 1, "decoupled": 3}[kind]
    assert out.contributions[span].mean(axis=0).argmax() == culprit


def test_window_scores_do_not_depend_on_batch(fitted: Detector) -> None:
    plan = fitted.plan_windows(coupled_series(32 * 40, seed=5))
    batch = plan.windows[:64]
    assert batch.shape[0] == 64
    together = fitted.score_windows(batch)
    for i in (0, 17, 63):
        alone = fitted.score_windows(batch[i : i + 1])
        np.testing.assert_allclose(alone.errors[0], together.errors[i], atol=1e-5, rtol=0)
        np.testing.assert_allclose(alone.expected[0], together.expected[i], atol=1e-5, rtol=1e-6)


def test_server_path_equals_score(fitted: Detector) -> None:
    X = coupled_series(500, seed=6)
    plan = fitted.plan_windows(X)
    assert plan.windows.dtype == np.float32 and plan.windows.shape[1:] == (32, 4)
    parts = [fitted.score_windows(plan.windows[i : i + 3]) for i in range(0, len(plan.starts), 3)]
    joined = WindowOutput.concatenate(parts)
    assert len(joined.take(slice(0, 2))) == 2
    via_plan = fitted.assemble(plan, joined, threshold=2.5)
    direct = fitted.score(X, threshold=2.5)
    np.testing.assert_allclose(via_plan.score, direct.score, atol=1e-6)
    assert via_plan.threshold == 2.5
    np.testing.assert_array_equal(via_plan.is_anomaly, via_plan.score >= 2.5)


def test_nan_is_missing_and_stays_local(fitted: Detector) -> None:
    fitted = with_smoothing(fitted, 1, span=1)  # a range score would spread the steps by design
    X = coupled_series(600, seed=7)
    clean = fitted.score(X)
    X[300, 2] = np.nan
    X[200, :] = np.nan  # a step with nothing observed
    out = fitted.score(X)
    for array in (out.score, out.raw_score, out.severity, out.contributions, out.expected):
        assert np.isfinite(array).all()
    assert out.score[200] == 0.0
    assert (out.contributions[200] == 0).all()
    assert out.contributions[300, 2] == 0.0
    np.testing.assert_allclose(out.contributions[300].sum(), 1.0)
    # Steps sharing no window with a NaN step are untouched (smoothing = 1).
    far = np.ones(600, dtype=bool)
    far[200 - 31 : 300 + 32] = False
    np.testing.assert_allclose(out.score[far], clean.score[far], rtol=1e-5, atol=1e-6)


def test_constant_channel() -> None:
    X = coupled_series(400)
    X[:, 2] = 7.0
    cfg = SMALL
    det = Detector(cfg).fit(X)
    Y = coupled_series(200, seed=1)
    Y[:, 2] = 7.0
    out = det.score(Y)
    assert np.isfinite(out.score).all() and np.isfinite(out.contributions).all()
    # Constant in training: missing to the network and out of the score (its moving is
    # drift, checked against the recorded training range), expected at its constant.
    assert det.metadata_["data_choices"]["channel_kinds"][2] == "constant"
    assert det.metadata_["training_range"]["channel_min"][2] == 7.0
    assert det.metadata_["training_range"]["channel_max"][2] == 7.0
    Y[100:110, 2] = 8.0  # the constant channel moves
    moved = det.score(Y)
    np.testing.assert_array_equal(moved.raw_score, out.raw_score)
    assert (moved.contributions[:, 2] == 0).all()
    assert moved.out_of_range_channels[100:110, 2].all() and moved.is_anomaly[100:110].all()
    assert not moved.out_of_range_channels[:100].any()
    np.testing.assert_allclose(out.expected[:, 2], 7.0)


def test_bad_input_raises_value_error(fitted: Detector) -> None:
    cases = [
        (np.zeros((10, 4)), "shorter than one window"),
        (np.full((100, 4), np.inf), "inf"),
        (np.zeros((100, 3)), "channels"),
        (np.zeros((2, 100, 4)), "3-D"),
        (np.array([["a"] * 4] * 100), "numeric"),
    ]
    for X, message in cases:
        with pytest.raises(ValueError, match=message):
            fitted.score(X)
    with pytest.raises(ValueError, match="threshold"):
        fitted.score(coupled_series(100), threshold=float("nan"))
    with pytest.raises(ValueError, match="windows must have shape"):
        fitted.score_windows(np.zeros((2, 16, 4)))
    with pytest.raises(ValueError, match="not fitted"):
        Detector(TINY).score(coupled_series(100))
    with pytest.raises(ValueError, match="not fitted"):
        Detector(TINY).save("unused")
    with pytest.raises(ValueError, match="shorter than one window"):
        Detector(TINY).fit(np.zeros((20, 2)))
    with pytest.raises(ValueError, match="labels"):
        Detector(TINY).fit(coupled_series(100), labels=np.zeros(99))
    with pytest.raises(ValueError, match="all NaN"):
        Detector(TINY).fit(np.full((100, 2), np.nan))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window", 30),
        ("patch", 0),
        ("d_model", 30),
        ("epochs", 0),
        ("learning_rate", -1.0),
        ("mask_ratio_end", 1.5),
        ("threshold_quantile", 2.0),
        ("mask_groups", 1),
        ("window", 8),
        ("residual_weight", 1.5),
        ("residual_variance", 0.0),
    ],
)
def test_bad_config_raises_value_error(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field}="):
        DetectorConfig().replace(**{field: value})


def test_save_load_round_trip(fitted: Detector, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["metadata.json", "model.safetensors"]
    raw = (tmp_path / "model" / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: JSON header, then raw tensors
    assert "encoder.embed.weight" in header
    assert not raw.startswith(b"\x80")  # no pickle protocol marker
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    for key in (
        "config",
        "channels",
        "scaler",
        "subspace",
        "residual_scale",
        "thresholds",
        "training_range",
        "training_metrics",
        "library_versions",
    ):
        assert key in meta
    assert meta["channels"] == ["a", "b", "c", "d"]
    assert meta["format_version"] == 2
    assert meta["config"] == fitted.config.to_dict()
    assert meta["config"]["model"]["window"] == 32

    loaded = Detector.load(tmp_path / "model")
    X = coupled_series(300, seed=8)
    X[50, 1] = np.nan
    a, b = fitted.score(X), loaded.score(X)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.expected, b.expected)
    assert loaded.threshold_ == fitted.threshold_
    assert loaded.channels_ == fitted.channels_
    with pytest.raises(ValueError, match="missing"):
        Detector.load(tmp_path / "nowhere")


def _rewrite_metadata(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_a_model_saved_with_a_flat_config_loads_and_scores_the_same(fitted: Detector, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")

    def to_version_1(meta: dict[str, Any]) -> None:
        meta.update(format_version=1, config=fitted.config.to_flat())

    _rewrite_metadata(tmp_path / "model", to_version_1)
    loaded = Detector.load(tmp_path / "model")
    assert loaded.config == fitted.config
    assert loaded.metadata_["format_version"] == 2
    assert loaded.metadata_["config"] == fitted.config.to_dict()
    X = coupled_series(200, seed=8)
    np.testing.assert_array_equal(loaded.score(X).score, fitted.score(X).score)


@pytest.mark.parametrize(
    ("version", "config", "message"),
    [
        (1, {"window": 32, "wndow": 16}, r"wndow=16: is not a detector setting"),
        (2, {"model": {"window": 32}, "extra": {}}, r"extra=\{\}: is not a config group"),
        (2, {"scoring": {"window": 32}}, r"scoring.window=32: is not a setting of this group"),
        (2, {"model": {"window": -1}}, r"window=-1: must be an integer >= 0"),
        (2, {"model": {"window": 0}}, r"window=0: a saved model must hold the window its fit chose"),
        (3, {}, r"unsupported format 'stad-detector' version 3"),
    ],
)
def test_unknown_or_bad_saved_settings_are_refused(
    fitted: Detector, tmp_path: Path, version: int, config: dict[str, Any], message: str
) -> None:
    fitted.save(tmp_path / "model")
    _rewrite_metadata(tmp_path / "model", lambda meta: meta.update(format_version=version, config=config))
    with pytest.raises(ValueError, match=message):
        Detector.load(tmp_path / "model")


def _weights(det: Detector) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in det.model_.state_dict().items()}


def test_same_seed_same_weights() -> None:
    cfg = SMALL
    X = coupled_series(300)
    first = _weights(Detector(cfg).fit(X))
    second = _weights(Detector(cfg).fit(X))
    other = _weights(Detector(cfg.replace(seed=1)).fit(X))
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert any(not torch.equal(t, other[n]) for n, t in first.items())


def test_cancellation_raises() -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled):
        Detector(TINY).fit(coupled_series(300), should_stop=stop)
    assert len(calls) == 4


def test_progress_reports_steps_and_eta() -> None:
    reports: list[TrainingProgress] = []
    cfg = SMALL.replace(epochs=3, patience=10)
    Detector(cfg).fit(coupled_series(400), progress=reports.append)
    assert len(reports) >= 3
    steps = [r.step for r in reports]
    assert steps == sorted(set(steps))
    assert all(r.phase == "pretrain" and r.epochs == 3 for r in reports)
    assert reports[-1].step == reports[-1].steps_total
    assert all(np.isfinite(r.eta_s) and r.eta_s >= 0 for r in reports)
    assert reports[0].eta_s > 0 and reports[-1].eta_s == 0
    assert reports[0].mask_ratio < reports[-1].mask_ratio  # curriculum


def test_the_training_budget_ends_pretraining_within_an_epoch() -> None:
    reports: list[TrainingProgress] = []
    cfg = SMALL.replace(epochs=30, patience=30, train_budget=1)  # the floor of steps only
    det = Detector(cfg).fit(coupled_series(2000), progress=reports.append)
    metrics = det.metadata_["training_metrics"]
    assert metrics["steps"] == metrics["steps_planned"] == MIN_PRETRAIN_STEPS
    assert metrics["epochs_run"] == metrics["epochs_planned"] < 30 and not metrics["stopped_early"]
    assert reports[-1].step == reports[-1].steps_total == MIN_PRETRAIN_STEPS
    assert all(r.epochs == metrics["epochs_planned"] for r in reports)
    assert not any(w.code == EARLY_STOPPING for w in det.warnings_)


@pytest.mark.slow
def test_labels_fine_tune_and_set_threshold() -> None:
    X = coupled_series(1200, seed=9)
    labels = np.zeros(1200, dtype=int)
    for start in (150, 500, 1000):
        X[start : start + 30, 1] += 30.0
        labels[start : start + 30] = 1
    reports: list[TrainingProgress] = []
    cfg = SMALL.replace(
        epochs=4,
        batch_size=32,
        learning_rate=3e-3,
        finetune_epochs=10,
    )
    det = Detector(cfg).fit(X, labels, progress=reports.append)
    assert det.head_ is not None
    assert {r.phase for r in reports} == {"pretrain", "finetune"}
    thresholds = det.metadata_["thresholds"]
    assert thresholds["method"] == "best_f1" and thresholds["best_f1"] > 0.8
    assert det.metadata_["has_head"] is True
    out = det.score(X)
    assert out.threshold == det.threshold_ != DetectorConfig().scoring.threshold_factor
    hit = out.is_anomaly[labels == 1].mean()
    false = out.is_anomaly[labels == 0].mean()
    assert hit > 0.7 and false < 0.1


def test_warm_start_continues_from_weights() -> None:
    cfg = SMALL
    det = Detector(cfg).fit(coupled_series(400))
    before = _weights(det)
    det.config = cfg.replace(epochs=1, learning_rate=1e-9)
    det.fit(coupled_series(400, seed=10), warm_start=True)
    after = _weights(det)
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, atol=1e-6, rtol=0)
    fresh = _weights(Detector(det.config).fit(coupled_series(400, seed=10)))
    assert any((fresh[n] - t).abs().max() > 1e-3 for n, t in before.items())
    with pytest.raises(ValueError, match="channels"):
        det.fit(coupled_series(400)[:, :3], warm_start=True)
    # A cancelled warm start leaves the fitted detector as it was.
    scores = det.score(coupled_series(200)).score
    det.config = cfg.replace(epochs=3, learning_rate=1e-2)
    calls: list[int] = []

    def stop_after_two_steps() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled):
        det.fit(coupled_series(400, seed=11), warm_start=True, should_stop=stop_after_two_steps)
    np.testing.assert_array_equal(det.score(coupled_series(200)).score, scores)


def test_spatial_weight_zero_skips_whole_channel_family() -> None:
    cfg = SMALL.replace(epochs=1, spatial_weight=0.0)
    det = Detector(cfg).fit(coupled_series(300))
    windows = det.plan_windows(coupled_series(200, seed=1)).windows
    families = det._forward_windows(windows)
    np.testing.assert_array_equal(families.spatial, families.temporal)  # no second family
    out = det.score_windows(windows)
    np.testing.assert_allclose(out.errors, families.temporal / det.error_scale_[0], rtol=1e-5)
    assert np.isfinite(det.score(coupled_series(200, seed=1)).score).all()


def test_residual_term_flags_an_unseen_combination_of_ordinary_values() -> None:
    # Channels a and c move in opposite directions in training; holding both at a
    # level each has often had, but together, breaks the coupling without a step.
    cfg = SMALL.replace(epochs=1, residual_weight=0.5)
    det = Detector(cfg).fit(coupled_series(400))
    assert det.subspace_ is not None
    X = coupled_series(300, seed=1)
    X[150:250, 0] = 10.9  # a near its top
    X[150:250, 2] = 0.9  # c near its top: in training c = -(a - 10)
    out = det.score(X)
    assert out.score[170:250].mean() > 3 * out.score[:140].mean()
    np.testing.assert_allclose(out.contributions.sum(axis=1), 1.0, rtol=1e-6)
    # The term is fitted on the training split and put on the prediction errors' scale.
    plan = det.plan_windows(coupled_series(200, seed=2))
    families = det._forward_windows(plan.windows)
    expected = 0.5 * det.scorer_.combine(families.temporal, families.spatial, None) + (
        0.5 * families.residual / det.residual_scale_
    )
    np.testing.assert_allclose(det.score_windows(plan.windows).errors, expected, rtol=1e-5)


def test_residual_weight_zero_keeps_prediction_errors_only(fitted: Detector) -> None:
    plan = fitted.plan_windows(coupled_series(200, seed=2))
    families = fitted._forward_windows(plan.windows)
    np.testing.assert_allclose(
        fitted.score_windows(plan.windows).errors,
        fitted.scorer_.combine(families.temporal, families.spatial, None),
        rtol=1e-6,
    )


@pytest.mark.slow
def test_without_validation_early_stopping_watches_fixed_masks() -> None:
    # The training loss rises with the mask-ratio curriculum; stopping on it would end
    # training after `patience` epochs. The fixed-mask monitor keeps improving instead.
    reports: list[TrainingProgress] = []
    cfg = TINY.replace(val_fraction=0.0, patience=2, epochs=6)
    det = Detector(cfg).fit(coupled_series(600), progress=reports.append)
    metrics = det.metadata_["training_metrics"]
    assert metrics["epochs_run"] == 6 and metrics["val_windows"] == 0
    assert np.isfinite(metrics["best_monitor_loss"])
    assert all(np.isnan(r.val_loss) for r in reports)


SCORE_FIELDS = ("score", "raw_score", "is_anomaly", "severity", "contributions", "expected")


def assert_outputs_equal(one: ScoreOutput, other: ScoreOutput) -> None:
    for name in SCORE_FIELDS:
        np.testing.assert_array_equal(getattr(one, name), getattr(other, name), err_msg=name)
    for name in ("threshold", "channels", "start_step"):
        assert getattr(one, name) == getattr(other, name), name


def with_smoothing(fitted: Detector, smoothing: int, span: int | None = None, mean_span: int = 1) -> Detector:
    """A copy of the fitted detector that smooths its scores over `smoothing` steps
    (and takes range scores over `span` steps of means over `mean_span`, when given)."""
    detector = copy.deepcopy(fitted)
    detector.config = fitted.config.replace(smoothing=smoothing)
    spans = {} if span is None else {"span": span, "mean_span": mean_span}
    detector.scorer_ = dataclasses.replace(fitted.scorer_, config=detector.config, **spans)
    return detector


@pytest.mark.parametrize("smoothing", [1, 9])
def test_assembler_chunks_join_to_assemble(fitted: Detector, smoothing: int) -> None:
    detector = with_smoothing(fitted, smoothing)
    X = coupled_series(700, seed=8)
    X[100:130, 1] = np.nan
    X[400, :] = np.nan  # a step with nothing observed
    plan = detector.plan_windows(X)
    output = detector.score_windows(plan.windows)
    whole = detector.assemble(plan, output, threshold=1.5)
    for piece in (1, 4, 17, len(output)):
        assembler = detector.assembler(plan, threshold=1.5)
        chunks = []
        for begin in range(0, len(output), piece):
            chunk = assembler.add(output.take(slice(begin, begin + piece)))
            added = min(begin + piece, len(output))
            hold = detector.scorer_.hold_back  # a range score also needs the steps after it
            final = plan.n_steps if added == len(output) else max(0, plan.starts[added] - hold)
            assert assembler.released == final  # released as soon as no later window changes them
            if chunk is not None:
                chunks.append(chunk)
        assert assembler.done
        assert_outputs_equal(ScoreOutput.concatenate(chunks), whole)
        # a caller returning from step 250 on sends the chunks' rows from there
        tail = [c.score[max(0, 250 - c.start_step) :] for c in chunks if c.stop_step > 250]
        np.testing.assert_array_equal(np.concatenate(tail), whole.score[250:])


def test_assembled_smoothing_is_the_trailing_mean_of_the_unsmoothed_score(fitted: Detector) -> None:
    smoothed = with_smoothing(fitted, 9, span=1)
    X = coupled_series(300, seed=9)
    unsmoothed_raw = with_smoothing(fitted, 1, span=1).score(X, batch_size=5).raw_score
    np.testing.assert_array_equal(
        smoothed.score(X, batch_size=5).raw_score, smooth_trailing(unsmoothed_raw, 9)
    )


@pytest.mark.parametrize("mean_span", [1, 5, 6])
def test_range_score_is_the_centred_maximum_of_centred_means_of_the_smoothed_score(
    fitted: Detector, mean_span: int
) -> None:
    X = coupled_series(300, seed=9)
    plain = with_smoothing(fitted, 3, span=1).score(X, batch_size=5)
    ranged = with_smoothing(fitted, 3, span=11, mean_span=mean_span).score(X, batch_size=5)
    own = range_mean(plain.raw_score, mean_span)
    np.testing.assert_array_equal(ranged.raw_score, own)
    np.testing.assert_array_equal(ranged.score, range_max(own, 11) / fitted.reference_)


def test_assembler_refuses_what_does_not_fit_the_plan(fitted: Detector) -> None:
    plan = fitted.plan_windows(coupled_series(100, seed=10))
    output = fitted.score_windows(plan.windows)
    with pytest.raises(ValueError, match="output has 6 windows, the plan 5"):
        fitted.assemble(fitted.plan_windows(coupled_series(90, seed=10)), output)
    with pytest.raises(ValueError, match="more window results than the plan"):
        assembler = fitted.assembler(plan)
        assembler.add(output)
        assembler.add(output.take(slice(0, 1)))
    with pytest.raises(ValueError, match="threshold must be finite"):
        fitted.assembler(plan, threshold=float("inf"))
    with pytest.raises(ValueError, match="does not follow"):
        chunk = fitted.assemble(plan, output)
        ScoreOutput.concatenate([chunk, chunk])

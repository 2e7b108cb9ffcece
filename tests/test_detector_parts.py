"""The detector's parts: masks, windows, scaler, calibration and the network's input checks."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from stad.core.detector_config import ModelConfig, TrainingConfig
from stad.server.detector import steps
from stad.server.detector.model import (
    MaskedPredictor,
    channel_masks,
    group_masks,
    predict_masked,
    random_masks,
)
from stad.server.detector.preprocessing import (
    SCALING,
    ChannelScaler,
    as_matrix,
    extract_windows,
    window_starts,
)
from stad.server.detector.train import MIN_PRETRAIN_STEPS, _EarlyStopping, learning_rate, pretrain_steps
from tests import kit


@pytest.mark.parametrize(("channels", "patches", "groups"), [(1, 8, 4), (5, 8, 4), (3, 4, 2)])
def test_group_masks_hide_every_token_once(channels: int, patches: int, groups: int) -> None:
    masks = group_masks(channels, patches, groups)
    assert masks.shape == (groups, channels, patches)
    assert (masks.sum(dim=0) == 1).all()
    # A hidden token's temporal neighbours are visible in the same pass.
    assert not (masks[:, :, 1:] & masks[:, :, :-1]).any()


def test_channel_masks_hide_whole_channels_once() -> None:
    masks = channel_masks(5, 8, 4)
    assert masks.shape == (4, 5, 8)
    assert (masks.sum(dim=0) == 1).all()
    assert (masks.all(dim=2) == masks.any(dim=2)).all()  # all or none of a channel
    assert not masks.all(dim=(1, 2)).any()  # never every channel at once
    assert channel_masks(1, 8, 4).shape == (0, 1, 8)


def test_random_masks_ratio_and_never_empty() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = random_masks(2000, 6, 8, 0.3, gen)
    assert masks.shape == (2000, 6, 8)
    assert masks.any(dim=(1, 2)).all()
    assert 0.2 < masks.float().mean() < 0.4
    whole = masks.all(dim=2)  # (B, C): channels hidden entirely
    assert not whole.all(dim=1).any()  # some channel always visible
    tiny = random_masks(500, 1, 4, 0.01, gen)
    assert tiny.any(dim=(1, 2)).all()


def test_window_starts_cover_every_step() -> None:
    for n_steps, window, stride in [(100, 32, 16), (32, 32, 16), (101, 32, 32), (1000, 64, 1)]:
        starts = window_starts(n_steps, window, stride)
        covered = np.zeros(n_steps, dtype=int)
        for s in starts:
            covered[s : s + window] += 1
        assert (covered >= 1).all()
        assert starts[-1] == n_steps - window
    X = np.arange(20.0).reshape(10, 2)
    w = extract_windows(X, np.array([0, 6]), 4)
    assert w.shape == (2, 4, 2) and w.dtype == np.float32
    np.testing.assert_array_equal(w[1], X[6:10])


def test_scaler_handles_nan_and_constant_channels() -> None:
    X = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]])
    scaler = ChannelScaler.fit(X)
    np.testing.assert_allclose(scaler.mean, [2.0, 5.0, 0.0])
    np.testing.assert_allclose(scaler.scale, [1.0, 1.0, 1.0])
    Z = scaler.transform(X)
    assert np.isnan(Z[2, 0]) and np.isnan(Z[:, 2]).all()
    np.testing.assert_allclose(Z[:2, 0], [-1.0, 1.0])
    np.testing.assert_allclose(scaler.inverse(np.nan_to_num(Z))[:2, :2], X[:2, :2])
    again = ChannelScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.mean, scaler.mean)
    np.testing.assert_array_equal(again.scale, scaler.scale)
    assert np.abs(scaler.transform(np.array([[1e300, 5.0, 0.0]]))).max() <= 1e4


def test_scaling_is_robust_to_outliers_and_falls_back_on_flags() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(10.0, 2.0, size=4000)
    spiked = normal.copy()
    spiked[::100] = 1e4  # 1% wild readings
    flag = (np.arange(4000) % 10 == 0).astype(float)  # IQR 0: every value counts
    scaler = ChannelScaler.fit(np.stack([normal, spiked, flag], 1))
    np.testing.assert_allclose(scaler.scale[0], normal.std())  # clean data: plain mean and std
    np.testing.assert_allclose(scaler.mean[0], normal.mean())
    assert abs(scaler.scale[1] - 2.0) < 0.1 and abs(scaler.mean[1] - 10.0) < 0.2  # spikes left out
    assert spiked.std() > 900  # what the plain std would have been
    np.testing.assert_allclose([scaler.mean[2], scaler.scale[2]], [flag.mean(), flag.std()])
    assert scaler.to_dict()["method"] == SCALING


def test_as_matrix_messages() -> None:
    assert as_matrix([1.0, 2.0]).shape == (2, 1)
    with pytest.raises(ValueError, match="2-D"):
        as_matrix(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"inf .*step 1, channel 0"):
        as_matrix([[0.0], [np.inf]])
    with pytest.raises(ValueError, match="empty"):
        as_matrix(np.zeros((0, 3)))


def test_smooth_trailing_matches_naive_mean() -> None:
    raw = np.random.default_rng(0).random(50)
    out = steps.smooth_trailing(raw, 5)
    naive = np.array([raw[max(0, i - 4) : i + 1].mean() for i in range(50)])
    np.testing.assert_allclose(out, naive)
    np.testing.assert_array_equal(steps.smooth_trailing(raw, 1), raw)


@pytest.mark.parametrize("span", [2, 5, 64])
def test_a_trailing_mean_depends_only_on_the_values_it_covers(span: int) -> None:
    raw = np.random.default_rng(span).random(1000) * 10
    whole = steps.smooth_trailing(raw, span)
    pieces = steps.TrailingMean(span)
    joined = np.concatenate([pieces.add(raw[a:b]) for a, b in ((0, 1), (1, 7), (7, 300), (300, 1000))])
    np.testing.assert_array_equal(joined, whole)
    for start in (1, 123, 977 - span):  # a series given from a later step: full windows bit for bit
        later = steps.smooth_trailing(raw[start:], span)
        np.testing.assert_array_equal(later[span - 1 :], whole[start + span - 1 :])


def test_best_f1_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = rng.random(200) < 0.2
        labels[0] = True
        score = rng.random(200) + labels * rng.random() + np.round(rng.random(200), 1) * 0.1
        threshold, f1 = steps.best_f1_threshold(score, labels)
        best = 0.0
        for t in np.unique(score):
            pred = score >= t
            tp = (pred & labels).sum()
            best = max(best, 2 * tp / (pred.sum() + labels.sum()))
        assert f1 == pytest.approx(best)
        pred = score >= threshold
        assert 2 * (pred & labels).sum() / (pred.sum() + labels.sum()) == pytest.approx(best)
    with pytest.raises(ValueError, match="no anomalies"):
        steps.best_f1_threshold(np.ones(3), np.zeros(3, dtype=bool))


def test_severity_and_reference() -> None:
    sev = steps.severity(np.array([0.0, 1.0, 2.0, 100.0, -1.0]))
    np.testing.assert_allclose(sev, [0.0, 50.0, 75.0, 100.0, 0.0])
    assert steps.reference_scale(np.zeros(10), 0.99) == steps.MIN_REFERENCE
    assert steps.reference_scale(np.arange(101.0), 0.5) == pytest.approx(50.0)


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = TrainingConfig(learning_rate=1e-3, warmup_fraction=0.1)
    lrs = [learning_rate(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


def _model(channels: int = 3) -> MaskedPredictor:
    model = MaskedPredictor(kit.TINY.model, channels)
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def test_the_training_budget_cuts_pretraining_steps_by_tokens() -> None:
    config = kit.TINY.replace(epochs=30, batch_size=32, train_budget=200_000)  # 4 patches per window
    per_step = 32 * 4  # tokens per step and channel
    assert pretrain_steps(4000, 1, config) == 200_000 // per_step  # a long series: the budget binds
    assert pretrain_steps(4000, 10, config) == 200_000 // (10 * per_step)  # wider: fewer steps
    assert pretrain_steps(4000, 1000, config) == MIN_PRETRAIN_STEPS  # never fewer than the floor
    assert pretrain_steps(64, 1, config) == 2 * 30  # a short series: every epoch fits the budget
    assert pretrain_steps(4000, 1, config.replace(train_budget=0)) == 30 * 4000 // 32  # no limit


def test_forward_checks_input_shapes() -> None:
    model = _model()
    x = torch.zeros(2, 16, 3)
    obs = torch.ones(2, 16, 3, dtype=torch.bool)
    hidden = torch.zeros(2, 3, 4, dtype=torch.bool)
    pred, feats = model(x, obs, hidden)
    assert pred.shape == (2, 16, 3) and feats.shape == (2, 3, 4, 16)
    with pytest.raises(ValueError, match=r"values must have shape \(B, 16, 3\)"):
        model(torch.zeros(2, 16, 4), obs, hidden)
    with pytest.raises(ValueError, match="observed shape"):
        model(x, obs[:, :8], hidden)
    with pytest.raises(ValueError, match="hidden must have shape"):
        model(x, obs, hidden[:, :2])
    with pytest.raises(ValueError, match="n_channels"):
        MaskedPredictor(ModelConfig(), 0)


def test_hidden_values_do_not_leak_into_their_prediction() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 3, generator=gen)
    obs = torch.ones_like(x, dtype=torch.bool)
    with torch.inference_mode():
        base = predict_masked(model, x, obs, 2)
        changed = x.clone()
        changed[:, 5, 1] += 100.0  # one point; hidden while it is predicted
        moved = predict_masked(model, changed, obs, 2)
        # Treating the point as missing predicts it the same way too.
        missing = obs.clone()
        missing[:, 5, 1] = False
        absent = predict_masked(model, x, missing, 2)
    assert base.spatial is not None and moved.spatial is not None
    torch.testing.assert_close(moved.temporal[:, 5, 1], base.temporal[:, 5, 1])
    torch.testing.assert_close(moved.spatial[:, 5, 1], base.spatial[:, 5, 1])
    torch.testing.assert_close(absent.temporal[:, 5, 1], base.temporal[:, 5, 1])
    assert not torch.allclose(moved.temporal[:, 9, 1], base.temporal[:, 9, 1])


def test_level_baseline_lets_predictions_follow_an_unseen_level() -> None:
    x = torch.full((1, 16, 3), 50.0)  # far outside anything a scaled series shows
    obs = torch.ones_like(x, dtype=torch.bool)
    hidden = torch.zeros(1, 3, 4, dtype=torch.bool)
    hidden[0, 1, 2] = True
    plain = MaskedPredictor(kit.TINY.model, 3)
    plain.init_weights(torch.Generator().manual_seed(0))
    based = MaskedPredictor(dataclasses.replace(kit.TINY.model, level_baseline=True), 3)
    based.load_state_dict(plain.state_dict())
    with torch.inference_mode():
        without, _ = plain.eval()(x, obs, hidden)
        with_level, _ = based.eval()(x, obs, hidden)
    assert (without[0, 8:12, 1] - 50).abs().min() > 40
    assert (with_level[0, 8:12, 1] - 50).abs().max() < 5
    # A wholly hidden channel has no visible level: its baseline is 0.
    hidden[0, 1] = True
    with torch.inference_mode():
        alone, _ = based(x, obs, hidden)
    assert (alone[0, :, 1] - 50).abs().min() > 40


def test_step_scoring_and_saved_format_import_without_torch() -> None:
    # Batching, assembly and streaming need only NumPy from the detector.
    code = (
        "import sys; import stad.server.detector.steps, stad.server.detector.saved, stad.server.scoring; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_early_stopping_waits_for_its_minimum_epochs_and_keeps_the_best_weights() -> None:
    module = torch.nn.Linear(2, 1)
    stopping = _EarlyStopping(module, patience=1, min_epochs=4)
    decisions = []
    for epoch, loss in enumerate([0.5, 0.9, 0.9, 0.9, 0.9]):
        with torch.no_grad():
            module.bias.fill_(float(epoch))
        decisions.append(stopping.should_stop(loss))
    assert decisions == [False, False, False, True, True]  # patience ran out at epoch 2, but 4 is the floor
    stopping.restore_best()
    assert float(module.bias.detach()) == 0.0 and stopping.best_loss == 0.5
    assert _EarlyStopping(torch.nn.Linear(2, 1), patience=1).should_stop(math.inf) is True

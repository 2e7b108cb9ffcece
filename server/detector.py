"""The stad detector: a plain object around the spatio-temporal masked predictor.

    det = Detector(DetectorConfig(epochs=20)).fit(X_train)      # X: (T, C), NaN = missing
    out = det.score(X)         # out.score: (T,), higher = more anomalous
    det.save("model_dir"); det = Detector.load("model_dir")

Scoring. Windows of `window` steps every `score_stride` steps (plus one ending
at the last step) each go through two families of complementary masks in
batched forwards: K = `mask_groups` (at most window / patch) diagonal token
masks (a hidden patch sees its own channel's neighbouring patches and its
peers) and min(K, C) whole-channel masks (a hidden channel is predicted from
its peers alone, which exposes a sensor decoupling from the others). So every
point is predicted while hidden, once per family. A point's error is its
squared prediction error in scaled units, divided per family by that
channel's mean error on the calibration data (so a noisy channel does not
drown the others), mixed as (1 - spatial_weight) * temporal + spatial_weight
* whole-channel, and averaged over the windows covering it. With
`residual_weight` r > 0 each point's error becomes (1 - r) * that + r * its
squared residual to the low-rank subspace of the scaled training steps (the
fewest principal components keeping `residual_variance` of the variance,
fitted on the training split, saved in the metadata), divided by one scale
that gives the residuals the prediction errors' mean on the calibration data.
The residual ignores time: it flags a combination of channel values never seen
in training even when it is held steadily and so predictable from its own
past. Expected values are the temporal family's predictions. The raw per-step score is the mean of
these errors over the observed channels (0 if none is observed), smoothed
over a trailing window of `smoothing` steps. With a supervised head (fit with
labels), the raw score is instead the head's anomaly probability.

Calibration. score = raw_score / reference, where reference is the
`threshold_quantile` quantile of the raw scores of held-out normal data: the
validation split when it has at least `min_calibration_steps` steps, else the
whole training series (labelled anomalies excluded). So score 1.0 means the
same on every model. Without labels the threshold is `threshold_factor` (1.0
by default); with labels it is the best-F1 threshold on the training series.
Severity is 100 * (1 - 2**-score): 50 at score 1.

The server batches windows of many requests through `plan_windows`,
`score_windows` and `assemble` (or `assembler`, which releases each step's
scores as soon as no later window covers it); a window's result never
depends on its batch.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import itertools
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stad.server import calibration
from stad.server.model import AnomalyHead, MaskedPredictor, ModelConfig
from stad.server.preprocessing import (
    ChannelScaler,
    Subspace,
    as_matrix,
    check_length,
    extract_windows,
    window_starts,
)
from stad.server.training import (
    HEAD_MAX_WINDOWS,
    ProgressCallback,
    StopCallback,
    TrainingCancelled,
    TrainingProgress,
    WindowSet,
    _Reporter,
    finetune,
    predict_masked,
    pretrain,
    steps_per_epoch,
)

__all__ = [
    "Detector",
    "DetectorConfig",
    "ScoreAssembler",
    "ScoreOutput",
    "TrainingCancelled",
    "TrainingProgress",
    "WindowOutput",
    "WindowPlan",
]

FloatArray = npt.NDArray[np.float64]
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "stad-detector"
FORMAT_VERSION = 1
# Tokens per forward pass when scoring. Results do not depend on it; on CPU
# small chunks that stay in cache measured fastest (bench/speed.py).
SCORE_TOKEN_BUDGET = {"cpu": 1 << 12, "cuda": 1 << 18}
MIN_ERROR_SCALE = 1e-6
CALIBRATION_BATCH = 256  # windows per scoring call while calibrating


@dataclass
class DetectorConfig:
    """Hyper-parameters; names shared with stad.v1.TrainingSpec keep its spelling."""

    window: int = 64  # L, steps per window
    patch: int = 8  # P, window % patch == 0
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2  # each: temporal attention + cross-channel attention + MLP
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    val_fraction: float = 0.2
    patience: int = 5
    mask_ratio_start: float = 0.15
    mask_ratio_end: float = 0.5
    seed: int = 0
    finetune_epochs: int = 10
    smoothing: int = 1  # trailing window (steps) for the per-step score
    threshold_quantile: float = 0.999
    mask_groups: int = 4  # K complementary scoring masks (at most window / patch used)
    score_stride: int = 0  # steps between scoring windows; 0 = window // 2
    train_stride: int = 1  # steps between training windows
    max_windows_per_epoch: int = 4096  # random subset per epoch; 0 = all
    threshold_factor: float = 1.0  # unlabelled threshold on the calibrated scale
    min_calibration_steps: int = 500
    normalize_channel_errors: bool = True
    spatial_weight: float = 0.5  # weight of the whole-channel family's errors; 0 skips it
    level_baseline: bool = False  # predict relative to each channel's visible mean in the window
    ff_mult: int = 2
    # Weight of the per-step subspace residual in the raw score (0 = prediction errors only).
    residual_weight: float = 0.0
    residual_variance: float = 0.9  # share of the training variance the subspace keeps

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"bad config: {name}={getattr(self, name)!r} ({rule})")

        for name in (
            "window",
            "patch",
            "d_model",
            "n_heads",
            "n_layers",
            "epochs",
            "batch_size",
            "patience",
            "smoothing",
            "train_stride",
            "ff_mult",
            "mask_groups",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be an integer >= 1")
        for name in (
            "finetune_epochs",
            "score_stride",
            "max_windows_per_epoch",
            "seed",
            "min_calibration_steps",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "must be an integer >= 0")
        if self.window % self.patch:
            raise bad("window", f"must be a multiple of patch={self.patch}")
        if self.d_model % self.n_heads:
            raise bad("d_model", f"must be a multiple of n_heads={self.n_heads}")
        if self.window // self.patch < 2:
            raise bad("window", f"must hold at least 2 patches of patch={self.patch}")
        if self.mask_groups < 2:
            raise bad("mask_groups", "must be an integer >= 2")
        if self.score_stride > self.window:
            raise bad("score_stride", f"must be <= window={self.window}")
        for name, lo, hi in (
            ("dropout", 0.0, 0.999),
            ("weight_decay", 0.0, math.inf),
            ("warmup_fraction", 0.0, 1.0),
            ("val_fraction", 0.0, 0.9),
            ("mask_ratio_start", 0.01, 0.99),
            ("mask_ratio_end", 0.01, 0.99),
            ("threshold_quantile", 0.5, 1.0),
            ("spatial_weight", 0.0, 1.0),
            ("residual_weight", 0.0, 1.0),
            ("residual_variance", 0.01, 1.0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not lo <= value <= hi:
                raise bad(name, f"must be a number in [{lo}, {hi}]")
        for name in ("learning_rate", "grad_clip", "threshold_factor"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise bad(name, "must be a finite number > 0")

    @property
    def groups(self) -> int:
        """Scoring mask groups actually used: mask_groups, at most the patches per window."""
        return min(self.mask_groups, self.window // self.patch)

    @property
    def stride(self) -> int:
        return self.score_stride or max(1, self.window // 2)

    def model_config(self, n_channels: int) -> ModelConfig:
        return ModelConfig(
            n_channels=n_channels,
            window=self.window,
            patch=self.patch,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            dropout=self.dropout,
            ff_mult=self.ff_mult,
            level_baseline=self.level_baseline,
        )


@dataclass
class WindowPlan:
    """Windows of one series, ready for `score_windows`."""

    windows: npt.NDArray[np.float32]  # (N, L, C) scaled, NaN kept
    starts: npt.NDArray[np.int64]  # (N,) first step of each window
    missing: npt.NDArray[np.bool_]  # (T, C)

    @property
    def n_steps(self) -> int:
        return int(self.missing.shape[0])


@dataclass
class WindowOutput:
    """Per-window results of `score_windows`; slice with `take`, join with `concatenate`."""

    errors: npt.NDArray[np.float32]  # (N, L, C) normalised squared errors, 0 where missing
    expected: FloatArray  # (N, L, C) predictions in the data's own units
    probability: npt.NDArray[np.float32] | None = None  # (N, L) head output, if fine-tuned

    def __len__(self) -> int:
        return int(self.errors.shape[0])

    def take(self, index: slice | npt.NDArray[np.int64]) -> WindowOutput:
        prob = None if self.probability is None else self.probability[index]
        return WindowOutput(self.errors[index], self.expected[index], prob)

    @classmethod
    def concatenate(cls, parts: Sequence[WindowOutput]) -> WindowOutput:
        if not parts:
            raise ValueError("nothing to concatenate")
        probs = [p.probability for p in parts]
        prob = None
        if all(p is not None for p in probs):
            prob = np.concatenate([p for p in probs if p is not None])
        return cls(
            np.concatenate([p.errors for p in parts]),
            np.concatenate([p.expected for p in parts]),
            prob,
        )


@dataclass
class _Families:
    """Per-window outputs before the families' errors are combined."""

    temporal: npt.NDArray[np.float32]  # (N, L, C) squared errors, scaled units
    spatial: npt.NDArray[np.float32]  # (N, L, C); the temporal errors again when C == 1
    residual: npt.NDArray[np.float32]  # (N, L, C) squared subspace residuals, scaled units
    expected: FloatArray  # (N, L, C) data units
    probability: npt.NDArray[np.float32] | None  # (N, L)


@dataclass
class ScoreOutput:
    score: FloatArray  # (T,) calibrated, higher = more anomalous, same scale for every model
    raw_score: FloatArray  # (T,) model units
    is_anomaly: npt.NDArray[np.bool_]  # (T,) score >= threshold
    severity: FloatArray  # (T,) 0..100
    threshold: float  # on the score scale
    contributions: FloatArray  # (T, C) rows sum to 1 (0 where nothing observed)
    expected: FloatArray  # (T, C) in the data's own units
    channels: tuple[str, ...] = field(default_factory=tuple)
    start_step: int = 0  # the series step of row 0 (an assembler's chunks start later)

    @property
    def stop_step(self) -> int:
        return self.start_step + int(self.score.shape[0])

    @classmethod
    def concatenate(cls, parts: Sequence[ScoreOutput]) -> ScoreOutput:
        """Join consecutive chunks of one series (as a `ScoreAssembler` releases them)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        for before, after in itertools.pairwise(parts):
            if after.start_step != before.stop_step:
                raise ValueError(
                    f"chunk at step {after.start_step} does not follow one ending at {before.stop_step}"
                )
        first = parts[0]
        if len(parts) == 1:
            return first
        arrays = {
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in ("score", "raw_score", "is_anomaly", "severity", "contributions", "expected")
        }
        return cls(**arrays, threshold=first.threshold, channels=first.channels, start_step=first.start_step)


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("stad", "safetensors"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _check_labels(labels: Any, n_steps: int) -> npt.NDArray[np.bool_]:
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n_steps:
        raise ValueError(f"labels must have shape ({n_steps},), got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0/1 numbers, got dtype {array.dtype}")
    values = np.unique(array.astype(np.float64))
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, got values {values[:5].tolist()}")
    result: npt.NDArray[np.bool_] = array.astype(bool)
    if result.all():
        raise ValueError("labels mark every step anomalous; need normal steps to train on")
    return result


def _check_channels(channels: Sequence[str] | None, n_channels: int) -> tuple[str, ...]:
    if channels is None:
        return tuple(f"ch{i}" for i in range(n_channels))
    names = tuple(str(c) for c in channels)
    if len(names) != n_channels:
        raise ValueError(f"{len(names)} channel names for {n_channels} channels")
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"channel names must be unique and non-empty, got {list(names)}")
    return names


class _StepMeans:
    """Per-step means of window results, accumulated batch by batch in plan order."""

    def __init__(self, plan: WindowPlan, window: int) -> None:
        self.plan = plan
        self.window = window
        self.sums: dict[str, FloatArray] = {}
        self.count = np.zeros(plan.n_steps)
        self.added = 0  # windows of the plan folded in so far

    def add(self, **arrays: npt.NDArray[Any] | None) -> None:
        """Fold in the next windows' arrays, each (n, L, ...); None entries are skipped."""
        present = [a for a in arrays.values() if a is not None]
        n = present[0].shape[0] if present else 0
        starts = self.plan.starts[self.added : self.added + n]
        if starts.shape[0] != n:
            raise ValueError(f"more window results than the plan's {self.plan.starts.shape[0]}")
        L = self.window
        for name, array in arrays.items():
            if array is None:
                continue
            total = self.sums.setdefault(name, np.zeros((self.plan.n_steps, *array.shape[2:])))
            for i, s in enumerate(starts):
                total[s : s + L] += array[i]
        for s in starts:
            self.count[s : s + L] += 1
        self.added += n

    @property
    def final_steps(self) -> int:
        """Steps no later window covers: their means will not change any more."""
        if self.added == self.plan.starts.shape[0]:
            return self.plan.n_steps
        return int(self.plan.starts[self.added])

    def mean_or_none(self, name: str, steps: slice = slice(None)) -> FloatArray | None:
        if name not in self.sums:
            return None
        total = self.sums[name][steps]
        count = np.maximum(self.count[steps], 1)
        mean: FloatArray = total / count.reshape(-1, *[1] * (total.ndim - 1))
        return mean

    def mean(self, name: str, steps: slice = slice(None)) -> FloatArray:
        mean = self.mean_or_none(name, steps)
        if mean is None:
            raise ValueError(f"no window results named {name!r}")
        return mean


class ScoreAssembler:
    """Per-step scores of one plan, released in order as soon as they are final.

    Feed `add` the plan's window results in plan order, in pieces of any size. Step t
    depends only on the windows starting at or before t (smoothing is trailing), so
    once the windows before k are in, the steps before starts[k] are final; the last
    window releases the rest. The chunks concatenate to `Detector.assemble`'s result.
    """

    def __init__(self, detector: Detector, plan: WindowPlan, threshold: float) -> None:
        self._detector = detector
        self._plan = plan
        self._threshold = threshold
        self._means = _StepMeans(plan, detector.config.window)
        self._smoothing = calibration.TrailingMean(detector.config.smoothing)
        self.released = 0  # steps released so far

    @property
    def done(self) -> bool:
        return self.released == self._plan.n_steps

    def add(self, output: WindowOutput) -> ScoreOutput | None:
        """Fold in the next windows' results; the newly final steps, or None if none."""
        shape = (len(output), self._detector.config.window, self._plan.missing.shape[1])
        if output.errors.shape != shape or output.expected.shape != shape:
            raise ValueError(
                f"output errors {output.errors.shape} / expected {output.expected.shape} "
                f"are not windows of shape (N, {shape[1]}, {shape[2]})"
            )
        self._means.add(errors=output.errors, expected=output.expected, probability=output.probability)
        stop = self._means.final_steps
        if stop == self.released:
            return None
        chunk = self._detector._score_steps(
            self._means, slice(self.released, stop), self._smoothing, self._threshold
        )
        self.released = stop
        return chunk


def _torch_device(name: str) -> torch.device:
    """The torch device for `name`; on CUDA also allow TF32 matmuls."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"bad device {name!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: not-a-number metrics become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


class Detector:
    """Spatio-temporal Transformer anomaly detector (see the module docstring)."""

    model_: MaskedPredictor
    head_: AnomalyHead | None
    scaler_: ChannelScaler
    channels_: tuple[str, ...]
    error_scale_: FloatArray  # (2, C): temporal and whole-channel families
    subspace_: Subspace | None  # None on models saved before it existed
    residual_scale_: float  # calibration mean residual / calibration mean prediction error
    reference_: float
    threshold_: float
    calibration_: dict[str, Any]
    metadata_: dict[str, Any]

    def __init__(self, config: DetectorConfig | None = None, *, device: str = "cpu") -> None:
        self.config = config if config is not None else DetectorConfig()
        self.device = device

    # ----------------------------------------------------------------- fitting
    def fit(
        self,
        X: Any,
        labels: Any = None,
        *,
        channels: Sequence[str] | None = None,
        timestamps_ns: Any = None,
        progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
        warm_start: bool = False,
    ) -> Detector:
        """Train on X (T, C), NaN = missing; labels (T,) 0/1 enable fine-tuning.

        warm_start=True on a fitted detector keeps its weights, refits the
        scaler and the threshold on X and trains further.
        """
        cfg = self.config
        cfg.validate()
        started = time.monotonic()
        data = as_matrix(X)
        check_length(data, cfg.window)
        t, c = data.shape
        if np.isnan(data).all():
            raise ValueError("the training series has no observed values (all NaN)")
        keep_weights = warm_start and self.is_fitted
        if keep_weights and c != len(self.channels_):
            raise ValueError(
                f"the series has {c} channels but the warm-started detector has {len(self.channels_)}"
            )
        keep_names = channels is None and keep_weights
        names = self.channels_ if keep_names else _check_channels(channels, c)
        anomalous = None if labels is None else _check_labels(labels, t)
        stamps = None
        if timestamps_ns is not None:
            stamps = np.asarray(timestamps_ns)
            if stamps.shape != (t,) or stamps.dtype.kind not in "iu":
                raise ValueError(
                    f"timestamps_ns must be {t} integers, got shape {stamps.shape} dtype {stamps.dtype}"
                )
        device = _torch_device(self.device)

        normal_rows = data if anomalous is None else data[~anomalous]
        scaler = ChannelScaler.fit(normal_rows if normal_rows.shape[0] >= cfg.window else data)
        scaled = scaler.transform(data)
        n_val = max(round(t * cfg.val_fraction), cfg.window) if cfg.val_fraction > 0 else 0
        if t - n_val < cfg.window:
            n_val = 0
        split = t - n_val
        fit_rows = scaled[:split] if anomalous is None else scaled[:split][~anomalous[:split]]
        subspace = Subspace.fit(fit_rows if fit_rows.shape[0] else scaled, cfg.residual_variance)
        train_set = self._window_set(scaled, anomalous, 0, split, cfg.train_stride, device)
        val_set = self._window_set(scaled, anomalous, split, t, cfg.stride, device) if n_val else None

        generator = torch.Generator().manual_seed(cfg.seed)
        if keep_weights:  # train a copy: a cancelled or failed fit leaves self unchanged
            model = copy.deepcopy(self.model_).to(device)
        else:
            model = MaskedPredictor(cfg.model_config(c))
            model.init_weights(generator)
            model = model.to(device)
        use_head = anomalous is not None and bool(anomalous[:split].any()) and cfg.finetune_epochs > 0
        total = steps_per_epoch(len(train_set), cfg) * cfg.epochs
        if use_head:
            head_windows = min(len(train_set), HEAD_MAX_WINDOWS)
            total += steps_per_epoch(head_windows, cfg) * cfg.finetune_epochs
        reporter = _Reporter(total, progress, should_stop)
        metrics: dict[str, Any] = dict(pretrain(model, train_set, val_set, cfg, generator, reporter))
        head = copy.deepcopy(self.head_) if keep_weights else None
        if use_head:
            if head is None:
                head = AnomalyHead(model.config)
                head.init_weights(generator)
                head = head.to(device)
            metrics.update(finetune(model, head, train_set, val_set, cfg, generator, reporter))

        self.model_ = model
        self.head_ = head
        self.scaler_ = scaler
        self.channels_ = names
        self.subspace_ = subspace
        self._calibrate(data, anomalous, split if n_val >= cfg.min_calibration_steps else 0)
        metrics.update(
            fit_s=time.monotonic() - started,
            train_windows=len(train_set),
            val_windows=0 if val_set is None else len(val_set),
            device=str(device),
            warm_start=keep_weights,
        )
        self.metadata_ = self._metadata(t, stamps, metrics)
        return self

    def _window_set(
        self,
        scaled: FloatArray,
        anomalous: npt.NDArray[np.bool_] | None,
        start: int,
        stop: int,
        stride: int,
        device: torch.device,
    ) -> WindowSet:
        starts = window_starts(stop - start, self.config.window, stride) + start
        series = torch.from_numpy(scaled.astype(np.float32))  # (T, C)
        observed = ~torch.isnan(series)
        target = observed
        labels = None
        if anomalous is not None:
            labels = torch.from_numpy(anomalous.astype(np.float32))  # (T,)
            target = observed & ~torch.from_numpy(anomalous)[:, None]
            labels = labels.to(device)
        return WindowSet(
            values=torch.nan_to_num(series, nan=0.0).to(device),
            observed=observed.to(device),
            target=target.to(device),
            labels=labels,
            starts=torch.from_numpy(starts).to(device),
            window=self.config.window,
        )

    def _calibrate(self, data: FloatArray, anomalous: npt.NDArray[np.bool_] | None, first_step: int) -> None:
        """Set error_scale_, reference_ and threshold_ from the fitted model's scores of data."""
        cfg = self.config
        plan = self.plan_windows(data)
        means = _StepMeans(plan, cfg.window)
        for i in range(0, plan.windows.shape[0], CALIBRATION_BATCH):
            fam = self._forward_windows(plan.windows[i : i + CALIBRATION_BATCH])
            means.add(
                temporal=fam.temporal, spatial=fam.spatial, residual=fam.residual, probability=fam.probability
            )
        temporal, spatial = means.mean("temporal"), means.mean("spatial")
        residual = means.mean("residual")
        usable = np.zeros(data.shape[0], dtype=bool)
        usable[first_step:] = True
        if anomalous is not None:
            usable &= ~anomalous
        if not usable.any():
            usable[:] = True
        self.error_scale_ = np.ones((2, data.shape[1]))
        if cfg.normalize_channel_errors:
            observed = ~plan.missing[usable]
            for row, per_step in enumerate((temporal[usable], spatial[usable])):
                sums = np.where(observed, per_step, 0.0).sum(axis=0)
                mean_err = sums / np.maximum(observed.sum(axis=0), 1)
                self.error_scale_[row] = np.maximum(mean_err, MIN_ERROR_SCALE)
        # The residual term is put on the prediction errors' scale: equal means over
        # the observed calibration values, so residual_weight is a plain mixing weight.
        observed = ~plan.missing & usable[:, None]
        prediction = self._combine(temporal, spatial, None)
        mean_pred = float(prediction[observed].mean()) if observed.any() else 1.0
        mean_res = float(residual[observed].mean()) if observed.any() else 1.0
        self.residual_scale_ = max(mean_res, MIN_ERROR_SCALE) / max(mean_pred, MIN_ERROR_SCALE)
        # Combining is linear, so combining per-step means equals scoring's order.
        err = self._combine(temporal, spatial, residual)
        err[plan.missing] = 0.0
        step_raw = self._step_raw(plan.missing, err, means.mean_or_none("probability"))
        raw = calibration.TrailingMean(cfg.smoothing).add(step_raw)
        self.reference_ = calibration.reference_scale(raw[usable], cfg.threshold_quantile)
        self.calibration_ = {
            "method": "quantile",
            "quantile": cfg.threshold_quantile,
            "reference": self.reference_,
            "calibration_steps": int(usable.sum()),
            "calibration_source": "validation" if first_step else "training series",
        }
        self.threshold_ = float(cfg.threshold_factor)
        if anomalous is not None and anomalous.any():
            score = raw / self.reference_
            self.threshold_, best_f1 = calibration.best_f1_threshold(score, anomalous)
            self.calibration_.update({"method": "best_f1", "best_f1": best_f1})

    def _metadata(
        self, n_steps: int, stamps: npt.NDArray[Any] | None, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "channels": list(self.channels_),
            "scaler": self.scaler_.to_dict(),
            "error_scale": self.error_scale_.tolist(),
            "subspace": None if self.subspace_ is None else self.subspace_.to_dict(),
            "residual_scale": self.residual_scale_,
            "thresholds": {"threshold": self.threshold_, **self.calibration_},
            "training_range": {
                "steps": n_steps,
                "start_ns": None if stamps is None else int(stamps[0]),
                "end_ns": None if stamps is None else int(stamps[-1]),
            },
            "training_metrics": _finite_or_none(metrics),
            "has_head": self.head_ is not None,
            "library_versions": _library_versions(),
        }

    # ----------------------------------------------------------------- scoring
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "model_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("detector is not fitted: call fit() or Detector.load() first")

    def plan_windows(self, X: Any) -> WindowPlan:
        """Validate and scale X (T, C) and cut it into scoring windows."""
        self._check_fitted()
        data = as_matrix(X)
        if data.shape[1] != len(self.channels_):
            raise ValueError(
                f"the series has {data.shape[1]} channels, the detector expects {len(self.channels_)}"
            )
        check_length(data, self.config.window)
        starts = window_starts(data.shape[0], self.config.window, self.config.stride)
        windows = extract_windows(self.scaler_.transform(data), starts, self.config.window)
        return WindowPlan(windows=windows, starts=starts, missing=np.isnan(data))

    @torch.inference_mode()
    def score_windows(self, windows: npt.ArrayLike) -> WindowOutput:
        """Predict every point of each (L, C) window while hidden; batch-independent."""
        self._check_fitted()
        families = self._forward_windows(windows)
        combined = self._combine(families.temporal, families.spatial, families.residual)
        errors = combined.astype(np.float32)
        return WindowOutput(errors, families.expected, families.probability)

    @torch.inference_mode()
    def _forward_windows(self, windows: npt.ArrayLike) -> _Families:
        """Both mask families' squared errors (scaled units) and the expected values."""
        cfg = self.config
        arr = np.asarray(windows, dtype=np.float32)
        c = len(self.channels_)
        if arr.ndim != 3 or arr.shape[1:] != (cfg.window, c):
            raise ValueError(f"windows must have shape (N, {cfg.window}, {c}), got {arr.shape}")
        if np.isinf(arr).any():
            raise ValueError("windows contain inf; use NaN for missing values")
        device = _torch_device(self.device)
        model = self.model_.eval()
        use_spatial = cfg.spatial_weight > 0  # else skip the whole-channel passes
        passes = cfg.groups * (2 if use_spatial else 1)
        budget = SCORE_TOKEN_BUDGET.get(device.type, SCORE_TOKEN_BUDGET["cpu"])
        chunk = max(1, budget // (passes * c * (cfg.window // cfg.patch)))
        temporal, spatial, preds, probs = [], [], [], []
        for start in range(0, arr.shape[0], chunk):
            # From a pinned staging buffer the copy is asynchronous; `.cpu()` below waits for it.
            part = torch.from_numpy(arr[start : start + chunk]).to(device, non_blocking=True)
            observed = ~torch.isnan(part)
            values = torch.nan_to_num(part, nan=0.0)
            prediction = predict_masked(model, values, observed, cfg.groups, use_spatial)
            if self.head_ is not None:
                logits = self.head_.eval()(prediction.pooled, prediction.errors(values, observed))
                probs.append(torch.sigmoid(logits.float()).cpu())
            e_t, e_s = prediction.family_errors(values, observed)
            temporal.append(e_t.cpu())
            spatial.append(e_t.cpu() if e_s is None else e_s.cpu())
            preds.append(prediction.temporal.cpu())
        if not preds:
            empty = np.zeros((0, cfg.window, c), dtype=np.float32)
            return _Families(empty, empty, empty, empty.astype(np.float64), None)
        residual = (
            np.zeros_like(arr) if self.subspace_ is None else self.subspace_.residual(arr).astype(np.float32)
        )
        return _Families(
            temporal=torch.cat(temporal).numpy(),
            spatial=torch.cat(spatial).numpy(),
            residual=residual,
            expected=self.scaler_.inverse(torch.cat(preds).numpy()),
            probability=torch.cat(probs).numpy() if probs else None,
        )

    def _combine(
        self,
        temporal: npt.NDArray[Any],
        spatial: npt.NDArray[Any],
        residual: npt.NDArray[Any] | None,
    ) -> FloatArray:
        """Weighted mean of the families' errors, each divided by its per-channel scale,
        then mixed with the subspace residuals (None: prediction errors only)."""
        w = self.config.spatial_weight if len(self.channels_) > 1 else 0.0
        combined: FloatArray = (1 - w) * temporal / self.error_scale_[0] + (
            w * spatial / self.error_scale_[1]
        )
        r = self.config.residual_weight
        if residual is not None and r > 0:
            combined = (1 - r) * combined + r * residual / self.residual_scale_
        return combined

    def _step_raw(
        self, missing: npt.NDArray[np.bool_], err: FloatArray, prob: FloatArray | None
    ) -> FloatArray:
        """Per-step raw score before smoothing: mean error over the observed channels
        (or the head's probability)."""
        n_obs = (~missing).sum(axis=1)
        if prob is None:
            step: FloatArray = err.sum(axis=1) / np.maximum(n_obs, 1)
            return step
        return np.where(n_obs > 0, prob, 0.0)

    def assembler(self, plan: WindowPlan, *, threshold: float | None = None) -> ScoreAssembler:
        """An incremental `assemble`: window results in, final per-step chunks out."""
        self._check_fitted()
        thr = self.threshold_ if threshold is None else float(threshold)
        if not math.isfinite(thr):
            raise ValueError(f"threshold must be finite, got {threshold}")
        return ScoreAssembler(self, plan, thr)

    def assemble(
        self, plan: WindowPlan, output: WindowOutput, *, threshold: float | None = None
    ) -> ScoreOutput:
        """Turn the window results of one plan into per-step scores."""
        assembler = self.assembler(plan, threshold=threshold)
        if len(output) != plan.starts.shape[0]:
            raise ValueError(f"output has {len(output)} windows, the plan {plan.starts.shape[0]}")
        result = assembler.add(output)
        assert result is not None  # every window is in, so every step is final
        return result

    def _score_steps(
        self, means: _StepMeans, steps: slice, smoothing: calibration.TrailingMean, threshold: float
    ) -> ScoreOutput:
        """Scores of a range of final steps; `smoothing` must have seen the steps before."""
        missing = means.plan.missing[steps]
        err = means.mean("errors", steps)
        err[missing] = 0.0
        raw = smoothing.add(self._step_raw(missing, err, means.mean_or_none("probability", steps)))
        score = raw / self.reference_
        totals = err.sum(axis=1, keepdims=True)
        observed = ~missing
        uniform = observed / np.maximum(observed.sum(axis=1, keepdims=True), 1)
        contributions = np.where(totals > 0, err / np.where(totals > 0, totals, 1.0), uniform)
        return ScoreOutput(
            score=score,
            raw_score=raw,
            is_anomaly=score >= threshold,
            severity=calibration.severity(score),
            threshold=threshold,
            contributions=contributions,
            expected=means.mean("expected", steps),
            channels=self.channels_,
            start_step=steps.start,
        )

    def score(self, X: Any, *, threshold: float | None = None, batch_size: int = 256) -> ScoreOutput:
        """Score every step of X (T, C); see the module docstring for the scale.

        Window results are folded into per-step means batch by batch, so memory
        stays at the plan's windows plus O(T * C).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        plan = self.plan_windows(X)
        assembler = self.assembler(plan, threshold=threshold)
        chunks = []
        for i in range(0, plan.windows.shape[0], batch_size):
            chunk = assembler.add(self.score_windows(plan.windows[i : i + batch_size]))
            if chunk is not None:
                chunks.append(chunk)
        return ScoreOutput.concatenate(chunks)

    def predict(self, X: Any) -> npt.NDArray[np.bool_]:
        """Boolean (T,): score >= threshold_."""
        return self.score(X).is_anomaly

    # ------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write model.safetensors (weights) and metadata.json; no pickle."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        if self.head_ is not None:
            tensors.update(
                {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
            )
        save_file(tensors, str(path / WEIGHTS_FILE))
        (path / METADATA_FILE).write_text(json.dumps(self.metadata_, indent=2, allow_nan=False))

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu") -> Detector:
        """Rebuild a detector written by `save`."""
        from safetensors.torch import load_file

        path = Path(directory)
        meta_path, weights_path = path / METADATA_FILE, path / WEIGHTS_FILE
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise ValueError(f"not a saved detector: {p} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: unsupported format {meta.get('format')!r} "
                f"version {meta.get('format_version')!r}"
            )
        known = {f.name for f in dataclasses.fields(DetectorConfig)}
        config = DetectorConfig(**{k: v for k, v in meta["config"].items() if k in known})
        det = cls(config, device=device)
        dev = _torch_device(device)
        channels = tuple(meta["channels"])
        tensors = load_file(str(weights_path))
        model = MaskedPredictor(config.model_config(len(channels)))
        model.load_state_dict(
            {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
        )
        head = None
        if meta["has_head"]:
            head = AnomalyHead(model.config)
            head.load_state_dict(
                {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
            )
            head = head.to(dev).eval()
        det.model_ = model.to(dev).eval()
        det.head_ = head
        det.channels_ = channels
        det.scaler_ = ChannelScaler.from_dict(meta["scaler"])
        det.error_scale_ = np.asarray(meta["error_scale"], dtype=np.float64).reshape(2, -1)
        subspace = meta.get("subspace")
        det.subspace_ = None if subspace is None else Subspace.from_dict(subspace)
        det.residual_scale_ = float(meta.get("residual_scale", 1.0))
        if det.subspace_ is None and config.residual_weight > 0:
            raise ValueError(f"{meta_path}: residual_weight > 0 but no subspace saved")
        thresholds = dict(meta["thresholds"])
        det.threshold_ = float(thresholds.pop("threshold"))
        det.reference_ = float(thresholds["reference"])
        det.calibration_ = thresholds
        det.metadata_ = meta
        return det

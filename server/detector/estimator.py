"""The detector as a scikit-learn-style estimator.

    det = Detector(DetectorConfig().replace(epochs=20)).fit(X_train)  # X: (T, C), NaN = missing
    out = det.score(X)         # out.score: (T,), higher = more anomalous
    det.save("model_dir"); det = Detector.load("model_dir")

Scoring cuts X into windows of `window` steps every `stride` steps (plus one
ending at the last step); `predict_masked` predicts every point while hidden,
and `StepScorer` turns the windows' errors into calibrated per-step scores.
Fitting scales the channels, makes the data choices (`choices.choose`: channel
kinds, dominant period, range span), trains the network (`pretrain`, then
`finetune` with labels) on all but the held-out blocks (`holdout_blocks`, spread
over the series) and calibrates the scorer on those blocks, with a warning when
they hold fewer than `min_calibration_steps` steps; on the whole training series,
with a warning, only when nothing is held out (labelled anomalies excluded either
way).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.metadata
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stad.core.data_warnings import DataWarning
from stad.core.detector_config import DetectorConfig
from stad.core.types import BoolArray, FloatArray
from stad.server.detector.bands import BAND_Z, band_halfwidth
from stad.server.detector.checks import training_warnings
from stad.server.detector.choices import DataChoices, choose
from stad.server.detector.drift import ValueRange
from stad.server.detector.model import AnomalyHead, MaskedPredictor, predict_masked
from stad.server.detector.preprocessing import (
    ChannelScaler,
    Subspace,
    as_matrix,
    check_length,
    extract_windows,
    window_starts,
)
from stad.server.detector.saved import FORMAT, FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE, config_of, upgrade
from stad.server.detector.steps import (
    ScoreAssembler,
    ScoreOutput,
    StepMeans,
    StepScorer,
    WindowOutput,
    WindowPlan,
    calibrate,
)
from stad.server.detector.train import (
    HEAD_MAX_WINDOWS,
    ProgressCallback,
    ProgressReporter,
    StopCallback,
    WindowSet,
    finetune,
    pretrain,
    pretrain_steps,
    steps_per_epoch,
)

# Tokens per forward pass when scoring. Results do not depend on it; on CPU
# small chunks that stay in cache measured fastest (bench/speed.py).
SCORE_TOKEN_BUDGET = {"cpu": 1 << 12, "cuda": 1 << 18}
CALIBRATION_BATCH = 256  # windows per scoring call while calibrating
HOLDOUT_BLOCKS = 5  # held-out blocks spread over the training series


@dataclass
class Families:
    """Per-window outputs before the families' errors are combined (`StepScorer.combine`)."""

    temporal: npt.NDArray[np.float32]  # (N, L, C) squared errors, scaled units
    spatial: npt.NDArray[np.float32]  # (N, L, C); the temporal errors again when C == 1
    residual: npt.NDArray[np.float32]  # (N, L, C) squared subspace residuals, scaled units
    expected: FloatArray  # (N, L, C) data units
    probability: npt.NDArray[np.float32] | None  # (N, L)


class Detector:
    """Spatio-temporal Transformer anomaly detector (see the module docstring)."""

    model_: MaskedPredictor
    head_: AnomalyHead | None
    scaler_: ChannelScaler
    channels_: tuple[str, ...]
    subspace_: Subspace | None  # None on models saved before it existed
    scorer_: StepScorer
    choices_: DataChoices
    calibration_: dict[str, Any]
    value_range_: ValueRange | None  # None on models saved before it existed: no drift check
    warnings_: tuple[DataWarning, ...]  # the fit's warnings (`checks`)
    metadata_: dict[str, Any]

    def __init__(self, config: DetectorConfig | None = None, *, device: str = "cpu") -> None:
        self.config = config if config is not None else DetectorConfig()
        self.device = device

    # Fitted scoring state, as attributes in the scikit-learn way.
    @property
    def threshold_(self) -> float:
        return self.scorer_.threshold

    @property
    def reference_(self) -> float:
        return self.scorer_.reference

    @property
    def error_scale_(self) -> FloatArray:
        return self.scorer_.error_scale

    @property
    def residual_scale_(self) -> float:
        return self.scorer_.residual_scale

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
        started = time.monotonic()
        data = as_matrix(X)
        check_length(data, self.config.min_steps)
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
        device = torch_device(self.device)

        normal_rows = data if anomalous is None else data[~anomalous]
        basis = normal_rows if normal_rows.shape[0] >= self.config.min_steps else data
        choices = choose(basis, self.config)
        cfg = self.config.replace(window=choices.window)
        window, tc = choices.window, cfg.training
        scaler = ChannelScaler.fit(basis if basis.shape[0] >= window else data)
        scaled = scaler.transform(data)
        held = holdout_blocks(t, window, tc.val_fraction)
        n_val = int(held.sum())
        fit_mask = ~held if anomalous is None else ~held & ~anomalous
        subspace = Subspace.fit(scaled[fit_mask] if fit_mask.any() else scaled, cfg.scoring.residual_variance)
        seen = _unscored_as_missing(scaled, choices.scored)
        train_set = self._window_set(seen, anomalous, _runs(~held), window, tc.train_stride, device)
        val_set = (
            self._window_set(seen, anomalous, _runs(held), window, cfg.stride, device) if n_val else None
        )

        generator = torch.Generator().manual_seed(tc.seed)
        if keep_weights:  # train a copy: a cancelled or failed fit leaves self unchanged
            model = copy.deepcopy(self.model_).to(device)
        else:
            model = MaskedPredictor(cfg.model, c)
            model.init_weights(generator)
            model = model.to(device)
        use_head = anomalous is not None and bool(anomalous[~held].any()) and tc.finetune_epochs > 0
        total = pretrain_steps(len(train_set), c, cfg)
        if use_head:
            head_windows = min(len(train_set), HEAD_MAX_WINDOWS)
            total += steps_per_epoch(head_windows, tc) * tc.finetune_epochs
        reporter = ProgressReporter(total, progress, should_stop)
        metrics: dict[str, Any] = dict(pretrain(model, train_set, val_set, cfg, generator, reporter))
        head = copy.deepcopy(self.head_) if keep_weights else None
        if use_head:
            if head is None:
                head = AnomalyHead(cfg.model, c)
                head.init_weights(generator)
                head = head.to(device)
            metrics.update(finetune(model, head, train_set, val_set, cfg, generator, reporter))

        self.config = cfg
        self.model_ = model
        self.head_ = head
        self.scaler_ = scaler
        self.channels_ = names
        self.subspace_ = subspace
        self.value_range_ = ValueRange.fit(data)
        self.choices_ = choices
        calibration = self._calibrate(data, anomalous, held if n_val else None)
        self.warnings_ = tuple(
            training_warnings(data, self.value_range_, names, calibration, self.calibration_, metrics, cfg)
        )
        metrics.update(
            fit_s=time.monotonic() - started,
            train_windows=len(train_set),
            val_windows=0 if val_set is None else len(val_set),
            device=str(device),
            warm_start=keep_weights,
        )
        self.metadata_ = self._metadata(data, stamps, metrics)
        return self

    def _window_set(
        self,
        scaled: FloatArray,
        anomalous: BoolArray | None,
        runs: Sequence[tuple[int, int]],
        window: int,
        stride: int,
        device: torch.device,
    ) -> WindowSet:
        """The windows of `window` steps that fit inside the [start, stop) runs, every `stride` steps."""
        parts = [window_starts(b - a, window, stride) + a for a, b in runs if b - a >= window]
        starts = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
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
            window=window,
        )

    def _calibrate(self, data: FloatArray, anomalous: BoolArray | None, held: BoolArray | None) -> BoolArray:
        """Fit the step scorer and its band on the fitted model's errors over the held-out
        steps `held` (None: none held out, so over the whole training series); the steps
        calibrated on."""
        plan = self.plan_windows(data)
        means = StepMeans(plan, self.config.model.window)
        for i in range(0, plan.windows.shape[0], CALIBRATION_BATCH):
            fam = self._forward_windows(plan.windows[i : i + CALIBRATION_BATCH])
            means.add(
                temporal=fam.temporal, spatial=fam.spatial, residual=fam.residual, probability=fam.probability
            )
        usable = np.ones(data.shape[0], dtype=bool) if held is None else held.copy()
        if anomalous is not None:
            usable &= ~anomalous
        if not usable.any():
            usable[:] = True
        scorer, record = calibrate(
            self.config,
            self.channels_,
            means,
            usable,
            anomalous,
            scored=self.choices_.counted,
            span=self.choices_.span,
            mean_span=self.choices_.mean_span,
        )
        band = band_halfwidth(means.mean("temporal"), plan.missing, usable, self.scaler_.scale)
        self.scorer_ = dataclasses.replace(scorer, band=band)
        record["calibration_source"] = "held-out blocks" if held is not None else "training series"
        needed = self.config.scoring.min_calibration_steps
        if held is None:
            record["calibration_warning"] = (
                "no held-out steps (val_fraction 0, or a series too short to hold a window out): "
                "calibrated on the whole training series (in-sample errors, so new data scores "
                "high); the training false-alarm bound max_train_flag_rate still holds"
            )
        elif int(usable.sum()) < needed:
            record["calibration_warning"] = (
                f"{int(usable.sum())} held-out steps, fewer than min_calibration_steps={needed}: "
                "the threshold rests on their highest scores; "
                "the training false-alarm bound max_train_flag_rate still holds"
            )
        self.calibration_ = record
        return usable

    def _metadata(
        self, data: FloatArray, stamps: npt.NDArray[Any] | None, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        band = self.scorer_.band
        n_steps = data.shape[0]
        trained = self.value_range_
        assert trained is not None  # fit sets it before the metadata
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "channels": list(self.channels_),
            "scaler": self.scaler_.to_dict(),
            "error_scale": self.error_scale_.tolist(),
            "subspace": None if self.subspace_ is None else self.subspace_.to_dict(),
            "residual_scale": self.residual_scale_,
            "thresholds": {"threshold": self.threshold_, **self.calibration_},
            "data_choices": self.choices_.to_dict(),
            "training_range": {
                "steps": n_steps,
                # per channel, the observed values' range in training (the drift check's `value_range`)
                "channel_min": _finite_or_none_list(trained.low),
                "channel_max": _finite_or_none_list(trained.high),
                "start_ns": None if stamps is None else int(stamps[0]),
                "end_ns": None if stamps is None else int(stamps[-1]),
            },
            "training_metrics": _finite_or_none(metrics),
            "value_range": None if self.value_range_ is None else self.value_range_.to_dict(),
            "band": None if band is None else {"z": BAND_Z, "halfwidth": band.tolist()},
            "warnings": [w.to_dict() for w in self.warnings_],
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
        window = self.config.model.window
        check_length(data, window)
        starts = window_starts(data.shape[0], window, self.config.stride)
        scaled = _unscored_as_missing(self.scaler_.transform(data), self.choices_.scored)
        windows = extract_windows(scaled, starts, window)
        out_of_range = step_excess = None
        if self.value_range_ is not None:
            excess = self.value_range_.excess(data, self.config.scoring.range_tolerance)  # (T, C)
            out_of_range, step_excess = excess > 0, excess.max(axis=1, initial=0.0)
        return WindowPlan(
            windows=windows,
            starts=starts,
            missing=np.isnan(scaled),
            out_of_range=out_of_range,
            excess=step_excess,
        )

    @torch.inference_mode()
    def score_windows(self, windows: npt.ArrayLike) -> WindowOutput:
        """Predict every point of each (L, C) window while hidden; batch-independent."""
        self._check_fitted()
        families = self._forward_windows(windows)
        combined = self.scorer_.combine(families.temporal, families.spatial, families.residual)
        errors = combined.astype(np.float32)
        return WindowOutput(errors, families.expected, families.probability)

    @torch.inference_mode()
    def _forward_windows(self, windows: npt.ArrayLike) -> Families:
        """Both mask families' squared errors (scaled units) and the expected values."""
        cfg = self.config
        window, patch = cfg.model.window, cfg.model.patch
        arr = np.asarray(windows, dtype=np.float32)
        c = len(self.channels_)
        if arr.ndim != 3 or arr.shape[1:] != (window, c):
            raise ValueError(f"windows must have shape (N, {window}, {c}), got {arr.shape}")
        if np.isinf(arr).any():
            raise ValueError("windows contain inf; use NaN for missing values")
        device = torch_device(self.device)
        model = self.model_.eval()
        use_spatial = cfg.scoring.spatial_weight > 0  # else skip the whole-channel passes
        passes = cfg.groups * (2 if use_spatial else 1)
        budget = SCORE_TOKEN_BUDGET.get(device.type, SCORE_TOKEN_BUDGET["cpu"])
        chunk = max(1, budget // (passes * c * (window // patch)))
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
            empty = np.zeros((0, window, c), dtype=np.float32)
            return Families(empty, empty, empty, empty.astype(np.float64), None)
        residual = (
            np.zeros_like(arr) if self.subspace_ is None else self.subspace_.residual(arr).astype(np.float32)
        )
        return Families(
            temporal=torch.cat(temporal).numpy(),
            spatial=torch.cat(spatial).numpy(),
            residual=residual,
            # A channel constant in training is expected at its constant.
            expected=self.scaler_.inverse(np.where(self.choices_.scored, torch.cat(preds).numpy(), 0.0)),
            probability=torch.cat(probs).numpy() if probs else None,
        )

    def assembler(self, plan: WindowPlan, *, threshold: float | None = None) -> ScoreAssembler:
        """An incremental `assemble`: window results in, final per-step chunks out."""
        self._check_fitted()
        return self.scorer_.assembler(plan, threshold=threshold)

    def assemble(
        self, plan: WindowPlan, output: WindowOutput, *, threshold: float | None = None
    ) -> ScoreOutput:
        """Turn the window results of one plan into per-step scores."""
        self._check_fitted()
        return self.scorer_.assemble(plan, output, threshold=threshold)

    def score(self, X: Any, *, threshold: float | None = None, batch_size: int = 256) -> ScoreOutput:
        """Score every step of X (T, C): higher = more anomalous, 1.0 = the calibration quantile.

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

    def predict(self, X: Any) -> BoolArray:
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
        """Rebuild a detector written by `save` (any readable format version)."""
        from safetensors.torch import load_file

        path = Path(directory)
        meta_path, weights_path = path / METADATA_FILE, path / WEIGHTS_FILE
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise ValueError(f"not a saved detector: {p} is missing")
        meta = upgrade(json.loads(meta_path.read_text()), str(meta_path))
        config = config_of(meta)
        det = cls(config, device=device)
        dev = torch_device(device)
        channels = tuple(meta["channels"])
        tensors = load_file(str(weights_path))
        model = MaskedPredictor(config.model, len(channels))
        model.load_state_dict(
            {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
        )
        head = None
        if meta["has_head"]:
            head = AnomalyHead(config.model, len(channels))
            head.load_state_dict(
                {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
            )
            head = head.to(dev).eval()
        det.model_ = model.to(dev).eval()
        det.head_ = head
        det.channels_ = channels
        det.scaler_ = ChannelScaler.from_dict(meta["scaler"])
        subspace = meta.get("subspace")
        det.subspace_ = None if subspace is None else Subspace.from_dict(subspace)
        if det.subspace_ is None and config.scoring.residual_weight > 0:
            raise ValueError(f"{meta_path}: residual_weight > 0 but no subspace saved")
        thresholds = dict(meta["thresholds"])
        threshold = float(thresholds.pop("threshold"))
        det.choices_ = DataChoices.from_dict(meta.get("data_choices"), len(channels), config.model.window)
        det.scorer_ = StepScorer(
            config,
            channels,
            error_scale=np.asarray(meta["error_scale"], dtype=np.float64).reshape(2, -1),
            residual_scale=float(meta.get("residual_scale", 1.0)),
            reference=float(thresholds["reference"]),
            threshold=threshold,
            band=_band_of(meta),
            scored=det.choices_.counted,
            span=det.choices_.span,
            mean_span=det.choices_.mean_span,
        )
        det.calibration_ = thresholds
        value_range = meta.get("value_range")
        det.value_range_ = None if value_range is None else ValueRange.from_dict(value_range)
        det.warnings_ = DataWarning.list_from(meta.get("warnings"))
        det.metadata_ = meta
        return det


def _band_of(meta: dict[str, Any]) -> FloatArray | None:
    """The saved band half-widths (None on models saved before bands: a zero-width band)."""
    band = meta.get("band")
    return None if band is None else np.asarray(band["halfwidth"], dtype=np.float64)


def holdout_blocks(n_steps: int, window: int, fraction: float) -> BoolArray:
    """The held-out steps: `fraction` of the series (at least one window) in up to
    HOLDOUT_BLOCKS blocks of at least one window each, one at the end of each equal part
    of the series, so that calibration sees the whole training period, not only its
    tail. None held out when fraction is 0 or the rest would not hold a window."""
    held = np.zeros(n_steps, dtype=bool)
    n_val = max(round(n_steps * fraction), window) if fraction > 0 else 0
    if n_val == 0 or n_steps - n_val < window:
        return held
    blocks = max(1, min(HOLDOUT_BLOCKS, n_val // window))
    size = n_val // blocks
    for k in range(1, blocks + 1):
        end = round(k * n_steps / blocks)
        held[end - size : end] = True
    return held


def _unscored_as_missing(scaled: FloatArray, scored: BoolArray) -> FloatArray:
    """The scaled series with the unscored (constant in training) channels missing: the
    network neither learns from them nor sees them when scoring."""
    if scored.all():
        return scaled
    out = scaled.copy()
    out[:, ~scored] = np.nan
    return out


def _finite_or_none_list(values: FloatArray) -> list[float | None]:
    """JSON has no NaN: a channel never observed in training has no range (null)."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _runs(mask: BoolArray) -> list[tuple[int, int]]:
    """The [start, stop) runs of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def torch_device(name: str) -> torch.device:
    """The torch device for `name`, checked; the first CUDA device set-up also enables TF32."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"bad device {name!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        _enable_tf32()
    return device


@functools.cache
def _enable_tf32() -> None:
    """Allow TF32 matmuls and convolutions: a process-wide switch, set once."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("stad", "safetensors"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _check_labels(labels: Any, n_steps: int) -> BoolArray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n_steps:
        raise ValueError(f"labels must have shape ({n_steps},), got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0/1 numbers, got dtype {array.dtype}")
    values = np.unique(array.astype(np.float64))
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, got values {values[:5].tolist()}")
    result: BoolArray = array.astype(bool)
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


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: not-a-number metrics become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}

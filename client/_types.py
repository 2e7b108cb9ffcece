"""Typed results returned by the client (plain dataclasses, numpy arrays for per-step data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.core.data_warnings import DRIFT, DataWarning, drift_warning
from stad.core.detector_config import SETTINGS_BY_NAME, Value
from stad.core.jobs import JobState, TrainingProgress
from stad.core.types import BoolArray, FloatArray, IntArray


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one series (or one streamed chunk of it); per-step arrays have length N."""

    timestamps_ns: IntArray  # (N,); empty when the request had no timestamps
    score: FloatArray  # (N,) calibrated; higher means more anomalous
    raw_score: FloatArray  # (N,) in the model's own units
    is_anomaly: BoolArray  # (N,) the anomaly event state (score >= threshold, filtered), or drift
    severity: FloatArray  # (N,) 0-100
    threshold: float
    channels: tuple[str, ...]
    contributions: FloatArray  # (N, C) rows sum to 1
    expected: FloatArray  # (N, C) in the data's units
    model: str
    version: str
    series_index: int = 0
    start_step: int = 0
    lower: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, C) band below expected
    upper: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, C) band above expected
    out_of_range: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,) drift
    # (N, C) which channels lie outside the training range at each step
    out_of_range_channels: BoolArray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    warnings: tuple[DataWarning, ...] = ()  # "drift" when some step is out of range

    @property
    def steps(self) -> int:
        return int(self.score.shape[0])

    @property
    def out_of_range_share(self) -> dict[str, float]:
        """Per channel, the share of the steps on which it lay outside the training range."""
        if self.out_of_range_channels.shape != (self.steps, len(self.channels)) or not self.steps:
            return {name: 0.0 for name in self.channels}
        shares = self.out_of_range_channels.mean(axis=0)
        return {name: float(share) for name, share in zip(self.channels, shares, strict=True)}

    def take(self, rows: slice, *, start_step: int) -> ScoreResult:
        """The result of steps `rows` only (numbered from `start_step`); the drift warning is
        recomputed over them. Arrays the server did not send (empty) stay empty."""
        arrays = {
            name: getattr(self, name)[rows] if getattr(self, name).size else getattr(self, name)
            for name in STEP_FIELDS
        }
        return replace(self, **arrays, start_step=start_step, warnings=self._warnings_with(arrays))

    def _warnings_with(
        self, arrays: Mapping[str, Any], others: Sequence[DataWarning] = ()
    ) -> tuple[DataWarning, ...]:
        kept = dict.fromkeys(w for w in (*self.warnings, *others) if w.code != DRIFT)
        drift = drift_warning(self.channels, arrays["out_of_range_channels"])
        return (*kept, *([drift] if drift else []))

    @classmethod
    def join(cls, parts: Sequence[ScoreResult]) -> ScoreResult:
        """One result from results of consecutive steps of one series (in any order);
        the drift warning is recomputed over the whole."""
        if not parts:
            raise ValueError("no results to join")
        ordered = sorted(parts, key=lambda part: part.start_step)
        arrays: dict[str, Any] = {
            name: np.concatenate([getattr(p, name) for p in ordered]) for name in STEP_FIELDS
        }
        warnings = ordered[0]._warnings_with(arrays, [w for p in ordered[1:] for w in p.warnings])
        return replace(ordered[0], **arrays, warnings=warnings)

    def spans(self) -> list[tuple[int, int]]:
        """Runs of consecutive anomalous steps as (first, last + 1) indices into this result."""
        return flag_spans(self.is_anomaly)

    def top_channels(self, start: int, stop: int, k: int = 3) -> list[tuple[str, float]]:
        """The k channels with the largest mean contribution over steps [start, stop)."""
        if not 0 <= start < stop <= self.steps:
            raise ValueError(f"bad step range [{start}, {stop}) for {self.steps} steps")
        mean = np.nanmean(self.contributions[start:stop], axis=0)  # (C,)
        order = np.argsort(-mean)[:k]
        return [(self.channels[i], float(mean[i])) for i in order]


# The per-step arrays of a ScoreResult (and fields of stad.v1.SeriesScores), joined by `ScoreResult.join`.
STEP_FIELDS = (
    "timestamps_ns",
    "score",
    "raw_score",
    "is_anomaly",
    "severity",
    "contributions",
    "expected",
    "lower",
    "upper",
    "out_of_range",
    "out_of_range_channels",
)


def flag_spans(flags: npt.ArrayLike) -> list[tuple[int, int]]:
    """Runs of True in a 1-D boolean array as half-open (start, stop) index pairs."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@dataclass(frozen=True)
class ModelVersionInfo:
    version: str
    created_at: datetime | None
    channels: tuple[str, ...]
    window: int
    threshold: float
    train_start_ns: int
    train_end_ns: int
    train_steps: int
    metrics: Mapping[str, float]
    metadata: Mapping[str, Any]
    description: str
    warnings: tuple[DataWarning, ...] = ()  # of the training that made this version

    @property
    def reference(self) -> float | None:
        """The raw score that maps to score 1.0: a step is flagged when its raw_score /
        reference reaches the threshold (events and drift aside); None if not recorded."""
        thresholds = self.metadata.get("thresholds")
        value = thresholds.get("reference") if isinstance(thresholds, Mapping) else None
        return float(value) if value is not None else None

    @property
    def config(self) -> Mapping[str, Mapping[str, Any]]:
        """The detector config the version was trained with, by group (model, training,
        scoring) and setting name, from its metadata; empty if it has none."""
        config = self.metadata.get("config")
        return config if isinstance(config, Mapping) else {}

    @property
    def fit_choices(self) -> Mapping[str, Any]:
        """What the detector chose from the training data at fit time, from its metadata:
        `dominant_period` (steps, None when none was found), `window_from_period` (True when
        the training asked for window 0 and `window` was chosen from the data), `range_span`
        and `range_mean_span` (1 each without range scores), `scored_channels` (those the
        network predicts) and `counted_channels` (those in the step score), `channel_kinds`
        (channel name -> constant, near_constant, binary or varying) and `scaling`; empty
        for a version saved before they were recorded."""
        out: dict[str, Any] = {}
        choices = self.metadata.get("data_choices")
        if isinstance(choices, Mapping):
            names = self.metadata.get("channels") or self.channels
            out["dominant_period"] = choices.get("dominant_period")
            out["window_from_period"] = bool(choices.get("window_from_period", False))
            out["range_span"] = choices.get("range_span")
            out["range_mean_span"] = choices.get("range_mean_span", 1)
            out["counted_channels"] = choices.get("counted_channels", choices.get("scored_channels"))
            out["scored_channels"] = choices.get("scored_channels")
            out["channel_kinds"] = dict(zip(names, choices.get("channel_kinds") or (), strict=False))
        scaler = self.metadata.get("scaler")
        if isinstance(scaler, Mapping) and "method" in scaler:
            out["scaling"] = scaler["method"]
        return out


@dataclass(frozen=True)
class ModelInfo:
    name: str
    active_version: str | None
    versions: tuple[ModelVersionInfo, ...]  # oldest first

    @property
    def active(self) -> ModelVersionInfo | None:
        return next((v for v in self.versions if v.version == self.active_version), None)


@dataclass(frozen=True)
class JobStatus:
    """One state of a training job, as returned by every training call and each watch event."""

    job_id: str
    model: str
    state: JobState
    progress: TrainingProgress | None
    version: str | None  # set when the job succeeded
    error: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    steps: int
    channels: tuple[str, ...] = field(default=())
    warnings: tuple[DataWarning, ...] = ()  # of the training, once the job succeeded


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """Detector settings for a training job; None leaves the server's default.

    One field per setting of `stad.core.detector_config` (same names; its help and
    bounds are `SETTINGS_BY_NAME[name]`). The fields are written out rather than
    generated from the declaration so that mypy and IDEs see their names and types;
    a test checks that they are exactly the declaration's. Construction checks every
    given value against its setting's rule (SettingError, a ValueError, naming the
    setting and the rule); rules between settings (window a multiple of patch) are
    the server's to check, against its own defaults.
    """

    # model
    window: int | None = None
    patch: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    dropout: float | None = None
    ff_mult: int | None = None
    level_baseline: bool | None = None
    # training
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    warmup_fraction: float | None = None
    grad_clip: float | None = None
    val_fraction: float | None = None
    patience: int | None = None
    mask_ratio_start: float | None = None
    mask_ratio_end: float | None = None
    seed: int | None = None
    finetune_epochs: int | None = None
    train_stride: int | None = None
    max_windows_per_epoch: int | None = None
    train_budget: int | None = None
    # scoring
    smoothing: int | None = None
    threshold_quantile: float | None = None
    threshold_factor: float | None = None
    mask_groups: int | None = None
    score_stride: int | None = None
    min_calibration_steps: int | None = None
    normalize_channel_errors: bool | None = None
    spatial_weight: float | None = None
    residual_weight: float | None = None
    residual_variance: float | None = None
    min_duration: int | None = None
    merge_gap: int | None = None
    range_tolerance: float | None = None
    range_scores: bool | None = None
    max_train_flag_rate: float | None = None
    binary_in_score: bool | None = None

    def __post_init__(self) -> None:
        for name, value in self.given().items():
            object.__setattr__(self, name, SETTINGS_BY_NAME[name].check(value))

    def given(self) -> dict[str, Value]:
        """The settings that are set, by name."""
        values = ((item.name, getattr(self, item.name)) for item in fields(self))
        return {name: value for name, value in values if value is not None}


@dataclass(frozen=True)
class HealthStatus:
    status: str  # SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN
    service: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

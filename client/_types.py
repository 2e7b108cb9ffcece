"""Typed results returned by the client (plain dataclasses, numpy arrays for per-step data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.core.detector_config import SETTINGS_BY_NAME, Value
from stad.core.jobs import JobState, TrainingProgress
from stad.core.types import BoolArray, FloatArray, IntArray


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one series (or one streamed chunk of it); per-step arrays have length N."""

    timestamps_ns: IntArray  # (N,); empty when the request had no timestamps
    score: FloatArray  # (N,) calibrated; higher means more anomalous
    raw_score: FloatArray  # (N,) in the model's own units
    is_anomaly: BoolArray  # (N,) score >= threshold
    severity: FloatArray  # (N,) 0-100
    threshold: float
    channels: tuple[str, ...]
    contributions: FloatArray  # (N, C) rows sum to 1
    expected: FloatArray  # (N, C) in the data's units
    model: str
    version: str
    series_index: int = 0
    start_step: int = 0

    @property
    def steps(self) -> int:
        return int(self.score.shape[0])

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

    @property
    def config(self) -> Mapping[str, Mapping[str, Any]]:
        """The detector config the version was trained with, by group (model, training,
        scoring) and setting name, from its metadata; empty if it has none."""
        config = self.metadata.get("config")
        return config if isinstance(config, Mapping) else {}


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
    range_scores: bool | None = None
    max_train_flag_rate: float | None = None

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

"""Every detector setting, declared once.

`DetectorConfig` is a frozen config nested by concern (`model`, `training`,
`scoring`). Each field carries its help text and its bounds, and everything
else is derived from it: validation, the flags of `stad train` and
`stad influx train`, the client's `TrainingSettings`, `stad.v1.TrainingSpec`
(checked field by field in the tests), the saved model metadata and
`stad models show`. Setting names are unique across groups, so the flat name
(`window`, `smoothing`) is the one users see everywhere.

Torch-free: the client imports it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

Value = int | float | bool


class SettingError(ValueError):
    """A setting broke its rule; `name`, `value` and `rule` say which, how and why."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}={_quote(value)}: {rule}")


def _quote(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setting(default: Value, help: str, *, low: float | None = None, high: float | None = None) -> Any:
    """A config field: its default, its help line and its inclusive bounds."""
    return field(default=default, metadata={"help": help, "low": low, "high": high})


@dataclass(frozen=True)
class SettingInfo:
    """One setting as the CLI, the client and the proto see it."""

    name: str
    group: str  # "model", "training" or "scoring"
    kind: type  # int, float or bool
    default: Value
    help: str
    low: float | None
    high: float | None

    @property
    def rule(self) -> str:
        what = {int: "an integer", float: "a number", bool: "true or false"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"must be {what} in [{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"must be {what} >= {_num(self.low)}"
        if self.high is not None:
            return f"must be {what} <= {_num(self.high)}"
        return f"must be {what}"

    def check(self, value: object) -> Value:
        """The value, as its kind, or SettingError naming the rule it broke."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise SettingError(self.name, value, self.rule)
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingError(self.name, value, self.rule)
        if self.kind is int and (not isinstance(value, int) and not float(value).is_integer()):
            raise SettingError(self.name, value, self.rule)
        number: Value = int(value) if self.kind is int else float(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise SettingError(self.name, value, self.rule)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise SettingError(self.name, value, self.rule)
        return number


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


class _Group:
    """Validation shared by the groups: every field checked against its declaration."""

    group_name: ClassVar[str]

    def __post_init__(self) -> None:
        for info in _group_infos(type(self), self.group_name):
            object.__setattr__(self, info.name, info.check(getattr(self, info.name)))


@dataclass(frozen=True)
class ModelConfig(_Group):
    """The network's shape (everything but the channel count, which the data sets)."""

    group_name: ClassVar[str] = "model"
    window: int = setting(
        64,
        "steps per window (L); a multiple of patch; 0 = from the data (the dominant period, in [32, 256])",
        low=0,
    )
    patch: int = setting(8, "steps per patch token (P)", low=1)
    d_model: int = setting(64, "width of every token", low=1)
    n_heads: int = setting(4, "attention heads; d_model must be a multiple", low=1)
    n_layers: int = setting(2, "blocks of temporal + cross-channel attention", low=1)
    dropout: float = setting(0.1, "dropout rate while training", low=0.0, high=0.999)
    ff_mult: int = setting(2, "MLP width as a multiple of d_model", low=1)
    level_baseline: bool = setting(False, "predict relative to each channel's visible mean in the window")

    @property
    def n_patches(self) -> int:
        """Patch tokens per channel in a window (N = L / P)."""
        return self.window // self.patch


@dataclass(frozen=True)
class TrainingConfig(_Group):
    """How the network is fitted: masked pretraining, then optional supervised fine-tuning."""

    group_name: ClassVar[str] = "training"
    epochs: int = setting(30, "pretraining epochs (early stopping may end sooner)", low=1)
    batch_size: int = setting(64, "windows per training step", low=1)
    learning_rate: float = setting(1e-3, "peak AdamW learning rate", low=1e-12)
    weight_decay: float = setting(1e-4, "AdamW weight decay", low=0.0)
    warmup_fraction: float = setting(
        0.05, "share of the steps spent warming up the learning rate", low=0.0, high=1.0
    )
    grad_clip: float = setting(1.0, "largest gradient norm", low=1e-12)
    val_fraction: float = setting(
        0.2, "share of the training steps held out for validation", low=0.0, high=0.9
    )
    patience: int = setting(5, "epochs without validation improvement before stopping", low=1)
    mask_ratio_start: float = setting(
        0.15, "share of tokens masked at the start of pretraining", low=0.01, high=0.99
    )
    mask_ratio_end: float = setting(
        0.5, "share of tokens masked at the end of pretraining", low=0.01, high=0.99
    )
    seed: int = setting(0, "random seed: the same data and seed give the same model", low=0)
    finetune_epochs: int = setting(10, "supervised fine-tuning epochs when labels are given", low=0)
    train_stride: int = setting(1, "steps between training windows", low=1)
    max_windows_per_epoch: int = setting(4096, "random subset of windows per epoch; 0 = all", low=0)
    train_budget: int = setting(
        1_000_000,
        "pretraining budget in tokens (windows x channels x window / patch) over all epochs, "
        "so that a fit takes about as long on any series; 0 = no limit",
        low=0,
    )


@dataclass(frozen=True)
class ScoringConfig(_Group):
    """How window predictions become calibrated per-step scores and a threshold."""

    group_name: ClassVar[str] = "scoring"
    smoothing: int = setting(1, "trailing window (steps) over which the per-step score is averaged", low=1)
    threshold_quantile: float = setting(
        0.999, "quantile of held-out normal scores that maps to score 1.0", low=0.5, high=1.0
    )
    threshold_factor: float = setting(
        1.5, "unlabelled threshold on the calibrated score scale (1.0 = the calibration quantile)", low=1e-12
    )
    mask_groups: int = setting(4, "complementary scoring masks (at most window / patch are used)", low=2)
    score_stride: int = setting(0, "steps between scoring windows; 0 = window / 2", low=0)
    min_calibration_steps: int = setting(
        500, "held-out calibration steps below which the fit warns that its threshold is uncertain", low=0
    )
    normalize_channel_errors: bool = setting(True, "divide each channel's errors by its calibration mean")
    spatial_weight: float = setting(
        0.5, "weight of the whole-channel masks' errors; 0 skips them", low=0.0, high=1.0
    )
    residual_weight: float = setting(
        0.0, "weight of the subspace residual in the raw score", low=0.0, high=1.0
    )
    residual_variance: float = setting(
        0.9, "share of the training variance the residual's subspace keeps", low=0.01, high=1.0
    )
    min_duration: int = setting(
        2, "steps a run of flagged steps must last before it is an anomaly event", low=1, high=10_000
    )
    merge_gap: int = setting(
        20,
        "unflagged steps that may separate two runs of one event (it stays open that long)",
        low=0,
        high=10_000,
    )
    range_tolerance: float = setting(
        0.25,
        "drift margin: share of a channel's training span (max - min) a value may lie beyond it",
        low=0.0,
        high=1000.0,
    )
    range_scores: bool = setting(
        True,
        "score each step by the highest, within a centred range as long as the training data's "
        "dominant period (at most window; window when there is none), of the means over centred "
        "ranges half as long",
    )
    max_train_flag_rate: float = setting(
        0.01,
        "largest share of the training steps the unlabelled threshold may flag (it is raised to fit)",
        low=0.0,
        high=1.0,
    )
    binary_in_score: bool = setting(
        False,
        "count binary (two-valued) channels in the step score when the series also has varying "
        "ones (they are model inputs and drift-checked either way)",
    )


_GROUPS: dict[str, type[_Group]] = {
    "model": ModelConfig,
    "training": TrainingConfig,
    "scoring": ScoringConfig,
}


def _group_infos(cls: type[Any], group: str) -> Iterator[SettingInfo]:
    kinds = {"int": int, "float": float, "bool": bool}
    for item in dataclasses.fields(cls):
        yield SettingInfo(
            name=item.name,
            group=group,
            kind=kinds[str(item.type)],
            default=item.default,  # type: ignore[arg-type]
            help=item.metadata["help"],
            low=item.metadata["low"],
            high=item.metadata["high"],
        )


SETTINGS: tuple[SettingInfo, ...] = tuple(
    info for name, cls in _GROUPS.items() for info in _group_infos(cls, name)
)
SETTINGS_BY_NAME: Mapping[str, SettingInfo] = {info.name: info for info in SETTINGS}
if len(SETTINGS_BY_NAME) != len(SETTINGS):
    raise RuntimeError("two detector settings share a name")


@dataclass(frozen=True)
class DetectorConfig:
    """The whole detector config; cross-setting rules are checked here."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def __post_init__(self) -> None:
        m, s = self.model, self.scoring
        if m.window % m.patch:
            raise SettingError("window", m.window, f"must be a multiple of patch={m.patch}")
        if m.window and m.window // m.patch < 2:
            raise SettingError("window", m.window, f"must hold at least 2 patches of patch={m.patch}")
        if m.d_model % m.n_heads:
            raise SettingError("d_model", m.d_model, f"must be a multiple of n_heads={m.n_heads}")
        if m.window and s.score_stride > m.window:
            raise SettingError("score_stride", s.score_stride, f"must be <= window={m.window}")

    @property
    def groups(self) -> int:
        """Scoring mask groups used: mask_groups, at most the patches per window."""
        return min(self.scoring.mask_groups, self.model.n_patches)

    @property
    def min_steps(self) -> int:
        """Fewest training steps a fit accepts: one window, or two patches when `window` is 0."""
        return self.model.window or 2 * self.model.patch

    @property
    def stride(self) -> int:
        """Steps between scoring windows: score_stride, or window / 2 when it is 0."""
        return self.scoring.score_stride or max(1, self.model.window // 2)

    @classmethod
    def from_flat(cls, values: Mapping[str, object]) -> DetectorConfig:
        """A config from flat setting names (unset ones take their defaults)."""
        return cls().replace(**values)

    def replace(self, **values: object) -> DetectorConfig:
        """A copy with the named settings changed; unknown names are refused."""
        by_group: dict[str, dict[str, object]] = {}
        for name, value in values.items():
            info = SETTINGS_BY_NAME.get(name)
            if info is None:
                raise SettingError(name, value, "is not a detector setting")
            by_group.setdefault(info.group, {})[name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **v) for g, v in by_group.items()}
        return dataclasses.replace(self, **groups)

    def to_flat(self) -> dict[str, Value]:
        return {info.name: getattr(getattr(self, info.group), info.name) for info in SETTINGS}

    def to_dict(self) -> dict[str, dict[str, Value]]:
        """Nested plain data, as saved in a model's metadata."""
        return {g: dataclasses.asdict(getattr(self, g)) for g in _GROUPS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        """The inverse of `to_dict`; unknown groups or keys are refused, missing ones default."""
        unknown = set(data) - set(_GROUPS)
        if unknown:
            raise SettingError(sorted(unknown)[0], data[sorted(unknown)[0]], "is not a config group")
        flat: dict[str, object] = {}
        for group, values in data.items():
            if not isinstance(values, Mapping):
                raise SettingError(group, values, "must be a table of settings")
            for name, value in values.items():
                info = SETTINGS_BY_NAME.get(name)
                if info is None or info.group != group:
                    raise SettingError(f"{group}.{name}", value, "is not a setting of this group")
                flat[name] = value
        return cls.from_flat(flat)


__all__ = [
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "DetectorConfig",
    "ModelConfig",
    "ScoringConfig",
    "SettingError",
    "SettingInfo",
    "TrainingConfig",
]

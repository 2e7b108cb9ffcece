"""What the tests share: one tiny detector config in each form the tests pass it, and one synthetic series."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

import numpy as np

from stad.client import TrainingSettings
from stad.core.detector_config import SETTINGS_BY_NAME, DetectorConfig, Value
from stad.core.types import FloatArray

# Tiny: training takes seconds on a CPU.
TINY = DetectorConfig().replace(
    window=16, patch=4, d_model=16, n_heads=2, n_layers=1, epochs=1, batch_size=32
)
# The settings TINY changes, by flat name, as a TrainingSpec or DetectorConfig.replace takes them.
TINY_FLAT: dict[str, Value] = {
    name: value for name, value in TINY.to_flat().items() if value != SETTINGS_BY_NAME[name].default
}
TINY_SETTINGS = TrainingSettings(**TINY_FLAT)  # type: ignore[arg-type]

# `stad train` spells these settings its own way until its flags are derived from the settings (branch cli).
_FLAG_SPELLING = {"n_layers": "--layers", "n_heads": "--heads"}


def cli_flags(settings: Mapping[str, Value]) -> list[str]:
    """`stad train` flags that set these settings."""
    flags: list[str] = []
    for name, value in settings.items():
        flags += [_FLAG_SPELLING.get(name, "--" + name.replace("_", "-")), str(value)]
    return flags


TINY_FLAGS = cli_flags(TINY_FLAT)

# The per-step fields of one series' scores, in stad.v1.SeriesScores and stad.client.ScoreResult alike.
PER_STEP_FIELDS = (
    "timestamps_ns",
    "score",
    "raw_score",
    "is_anomaly",
    "severity",
    "contributions",
    "expected",
)


@dataclass(frozen=True)
class Wave:
    """One channel: level + amplitude * sin(2 pi t / period + phase), plus Gaussian noise of sd `noise`."""

    amplitude: float = 1.0
    period: float = 24.0
    phase: float = 0.0
    level: float = 0.0
    noise: float = 0.05


QUARTER = math.pi / 2  # a phase that turns sin into cos
# Three coupled channels: a cycle, a scaled and shifted copy of it, and the cycle a quarter on.
COUPLED = (Wave(), Wave(amplitude=0.5, level=1.0), Wave(phase=QUARTER))


def make_values(steps: int, seed: int = 0, *, waves: Sequence[Wave] = COUPLED) -> FloatArray:
    """(steps, len(waves)) values, one channel per wave; the same seed gives the same noise."""
    t = np.arange(steps)[:, None]
    amplitude, period, phase, level, noise = np.array([astuple(wave) for wave in waves]).T
    noise_draws = np.random.default_rng(seed).normal(size=(steps, len(waves)))
    values: FloatArray = level + amplitude * np.sin(2 * np.pi * t / period + phase) + noise * noise_draws
    return values

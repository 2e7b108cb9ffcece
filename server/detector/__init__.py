"""The stad detector: masked spatio-temporal attention over windows of a multivariate series.

    from stad.server.detector import Detector, DetectorConfig

    det = Detector(DetectorConfig().replace(window=64, epochs=30)).fit(X_train)  # (T, C), NaN = missing
    out = det.score(X)  # out.score: (T,), higher = more anomalous

Modules, each importing only those above it:
    preprocessing  validation, channel scaling, windowing, the training subspace (NumPy)
    steps          window outputs to calibrated per-step scores (NumPy)
    saved          the saved metadata format (no NumPy)
    model          the network, its masks and the inference forward (torch)
    train          pretraining, fine-tuning, schedule, early stopping, progress (torch)
    estimator      `Detector`: fit, score, save, load

The config is `stad.core.detector_config`, which the torch-free client shares.
The torch parts are imported on first use, so `steps` and `saved` stay torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stad.core.detector_config import DetectorConfig, SettingError
from stad.core.jobs import TrainingProgress
from stad.server.detector.steps import ScoreAssembler, ScoreOutput, WindowOutput, WindowPlan

if TYPE_CHECKING:
    from stad.server.detector.estimator import Detector
    from stad.server.detector.train import ProgressReporter, TrainingCancelled

_LAZY = {
    "Detector": "stad.server.detector.estimator",
    "ProgressReporter": "stad.server.detector.train",
    "TrainingCancelled": "stad.server.detector.train",
}

__all__ = [
    "Detector",
    "DetectorConfig",
    "ProgressReporter",
    "ScoreAssembler",
    "ScoreOutput",
    "SettingError",
    "TrainingCancelled",
    "TrainingProgress",
    "WindowOutput",
    "WindowPlan",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

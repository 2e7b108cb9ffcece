"""Synthetic multivariate series from GutenTAG (PyPI: timeeval-gutentag), one per anomaly kind.

The generation config is bench/synthetic.yaml (its `defaults` key only holds a
YAML anchor and is dropped before GutenTAG sees it). Each series trains on its
clean semi-supervised twin and is scored and evaluated on its test series.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import LabelledSeries

CONFIG = Path(__file__).resolve().parent / "synthetic.yaml"
SEED = 42
KINDS = ("level", "variance", "pattern", "frequency", "trend")


def load_synthetic(kinds: frozenset[str] | None = None, *, config: Path = CONFIG) -> list[LabelledSeries]:
    """The series of `config` (those named in `kinds` when given), generated with a fixed seed."""
    import yaml
    from gutenTAG.gutenTAG import GutenTAG

    raw: dict[str, Any] = yaml.safe_load(config.read_text())
    raw.pop("defaults", None)
    if kinds is not None:
        raw["timeseries"] = [item for item in raw["timeseries"] if item["name"] in kinds]
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        generated = GutenTAG.from_dict(raw, seed=SEED).generate(return_timeseries=True)
    if generated is None:
        raise RuntimeError("GutenTAG returned no series")
    by_name: dict[str, dict[str, Any]] = {}
    for item in generated:
        by_name.setdefault(item.name, {})[item.training_type.value] = item.timeseries
    series = []
    for name, parts in by_name.items():
        test, train = parts["test"], parts["train-no-anomaly"]
        channels = tuple(str(c) for c in test.columns if c != "is_anomaly")
        series.append(
            LabelledSeries(
                name=f"synthetic/{name}",
                values=test[list(channels)].to_numpy(dtype=np.float64),
                labels=test["is_anomaly"].to_numpy() > 0,
                channels=channels,
                train_size=len(train),
                separate_train=train[list(channels)].to_numpy(dtype=np.float64),
            )
        )
    return series

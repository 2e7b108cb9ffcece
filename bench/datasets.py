"""Loaders for the benchmark data in ../shared/data (SKAB and the nine TSB-AD-M files).

The data stays outside the repository (its licences differ from ours). The
folder is `../shared/data` relative to the repository root unless the
environment variable STAD_DATA_DIR names another one.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

DATA_DIR_ENV = "STAD_DATA_DIR"
SKAB_GROUPS = ("valve1", "valve2", "other")
TSB_AD_M_DIR = "tsb-ad-m"


@dataclass(frozen=True)
class LabelledSeries:
    """One benchmark series: the values scored (T, C) with their labels (T,), and the training data.

    The training data is the first `train_size` rows of `values` (SKAB, TSB-AD-M), or
    a separate clean series `separate_train` (the synthetic set).
    """

    name: str
    values: FloatArray  # (T, C)
    labels: BoolArray  # (T,)
    channels: tuple[str, ...]
    train_size: int
    timestamps_ns: IntArray | None = None  # (T,)
    separate_train: FloatArray | None = None  # (T0, C)

    @property
    def train(self) -> FloatArray:
        if self.separate_train is not None:
            return self.separate_train
        return self.values[: self.train_size]

    @property
    def train_in_values(self) -> bool:
        """Whether the training rows are the first rows of `values` (scored with them)."""
        return self.separate_train is None


def data_dir() -> Path:
    """The benchmark data folder: $STAD_DATA_DIR, else <repo>/../shared/data."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _existing(relative: str) -> Path:
    path = data_dir() / relative
    if not path.exists():
        raise FileNotFoundError(
            f"benchmark data not found at {path}; set {DATA_DIR_ENV} to the folder holding "
            "skab/ and tsb-ad-m/"
        )
    return path


def _read_skab(path: Path) -> tuple[list[str], IntArray, FloatArray, FloatArray]:
    """Header, timestamps (ns), sensor values (T, 8) and anomaly column of one SKAB file."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, body = rows[0], [row for row in rows[1:] if row]
    if header[0] != "datetime":
        raise ValueError(f"{path}: expected first column 'datetime', got {header[0]!r}")
    sensors = [name for name in header[1:] if name not in ("anomaly", "changepoint")]
    stamps = np.array([row[0] for row in body], dtype="datetime64[ns]").astype(np.int64)
    numbers = np.array([[float(cell) for cell in row[1:]] for row in body])  # (T, columns - 1)
    values = numbers[:, : len(sensors)]
    anomaly = numbers[:, header.index("anomaly") - 1] if "anomaly" in header else np.zeros(len(body))
    return sensors, stamps, values, anomaly


def skab_files() -> list[Path]:
    """The 34 labelled SKAB files, in a fixed order (valve1/0..15, valve2/0..3, other/1..14)."""
    root = _existing("skab")
    files: list[Path] = []
    for group in SKAB_GROUPS:
        files.extend(sorted((root / group).glob("*.csv"), key=lambda p: int(p.stem)))
    if not files:
        raise FileNotFoundError(f"no SKAB csv files under {root}")
    return files


def load_skab(train_size: int = 400) -> list[LabelledSeries]:
    """The labelled SKAB files; under SKAB's protocol the first `train_size` rows train."""
    series = []
    for path in skab_files():
        sensors, stamps, values, anomaly = _read_skab(path)
        series.append(
            LabelledSeries(
                name=f"{path.parent.name}/{path.stem}",
                values=values,
                labels=anomaly > 0.5,
                channels=tuple(sensors),
                train_size=train_size,
                timestamps_ns=stamps,
            )
        )
    return series


def tsb_ad_m_files() -> list[Path]:
    """The TSB-AD-M csv files (`<id>_..._tr_<N>_1st_<M>.csv`), by id."""
    root = _existing(TSB_AD_M_DIR)
    files = sorted(path for path in root.glob("*.csv") if re.search(r"_tr_\d+_", path.name))
    if not files:
        raise FileNotFoundError(f"no TSB-AD-M csv files under {root}")
    return files


def load_tsb_ad_m_file(path: Path) -> LabelledSeries:
    """One TSB-AD-M file; the training prefix length comes from its name (`_tr_<N>_`)."""
    match = re.search(r"_tr_(\d+)_", path.name)
    if match is None:
        raise ValueError(f"no _tr_<N>_ training length in file name {path.name!r}")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], [row for row in rows[1:] if row]
    if header[-1] != "Label":
        raise ValueError(f"{path}: expected last column 'Label', got {header[-1]!r}")
    numbers = np.array([[float(cell) for cell in row] for row in body])  # (T, C + 1)
    return LabelledSeries(
        name=path.stem,
        values=numbers[:, :-1],
        labels=numbers[:, -1] > 0.5,
        channels=tuple(header[:-1]),
        train_size=int(match.group(1)),
    )


def load_tsb_ad_m(ids: frozenset[str] | None = None) -> list[LabelledSeries]:
    """The TSB-AD-M files whose 3-digit id is in `ids` (all when None)."""
    paths = tsb_ad_m_files()
    if ids is not None:
        paths = [path for path in paths if file_id(path.stem) in ids]
    return [load_tsb_ad_m_file(path) for path in paths]


def file_id(name: str) -> str:
    """The 3-digit id a TSB-AD-M file name starts with."""
    return name.split("_", 1)[0]

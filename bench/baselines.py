"""Baselines rerun by the `tsb-ad` package's own code (tsb-ad 1.5).

Each method runs as TSB-AD's benchmark script runs its unsupervised methods:
`run_Unsupervise_AD(name, data, **Optimal_Multi_algo_HP_dict[name])` on the whole
series (no train split), its output min-max scaled to [0, 1], and flagged above
mean + 3 std of that output (TSB-AD's own rule for its point predictions).

TSB-AD seeds PCA and IForest itself (random_state=0). Its KMeansAD builds
scikit-learn's KMeans without a seed, so one unseeded run moves by up to 0.65
VUS-PR on a file: it runs under each of `SEEDS` (NumPy's global generator, which
that KMeans draws from) and its figures are the means over them.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

METHODS = ("PCA", "IForest", "KMeansAD")
SEEDS: dict[str, tuple[int, ...]] = {"PCA": (0,), "IForest": (0,), "KMeansAD": (0, 1, 2, 3, 4)}


def tsb_ad_scores(name: str, values: FloatArray, seed: int = 0) -> FloatArray:
    """One method's per-step scores on `values` (T, C), scaled to [0, 1], with NumPy's
    global generator seeded with `seed` for the call (and restored after it)."""
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict
    from TSB_AD.model_wrapper import run_Unsupervise_AD

    if name not in METHODS:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(METHODS)}")
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()) as printed,
        _global_numpy_seed(seed),
    ):
        warnings.simplefilter("ignore")
        output = run_Unsupervise_AD(name, values, **Optimal_Multi_algo_HP_dict[name])
    if isinstance(output, str):
        # run_Unsupervise_AD hides every exception (a missing torch or hurst too) behind this text.
        raise RuntimeError(f"tsb-ad {name}: {output} {printed.getvalue().strip()}")
    scores = np.asarray(output, dtype=np.float64).ravel()
    if scores.shape[0] != values.shape[0]:
        raise RuntimeError(f"tsb-ad {name} returned {scores.shape[0]} scores for {values.shape[0]} steps")
    low, high = float(scores.min()), float(scores.max())
    scaled: FloatArray = (scores - low) / (high - low) if high > low else np.zeros_like(scores)
    return scaled


def tsb_ad_flags(scores: FloatArray) -> BoolArray:
    """TSB-AD's point predictions: scores above their mean + 3 standard deviations."""
    flags: BoolArray = scores > scores.mean() + 3 * scores.std()
    return flags


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)

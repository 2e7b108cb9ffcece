"""Window 64 against the window chosen from the dominant period (`window` 0), side by side.

Each series is fitted on its training data with each window and scored whole (`auto` is
`window` 0; `periods_<k>` the same rule with k periods per window, set explicitly); VUS-PR
is TSB-AD's (the accuracy benchmark's metric code, sliding window from its find_period).
Prints a row per series and writes JSON (default bench/results/auto_window.json).

    python -m bench.auto_window [--out PATH] [--tsb 006,146,...] [--kinds level,frequency]
                                [--variants fixed_64,auto,periods_1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import datasets, synthetic
from bench.accuracy_metrics import reference_metrics
from bench.report import write_json
from stad.core import metrics
from stad.core.detector_config import DetectorConfig
from stad.server.detector.choices import channel_kind, series_period, window_for_period

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "auto_window.json"
VARIANTS = "fixed_64,auto"


def variant_window(tag: str, train: Any) -> int:
    """The window a variant fits with: fixed_<n>, auto (0: the detector chooses) or periods_<k>."""
    if tag == "auto":
        return 0
    kind, number = tag.rsplit("_", 1)
    if kind == "fixed":
        return int(number)
    kinds = tuple(channel_kind(train[:, c]) for c in range(train.shape[1]))
    patch = DetectorConfig().model.patch
    return window_for_period(series_period(train, kinds), train.shape[0], patch, periods=float(number))


def measure(series: datasets.LabelledSeries, variants: Sequence[str]) -> dict[str, Any]:
    from stad.server.detector import Detector

    sliding = metrics.find_period(series.values[:, 0])
    row: dict[str, Any] = {"name": series.name, "train_steps": int(series.train.shape[0])}
    for tag in variants:
        window = variant_window(tag, series.train)
        started = time.perf_counter()
        det = Detector(DetectorConfig().replace(window=window)).fit(series.train, channels=series.channels)
        fit_s = time.perf_counter() - started
        scores = det.score(series.values).score
        row[tag] = {
            "window": det.config.model.window,
            "period": det.choices_.period,
            "vus_pr": reference_metrics(scores, series.labels, sliding)["vus_pr"],
            "fit_s": fit_s,
        }
    print(
        f"{series.name[:40]:<40} "
        + "  ".join(f"{tag} (window {row[tag]['window']}): {row[tag]['vus_pr']:.3f}" for tag in variants)
        + f"  period {row[variants[-1]]['period']}",
        flush=True,
    )
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tsb", default="001,006,146,150", help="TSB-AD-M file ids")
    parser.add_argument("--kinds", default="pattern,frequency", help="synthetic kinds")
    parser.add_argument("--variants", default=VARIANTS, help="fixed_<n>, auto, periods_<k>")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    series = datasets.load_tsb_ad_m(frozenset(args.tsb.split(",")))
    series += synthetic.load_synthetic(frozenset(args.kinds.split(",")))
    rows = [measure(s, variants) for s in series]
    means = {tag: statistics.fmean(r[tag]["vus_pr"] for r in rows) for tag in variants}
    print("mean VUS-PR " + "  ".join(f"{tag} {value:.3f}" for tag, value in means.items()))
    write_json(args.out, {"series": rows, "mean_vus_pr": means})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Window 64 against the window chosen from the dominant period (`window` 0), side by side.

Each series is fitted on its training data with each window and scored whole; VUS-PR
is TSB-AD's (the accuracy benchmark's metric code, sliding window from its find_period).
Prints a row per series and writes JSON (default bench/results/auto_window.json).

    python -m bench.auto_window [--out PATH] [--tsb 006,146,...] [--kinds level,frequency]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import datasets, synthetic
from bench.accuracy_metrics import reference_metrics
from stad.core import metrics
from stad.core.detector_config import DetectorConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "auto_window.json"
WINDOWS = {"fixed_64": 64, "auto": 0}


def measure(series: datasets.LabelledSeries) -> dict[str, Any]:
    from stad.server.detector import Detector

    sliding = metrics.find_period(series.values[:, 0])
    row: dict[str, Any] = {"name": series.name, "train_steps": int(series.train.shape[0])}
    for tag, window in WINDOWS.items():
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
        f"{series.name[:40]:<40} 64: {row['fixed_64']['vus_pr']:.3f}  "
        f"auto (window {row['auto']['window']}, period {row['auto']['period']}): {row['auto']['vus_pr']:.3f}",
        flush=True,
    )
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tsb", default="006,008,146,150", help="TSB-AD-M file ids")
    parser.add_argument("--kinds", default="level,frequency", help="synthetic kinds")
    args = parser.parse_args(argv)
    series = datasets.load_tsb_ad_m(frozenset(args.tsb.split(",")))
    series += synthetic.load_synthetic(frozenset(args.kinds.split(",")))
    rows = [measure(s) for s in series]
    means = {tag: statistics.fmean(r[tag]["vus_pr"] for r in rows) for tag in WINDOWS}
    print("mean VUS-PR " + "  ".join(f"{tag} {value:.3f}" for tag, value in means.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"series": rows, "mean_vus_pr": means}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

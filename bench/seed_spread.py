"""How far one fit's accuracy moves with the training seed and torch's thread count.

The accuracy benchmark fits each series once (seed 0, one torch thread per worker).
This fits the nine TSB-AD-M files and the synthetic kinds again under each training
seed in `--seeds` and each thread count in `--threads`, every other setting at its
default, and scores them with the accuracy benchmark's VUS-PR. Prints a row per
series and writes JSON (default bench/results/seed_spread.json) ending with a
`summary`: the mean over series of each one's spread (max - min VUS-PR) and the
mean VUS-PR of each run.

    python -m bench.seed_spread [--seeds 0,1,2] [--threads 1,2] [--jobs 2] [--only tsb,synthetic]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import datasets, synthetic
from bench.report import write_json
from stad.core import metrics
from stad.core.detector_config import DetectorConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "seed_spread.json"


def fit_and_score(task: tuple[datasets.LabelledSeries, int, int]) -> tuple[str, str, float, float]:
    """One fit of one series under (seed, threads): its name, the run's tag, VUS-PR, fit seconds."""
    import torch

    from stad.server.detector import Detector

    series, seed, threads = task
    torch.set_num_threads(threads)
    started = time.perf_counter()
    detector = Detector(DetectorConfig().replace(seed=seed)).fit(series.train, channels=series.channels)
    fit_s = time.perf_counter() - started
    scores = detector.score(series.values).score
    vus = metrics.vus_pr(scores, series.labels, sliding_window=metrics.find_period(series.values[:, 0]))
    return series.name, run_tag(seed, threads), vus, fit_s


def run_tag(seed: int, threads: int) -> str:
    return f"seed {seed}, {threads} thread{'s' if threads > 1 else ''}"


def load(sections: Sequence[str]) -> list[datasets.LabelledSeries]:
    series: list[datasets.LabelledSeries] = []
    if "tsb" in sections:
        series += datasets.load_tsb_ad_m()
    if "synthetic" in sections:
        series += synthetic.load_synthetic()
    return series


def summarise(rows: dict[str, dict[str, float]], tags: Sequence[str]) -> dict[str, Any]:
    spreads = [max(row.values()) - min(row.values()) for row in rows.values()]
    return {
        "mean_spread": statistics.fmean(spreads),
        "max_spread": max(spreads),
        "mean_vus_pr_by_run": {tag: statistics.fmean(row[tag] for row in rows.values()) for tag in tags},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_spread", description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--jobs", type=int, default=2, help="fits at once, in worker processes")
    parser.add_argument("--only", default="tsb,synthetic", help="tsb,synthetic")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    series = load([s.strip() for s in args.only.split(",")])
    tags = [run_tag(seed, n) for seed in seeds for n in threads]
    tasks = [(s, seed, n) for s in series for seed in seeds for n in threads]
    vus: dict[str, dict[str, float]] = {s.name: {} for s in series}
    fit_s: dict[str, dict[str, float]] = {s.name: {} for s in series}
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, tag, value, seconds in pool.map(fit_and_score, tasks):
            vus[name][tag], fit_s[name][tag] = value, seconds
    for name, row in vus.items():
        cells = "  ".join(f"{row[tag]:.3f}" for tag in tags)
        print(f"{name[:40]:<40} {cells}  spread {max(row.values()) - min(row.values()):.3f}", flush=True)
    report = {
        "runs": tags,
        "vus_pr": vus,
        "fit_s": fit_s,
        "summary": summarise(vus, tags),
    }
    print("runs:", ", ".join(tags))
    print("summary:", json.dumps(report["summary"], indent=2))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Events from flags: how `min_duration` and `merge_gap` shape the detected spans.

`python -m bench.events` trains the detector as `make demo` does (its generator,
3 epochs, the demo's seeds) and scores the test half once per seed; then it
applies the causal event filter (`stad.core.events.EventFilter`) to the raw
flags (score >= threshold, drift included) for a grid of settings, all in one
run. It prints a table and writes bench/results/events.json:

    {"runs": [{"seed", "labelled_events", "grid": [{"min_duration", "merge_gap",
               "spans", "flagged_share", "event_precision", "event_recall", "event_f1",
               "point_f1"}, ...]}, ...],
     "summary": {"<min_duration>/<merge_gap>": {"mean_spans_per_labelled", "mean_event_f1",
                 "mean_point_f1"}, ...}}

Spans per labelled anomaly near 1 with a high event F1 is what the defaults aim at.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import write_json
from stad.core.demo_data import generate
from stad.core.events import EventFilter, spans
from stad.core.metrics import confusion_matrix, event_scores
from stad.server.detector import Detector, DetectorConfig

RESULTS = Path(__file__).resolve().parent / "results" / "events.json"
MIN_DURATIONS = (1, 2, 3, 5)
MERGE_GAPS = (0, 5, 10, 20, 30, 60)


def run_seed(seed: int, epochs: int) -> dict[str, Any]:
    data = generate(seed=seed)
    quiet = data.quiet_steps
    config = DetectorConfig().replace(epochs=epochs, seed=seed, min_duration=1, merge_gap=0)
    detector = Detector(config).fit(data.values[:quiet], channels=data.channels)
    out = detector.score(data.values[quiet:])
    labels = data.labels[quiet:]
    grid = []
    for min_duration in MIN_DURATIONS:
        for merge_gap in MERGE_GAPS:
            flags = EventFilter(min_duration, merge_gap).add(out.is_anomaly)
            events = event_scores(labels, flags)
            grid.append(
                {
                    "min_duration": min_duration,
                    "merge_gap": merge_gap,
                    "spans": len(spans(flags)),
                    "flagged_share": float(flags.mean()),
                    "event_precision": events.precision,
                    "event_recall": events.recall,
                    "event_f1": events.f1,
                    "point_f1": confusion_matrix(labels, flags).f1,
                }
            )
    return {"seed": seed, "labelled_events": len(spans(labels)), "grid": grid}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for index, cell in enumerate(runs[0]["grid"]):
        cells = [run["grid"][index] for run in runs]
        summary[f"{cell['min_duration']}/{cell['merge_gap']}"] = {
            "mean_spans_per_labelled": float(
                np.mean([c["spans"] / run["labelled_events"] for c, run in zip(cells, runs, strict=True)])
            ),
            "mean_event_f1": float(np.nanmean([c["event_f1"] for c in cells])),
            "mean_point_f1": float(np.nanmean([c["point_f1"] for c in cells])),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on shared CPUs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.epochs))
        print(f"seed {seed}: {runs[-1]['labelled_events']} labelled anomalies", flush=True)
    summary = summarise(runs)
    print(f"{'min_duration/merge_gap':>24} {'spans/labelled':>15} {'event F1':>9} {'point F1':>9}")
    for key, row in summary.items():
        print(
            f"{key:>24} {row['mean_spans_per_labelled']:>15.2f} "
            f"{row['mean_event_f1']:>9.3f} {row['mean_point_f1']:>9.3f}"
        )
    write_json(args.out, {"runs": runs, "summary": summary})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

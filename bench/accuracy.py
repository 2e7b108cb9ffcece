"""`make bench-accuracy`: stad with its defaults against baselines rerun by tsb-ad, in one run.

stad runs exactly as `stad train FILE` does with no flags: `Detector()` (every
setting at its `DetectorConfig` default), fitted on the training rows, then
scored with the threshold it chose itself. Only the data split is the
protocol's:

- SKAB (34 files): fit on the first 400 rows of each file, predict every row;
  one confusion matrix pooled over all rows of all files:
  F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN), MAR = FN / (FN + TP).
- TSB-AD-M (the nine files in ../shared/data/tsb-ad-m): fit on the `tr_N`
  prefix, score every row; metrics by TSB-AD's own `get_metrics` with the
  sliding window from the period of channel 0.
- Synthetic (bench/synthetic.yaml, GutenTAG): fit on the clean training
  series, score the test series; metrics as for TSB-AD-M.

Baselines (PCA, IForest, KMeansAD) are rerun on the scored series by the
`tsb-ad` package's own code (bench/baselines.py); published figures
(bench/published.py) are shown beside them. Writes bench/results/accuracy.json,
ending with a `summary` of the issue's targets, and prints tables.

    python -m bench.accuracy [--quick] [--only skab,tsb,synthetic] [--out PATH]

`--quick` (or STAD_BENCH_QUICK=1) runs a fixed subset for iteration: 6 SKAB
files, 3 TSB-AD-M files and 2 synthetic kinds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import baselines, datasets, published, synthetic
from bench.accuracy_metrics import event_row, reference_metrics
from bench.report import write_json
from stad.core import metrics

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
SECTIONS = ("skab", "tsb", "synthetic")
QUICK_ENV = "STAD_BENCH_QUICK"
DRIFT_ONLY = "stad, drift flags alone"
DRIFT_CEILING = "ceiling under drift flags"
QUICK_SKAB_EVERY = 6  # every 6th SKAB file
QUICK_TSB = frozenset({"006", "008", "148"})
QUICK_SYNTHETIC = frozenset({"level", "pattern"})
SUMMARY_KEYS = (
    "skab_f1",
    "skab_far",
    "skab_mar",
    "tsb_mean_vus_pr",
    "tsb_best_baseline_mean_vus_pr",
    "tsb_files_below_a_published_method",
    "synthetic_min_margin",
    "median_fit_s",
    "max_train_flag_rate",
)


@dataclasses.dataclass
class StadRun:
    """stad's scores and flags on one series, and what the fit chose."""

    scores: np.ndarray[Any, np.dtype[np.float64]]
    flags: np.ndarray[Any, np.dtype[np.bool_]]
    out_of_range: np.ndarray[Any, np.dtype[np.bool_]]  # the drift flags alone
    train_flag_rate: float
    fit_s: float
    score_s: float
    threshold: float
    model: dict[str, Any]


def run_stad(series: datasets.LabelledSeries, device: str) -> StadRun:
    """Fit stad with its defaults on the series' training data and score the series."""
    from stad.server.detector import Detector

    started = time.perf_counter()
    detector = Detector(device=device).fit(series.train, channels=series.channels)
    fitted = time.perf_counter()
    out = detector.score(series.values)
    scored = time.perf_counter()
    if series.train_in_values:
        train_flags = out.is_anomaly[: series.train_size]
    else:
        train_flags = detector.score(series.train).is_anomaly
    meta = detector.metadata_
    return StadRun(
        scores=np.asarray(out.score, dtype=np.float64),
        flags=np.asarray(out.is_anomaly, dtype=bool),
        out_of_range=np.asarray(out.out_of_range, dtype=bool),
        train_flag_rate=float(train_flags.mean()),
        fit_s=fitted - started,
        score_s=scored - fitted,
        threshold=float(out.threshold),
        model={key: meta[key] for key in ("config", "thresholds", "training_metrics") if key in meta}
        | {key: value for key, value in meta.items() if key.startswith("data_")},
    )


# ------------------------------------------------------------------------------------------ SKAB
def skab_file(series: datasets.LabelledSeries, device: str) -> dict[str, Any]:
    """stad and the tsb-ad baselines on one SKAB file: its row and each method's confusion counts."""
    run = run_stad(series, device)
    counts = metrics.confusion_matrix(series.labels, run.flags)
    confusions = {"stad": dataclasses.asdict(counts)} | {
        name: dataclasses.asdict(metrics.confusion_matrix(series.labels, flags))
        for name, flags in ((DRIFT_ONLY, run.out_of_range), (DRIFT_CEILING, _drift_ceiling(series, run)))
    }
    baselines_f1: dict[str, float] = {}
    started = time.perf_counter()
    for name in baselines.METHODS:
        base_counts = metrics.Confusion(0, 0, 0, 0)  # pooled over the method's seeds
        for seed in baselines.SEEDS[name]:
            flags = baselines.tsb_ad_flags(baselines.tsb_ad_scores(name, series.values, seed))
            base_counts += metrics.confusion_matrix(series.labels, flags)
        confusions[name] = dataclasses.asdict(base_counts)
        baselines_f1[name] = base_counts.f1
    print(
        f"skab {series.name:<10} stad f1 {counts.f1:.3f} train flags {run.train_flag_rate:.3f} "
        f"fit {run.fit_s:.1f}s",
        flush=True,
    )
    return {
        "f1": counts.f1,
        "far": counts.far,
        "mar": counts.mar,
        **event_row(series.labels, run.flags),
        "train_flag_rate": run.train_flag_rate,
        "fit_s": run.fit_s,
        "score_s": run.score_s,
        "baselines_f1": baselines_f1,
        "baselines_s": time.perf_counter() - started,
        "confusions": confusions,
    }


def _drift_ceiling(series: datasets.LabelledSeries, run: StadRun) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The flags of a detector that must flag drift and is otherwise perfect: every labelled
    step after the training rows (a fit flags none of its own rows), and every drift step."""
    flags = series.labels.copy()
    flags[: series.train_size] = False
    out: np.ndarray[Any, np.dtype[np.bool_]] = flags | run.out_of_range
    return out


def skab_section(per_file: dict[str, Any]) -> dict[str, Any]:
    """SKAB's protocol: one confusion matrix per method pooled over every row of every file."""
    pooled: dict[str, Any] = {}
    for name in ("stad", DRIFT_ONLY, DRIFT_CEILING, *baselines.METHODS):
        total = metrics.Confusion(0, 0, 0, 0)
        for row in per_file.values():
            total += metrics.Confusion(**row["confusions"][name])
        pooled[name] = {
            "f1": total.f1,
            "far": total.far,
            "mar": total.mar,
            "confusion": dataclasses.asdict(total),
        }
    pooled["stad"].update(
        fit_s=sum(row["fit_s"] for row in per_file.values()),
        score_s=sum(row["score_s"] for row in per_file.values()),
    )
    return {
        "protocol": "fit on the first 400 rows of each file, predict every row, pooled confusion",
        "baseline_protocol": "tsb-ad code on the whole file, flags above mean + 3 std (not SKAB's protocol); "
        "KMeansAD's confusion pooled over its seeds",
        "drift_only": f"{DRIFT_ONLY!r}: stad's flags for steps beyond the training range alone, "
        "which the detector must raise whatever its scores; "
        f"{DRIFT_CEILING!r}: those flags plus every labelled row after the training rows, "
        "the best any detector that flags drift can reach",
        "files": len(per_file),
        "pooled": pooled,
        "per_file": per_file,
        "published": {
            k: {"f1": v[0], "far_pct": v[1], "mar_pct": v[2]} for k, v in published.SKAB_LEADERBOARD.items()
        },
    }


# ----------------------------------------------------------------------- TSB-AD-M and synthetic
def _method_row(
    scores: np.ndarray[Any, np.dtype[np.float64]],
    flags: np.ndarray[Any, np.dtype[np.bool_]],
    series: datasets.LabelledSeries,
    window: int,
) -> dict[str, Any]:
    row: dict[str, Any] = reference_metrics(scores, series.labels, window)
    row.update(event_row(series.labels, flags))
    return row


def run_scored_series(series: datasets.LabelledSeries, device: str) -> dict[str, Any]:
    """stad and every baseline on one series, with TSB-AD's metrics."""
    window = metrics.find_period(series.values[:, 0])
    run = run_stad(series, device)
    stad_row = _method_row(run.scores, run.flags, series, window)
    ours = metrics.vus_pr(run.scores, series.labels, sliding_window=window)
    if abs(ours - stad_row["vus_pr"]) > 1e-9:
        raise RuntimeError(f"stad.core.metrics VUS-PR {ours} != TSB-AD's {stad_row['vus_pr']}")
    stad_row.update(
        train_flag_rate=run.train_flag_rate,
        flag_rate=float(run.flags.mean()),
        threshold=run.threshold,
        fit_s=run.fit_s,
        score_s=run.score_s,
        model=run.model,
    )
    rows: dict[str, Any] = {"stad": stad_row}
    for name in baselines.METHODS:
        rows[name] = _baseline_row(name, series, window)
    return {
        "name": series.name,
        "steps": int(series.values.shape[0]),
        "channels": int(series.values.shape[1]),
        "train_steps": int(series.train.shape[0]),
        "sliding_window": window,
        "methods": rows,
    }


def _print_series(tag: str, result: dict[str, Any]) -> None:
    vus = {name: row["vus_pr"] for name, row in result["methods"].items()}
    stad = result["methods"]["stad"]
    print(
        f"{tag:<10} VUS-PR "
        + " ".join(f"{k} {v:.3f}" for k, v in vus.items())
        + f" | train flags {stad['train_flag_rate']:.3f} fit {stad['fit_s']:.1f}s",
        flush=True,
    )


def _baseline_row(name: str, series: datasets.LabelledSeries, window: int) -> dict[str, Any]:
    """A baseline's metrics, the mean over its seeds (`baselines.SEEDS`), each seed's VUS-PR beside."""
    per_seed = []
    for seed in baselines.SEEDS[name]:
        started = time.perf_counter()
        scores = baselines.tsb_ad_scores(name, series.values, seed)
        elapsed = time.perf_counter() - started
        per_seed.append(_method_row(scores, baselines.tsb_ad_flags(scores), series, window))
        per_seed[-1]["fit_and_score_s"] = elapsed
    row: dict[str, Any] = {key: _mean_or_none([r[key] for r in per_seed]) for key in per_seed[0]}
    row.update(seeds=list(baselines.SEEDS[name]), vus_pr_by_seed=[r["vus_pr"] for r in per_seed])
    return row


def _mean_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def tsb_file(series: datasets.LabelledSeries, device: str) -> dict[str, Any]:
    """One TSB-AD-M file: every method, the published figures and stad's rank among them."""
    fid = datasets.file_id(series.name)
    result = run_scored_series(series, device)
    paper = published.TSB_AD_M_VUS_PR[fid]
    stad_vus = result["methods"]["stad"]["vus_pr"]
    better = sorted(name for name, value in paper.items() if value > stad_vus)
    result["published_vus_pr"] = paper
    result["stad_rank_among_published"] = 1 + len(better)
    result["published_methods"] = len(paper)
    result["published_above_stad"] = better
    _print_series(f"tsb {fid}", result)
    return result


def tsb_section(per_file: dict[str, Any]) -> dict[str, Any]:
    names = ("stad", *baselines.METHODS)
    means = {n: statistics.fmean(r["methods"][n]["vus_pr"] for r in per_file.values()) for n in names}
    return {
        "protocol": "stad: fit on the tr_N prefix, score every row; baselines: tsb-ad code on the whole file",
        "files": per_file,
        "mean_vus_pr": means,
    }


def synthetic_kind(series: datasets.LabelledSeries, device: str) -> dict[str, Any]:
    """One synthetic series: every method and stad's margin over the best baseline."""
    result = run_scored_series(series, device)
    best = max(baselines.METHODS, key=lambda n: result["methods"][n]["vus_pr"])
    result["best_baseline"] = best
    result["margin_over_best_baseline"] = (
        result["methods"]["stad"]["vus_pr"] - result["methods"][best]["vus_pr"]
    )
    _print_series(series.name, result)
    return result


def synthetic_section(per_kind: dict[str, Any]) -> dict[str, Any]:
    return {
        "protocol": "stad: fit on the clean training series, score the test series; baselines: "
        "tsb-ad code on the test series",
        "config": "bench/synthetic.yaml",
        "seed": synthetic.SEED,
        "kinds": per_kind,
    }


# ------------------------------------------------------------------------------------ summary
def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, from whatever sections ran (None where a section did not)."""
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    flag_rates: list[float] = []
    if "skab" in report:
        stad = report["skab"]["pooled"]["stad"]
        summary.update(skab_f1=stad["f1"], skab_far=stad["far"], skab_mar=stad["mar"])
        flag_rates += [row["train_flag_rate"] for row in report["skab"]["per_file"].values()]
    if "tsb_ad_m" in report:
        tsb = report["tsb_ad_m"]
        means = tsb["mean_vus_pr"]
        files = tsb["files"].values()
        summary.update(
            tsb_mean_vus_pr=means["stad"],
            tsb_best_baseline_mean_vus_pr=max(means[n] for n in baselines.METHODS),
            tsb_files_below_a_published_method=sum(1 for r in files if r["published_above_stad"]),
            median_fit_s=statistics.median(r["methods"]["stad"]["fit_s"] for r in files),
        )
        flag_rates += [r["methods"]["stad"]["train_flag_rate"] for r in files]
    if "synthetic" in report:
        kinds = report["synthetic"]["kinds"].values()
        summary["synthetic_min_margin"] = min(r["margin_over_best_baseline"] for r in kinds)
        flag_rates += [r["methods"]["stad"]["train_flag_rate"] for r in kinds]
    if flag_rates:
        summary["max_train_flag_rate"] = max(flag_rates)
    return summary


def _cell(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.3f}"


def _print_tables(report: dict[str, Any]) -> None:
    if "skab" in report:
        skab = report["skab"]
        print(f"\nSKAB ({skab['files']} files, pooled)          F1   FAR %  MAR %")
        for name, row in skab["pooled"].items():
            print(f"{name:<32}{row['f1']:>6.3f}{100 * row['far']:>7.2f}{100 * row['mar']:>7.2f}")
        for name, row in skab["published"].items():
            far = "-" if row["far_pct"] is None else f"{row['far_pct']:.2f}"
            mar = "-" if row["mar_pct"] is None else f"{row['mar_pct']:.2f}"
            print(f"{name + ' (published)':<32}{row['f1']:>6.2f}{far:>7}{mar:>7}")
    for key, label in (("tsb_ad_m", "files"), ("synthetic", "kinds")):
        if key not in report:
            continue
        print(f"\n{key}: VUS-PR / AUC-PR / AUC-ROC / Std-F1 / event F1 / fit s")
        for tag, result in report[key][label].items():
            for name, row in result["methods"].items():
                fit = row.get("fit_s", row.get("fit_and_score_s", 0.0))
                cells = [row[k] for k in ("vus_pr", "auc_pr", "auc_roc", "standard_f1", "event_f1")]
                print(f"{tag:<10}{name:<10}" + "".join(_cell(v) for v in cells) + f"{fit:>8.1f}")
    print("\nsummary:", json.dumps(report["summary"], indent=2))


def _work(task: tuple[str, datasets.LabelledSeries, str]) -> tuple[str, str, dict[str, Any]]:
    """One series of one section, in a worker process (torch on one thread)."""
    import torch

    torch.set_num_threads(1)
    section, series, device = task
    runner = {"skab": skab_file, "tsb": tsb_file, "synthetic": synthetic_kind}[section]
    return section, series.name, runner(series, device)


def _collect(results: dict[str, dict[str, Any]], section: str, name: str, result: dict[str, Any]) -> None:
    key = {"tsb": datasets.file_id(name), "synthetic": name.split("/", 1)[-1]}.get(section, name)
    results[section][key] = result


def _tasks(chosen: Sequence[str], quick: bool) -> list[tuple[str, datasets.LabelledSeries]]:
    tasks: list[tuple[str, datasets.LabelledSeries]] = []
    if "tsb" in chosen:  # the longest first, so the pool ends together
        tasks += [("tsb", s) for s in datasets.load_tsb_ad_m(QUICK_TSB if quick else None)]
    if "synthetic" in chosen:
        tasks += [("synthetic", s) for s in synthetic.load_synthetic(QUICK_SYNTHETIC if quick else None)]
    if "skab" in chosen:
        files = datasets.load_skab()
        tasks += [("skab", s) for s in (files[::QUICK_SKAB_EVERY] if quick else files)]
    return tasks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections: skab,tsb,synthetic")
    parser.add_argument("--quick", action="store_true", default=os.environ.get(QUICK_ENV) == "1")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (each torch on one thread)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="reuse series finished in <out>.partial.jsonl")
    parser.add_argument(
        "--report-only", action="store_true", help="with --resume: report the journal's series, run none"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    for name in chosen:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; expected some of {', '.join(SECTIONS)}")
    report: dict[str, Any] = {
        "meta": {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jobs": args.jobs,
            "device": args.device,
            "quick": args.quick,
            "stad_settings": "Detector() defaults, as `stad train FILE` with no flags",
            "timing_note": "wall seconds on a shared machine, with `jobs` series fitted at once",
        }
    }
    # Each series' result is appended to a journal as it ends; --resume skips those already there.
    journal = args.out.with_suffix(".partial.jsonl")
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if args.resume and journal.exists():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            done[(entry["section"], entry["name"])] = entry["result"]
    else:
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text("")
    todo = [(sec, series, args.device) for sec, series in _tasks(chosen, args.quick)]
    results: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for (section, name), result in done.items():
        _collect(results, section, name, result)
    todo = [task for task in todo if (task[0], task[1].name) not in done and not args.report_only]
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in concurrent.futures.as_completed([pool.submit(_work, task) for task in todo]):
            section, name, result = future.result()
            _collect(results, section, name, result)
            with journal.open("a") as handle:
                handle.write(json.dumps({"section": section, "name": name, "result": result}) + "\n")
    planned = [task[0] for task in _tasks(chosen, args.quick)] if args.report_only else []
    report["meta"]["series_reported"] = {name: len(results[name]) for name in SECTIONS}
    if args.report_only:
        report["meta"]["series_planned"] = {name: planned.count(name) for name in SECTIONS}
    if results["skab"]:
        report["skab"] = skab_section(dict(sorted(results["skab"].items())))
    if results["tsb"]:
        report["tsb_ad_m"] = tsb_section(dict(sorted(results["tsb"].items())))
    if results["synthetic"]:
        report["synthetic"] = synthetic_section(dict(sorted(results["synthetic"].items())))
    report["meta"]["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["summary"] = summarise(report)
    _print_tables(report)
    write_json(args.out, report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

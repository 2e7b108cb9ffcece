"""`stad score` and `stad evaluate`: score a data file (with its labels: and report metrics)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stad.client._chunks import join_results
from stad.client._client import Client
from stad.client._exceptions import DataError
from stad.client._types import ScoreResult
from stad.client.cli.connect import connect
from stad.client.cli.data import add_data_options, read
from stad.client.cli.errors import EXIT_OK
from stad.client.cli.options import Commands, opt
from stad.client.cli.output import emit_json, number, table, warn
from stad.client.data_files import DataTable, check_data_path, check_output_path, format_times, write_scores


def register(commands: Commands) -> None:
    for name, handler, text in [
        ("score", cmd_score, "score a data file"),
        ("evaluate", cmd_evaluate, "score a labelled data file and print metrics"),
    ]:
        child = commands.add(name, handler, text)
        add_data_options(child)
        child.add_argument("--version", help="model version (default: the active one)")
        child.add_argument("--threshold", type=float, help="override the model's threshold")
        child.add_argument("--plot", metavar="PNG", help="write a plot")
        if name == "score":
            child.add_argument(
                "-o", "--output", metavar="CSV", help="write the scores as CSV ('-' for stdout)"
            )
        else:
            child.add_argument("--label-column", required=True, help="0/1 label column")


def _model_channels(client: Client, name: str, version: str | None) -> tuple[str, ...] | None:
    info = client.model(name, version=version)
    chosen = info.versions[-1] if version else info.active
    return chosen.channels if chosen is not None and chosen.channels else None


def _score_table(
    client: Client, args: argparse.Namespace, label_column: str | None
) -> tuple[DataTable, ScoreResult]:
    channels = None if args.channels else _model_channels(client, args.model, args.version)
    data = read(args, channels=channels, label_column=label_column)
    # streamed, so that no single response message has to hold a long file's scores (and
    # in chunks of calls when long, so that no request has to hold the whole file)
    chunks = client.stream_score(
        data.values,
        timestamps=data.timestamps_ns,
        channels=data.channels,
        model=args.model,
        version=args.version,
        threshold=args.threshold,
    )
    result = join_results(list(chunks))
    warn(result.warnings)
    return data, result


def _span_rows(data: DataTable, result: ScoreResult) -> list[dict[str, Any]]:
    times = format_times(data.timestamps_ns) if data.timestamps_ns is not None else None
    return [
        {
            "start": times[start] if times else start,
            "end": times[stop - 1] if times else stop - 1,
            "steps": stop - start,
            "max_score": float(np.nanmax(result.score[start:stop])),
            "top_channels": [name for name, _ in result.top_channels(start, stop, k=3)],
        }
        for start, stop in result.spans()
    ]


def _plot(args: argparse.Namespace, data: DataTable, result: ScoreResult, labels: Any = None) -> None:
    from stad.client.plots import plot_scores

    title = f"{Path(args.file).name}: model {result.model} v{result.version}"
    plot_scores(args.plot, data, result, labels=labels, title=title)


def cmd_score(args: argparse.Namespace) -> int:
    check_data_path(args.file)  # these before connecting and scoring, which may take long
    for path in (args.output, args.plot):
        if path:
            check_output_path(path)
    with connect(args, long_running=True) as client:
        data, result = _score_table(client, args, label_column=None)
    if args.output:
        write_scores(sys.stdout if args.output == "-" else args.output, data, result)
    if args.plot:
        _plot(args, data, result)
    summary = {
        "model": result.model,
        "version": result.version,
        "steps": result.steps,
        "threshold": result.threshold,
        "anomalous_steps": int(result.is_anomaly.sum()),
        "spans": _span_rows(data, result),
        "output": args.output,
        "plot": args.plot,
    }
    if opt(args, "json"):
        emit_json(summary)
    elif args.output != "-":
        _print_score_summary(summary)
    return EXIT_OK


SHOWN_SPANS = 20


def _print_score_summary(summary: Mapping[str, Any]) -> None:
    print(
        f"scored {summary['steps']} steps with {summary['model']} v{summary['version']}: "
        f"{summary['anomalous_steps']} anomalous steps in {len(summary['spans'])} span(s), "
        f"threshold {summary['threshold']:.4g}"
    )
    spans = summary["spans"]
    if spans:
        rows = [
            [
                str(s["start"]),
                str(s["end"]),
                str(s["steps"]),
                f"{s['max_score']:.3g}",
                ", ".join(s["top_channels"]),
            ]
            for s in spans[:SHOWN_SPANS]
        ]
        print(table(rows, ["start", "end", "steps", "max score", "top channels"]))
        if len(spans) > SHOWN_SPANS:
            print(f"... and {len(spans) - SHOWN_SPANS} more span(s)")
    for key in ("output", "plot"):
        if summary[key]:
            print(f"wrote {summary[key]}")


# Display names, in display order; point-adjusted figures last and labelled as optimistic.
METRIC_NAMES = {
    "precision": "precision (at threshold)",
    "recall": "recall (at threshold)",
    "f1": "F1 (at threshold)",
    "far": "false alarm rate",
    "mar": "missed alarm rate",
    "auc_roc": "ROC-AUC",
    "auc_pr": "PR-AUC",
    "vus_pr": "VUS-PR",
    "vus_roc": "VUS-ROC",
    "standard_f1": "best F1 (no point adjustment)",
    "standard_f1_threshold": "best-F1 threshold",
    "event_precision": "event precision (at threshold)",
    "event_recall": "event recall (at threshold)",
    "event_f1": "event F1 (at threshold)",
    "pa_f1": "point-adjusted best F1 (optimistic)",
    "pa_f1_at_threshold": "point-adjusted F1 at threshold (optimistic)",
}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stad.core.metrics import evaluate

    with connect(args, long_running=True) as client:
        data, result = _score_table(client, args, label_column=args.label_column)
    assert data.labels is not None  # read_table was given the label column
    if data.labels.min() == data.labels.max():
        raise DataError(f"label column {args.label_column!r} holds only {data.labels[0]}s; need both 0 and 1")
    metrics = evaluate(result.score, data.labels, predictions=result.is_anomaly)
    if args.plot:
        _plot(args, data, result, labels=data.labels)
    confusion = {key: int(metrics[key]) for key in ("tp", "fp", "tn", "fn")}
    report = {
        "model": result.model,
        "version": result.version,
        "steps": result.steps,
        "threshold": result.threshold,
        "metrics": {key: value for key, value in metrics.items() if key not in confusion},
        "confusion_matrix": confusion,
        "plot": args.plot,
    }
    if opt(args, "json"):
        emit_json(report)
        return EXIT_OK
    print(
        f"evaluated {result.steps} steps with {result.model} v{result.version}"
        f" (threshold {result.threshold:.4g})"
    )
    shown = report["metrics"]
    ordered = [key for key in METRIC_NAMES if key in shown] + [
        key for key in shown if key not in METRIC_NAMES
    ]
    print(
        table(
            [[METRIC_NAMES.get(key) or str(key), number(shown[key])] for key in ordered], ["metric", "value"]
        )
    )
    print()
    print(
        table(
            [
                ["labelled anomaly", str(confusion["tp"]), str(confusion["fn"])],
                ["labelled normal", str(confusion["fp"]), str(confusion["tn"])],
            ],
            ["confusion matrix", "flagged", "not flagged"],
        )
    )
    if args.plot:
        print(f"wrote {args.plot}")
    return EXIT_OK

"""The `stad` command line: a thin layer over `stad.client.Client`.

Exit codes: 0 ok, 1 a failure reported by the server or in the data, 2 bad
usage, 130 interrupted, 141 stdout closed early (`stad ... | head`). Errors
print one line `Name: message` on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from stad.client._channel import DEFAULT_MAX_MESSAGE_MB, DEFAULT_TIMEOUT_S
from stad.client._chunks import join_results
from stad.client._client import Client, TrainingJob
from stad.client._exceptions import DataError, StadError
from stad.client._types import JobStatus, ModelInfo, ScoreResult, TrainingSettings
from stad.client.data_files import (
    DataTable,
    check_data_path,
    check_output_path,
    format_times,
    read_table,
    write_scores,
)
from stad.core.jobs import JobState
from stad.core.progress import Progress, TrainingDisplay, duration
from stad.core.tokens import read_tokens

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_STDOUT_CLOSED = 0, 1, 2, 130, 141


class UsageError(StadError):
    """Bad command-line usage that argparse cannot see (exit code 2)."""


class ExtraMissing(StadError):
    """A command needs an optional extra (server: torch; influx: influxdb-client) that is not installed."""


# -- output --------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {key: _jsonable(item) for key, item in asdict(value).items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _emit_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2))


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """`value` as JSON with --json, else `text`."""
    if _opt(args, "json"):
        _emit_json(value)
    else:
        print(text)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


# -- connecting ------------------------------------------------------------------


def default_home() -> Path:
    """Where the embedded server keeps models: $STAD_HOME, else the user's data directory."""
    if os.environ.get("STAD_HOME"):
        return Path(os.environ["STAD_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "stad"


@contextlib.contextmanager
def connect(args: argparse.Namespace, *, long_running: bool = False) -> Iterator[Client]:
    """A client for --server / STAD_SERVER, or for an embedded server on loopback.

    Calls get --timeout as deadline, else 60 s; `long_running` commands (scoring a
    whole file, uploading training data) get none unless --timeout is given.
    """
    server = _opt(args, "server") or os.environ.get("STAD_SERVER")
    token = _token(args)
    tls: bool | str | None = _opt(args, "ca_cert") or bool(_opt(args, "tls"))
    client_cert, client_key = _opt(args, "client_cert"), _opt(args, "client_key")
    if (client_cert or client_key) and not tls:
        raise UsageError("--client-cert and --client-key need --tls or --ca-cert")
    timeout_s = _opt(args, "timeout") or (None if long_running else DEFAULT_TIMEOUT_S)
    max_message_mb = _max_message_mb(args)
    if server:
        with Client(
            server,
            token=token,
            tls=tls,
            client_cert=client_cert,
            client_key=client_key,
            timeout_s=timeout_s,
            max_message_mb=max_message_mb,
        ) as client:
            yield client
        return
    try:
        from stad.server.embedded import EmbeddedServer  # type: ignore[import-not-found,unused-ignore]
        from stad.server.settings import Settings  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ExtraMissing(
            "no --server or STAD_SERVER given, and the embedded server needs the server extra "
            f"(missing {exc.name or exc}): pip install 'stad[server]'"
        ) from exc
    model_dir = (Path(_opt(args, "home")) if _opt(args, "home") else default_home()) / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(model_dir=model_dir, max_message_mb=max_message_mb)
    with (
        EmbeddedServer(model_dir, device=_opt(args, "device") or "auto", settings=settings) as embedded,
        Client(embedded.target, timeout_s=timeout_s, max_message_mb=max_message_mb) as client,
    ):
        yield client


def _token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file's first token, else $STAD_TOKEN, else $STAD_TOKEN_FILE's."""
    if _opt(args, "token"):
        return str(args.token)
    if _opt(args, "token_file"):
        return _first_token(args.token_file)
    if os.environ.get("STAD_TOKEN"):
        return os.environ["STAD_TOKEN"]
    if os.environ.get("STAD_TOKEN_FILE"):
        return _first_token(os.environ["STAD_TOKEN_FILE"])
    return None


def _first_token(path: str) -> str:
    try:
        return read_tokens(path)[0]
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _max_message_mb(args: argparse.Namespace) -> int:
    """--max-message-mb, else $STAD_MAX_MESSAGE_MB (the server's variable too), else 64."""
    given: int | None = _opt(args, "max_message_mb")
    if given is not None:
        return given
    text = os.environ.get("STAD_MAX_MESSAGE_MB", "")
    if not text:
        return DEFAULT_MAX_MESSAGE_MB
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"STAD_MAX_MESSAGE_MB must be a positive integer, got {text!r}") from exc


def _opt(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


# -- data ------------------------------------------------------------------------


def _read(
    args: argparse.Namespace, *, channels: Sequence[str] | None = None, label_column: str | None = None
) -> DataTable:
    given = [name.strip() for name in args.channels.split(",") if name.strip()] if args.channels else None
    return read_table(
        args.file,
        time_column=args.time_column,
        channels=given or channels,
        label_column=label_column,
        sep=args.sep,
    )


def _model_channels(client: Client, name: str, version: str | None) -> tuple[str, ...] | None:
    info = client.model(name, version=version)
    chosen = info.versions[-1] if version else info.active
    return chosen.channels if chosen is not None and chosen.channels else None


def _score_table(
    client: Client, args: argparse.Namespace, label_column: str | None
) -> tuple[DataTable, ScoreResult]:
    channels = None if args.channels else _model_channels(client, args.model, args.version)
    table = _read(args, channels=channels, label_column=label_column)
    # streamed, so that no single response message has to hold a long file's scores (and
    # in chunks of calls when long, so that no request has to hold the whole file)
    chunks = client.stream_score(
        table.values,
        timestamps=table.timestamps_ns,
        channels=table.channels,
        model=args.model,
        version=args.version,
        threshold=args.threshold,
    )
    return table, join_results(list(chunks))


def _span_rows(table: DataTable, result: ScoreResult, limit: int) -> list[dict[str, Any]]:
    times = format_times(table.timestamps_ns) if table.timestamps_ns is not None else None
    rows = []
    for start, stop in result.spans()[:limit]:
        rows.append(
            {
                "start": times[start] if times else start,
                "end": times[stop - 1] if times else stop - 1,
                "steps": stop - start,
                "max_score": float(np.nanmax(result.score[start:stop])),
                "top_channels": [name for name, _ in result.top_channels(start, stop, k=3)],
            }
        )
    return rows


# -- commands ----------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    table = _read(args, label_column=args.label_column)
    settings = TrainingSettings(
        epochs=args.epochs,
        window=args.window,
        patch=args.patch,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        val_fraction=args.val_fraction,
        finetune_epochs=args.finetune_epochs,
        smoothing=args.smoothing,
        threshold_quantile=args.threshold_quantile,
    )
    embedded = not (_opt(args, "server") or os.environ.get("STAD_SERVER"))
    with connect(args, long_running=True) as client:
        job = client.train(
            table.values,
            timestamps=table.timestamps_ns,
            channels=table.channels,
            labels=table.labels,
            model=args.model,
            settings=settings,
            activate=not args.no_activate,
            description=args.description,
        )
        if not _opt(args, "json"):
            print(
                f"job {job.job_id}: training {args.model} on {table.steps} steps"
                f" x {len(table.channels)} channels",
                flush=True,
            )
        if args.detach:
            if embedded:
                raise UsageError("--detach needs --server: the embedded server stops when stad exits")
            _report_job(args, job.status)
            return EXIT_OK
        started = time.monotonic()
        status = _follow(job, embedded=embedded)
        if status is None:
            return EXIT_INTERRUPTED
        _report_job(args, status, seconds=time.monotonic() - started)
        return EXIT_OK if status.state is JobState.SUCCEEDED else EXIT_FAILURE


def _follow(job: TrainingJob, *, embedded: bool) -> JobStatus | None:
    """Watch a job with a progress bar on stderr until it ends (None: interrupted).

    Ctrl-C cancels the job only when the user answers "y" at a terminal; any other
    answer, or no terminal, leaves it running on the server and stops watching. A
    job on the embedded server cannot outlive stad, so there "no" keeps watching.
    """
    progress = Progress()
    display = TrainingDisplay(progress)
    while True:
        try:
            for status in job.watch():
                display.update(status)
            progress.close()
            return job.status
        except KeyboardInterrupt:
            progress.close()
            if _confirm(f"cancel training job {job.job_id}? [y/N] "):
                status = job.cancel()
                print(f"job {job.job_id}: {status.state.value}", file=sys.stderr)
                return None
            if not embedded:
                print(_detached(job.job_id), file=sys.stderr)
                return None
            if not sys.stdin.isatty():
                print(
                    f"job {job.job_id} ends with the embedded server; "
                    "train with --server to keep jobs running after stad exits",
                    file=sys.stderr,
                )
                return None


def _detached(job_id: str) -> str:
    return (
        f"stopped watching; job {job_id} keeps running on the server\n"
        f"  watch it again: stad jobs watch {job_id}\n"
        f"  cancel it:      stad jobs cancel {job_id}"
    )


def _confirm(question: str) -> bool:
    """True only for "y" or "yes" typed at a terminal; no terminal, EOF, Ctrl-C or anything else is no."""
    if not sys.stdin.isatty():
        return False
    answer = ""
    try:  # a Ctrl-C right after the question is written is a "no" too
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    if not answer.endswith("\n"):  # EOF or Ctrl-C: end the prompt's line
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _report_job(args: argparse.Namespace, status: JobStatus, seconds: float | None = None) -> None:
    if _opt(args, "json"):
        _emit_json(status)
        return
    if status.state is JobState.SUCCEEDED:
        took = f" in {duration(seconds)}" if seconds is not None else ""
        print(f"job {status.job_id}: {status.model} version {status.version} trained{took}")
    else:
        reason = f": {status.error}" if status.error else ""
        print(f"job {status.job_id}: {status.state.value}{reason}")


def cmd_score(args: argparse.Namespace) -> int:
    check_data_path(args.file)  # these before connecting and scoring, which may take long
    for path in (args.output, args.plot):
        if path:
            check_output_path(path)
    with connect(args, long_running=True) as client:
        table, result = _score_table(client, args, label_column=None)
    if args.output:
        write_scores(sys.stdout if args.output == "-" else args.output, table, result)
    if args.plot:
        from stad.client.plots import plot_scores

        plot_scores(
            args.plot, table, result, title=f"{Path(args.file).name}: model {result.model} v{result.version}"
        )
    spans = _span_rows(table, result, limit=1_000_000)
    summary = {
        "model": result.model,
        "version": result.version,
        "steps": result.steps,
        "threshold": result.threshold,
        "anomalous_steps": int(result.is_anomaly.sum()),
        "spans": spans,
        "output": args.output,
        "plot": args.plot,
    }
    if _opt(args, "json"):
        _emit_json(summary)
    elif args.output != "-":
        _print_score_summary(summary)
    return EXIT_OK


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
            for s in spans[:20]
        ]
        print(_table(rows, ["start", "end", "steps", "max score", "top channels"]))
        if len(spans) > 20:
            print(f"... and {len(spans) - 20} more span(s)")
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
    "pa_f1": "point-adjusted best F1 (optimistic)",
    "pa_f1_at_threshold": "point-adjusted F1 at threshold (optimistic)",
}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stad.core.metrics import evaluate

    with connect(args, long_running=True) as client:
        table, result = _score_table(client, args, label_column=args.label_column)
    assert table.labels is not None  # read_table was given the label column
    if table.labels.min() == table.labels.max():
        raise DataError(
            f"label column {args.label_column!r} holds only {table.labels[0]}s; need both 0 and 1"
        )
    metrics = evaluate(result.score, table.labels, predictions=result.is_anomaly)
    if args.plot:
        from stad.client.plots import plot_scores

        plot_scores(
            args.plot,
            table,
            result,
            labels=table.labels,
            title=f"{Path(args.file).name}: model {result.model} v{result.version}",
        )
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
    if _opt(args, "json"):
        _emit_json(report)
        return EXIT_OK
    print(
        f"evaluated {result.steps} steps with {result.model} v{result.version}"
        f" (threshold {result.threshold:.4g})"
    )
    shown = report["metrics"]
    ordered = [key for key in METRIC_NAMES if key in shown] + [
        key for key in shown if key not in METRIC_NAMES
    ]
    rows = [[METRIC_NAMES.get(key) or str(key), _fmt(shown[key])] for key in ordered]
    print(_table(rows, ["metric", "value"]))
    print()
    print(
        _table(
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


def _model_rows(models: Sequence[ModelInfo]) -> list[list[str]]:
    rows = []
    for info in models:
        active = info.active
        rows.append(
            [
                info.name,
                info.active_version or "-",
                str(len(info.versions)),
                ", ".join(active.channels) if active else "-",
                f"{active.threshold:.4g}" if active else "-",
            ]
        )
    return rows


def cmd_models_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.models()
    if _opt(args, "json"):
        _emit_json(models)
    elif models:
        print(_table(_model_rows(models), ["model", "active", "versions", "channels", "threshold"]))
    else:
        print("no models")
    return EXIT_OK


def cmd_models_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.model(args.name, version=args.version)
    if _opt(args, "json"):
        _emit_json(info)
        return EXIT_OK
    print(f"model {info.name} (active version: {info.active_version or 'none'})")
    for item in info.versions:
        marker = "*" if item.version == info.active_version else " "
        created = item.created_at.isoformat(timespec="seconds") if item.created_at else "-"
        print(
            f"{marker} version {item.version}  created {created}  window {item.window}"
            f"  threshold {item.threshold:.4g}"
        )
        print(f"    channels: {', '.join(item.channels)}")
        for group, values in item.config.items():
            print(f"    {group}: " + ", ".join(f"{name}={value}" for name, value in values.items()))
        print(f"    trained on {item.train_steps} steps")
        if item.description:
            print(f"    {item.description}")
        if item.metrics:
            print("    " + ", ".join(f"{key} {_fmt(value)}" for key, value in sorted(item.metrics.items())))
    return EXIT_OK


def cmd_models_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_model(args.name, version=args.version)
    what = f"{args.name} version {args.version}" if args.version else args.name
    _emit(args, {"deleted": args.name, "version": args.version}, f"deleted {what}")
    return EXIT_OK


def cmd_models_activate(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.activate(args.name, args.version)
    _emit(args, info, f"{info.name}: active version {info.active_version}")
    return EXIT_OK


def cmd_jobs_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        jobs = client.jobs(model=args.model)
    if _opt(args, "json"):
        _emit_json(jobs)
    elif jobs:
        rows = [
            [
                job.job_id,
                job.model,
                job.state.value,
                job.version or "-",
                job.created_at.isoformat(timespec="seconds") if job.created_at else "-",
                job.error[:60],
            ]
            for job in jobs
        ]
        print(_table(rows, ["job", "model", "state", "version", "created", "error"]))
    else:
        print("no jobs")
    return EXIT_OK


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.job(args.job_id)
        status = _follow(job, embedded=False)
    if status is None:
        return EXIT_INTERRUPTED
    _report_job(args, status)
    return EXIT_OK if status.state is JobState.SUCCEEDED else EXIT_FAILURE


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.job(args.job_id).cancel()
    _emit(args, status, f"job {status.job_id}: {status.state.value}")
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    with connect(args) as client:
        health = client.health()
    _emit(args, {"status": health.status, "serving": health.serving}, health.status)
    return EXIT_OK if health.serving else EXIT_FAILURE


def cmd_passthrough(command: str, rest: Sequence[str]) -> int:
    """Hand `stad serve ...` and `stad influx ...` to their own parsers, imported only when used."""
    module_name, extra = _PASSTHROUGH[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExtraMissing(
            f"stad {command} needs the {extra} extra (missing {exc.name or exc}): pip install 'stad[{extra}]'"
        ) from exc
    return int(module.main(list(rest)))


_PASSTHROUGH = {"serve": ("stad.server.app", "server"), "influx": ("stad.influx_task.cli", "influx")}


# -- parser --------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command takes, before or after its name (SUPPRESS: unset stays unset)."""
    group = parser.add_argument_group("connection and output")
    s = argparse.SUPPRESS
    group.add_argument(
        "--server",
        default=s,
        metavar="ADDR",
        help="server address host:port (default: $STAD_SERVER, else an embedded server)",
    )
    group.add_argument("--token", default=s, help="bearer token (default: $STAD_TOKEN)")
    group.add_argument(
        "--token-file",
        default=s,
        metavar="FILE",
        help="read the bearer token from the first line of FILE, out of `ps` (default: $STAD_TOKEN_FILE)",
    )
    group.add_argument(
        "--tls", action="store_true", default=s, help="use TLS with the system's root certificates"
    )
    group.add_argument("--ca-cert", default=s, metavar="PEM", help="use TLS trusting this CA certificate")
    group.add_argument(
        "--client-cert",
        default=s,
        metavar="PEM",
        help="present this client certificate, for servers run with --client-ca (default: $STAD_CLIENT_CERT)",
    )
    group.add_argument(
        "--client-key", default=s, metavar="PEM", help="the key of --client-cert (default: $STAD_CLIENT_KEY)"
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=s,
        metavar="S",
        help="deadline of each call in seconds (default 60)",
    )
    group.add_argument(
        "--max-message-mb",
        type=_positive_int,
        default=s,
        metavar="MIB",
        help="largest gRPC message either way, in MiB (default: $STAD_MAX_MESSAGE_MB, the "
        "server's variable too, else 64)",
    )
    group.add_argument(
        "--home", default=s, metavar="DIR", help="embedded server's data directory (default: $STAD_HOME)"
    )
    group.add_argument("--device", default=s, help="embedded server's device: auto, cpu, cuda")
    group.add_argument("--json", action="store_true", default=s, help="print JSON for scripts")
    group.add_argument("--debug", action="store_true", default=s, help="print tracebacks")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _bounded_int(text: str, low: int, high: int) -> int:
    """An int in low..high; argparse names the flag in front of the message."""
    value = int(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text}")
    return value


def _positive_int32(text: str) -> int:
    return _bounded_int(text, 1, INT32_MAX)


def _int32(text: str) -> int:
    return _bounded_int(text, -INT32_MAX - 1, INT32_MAX)


def _int64(text: str) -> int:
    return _bounded_int(text, -INT64_MAX - 1, INT64_MAX)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV file (Parquet when pyarrow is installed)")
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument(
        "--time-column", help="time column (default: one named time/timestamp/... or holding dates)"
    )
    parser.add_argument(
        "--channels", help="comma-separated channel columns (default: the model's, else every numeric column)"
    )
    parser.add_argument("--sep", default=",", help="CSV field separator (default ',')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stad", description="Train, score and evaluate stad anomaly models."
    )
    _common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, sub: Any = commands
    ) -> argparse.ArgumentParser:
        child: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(child)
        child.set_defaults(handler=handler)
        return child

    train = command("train", cmd_train, "train a new model version on a data file")
    _data_options(train)
    train.add_argument(
        "--label-column", help="0/1 label column: fine-tunes on labels and calibrates the threshold"
    )
    numeric: list[tuple[str, Callable[[str], object]]] = [
        ("--epochs", _positive_int32),
        ("--window", _positive_int32),
        ("--patch", _positive_int32),
        ("--d-model", _positive_int32),
        ("--layers", _positive_int32),
        ("--heads", _positive_int32),
        ("--batch-size", _positive_int32),
        ("--learning-rate", _positive_float),
        ("--seed", _int64),
        ("--val-fraction", _positive_float),
        ("--finetune-epochs", _int32),
        ("--smoothing", _positive_int32),
        ("--threshold-quantile", _positive_float),
    ]
    for flag, kind in numeric:
        train.add_argument(flag, type=kind, help="(server default when not given)")
    train.add_argument("--description", default="", help="free text kept with the version")
    train.add_argument("--no-activate", action="store_true", help="do not make the new version active")
    train.add_argument("--detach", action="store_true", help="start the job and return (needs --server)")

    for name, handler, text in [
        ("score", cmd_score, "score a data file"),
        ("evaluate", cmd_evaluate, "score a labelled data file and print metrics"),
    ]:
        child = command(name, handler, text)
        _data_options(child)
        child.add_argument("--version", help="model version (default: the active one)")
        child.add_argument("--threshold", type=float, help="override the model's threshold")
        child.add_argument("--plot", metavar="PNG", help="write a plot")
        if name == "score":
            child.add_argument(
                "-o", "--output", metavar="CSV", help="write the scores as CSV ('-' for stdout)"
            )
        else:
            child.add_argument("--label-column", required=True, help="0/1 label column")

    models = command("models", _missing_subcommand, "list, show, delete or activate models")
    models_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    command("list", cmd_models_list, "list models", models_sub)
    show = command("show", cmd_models_show, "show a model's versions", models_sub)
    show.add_argument("name")
    show.add_argument("--version")
    delete = command("delete", cmd_models_delete, "delete a model or one version", models_sub)
    delete.add_argument("name")
    delete.add_argument("--version")
    activate = command("activate", cmd_models_activate, "make a version the active one", models_sub)
    activate.add_argument("name")
    activate.add_argument("version")

    jobs = command("jobs", _missing_subcommand, "list, watch or cancel training jobs")
    jobs_sub = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command("list", cmd_jobs_list, "list training jobs, newest first", jobs_sub)
    listing.add_argument("--model")
    watch = command("watch", cmd_jobs_watch, "follow a job's progress until it ends", jobs_sub)
    watch.add_argument("job_id")
    cancel = command("cancel", cmd_jobs_cancel, "cancel a job", jobs_sub)
    cancel.add_argument("job_id")

    command("health", cmd_health, "check that the server is serving")
    # listed for --help only: main() hands `stad serve|influx ...` to their own parsers
    commands.add_parser("serve", help="run the gRPC server (stad serve --help)", add_help=False)
    commands.add_parser("influx", help="score series in InfluxDB (stad influx --help)", add_help=False)
    return parser


def _missing_subcommand(args: argparse.Namespace) -> int:
    raise UsageError(f"{args.command} needs an action")


# -- entry point ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in _PASSTHROUGH:
        try:
            return cmd_passthrough(argv[0], argv[1:])
        except SystemExit as exc:  # their parser: --help (0) or bad usage (2)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        except StadError as exc:
            _error(exc, debug=False)
            return EXIT_FAILURE
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(_opt(args, "debug"))
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a reader that went away shows here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        _error(exc, debug)
        return EXIT_USAGE
    except Exception as exc:  # reported as one line; --debug shows the traceback
        _error(exc, debug)
        return EXIT_FAILURE


def _stdout_closed() -> int:
    """The reader of stdout went away (`stad ... | head`): stop quietly, as other tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    return EXIT_STDOUT_CLOSED


def _error(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

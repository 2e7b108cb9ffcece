"""The `stad` CLI run in-process through `main([...])`: exit codes and output of every command."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from stad.client import Client, DataError, JobState, JobStatus, ScoreResult, TrainingProgress
from stad.client._chunks import join_results as join_chunks
from stad.client._types import ModelVersionInfo
from stad.client.cli import main
from stad.client.cli.models import _choice_lines
from stad.core.detector_config import SETTINGS, ScoringConfig
from stad.core.events import EventFilter
from stad.core.progress import Progress, TrainingDisplay
from tests.client.support import (
    CHANNELS,
    MODEL,
    SPARE,
    Data,
    make_data,
    wait_until_running,
    write_csv,
)
from tests.kit import PER_STEP_FIELDS, TINY_FLAGS, TINY_SETTINGS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAD = [sys.executable, "-m", "stad.client.cli"]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


Stad = Callable[..., Run]


@pytest.fixture
def stad(capsys: pytest.CaptureFixture[str], cli_env: str) -> Stad:
    """Run the CLI in-process against the session's server."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def test_csv(tmp_path: Path, test_data: Data) -> Path:
    return write_csv(tmp_path / "test.csv", test_data, with_labels=True)


def _error_line(run: Run) -> str:
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert "Traceback" not in run.err
    return lines[0]


def test_train_shows_progress_and_reports_json(stad: Stad, tmp_path: Path, train_data: Data) -> None:
    path = write_csv(tmp_path / "train.csv", train_data, with_time=False)
    run = stad("train", str(path), "--model", "cli-trained", *TINY_FLAGS, "--epochs", "2", "--json")
    assert run.code == 0, run.err
    assert "epoch 1/2" in run.err and "epoch 2/2" in run.err  # the progress display, a line per epoch
    assert "\r" not in run.err  # stderr is no terminal here
    assert "loss" in run.err and "ETA" in run.err
    assert (
        "warning: errors and threshold calibrated on 64 held-out steps, fewer than min_calibration_steps"
        in run.err
    )
    job = run.json()
    assert isinstance(job, dict)
    assert (job["state"], job["model"]) == ("succeeded", "cli-trained")
    info = stad("models", "show", "cli-trained", "--json").json()
    assert isinstance(info, dict)
    assert info["name"] == "cli-trained"
    assert info["active_version"] == job["version"]
    assert info["versions"][0]["channels"] == list(CHANNELS)
    deleted = stad("models", "delete", "cli-trained", "--version", job["version"])
    assert (deleted.code, deleted.out.strip()) == (0, f"deleted cli-trained version {job['version']}")
    assert f"version {job['version']} " not in stad("models", "show", "cli-trained").out
    assert stad("models", "delete", "cli-trained").out.strip() == "deleted cli-trained"
    gone = stad("models", "show", "cli-trained")
    assert gone.code == 1
    assert _error_line(gone).startswith("NotFound: ")


def test_score_writes_the_csv_and_plot(
    stad: Stad, client: Client, trained: JobStatus, test_csv: Path, tmp_path: Path
) -> None:
    out, plot = tmp_path / "scores.csv", tmp_path / "scores.png"
    run = stad("score", str(test_csv), "--model", MODEL, "-o", str(out), "--plot", str(plot))
    assert run.code == 0, run.err
    assert "scored 200 steps" in run.out
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 200
    expected_columns = ["time", "score", "raw_score", "threshold", "is_anomaly", "out_of_range"]
    for channel in CHANNELS:
        expected_columns += [f"{channel}_{part}" for part in ("contribution", "expected", "lower", "upper")]
    assert list(rows[0]) == expected_columns
    assert rows[0]["time"] == "2023-11-14T22:13:20Z"
    assert {row["is_anomaly"] for row in rows} <= {"0", "1"}
    active = client.model(MODEL).active  # the version `stad score` used
    assert active is not None and active.reference is not None
    reference = active.reference
    drift = np.array([row["out_of_range"] == "1" for row in rows])
    flags = np.array([float(row["raw_score"]) / reference >= float(row["threshold"]) for row in rows])
    scoring = ScoringConfig()  # the model was trained with the defaults
    events = EventFilter(scoring.min_duration, scoring.merge_gap).add(flags | drift)
    assert [row["is_anomaly"] == "1" for row in rows] == (events | drift).tolist()
    for row in rows:
        for channel in CHANNELS:
            low, mid, high = (float(row[f"{channel}_{part}"]) for part in ("lower", "expected", "upper"))
            assert low < mid < high
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_score_json_lists_spans_with_top_channels(stad: Stad, trained: JobStatus, test_csv: Path) -> None:
    run = stad("score", str(test_csv), "--model", MODEL, "--json", "--threshold", "0")
    assert run.code == 0, run.err
    summary = run.json()
    assert isinstance(summary, dict)
    assert summary["steps"] == 200
    assert summary["threshold"] == 0
    # every score is >= 0: one event, from the step where min_duration flagged steps are in
    assert summary["anomalous_steps"] == 200 - (ScoringConfig().min_duration - 1)
    assert len(summary["spans"]) == 1
    assert set(summary["spans"][0]["top_channels"]) <= set(CHANNELS)


def test_score_file_without_time_column(
    stad: Stad, trained: JobStatus, tmp_path: Path, test_data: Data
) -> None:
    path = write_csv(tmp_path / "plain.csv", test_data, with_time=False)
    run = stad("score", str(path), "--model", MODEL, "-o", "-")
    assert run.code == 0, run.err
    lines = run.out.strip().splitlines()
    assert lines[0].startswith("step,score,raw_score,threshold,is_anomaly")
    assert len(lines) == 201
    assert lines[1].startswith("0,")


def test_evaluate_prints_the_metrics_table(
    stad: Stad, trained: JobStatus, test_csv: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "eval.png"
    run = stad("evaluate", str(test_csv), "--model", MODEL, "--label-column", "label", "--plot", str(plot))
    assert run.code == 0, run.err
    for name in ("precision", "recall", "F1", "ROC-AUC", "PR-AUC", "VUS-PR", "best F1", "confusion matrix"):
        assert name in run.out, name
    for name in ("event precision", "event recall", "event F1"):
        assert name in run.out, name
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_evaluate_json(stad: Stad, trained: JobStatus, test_csv: Path) -> None:
    run = stad("evaluate", str(test_csv), "--model", MODEL, "--label-column", "label", "--json")
    assert run.code == 0, run.err
    report = run.json()
    assert isinstance(report, dict)
    metrics = report["metrics"]
    for key in ("precision", "recall", "f1", "auc_roc", "auc_pr", "vus_pr", "standard_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    confusion = report["confusion_matrix"]
    assert sum(confusion.values()) == 200
    assert confusion["tp"] + confusion["fn"] == 20  # the labelled span


def test_evaluate_needs_the_label_column(stad: Stad, trained: JobStatus, test_csv: Path) -> None:
    run = stad("evaluate", str(test_csv), "--model", MODEL)
    assert run.code == 2
    assert "--label-column" in run.err
    missing = stad("evaluate", str(test_csv), "--model", MODEL, "--label-column", "nope")
    assert missing.code == 1
    assert _error_line(missing).startswith("DataError: no column 'nope'")


def test_models_list_show_activate(stad: Stad, spare: tuple[str, str]) -> None:
    first, second = spare
    listing = stad("models", "list")
    assert listing.code == 0
    assert listing.out.splitlines()[0].split() == ["model", "active", "versions", "channels", "threshold"]
    assert any(line.split()[:3] == [SPARE, second, "2"] for line in listing.out.splitlines())
    as_json = stad("models", "list", "--json").json()
    assert isinstance(as_json, list)
    assert SPARE in [m["name"] for m in as_json]
    show = stad("models", "show", SPARE)
    assert show.code == 0
    assert f"* version {second} " in show.out and f"  version {first} " in show.out
    # the whole config of each version, one line per group, every setting by name
    config_lines = [line.strip() for line in show.out.splitlines() if line.startswith("    model: ")]
    assert len(config_lines) == 2 and "window=16" in config_lines[0]
    for info in SETTINGS:
        assert show.out.count(f" {info.name}=") == 2, info.name
    # what each fit chose from its data: period and range span, scaling, channel kinds
    assert show.out.count("    chosen at fit: dominant period ") == 2
    assert show.out.count("    scaling: ") == 2
    kinds = [line for line in show.out.splitlines() if line.startswith("    channel kinds: ")]
    assert len(kinds) == 2 and all(line.endswith(" varying") for line in kinds)
    activate = stad("models", "activate", SPARE, first)
    assert (activate.code, activate.out.strip()) == (0, f"{SPARE}: active version {first}")
    assert f"* version {first} " in stad("models", "show", SPARE).out
    back = stad("models", "activate", SPARE, second, "--json").json()
    assert isinstance(back, dict)
    assert back["active_version"] == second
    unknown = stad("models", "activate", SPARE, "no-such-version")
    assert unknown.code == 1
    assert _error_line(unknown).startswith("NotFound: ")


def test_jobs_list_watch_cancel(stad: Stad, trained: JobStatus, train_data: Data) -> None:
    listing = stad("jobs", "list")
    assert listing.code == 0
    assert trained.job_id in listing.out
    jobs = stad("jobs", "list", "--model", MODEL, "--json").json()
    assert isinstance(jobs, list)
    assert {job["model"] for job in jobs} == {MODEL}
    watched = stad("jobs", "watch", trained.job_id)
    assert watched.code == 0
    assert f"{MODEL} version {trained.version} trained" in watched.out
    # cancelling a finished job is a no-op that reports its final state
    cancel = stad("jobs", "cancel", trained.job_id)
    assert (cancel.code, cancel.out.strip()) == (0, f"job {trained.job_id}: succeeded")
    unknown = stad("jobs", "cancel", "no-such-job")
    assert unknown.code == 1
    assert _error_line(unknown).startswith("NotFound: ")


def test_health(stad: Stad) -> None:
    run = stad("health")
    assert (run.code, run.out.strip()) == (0, "SERVING")
    assert stad("health", "--json").json() == {"status": "SERVING", "serving": True}


def test_errors_are_one_line_without_traceback(stad: Stad, test_csv: Path) -> None:
    run = stad("score", str(test_csv), "--model", "no-such-model")
    assert run.code == 1
    assert _error_line(run).startswith("NotFound: ")
    debug = stad("score", str(test_csv), "--model", "no-such-model", "--debug")
    assert debug.code == 1
    assert "Traceback" in debug.err and debug.err.strip().splitlines()[-1].startswith("NotFound: ")
    missing = stad("score", "/no/such/file.csv", "--model", MODEL)
    assert missing.code == 1
    assert _error_line(missing) == "DataError: no such file: '/no/such/file.csv'"


def test_bad_usage_exits_2(stad: Stad) -> None:
    assert stad().code == 2
    assert stad("frobnicate").code == 2
    assert stad("train", "x.csv").code == 2  # --model is required
    bad = stad("train", "x.csv", "--model", "m", "--epochs", "0")
    assert bad.code == 2
    assert "--epochs" in bad.err
    assert stad("models").code == 2
    assert stad("--help").code == 0


def test_unreachable_server_fails_cleanly(stad: Stad) -> None:
    run = stad("health", "--server", "127.0.0.1:1", "--timeout", "2")
    assert run.code == 1
    assert _error_line(run).startswith("Unavailable: ")


def test_embedded_server_keeps_models_in_stad_home(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train_data: Data
) -> None:
    monkeypatch.delenv("STAD_SERVER", raising=False)
    monkeypatch.setenv("STAD_HOME", str(tmp_path / "home"))
    path = write_csv(tmp_path / "train.csv", train_data)
    assert main(["train", str(path), "--model", "embedded", *TINY_FLAGS, "--device", "cpu"]) == 0
    # a second process-like run: a new embedded server over the same STAD_HOME
    capsys.readouterr()
    assert main(["score", str(path), "--model", "embedded", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 320
    assert (tmp_path / "home" / "models").is_dir()


def test_serve_runs_the_server_until_terminated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--model-dir" in capsys.readouterr().out
    assert main(["serve", "--model-dir", str(tmp_path), "--device", "nope"]) == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [*STAD, "serve", "--model-dir", str(tmp_path / "models")]
    process = subprocess.Popen(
        [*command, "--address", f"127.0.0.1:{port}", "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)  # the server is up
            client = Client(channel=channel)
            assert client.health().serving
            assert client.models() == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


@pytest.mark.slow
def test_ctrl_c_during_train_leaves_the_job_running(stad: Stad, cli_env: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", make_data(3000, seed=4))
    process = subprocess.Popen(
        [*STAD, "train", str(path), "--model", "cli-interrupted", *TINY_FLAGS, "--epochs", "500"],
        stdin=subprocess.DEVNULL,  # not a terminal: as under a supervisor or in a script
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = ""
    try:
        assert process.stdout is not None and process.stderr is not None
        started = process.stdout.readline()
        assert started.startswith("job "), started
        job_id = started.split()[1].rstrip(":")
        while "epoch" not in process.stderr.readline():  # wait for training to make progress
            assert process.poll() is None, "stad train ended before training started"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        _assert_detached(err, job_id)
        with Client(cli_env) as client:
            assert client.job(job_id).status.state is JobState.RUNNING
        cancel = stad("jobs", "cancel", job_id)
        assert (cancel.code, cancel.out.strip()) == (0, f"job {job_id}: cancelled")
    finally:
        _end(process)
        if job_id:
            stad("jobs", "cancel", job_id)


@pytest.mark.slow
def test_ctrl_c_during_jobs_watch_cancels_only_on_yes_at_a_terminal(cli_env: str, train_data: Data) -> None:
    with Client(cli_env) as client:
        job = client.train(
            make_data(3000, seed=4).values, channels=CHANNELS, model="cli-watched", settings=LONG
        )
        try:
            wait_until_running(job)
            code, err = _interrupt_watch(job.job_id, stdin=subprocess.DEVNULL)
            assert code == 130, err
            _assert_detached(err, job.job_id)
            # at a terminal: a second Ctrl-C, EOF (Ctrl-D) or any answer but "y" means no
            for answer in (None, b"\x04", b"maybe\n"):
                code, err = _interrupt_watch(job.job_id, answer=answer)
                assert code == 130, (answer, err)
                assert f"cancel training job {job.job_id}? [y/N]" in err
                _assert_detached(err, job.job_id)
                assert job.refresh().state is JobState.RUNNING
            code, err = _interrupt_watch(job.job_id, answer=b"y\n")
            assert code == 130, err
            assert f"job {job.job_id}: cancelled" in err
            assert job.refresh().state is JobState.CANCELLED
        finally:
            job.cancel()


LONG = replace(TINY_SETTINGS, epochs=500)


def _assert_detached(err: str, job_id: str) -> None:
    assert "Traceback" not in err
    assert "cancelled" not in err
    assert f"stad jobs watch {job_id}\n" in err
    assert f"stad jobs cancel {job_id}\n" in err


def _interrupt_watch(
    job_id: str, *, stdin: int | None = None, answer: bytes | None = None
) -> tuple[int, str]:
    """Run `stad jobs watch JOB` and press Ctrl-C once it shows the job; on a terminal
    (stdin None: a pseudo-terminal) answer the prompt with `answer` (None: Ctrl-C again).
    Returns the exit code and stderr."""
    terminal, reply = os.openpty() if stdin is None else (-1, -1)
    process = subprocess.Popen(
        [*STAD, "jobs", "watch", job_id],
        stdin=reply if stdin is None else stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        seen = _read_stderr_until(process, b"\n")  # the first status line: it is watching
        process.send_signal(signal.SIGINT)
        if stdin is None:
            seen += _read_stderr_until(process, b"[y/N] ")
            if answer is None:
                process.send_signal(signal.SIGINT)
            else:
                os.write(terminal, answer)
        _, rest = process.communicate(timeout=60)
        return process.returncode, (seen + rest).decode()
    finally:
        _end(process)
        if stdin is None:
            os.close(terminal)
            os.close(reply)


def _read_stderr_until(process: subprocess.Popen[bytes], text: bytes, timeout_s: float = 120) -> bytes:
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} on stderr in {timeout_s} s: {seen!r}"
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, f"stderr ended without {text!r}: {seen!r}"
        seen += chunk
    return seen


def _end(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def test_join_chunks_reassembles_streamed_chunks(server: str, trained: JobStatus, test_data: Data) -> None:
    with Client(server) as client:
        whole = client.score(
            test_data.values, timestamps=test_data.timestamps_ns, channels=CHANNELS, model=MODEL
        )

    def piece(start: int, stop: int) -> ScoreResult:
        per_step = {name: getattr(whole, name)[start:stop] for name in PER_STEP_FIELDS}
        return replace(whole, start_step=start, **per_step)

    joined = join_chunks([piece(120, 200), piece(0, 50), piece(50, 120)])
    for name in ("timestamps_ns", "score", "is_anomaly", "contributions", "expected"):
        assert np.array_equal(getattr(joined, name), getattr(whole, name)), name
    with pytest.raises(DataError):
        join_chunks([])


def test_influx_subcommand_is_handed_to_the_task_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["influx", "--help"]) == 0
    assert "usage: stad influx" in capsys.readouterr().out  # the task's own parser answered
    assert main(["influx", "once"]) == 2
    assert "--config" in capsys.readouterr().err


def test_global_options_work_before_and_after_the_command(stad: Stad, server: str) -> None:
    expected = {"status": "SERVING", "serving": True}
    assert stad("--json", "health").json() == expected
    assert stad("health", "--json").json() == expected
    assert stad("--server", "127.0.0.1:1", "--timeout", "2", "health").code == 1  # the option is used
    assert stad("--server", "127.0.0.1:1", "health", "--server", server).code == 0  # the later one wins
    assert stad("--json", "models", "list").json() == stad("models", "list", "--json").json()


def _unreachable_influx_jobs(tmp_path: Path) -> Path:
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
[influx]
url = "http://127.0.0.1:1"
[retry]
max_attempts = 1
deadline_s = 5
[state]
checkpoint = "{tmp_path / "checkpoints.json"}"
[[pipelines]]
name = "pumps"
database = "plant"
measurement = "pump"
fields = ["flow"]
model = "pumps"
interval = "1m"
""")
    return config


@pytest.mark.parametrize("before", [True, False])
def test_global_options_reach_influx_subcommands(stad: Stad, tmp_path: Path, before: bool) -> None:
    pytest.importorskip("influxdb_client")
    options = ["--json", "--server", "127.0.0.1:1", "--timeout", "5"]
    command = ["influx", "status", "--config", str(_unreachable_influx_jobs(tmp_path))]
    run = stad(*options, *command) if before else stad(*command, *options)
    assert run.code == 0, run.err
    assert run.json() == {"pumps": {"series": {}, "last_error": ""}}  # JSON: --json reached it


def test_global_options_influx_does_not_use_are_refused(stad: Stad) -> None:
    run = stad("--tls", "influx", "once", "--config", "jobs.toml")
    assert run.code == 2
    assert _error_line(run).startswith("UsageError: stad influx does not use --tls")
    assert stad("--json", "serve").code == 2


def test_only_stad_and_os_errors_are_reported_as_one_line(
    stad: Stad, trained: JobStatus, test_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unwritable = stad("score", str(test_csv), "--model", MODEL, "-o", "/no/such/dir/scores.csv")
    assert unwritable.code == 1
    line = _error_line(unwritable)  # the OSError's own class name, e.g. FileNotFoundError
    assert line.split(": ")[0].endswith("Error") and "/no/such/dir" in line

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("stad.client.cli.health.cmd_health", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # a bug shows its traceback
        stad("health")


def test_score_streams_a_response_over_the_servers_max_message_size(
    stad: Stad, small_server: str, small_trained: JobStatus, tmp_path: Path
) -> None:
    # about 0.7 MiB of request, 1.6 MiB of scores: over the 1 MiB limit as one response
    path = write_csv(tmp_path / "long.csv", make_data(20_000, seed=6))
    out = tmp_path / "scores.csv"
    for client_limit in ([], ["--max-message-mb", "1"]):
        run = stad(
            "score", str(path), "--model", MODEL, "--server", small_server, *client_limit, "-o", str(out)
        )
        assert run.code == 0, run.err
        assert "scored 20000 steps" in run.out
        with out.open() as handle:
            assert sum(1 for _ in handle) == 20_001


def test_score_request_over_the_max_message_size_says_so(
    stad: Stad, small_server: str, small_trained: JobStatus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "longer.csv", make_data(40_000, seed=7))  # about 1.3 MiB of request
    refused = stad("score", str(path), "--model", MODEL, "--server", small_server)
    assert refused.code == 1
    line = _error_line(refused)
    assert line.startswith("ResourceExhausted: the request is 1.3 MiB"), line
    assert "server's max message size of 1.0 MiB" in line
    assert "--max-message-mb" in line and "STAD_MAX_MESSAGE_MB" in line
    assert "set it to the server's" in line  # how to get chunked training uploads
    monkeypatch.setenv("STAD_MAX_MESSAGE_MB", "1")  # this side's limit, as the variable is the server's
    chunked = stad("score", str(path), "--model", MODEL, "--server", small_server)
    assert chunked.code == 0, chunked.err  # sent in chunks that fit this side's limit, so the server's
    assert "scored 40000 steps" in chunked.out
    monkeypatch.setenv("STAD_MAX_MESSAGE_MB", "lots")
    assert stad("health").code == 2


@pytest.mark.parametrize("command", [["models", "list"], ["score", "test.csv", "--model", MODEL, "-o", "-"]])
def test_closed_stdout_ends_quietly(
    cli_env: str, trained: JobStatus, test_csv: Path, command: list[str]
) -> None:
    process = subprocess.Popen(
        [*STAD, *command], cwd=test_csv.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before anything is written, as `| head -0`
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err
    assert all(line.startswith("warning: ") for line in err.splitlines()), err  # test.csv drifts


@pytest.mark.parametrize(
    ("step", "val_loss", "expected"),
    [
        (1, float("nan"), "loss 0.5000  val -  ETA -"),  # no validation split, ETA still noise
        (50, 0.25, "loss 0.5000  val 0.2500  ETA 2:00"),
    ],
)
def test_progress_line_shows_dashes_for_what_is_not_known_yet(
    step: int, val_loss: float, expected: str
) -> None:
    progress = TrainingProgress("pretrain", 1, 10, step, 100, 0.5, val_loss, 0.15, 120.0)
    status = JobStatus("j", "m", JobState.RUNNING, progress, None, "", None, None, None, 400)
    stream = io.StringIO()
    TrainingDisplay(Progress(stream=stream)).update(status)
    assert stream.getvalue().rstrip().endswith(expected), stream.getvalue()


def test_models_show_names_the_fit_choices_of_each_channel() -> None:
    metadata = {
        "channels": ["valve", "setpoint", "flow", "temp"],
        "data_choices": {
            "channel_kinds": ["binary", "constant", "varying", "varying"],
            "dominant_period": 24,
            "range_span": 24,
            "range_mean_span": 12,
        },
        "scaler": {"method": "median and IQR"},
    }
    version = ModelVersionInfo("1", None, tuple(metadata["channels"]), 16, 1.0, 0, 0, 100, {}, metadata, "")
    assert version.fit_choices["channel_kinds"] == {
        "valve": "binary",
        "setpoint": "constant",
        "flow": "varying",
        "temp": "varying",
    }
    assert _choice_lines(version.fit_choices, 16) == [
        "chosen at fit: dominant period 24 steps, range span 24 (of means over 12)",
        "scaling: median and IQR",
        "channel kinds: binary valve; constant setpoint; 2 varying",
    ]
    older = ModelVersionInfo("1", None, ("a",), 16, 1.0, 0, 0, 100, {}, {}, "")
    assert older.fit_choices == {} and _choice_lines(older.fit_choices, 16) == []
    auto = {**metadata, "data_choices": {**metadata["data_choices"], "window_from_period": True}}
    chosen = ModelVersionInfo("2", None, tuple(metadata["channels"]), 48, 1.0, 0, 0, 100, {}, auto, "")
    assert chosen.fit_choices["window_from_period"] is True
    assert _choice_lines(chosen.fit_choices, chosen.window)[0] == (
        "chosen at fit: window 48 (from the period), dominant period 24 steps, "
        "range span 24 (of means over 12)"
    )
    plain = {**metadata, "data_choices": {**metadata["data_choices"], "range_span": 1, "range_mean_span": 1}}
    off = ModelVersionInfo("4", None, tuple(metadata["channels"]), 16, 1.0, 0, 0, 100, {}, plain, "")
    assert _choice_lines(off.fit_choices, 16)[0] == "chosen at fit: dominant period 24 steps, no range scores"
    flags_out = {
        **metadata,
        "data_choices": {**metadata["data_choices"], "scored_channels": 3, "counted_channels": 2},
    }
    out = ModelVersionInfo("5", None, tuple(metadata["channels"]), 16, 1.0, 0, 0, 100, {}, flags_out, "")
    assert _choice_lines(out.fit_choices, 16)[-1] == (
        "step score counts 2 of the 3 predicted channels (binary ones are inputs only)"
    )
    assert len(_choice_lines(version.fit_choices, 16)) == 3  # no counts recorded: no such line
    no_period = {**auto, "data_choices": {**auto["data_choices"], "dominant_period": None}}
    fallback = ModelVersionInfo("3", None, tuple(metadata["channels"]), 64, 1.0, 0, 0, 100, {}, no_period, "")
    assert _choice_lines(fallback.fit_choices, 64)[0].startswith(
        "chosen at fit: window 64 (no period: the fallback), dominant period none"
    )

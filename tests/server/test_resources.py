"""One caller must not take the server down: queued data on disk and bounded, job limits and a
memory estimate, bounded free text, and a model store that survives broken entries and crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio

from stad.server import durable
from stad.server.app import JOBS_DIR
from stad.server.detector import Detector
from stad.server.detector.choices import largest_auto_window
from stad.server.job_journal import JobJournal
from stad.server.job_limits import JobLimits
from stad.server.job_worker import VALUES_FILE
from stad.server.registry import Registry
from stad.v1 import models_pb2, models_pb2_grpc, scoring_pb2, scoring_pb2_grpc, training_pb2
from stad.v1 import training_pb2_grpc as training_grpc
from tests.server.conftest import MODEL, MakeServer, make_values, series_message
from tests.server.test_training import FINISHED, spec, start, start_error, watch_until
from tests.waiting import until

State = training_pb2.JobState


async def rpc_code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code(), str(caught.value.details())


# -- 1. queued training data ---------------------------------------------------------


async def test_queued_jobs_data_waits_on_disk_and_goes_with_the_job(make_server: MakeServer) -> None:
    server, channel = await make_server(max_concurrent_jobs=1)
    running = await start(channel, spec(epochs=10_000), [make_values(400, seed=1)])
    queued = await start(channel, spec(epochs=1), [make_values(500, seed=2)])
    assert queued.state == State.JOB_STATE_QUEUED
    job_dir = server.settings.model_dir / JOBS_DIR / queued.job_id
    np.testing.assert_array_equal(np.load(job_dir / VALUES_FILE), make_values(500, seed=2))
    stub = training_grpc.TrainingServiceStub(channel)
    await stub.CancelTraining(training_pb2.CancelTrainingRequest(job_id=queued.job_id))
    assert not job_dir.exists()
    await stub.CancelTraining(training_pb2.CancelTrainingRequest(job_id=running.job_id))
    assert not (server.settings.model_dir / JOBS_DIR / running.job_id).exists()


async def test_queued_bytes_are_bounded_naming_the_flag(make_server: MakeServer) -> None:
    _, channel = await make_server(max_concurrent_jobs=1, max_queued_mb=1)
    await start(channel, spec(epochs=10_000), [make_values(400, seed=1)])  # runs: not queued
    waiting = await start(channel, spec(), [make_values(30_000, seed=2)])  # 0.7 MiB waits
    assert waiting.state == State.JOB_STATE_QUEUED
    error = await start_error(channel, spec(), [make_values(30_000, seed=3)])
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-queued-mb" in str(error.details())
    small = await start(channel, spec(), [make_values(400, seed=4)])  # still room for this one
    assert small.state == State.JOB_STATE_QUEUED


async def test_leftover_job_data_is_removed_at_start_up(make_server: MakeServer, model_dir: Path) -> None:
    jobs = model_dir / JOBS_DIR
    orphan = jobs / uuid.uuid4().hex
    orphan.mkdir(parents=True)
    np.save(orphan / VALUES_FILE, make_values(100, seed=0))
    half_written = jobs / f"{durable.STAGING_PREFIX}{uuid.uuid4().hex}"
    half_written.write_text("{")
    # another replica's job, still running there: its data stays
    other = uuid.uuid4().hex
    (jobs / other).mkdir()
    JobJournal(jobs).write(other, {"job_id": other, "state": "running", "server": "elsewhere"})
    await make_server(server_id="here")
    assert not orphan.exists() and not half_written.exists()
    assert (jobs / other).is_dir()


# -- 2. limits per job ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "job_spec", "steps", "flag"),
    [
        ({}, {"d_model": 2**16}, 400, "--max-parameters"),
        ({}, {"n_layers": 2**31 - 1}, 400, "--max-parameters"),
        ({}, {"epochs": 10**9}, 400, "--max-epochs"),
        ({"max_epochs": 100}, {"finetune_epochs": 101}, 400, "--max-epochs"),
        ({"max_window": 32}, {"window": 64}, 400, "--max-window"),
        ({"max_window": 128}, {"window": 0}, 400, "--max-window"),  # 0: the longest it may choose
        ({"max_channels": 2}, {}, 400, "--max-channels"),
        ({"max_job_memory_mb": 400}, {"batch_size": 4096}, 20_000, "--max-job-memory-mb"),
    ],
)
async def test_jobs_over_a_limit_are_refused_before_queueing(
    make_server: MakeServer, overrides: dict[str, int], job_spec: dict[str, int], steps: int, flag: str
) -> None:
    server, channel = await make_server(**overrides)
    epochs = job_spec.pop("epochs", 1)
    error = await start_error(channel, spec(epochs=epochs, **job_spec), [make_values(steps, seed=0)])
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert flag in str(error.details()) and "limit" in str(error.details())
    assert server.jobs.list() == []
    assert list((server.settings.model_dir / JOBS_DIR).glob("*/")) == []


async def test_default_limits_accept_an_ordinary_job(make_server: MakeServer) -> None:
    _, channel = await make_server()
    job = await start(channel, spec(d_model=256, n_heads=8, n_layers=4), [make_values(20_000, seed=0)])
    assert job.state in (State.JOB_STATE_QUEUED, State.JOB_STATE_RUNNING)


async def test_job_over_its_wall_clock_budget_fails_saying_so(make_server: MakeServer) -> None:
    _, channel = await make_server(max_job_s=0.5)
    job = await start(channel, spec(epochs=10_000), [make_values(400, seed=1)])
    final = (await watch_until(channel, job.job_id, FINISHED))[-1]
    assert final.state == State.JOB_STATE_FAILED
    assert "wall-clock budget of 0.5 s" in final.error and "--max-job-s" in final.error


# -- 4. free text and listing --------------------------------------------------------


async def test_free_text_is_bounded(make_server: MakeServer) -> None:
    server, channel = await make_server()
    data = make_values(100, seed=0)
    error = await start_error(channel, spec(description="x" * 100_000), [data])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "description has 100,000 characters" in str(error.details())
    long_name = ("c" * 300, "pressure", "flow")
    error = await start_error(channel, spec(), [data], channels=[long_name])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(str(error.details())) < 300
    models = models_pb2_grpc.ModelServiceStub(channel)
    for request in (
        models_pb2.GetModelRequest(name=MODEL, version="1" * 20_000),
        models_pb2.GetModelRequest(name="m" * 20_000),
    ):
        code, details = await rpc_code(models.GetModel(request))
        assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert len(details) < 300
    assert server.jobs.list() == []


async def test_listing_does_not_reread_what_it_read(make_server: MakeServer, model_dir: Path) -> None:
    _, channel = await make_server()
    models = models_pb2_grpc.ModelServiceStub(channel)
    listed = await models.ListModels(models_pb2.ListModelsRequest())
    assert listed.models[0].versions[0].description == "fixture"
    # rewritten in place (versions never are): the directory is the same, so the listing is cached
    record_file = model_dir / MODEL / "1" / "version.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "description": "changed"}))
    listed = await models.ListModels(models_pb2.ListModelsRequest())
    assert listed.models[0].versions[0].description == "fixture"


# -- 10. broken entries in the model store -------------------------------------------


@pytest.fixture
def store_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="stad.server.registry")
    return caplog


async def test_broken_versions_are_skipped_and_named_without_paths(
    make_server: MakeServer, model_dir: Path, saved_model: Path, store_log: pytest.LogCaptureFixture
) -> None:
    Registry(model_dir, Detector.load).register(MODEL, saved_model)  # version 2
    (model_dir / MODEL / "3").mkdir()  # empty
    (model_dir / MODEL / "2" / "model.safetensors").write_bytes(b"not weights")
    broken_record = model_dir / "other" / "1"
    broken_record.mkdir(parents=True)
    (broken_record / "version.json").write_text("{")
    _, channel = await make_server()
    models = models_pb2_grpc.ModelServiceStub(channel)
    listed = await models.ListModels(models_pb2.ListModelsRequest())
    by_name = {m.name: [v.version for v in m.versions] for m in listed.models}
    assert by_name == {MODEL: ["1", "2"], "other": []}
    warned = [r.getMessage() for r in store_log.records]
    assert any("version 3" in line for line in warned) and any("'other' version 1" in line for line in warned)
    code, details = await rpc_code(models.GetModel(models_pb2.GetModelRequest(name=MODEL, version="3")))
    assert code is grpc.StatusCode.DATA_LOSS and str(model_dir) not in details
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    series = [series_message(make_values(40, 0))]
    code, details = await rpc_code(
        scoring.Score(scoring_pb2.ScoreRequest(model=MODEL, version="2", series=series))
    )
    assert code is grpc.StatusCode.DATA_LOSS and str(model_dir) not in details
    response = await scoring.Score(scoring_pb2.ScoreRequest(model=MODEL, series=series))  # active: 1
    assert response.version == "1" and len(response.results[0].score) == 40


async def test_staging_left_by_a_crash_is_removed_at_start_up(
    make_server: MakeServer, model_dir: Path, saved_model: Path
) -> None:
    leftovers = [
        durable.staging_path(model_dir / MODEL),
        durable.staging_path(model_dir),
        model_dir / MODEL / f".deleted-{uuid.uuid4().hex}",
    ]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"\0" * 1024)
    pointer = durable.staging_path(model_dir / ".versions")
    pointer.parent.mkdir(exist_ok=True)
    pointer.write_text("7")
    await make_server()
    assert [path for path in (*leftovers, pointer) if path.exists()] == []
    assert Registry(model_dir, Detector.load).versions(MODEL) == ["1"]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[Path]]:
    """The paths os.fsync is called on (it still flushes them); a file written atomically
    is flushed under its staging name, `.tmp-<name>-<random>`."""
    paths: set[Path] = set()
    real = os.fsync

    def fsync(fd: int) -> None:
        paths.add(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield paths


def test_registry_and_journal_flush_what_must_survive_power_loss(
    tmp_path: Path, saved_model: Path, synced: set[Path]
) -> None:
    registry = Registry(tmp_path / "models", Detector.load)
    version = registry.register("m", saved_model, activate=True)
    version_dir = (tmp_path / "models" / "m" / version).resolve()
    for name in ("model.safetensors", "metadata.json", "version.json"):
        assert any(path.name == name for path in synced), name
    assert version_dir.parent in synced  # the rename into place

    def flushed(target: Path) -> bool:
        staged = {path.name.rpartition("-")[0] for path in synced if path.parent == target.parent}
        return f"{durable.STAGING_PREFIX}{target.name}" in staged and target.parent in synced

    assert flushed(version_dir.parent / "ACTIVE")
    assert flushed((tmp_path / "models" / ".versions" / "m").resolve())
    journal = JobJournal(tmp_path / "jobs")
    journal.write("a" * 32, {"state": "queued"})
    assert flushed((tmp_path / "jobs" / f"{'a' * 32}.json").resolve())


# -- 6. shutdown ---------------------------------------------------------------------


async def test_calls_cut_off_by_the_end_of_the_grace_get_unavailable(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=600_000, max_batch_windows=64)
    release = threading.Event()
    server.executor.submit(release.wait)  # holds the device thread: scoring cannot finish
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(40, 3))])
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    unary = scoring.Score(request)
    streamed = scoring.StreamScore(request)
    never_done = asyncio.Event()

    async def half_sent() -> AsyncIterator[training_pb2.StartTrainingRequest]:
        yield training_pb2.StartTrainingRequest(spec=spec(), data=series_message(make_values(100, 0)))
        await never_done.wait()  # the client is still sending when the server stops

    training = training_grpc.TrainingServiceStub(channel).StartTraining(half_sent())
    await until(
        lambda: server.engine.pending_windows >= 2 and server.guard.in_flight >= 3, "three calls in flight"
    )
    stopping = asyncio.ensure_future(server.stop(grace_s=0.5))
    threading.Timer(3.0, release.set).start()  # stop() then waits for the device thread
    assert await unary.code() is grpc.StatusCode.UNAVAILABLE
    assert await streamed.code() is grpc.StatusCode.UNAVAILABLE
    assert await training.code() is grpc.StatusCode.UNAVAILABLE
    await stopping
    counts = {labels[1] for labels in server.metrics.requests._metrics}
    assert counts == {"UNAVAILABLE"}


# -- 5. admission by deadline --------------------------------------------------------


async def test_a_deadline_that_cannot_be_met_is_refused_at_once(make_server: MakeServer) -> None:
    server, channel = await make_server(max_queue_delay_ms=1.0)
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    short = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(200, 1))])
    await scoring.Score(short)  # measures the compute rate
    assert server.engine.load.seconds_per_window is not None
    release = threading.Event()
    blocker = server.executor.submit(release.wait)  # the device is busy with a backlog
    backlog = scoring.Score(
        scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(30_000, 2))])
    )
    await until(lambda: server.engine.pending_windows > 0, "the backlog is queued")
    wait_s = server.engine.load.expected_wait_s(0, server.settings.max_batch_windows)
    assert wait_s is not None
    try:
        code, details = await rpc_code(scoring.Score(short, timeout=wait_s / 2))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "deadline cannot be met" in details and "windows/s" in details
        queued = server.engine.pending_windows
        admitted = scoring.Score(short, timeout=wait_s * 20 + 30)
        while server.engine.pending_windows == queued:  # queued behind the backlog, not refused
            await asyncio.sleep(0.01)
    finally:
        release.set()
        blocker.result()
    assert len((await backlog).results[0].score) == 30_000
    assert len((await admitted).results[0].score) == 200


async def test_a_stream_cut_off_mid_way_by_the_end_of_the_grace_gets_unavailable(
    make_server: MakeServer,
) -> None:
    server, channel = await make_server(max_queue_delay_ms=0.0, max_batch_windows=4)
    first_batch, rest = threading.Event(), threading.Event()
    server.executor.submit(first_batch.wait)  # the stream's batches queue behind it
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series_message(make_values(400, 3))])
    streamed = scoring_pb2_grpc.ScoringServiceStub(channel).StreamScore(request)
    await until(lambda: server.engine.pending_windows > 0, "the stream's windows are queued")
    first_batch.set()
    server.executor.submit(rest.wait)  # one batch runs, then the device is held again
    first = await streamed.read()
    assert first.results[0].start_step == 0  # the call is streaming when the server stops
    stopping = asyncio.ensure_future(server.stop(grace_s=0.5))
    threading.Timer(3.0, rest.set).start()
    with pytest.raises(aio.AioRpcError) as caught:
        while (message := await streamed.read()) is not aio.EOF:
            assert message.results
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    await stopping


def test_window_zero_is_estimated_as_the_longest_window_it_may_choose() -> None:
    limits = JobLimits()
    auto = limits.check({"window": 0}, channels=8, steps=10_000)
    longest = limits.check({"window": largest_auto_window(8)}, channels=8, steps=10_000)
    assert auto == longest > limits.check({"window": 64}, channels=8, steps=10_000)

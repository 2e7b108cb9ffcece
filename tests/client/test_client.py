"""The sync Client against a real server on loopback."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from stad.client import (
    Client,
    ClientClosedError,
    DataError,
    DataWarning,
    InvalidArgument,
    JobState,
    JobStatus,
    NotFound,
    ResourceExhausted,
    ScoreResult,
    TrainingFailedError,
    TrainingProgress,
    Unauthenticated,
    Unavailable,
    _convert,
    make_series,
)
from stad.core.detector_config import ScoringConfig
from stad.core.events import EventFilter
from stad.core.series import series_to_proto
from stad.core.types import MIB
from tests.client.support import (
    BIG_STEPS,
    CHANNELS,
    MODEL,
    SPARE,
    Data,
    make_data,
    wait_until_running,
)
from tests.kit import TINY_SETTINGS


def test_health_is_serving(client: Client) -> None:
    health = client.health()
    assert health.status == "SERVING"
    assert health.serving


def test_training_succeeds_and_registers_a_version(client: Client, trained: JobStatus) -> None:
    assert trained.state is JobState.SUCCEEDED
    assert trained.version
    assert trained.channels == CHANNELS
    info = client.model(MODEL)
    assert info.active_version == trained.version
    assert info.active is not None
    assert info.active.channels == CHANNELS
    assert info.active.window == 16
    assert MODEL in [m.name for m in client.models()]
    assert trained.job_id in [job.job_id for job in client.jobs()]
    assert [job.model for job in client.jobs(model=MODEL)] == [MODEL] * len(client.jobs(model=MODEL))


def assert_flags_follow_own_scores(client: Client, result: ScoreResult, threshold: float) -> None:
    """is_anomaly is the event state of raw_score / reference >= threshold, or drift, and
    every step whose own score crosses scores at least the threshold (the range maximum)."""
    version = client.model(MODEL).active
    assert version is not None and version.reference is not None
    scoring = ScoringConfig()  # the model's: trained with the defaults
    own = result.raw_score / version.reference >= threshold
    events = EventFilter(scoring.min_duration, scoring.merge_gap).add(own | result.out_of_range)
    assert np.array_equal(result.is_anomaly, events | result.out_of_range)
    assert (result.score[own] >= threshold).all()


def test_score_returns_typed_per_step_arrays(client: Client, trained: JobStatus, test_data: Data) -> None:
    result = client.score(
        test_data.values, timestamps=test_data.timestamps_ns, channels=CHANNELS, model=MODEL
    )
    steps = test_data.values.shape[0]
    assert isinstance(result, ScoreResult)
    assert (result.model, result.version) == (MODEL, trained.version)
    assert result.channels == CHANNELS
    assert np.array_equal(result.timestamps_ns, test_data.timestamps_ns)
    for array in (result.score, result.raw_score, result.severity, result.is_anomaly):
        assert array.shape == (steps,)
    for matrix in (result.contributions, result.expected, result.lower, result.upper):
        assert matrix.shape == (steps, 3)
    assert (result.lower < result.expected).all() and (result.expected < result.upper).all()
    assert result.out_of_range.shape == (steps,) and result.out_of_range_channels.shape == (steps, 3)
    assert_flags_follow_own_scores(client, result, result.threshold)
    # the level shift on channel b (steps 120-140) scores above the quiet part and is blamed on b
    assert result.score[120:140].mean() > result.score[:100].mean()
    assert result.top_channels(120, 140, k=1)[0][0] == "b"


def test_threshold_override_applies(client: Client, trained: JobStatus, test_data: Data) -> None:
    base = client.score(test_data.values, channels=CHANNELS, model=MODEL)
    version = client.model(MODEL).active
    assert version is not None and version.reference is not None
    low = float(np.quantile(base.raw_score / version.reference, 0.5))  # half the own scores reach it
    result = client.score(test_data.values, channels=CHANNELS, model=MODEL, threshold=low)
    assert result.threshold == pytest.approx(low)
    assert_flags_follow_own_scores(client, result, low)
    assert result.is_anomaly.sum() >= base.score.size // 2


def test_dataframe_input_matches_numpy(client: Client, trained: JobStatus, test_data: Data) -> None:
    index = pd.DatetimeIndex(test_data.timestamps_ns.astype("datetime64[ns]"), tz="UTC")
    frame = pd.DataFrame(test_data.values[:, ::-1], columns=list(CHANNELS[::-1]), index=index)
    from_frame = client.score(frame, model=MODEL)
    from_numpy = client.score(
        test_data.values, timestamps=test_data.timestamps_ns, channels=CHANNELS, model=MODEL
    )
    assert np.array_equal(from_frame.timestamps_ns, test_data.timestamps_ns)
    np.testing.assert_allclose(from_frame.score, from_numpy.score, rtol=1e-6)


def test_score_many_keeps_input_order(client: Client, trained: JobStatus, test_data: Data) -> None:
    short = make_series(test_data.values[:60], channels=CHANNELS)
    full = make_series(test_data.values, channels=CHANNELS, timestamps_ns=test_data.timestamps_ns)
    results = client.score_many([full, short], model=MODEL)
    assert [r.steps for r in results] == [200, 60]
    assert [r.series_index for r in results] == [0, 1]
    alone = client.score(full, model=MODEL)
    np.testing.assert_allclose(results[0].score, alone.score, rtol=1e-6)


def test_return_from_ns_drops_earlier_steps(client: Client, trained: JobStatus, test_data: Data) -> None:
    cut = int(test_data.timestamps_ns[150])
    result = client.score(
        test_data.values,
        timestamps=test_data.timestamps_ns,
        channels=CHANNELS,
        model=MODEL,
        return_from_ns=cut,
    )
    assert np.array_equal(result.timestamps_ns, test_data.timestamps_ns[150:])


def test_stream_score_chunks_cover_the_series(client: Client, trained: JobStatus, test_data: Data) -> None:
    whole = client.score(test_data.values, channels=CHANNELS, model=MODEL)
    chunks = list(client.stream_score(test_data.values, channels=CHANNELS, model=MODEL))
    assert chunks
    assert [c.start_step for c in chunks] == list(np.cumsum([0] + [c.steps for c in chunks[:-1]]))
    np.testing.assert_allclose(np.concatenate([c.score for c in chunks]), whole.score, rtol=1e-6)
    joined = ScoreResult.join(chunks[::-1])
    for name in ("score", "is_anomaly", "lower", "upper", "out_of_range", "out_of_range_channels"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    assert joined.warnings == whole.warnings


def test_warnings_reach_the_typed_results(
    client: Client, trained: JobStatus, test_data: Data, train_data: Data
) -> None:
    # 64 held-out steps of 320 are too few to calibrate on
    assert [w.code for w in trained.warnings] == ["small_calibration"]
    active = client.model(MODEL).active
    assert active is not None and active.warnings == trained.warnings
    # test_data's level shift (+4 on b, steps 120-140) lies far outside b's training range
    drifted = client.score(test_data.values, channels=CHANNELS, model=MODEL)
    assert drifted.out_of_range_share == {"a": 0.0, "b": 0.1, "c": 0.0}
    assert np.array_equal(np.flatnonzero(drifted.out_of_range), np.arange(120, 140))
    (warning,) = drifted.warnings
    assert isinstance(warning, DataWarning) and warning.code == "drift"
    assert "b (10% of steps)" in warning.message
    clean = client.score(make_data(200, seed=3).values, channels=CHANNELS, model=MODEL)
    assert clean.warnings == () and not clean.out_of_range.any()


def test_unknown_model_is_not_found(client: Client, test_data: Data) -> None:
    with pytest.raises(NotFound) as caught:
        client.score(test_data.values, channels=CHANNELS, model="no-such-model")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in str(caught.value)
    with pytest.raises(NotFound):
        client.model("no-such-model")


def test_wrong_channels_are_invalid_argument(client: Client, trained: JobStatus, test_data: Data) -> None:
    with pytest.raises(InvalidArgument, match="channel"):
        client.score(test_data.values, channels=("a", "b", "zz"), model=MODEL)


def test_bad_input_fails_before_sending(client: Client) -> None:
    values = np.ones((40, 3))
    values[5, 1] = np.inf
    with pytest.raises(DataError, match="inf"):
        client.score(values, channels=CHANNELS, model=MODEL)
    with pytest.raises(DataError, match="2 channel names for 3"):
        client.score(np.ones((40, 3)), channels=("a", "b"), model=MODEL)
    with pytest.raises(DataError, match="labels"):
        client.train(np.ones((40, 3)), channels=CHANNELS, labels=[0, 2] * 20, model="x")


def test_training_progress_events_are_typed(training_events: list[JobStatus]) -> None:
    assert [e.state for e in training_events][-1] is JobState.SUCCEEDED
    assert training_events[0].state in (JobState.QUEUED, JobState.RUNNING)
    progress = [e.progress for e in training_events if e.progress is not None]
    assert progress, "no progress events"
    assert all(isinstance(p, TrainingProgress) for p in progress)
    pretrain = [p for p in progress if p.phase == "pretrain"]
    assert {p.epochs for p in pretrain} == {2}
    assert max(p.epoch for p in pretrain) == 2
    assert all(p.train_loss >= 0 and p.eta_s >= 0 for p in pretrain)


def test_activate_switches_the_active_version(client: Client, spare: tuple[str, str]) -> None:
    first, second = spare
    assert client.model(SPARE).active_version == second
    assert [v.version for v in client.model(SPARE).versions] == [first, second]
    assert client.model(SPARE, version=first).versions[0].version == first
    try:
        assert client.activate(SPARE, first).active_version == first
        assert client.model(SPARE).active_version == first
    finally:
        assert client.activate(SPARE, second).active_version == second
    with pytest.raises(NotFound):
        client.activate(SPARE, "no-such-version")
    with pytest.raises(NotFound):
        client.delete_model(SPARE, version="no-such-version")


def test_cancel_ends_the_job_cancelled(client: Client) -> None:
    data = make_data(3000, seed=3)
    job = client.train(
        data.values,
        channels=CHANNELS,
        model="tiny-cancelled",
        settings=replace(TINY_SETTINGS, epochs=500),
    )
    wait_until_running(job)
    job.cancel()
    with pytest.raises(TrainingFailedError) as caught:
        job.wait(timeout_s=120)
    assert caught.value.state == "cancelled"
    assert job.status.state is JobState.CANCELLED
    assert client.job(job.job_id).status.state is JobState.CANCELLED


def test_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.job("no-such-job")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_unavailable_after_retries() -> None:
    with Client(f"127.0.0.1:{_free_port()}", retries=2, timeout_s=5) as client, pytest.raises(Unavailable):
        client.health()


def test_closed_client_refuses_calls(server: str) -> None:
    client = Client(server)
    client.close()
    assert client.is_closed
    with pytest.raises(ClientClosedError):
        client.health()


def test_injected_channel_is_not_closed_by_the_client(server: str) -> None:
    channel = grpc.insecure_channel(server)
    with Client(channel=channel) as client:
        assert client.health().serving
    with Client(channel=channel) as again:
        assert again.health().serving
    channel.close()


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target"):
        Client()
    with pytest.raises(ValueError, match="timeout_s"):
        Client("127.0.0.1:1", timeout_s=0)
    with pytest.raises(ValueError, match="token"):
        Client("127.0.0.1:1", token="has space")
    with pytest.raises(ValueError, match="max_message_mb"):
        Client("127.0.0.1:1", max_message_mb=0)


def test_max_message_mb_bounds_what_the_client_receives(server: str, trained: JobStatus) -> None:
    data = make_data(20_000, seed=6)  # scores of about 2.6 MiB in one Score response
    series = make_series(data.values, channels=CHANNELS, timestamps_ns=data.timestamps_ns)
    with Client(server, max_message_mb=1) as small:
        assert small.score(series, model=MODEL).steps == 20_000  # in calls that fit
        with pytest.raises(ResourceExhausted) as caught:
            small.score_many([series], model=MODEL)  # one call
    message = str(caught.value)
    assert re.match(r"the response is 2\.\d MiB", message), message
    assert "client's max message size of 1.0 MiB" in message
    assert "max_message_mb" in message and "STAD_MAX_MESSAGE_MB" in message
    with Client(server, max_message_mb=4) as larger:
        result = larger.score(data.values, timestamps=data.timestamps_ns, channels=CHANNELS, model=MODEL)
    assert result.steps == 20_000


def test_training_upload_fits_a_small_max_message_size(
    small_trained: JobStatus, big_train_data: Data
) -> None:
    whole = _convert.to_series(big_train_data.values, timestamps=big_train_data.timestamps_ns)
    assert series_to_proto(whole).ByteSize() > MIB  # too big for one message
    requests = _convert.upload_requests(
        big_train_data.values,
        model=MODEL,
        timestamps=big_train_data.timestamps_ns,
        channels=CHANNELS,
        labels=big_train_data.labels,
        settings=TINY_SETTINGS,
        activate=True,
        description="",
        max_message_bytes=MIB,
    )
    assert len(requests) > 4
    assert max(request.ByteSize() for request in requests) <= MIB // 4
    # uploaded through a 1 MiB client to a 1 MiB server
    assert (small_trained.state, small_trained.steps) == (JobState.SUCCEEDED, BIG_STEPS)


def test_bearer_token_is_sent(tmp_path: Path) -> None:
    from stad.server.embedded import EmbeddedServer
    from stad.server.settings import Settings

    settings = Settings(model_dir=tmp_path, token="s3cret")
    with EmbeddedServer(tmp_path, device="cpu", settings=settings) as embedded:
        with Client(embedded.target) as anonymous, pytest.raises(Unauthenticated):
            anonymous.models()
        with Client(embedded.target, token="wrong") as wrong, pytest.raises(Unauthenticated):
            wrong.models()
        with Client(embedded.target, token="s3cret") as client:
            assert client.models() == []

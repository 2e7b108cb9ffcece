"""The AsyncClient against a real server on loopback."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from stad.client import (
    AsyncClient,
    ClientClosedError,
    InvalidArgument,
    JobState,
    JobStatus,
    NotFound,
    ResourceExhausted,
    make_series,
)
from tests.client.support import BIG_STEPS, CHANNELS, MODEL, Data, make_data
from tests.kit import TINY_SETTINGS


async def test_health(server: str) -> None:
    async with AsyncClient(server) as client:
        assert (await client.health()).serving


async def test_train_watch_and_wait(server: str, train_data: Data) -> None:
    async with AsyncClient(server) as client:
        job = await client.train(
            train_data.values, channels=CHANNELS, model="tiny-async", settings=TINY_SETTINGS
        )
        states = [status.state async for status in job.watch(timeout_s=300)]
        assert states[-1] is JobState.SUCCEEDED
        done = await job.wait()
        assert done.version
        # cancelling a finished job is a no-op returning its final state
        assert (await job.cancel()).state is JobState.SUCCEEDED
        info = await client.model("tiny-async")
        assert info.active_version == done.version
        assert job.job_id in [j.job_id for j in await client.jobs(model="tiny-async")]
        await client.delete_model("tiny-async")
        assert "tiny-async" not in [m.name for m in await client.models()]


async def test_score_matches_the_sync_client(server: str, trained: JobStatus, test_data: Data) -> None:
    from stad.client import Client

    with Client(server) as sync:
        expected = sync.score(test_data.values, channels=CHANNELS, model=MODEL)
    async with AsyncClient(server) as client:
        result = await client.score(test_data.values, channels=CHANNELS, model=MODEL)
        assert result.version == trained.version
        np.testing.assert_allclose(result.score, expected.score, rtol=1e-6)
        assert result.contributions.shape == (test_data.values.shape[0], 3)

        series = [
            make_series(test_data.values[:50], channels=CHANNELS),
            make_series(test_data.values, channels=CHANNELS),
        ]
        many = await client.score_many(series, model=MODEL)
        assert [r.steps for r in many] == [50, 200]

        chunks = [c async for c in client.stream_score(test_data.values, channels=CHANNELS, model=MODEL)]
        np.testing.assert_allclose(np.concatenate([c.score for c in chunks]), expected.score, rtol=1e-6)


async def test_errors_map_to_the_hierarchy(server: str, trained: JobStatus, test_data: Data) -> None:
    async with AsyncClient(server) as client:
        with pytest.raises(NotFound) as caught:
            await client.score(test_data.values, channels=CHANNELS, model="no-such-model")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        with pytest.raises(InvalidArgument):
            await client.score(test_data.values, channels=("x", "y", "z"), model=MODEL)
        with pytest.raises(NotFound):
            await client.job("no-such-job")


async def test_closed_client_refuses_calls(server: str) -> None:
    client = AsyncClient(server)
    await client.close()
    with pytest.raises(ClientClosedError):
        await client.health()


async def test_max_message_mb_bounds_responses_and_upload_chunks(
    server: str, small_server: str, trained: JobStatus, big_train_data: Data
) -> None:
    data = make_data(20_000, seed=6)  # scores of about 1.6 MiB in one Score response
    async with AsyncClient(server, max_message_mb=1) as small:
        assert (await small.score(data.values, channels=CHANNELS, model=MODEL)).steps == 20_000  # in calls
        with pytest.raises(ResourceExhausted, match="max_message_mb"):
            await small.score_many([make_series(data.values, channels=CHANNELS)], model=MODEL)  # one call
    async with AsyncClient(server, max_message_mb=4) as larger:
        assert (await larger.score(data.values, channels=CHANNELS, model=MODEL)).steps == 20_000
    async with AsyncClient(small_server, max_message_mb=1) as client:
        job = await client.train(
            big_train_data.values,
            timestamps=big_train_data.timestamps_ns,
            channels=CHANNELS,
            model="big-async",
            settings=TINY_SETTINGS,
        )
        assert (await job.wait(timeout_s=300)).steps == BIG_STEPS
        await client.delete_model("big-async")

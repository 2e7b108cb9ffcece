"""The client scores a series of any length in overlapping chunks, with one call's result."""

from __future__ import annotations

import csv
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from stad.client import AsyncClient, Client, JobStatus, ScoreResult
from stad.client._chunks import Geometry, join_results, plan_calls
from stad.client.cli import main
from tests.client.support import CHANNELS, MODEL, Data, make_data, write_csv
from tests.kit import TINY_SETTINGS

STEPS = 2000  # about 250 windows of the tiny model (window 16, stride 8)


def assert_identical(chunked: ScoreResult, whole: ScoreResult) -> None:
    for field in fields(ScoreResult):
        a, b = getattr(chunked, field.name), getattr(whole, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, field.name
            assert a.tobytes() == b.tobytes(), field.name  # bit for bit
        else:
            assert a == b, field.name


@pytest.mark.parametrize("with_time", [True, False])
@pytest.mark.parametrize("chunk_steps", [9, 150, 999])  # 9: chunks shorter than a window
def test_chunks_join_to_one_calls_result(
    client: Client, trained: JobStatus, with_time: bool, chunk_steps: int
) -> None:
    data = make_data(STEPS, seed=11, anomaly=(700, 760))
    stamps = data.timestamps_ns if with_time else None
    whole = client.score(data.values, timestamps=stamps, channels=CHANNELS, model=MODEL)
    chunked = client.score(
        data.values, timestamps=stamps, channels=CHANNELS, model=MODEL, chunk_steps=chunk_steps
    )
    assert chunked.steps == STEPS and chunked.is_anomaly.any()
    assert_identical(chunked, whole)


def test_streamed_chunks_join_to_one_calls_result(client: Client, trained: JobStatus) -> None:
    data = make_data(STEPS, seed=15)
    kw = {"timestamps": data.timestamps_ns, "channels": CHANNELS, "model": MODEL}
    whole = client.score(data.values, **kw)  # type: ignore[arg-type]
    parts = list(client.stream_score(data.values, chunk_steps=150, **kw))  # type: ignore[arg-type]
    assert [p.start_step for p in parts] == sorted(p.start_step for p in parts)
    assert_identical(join_results(parts), whole)


def test_chunks_start_at_return_from_ns(client: Client, trained: JobStatus) -> None:
    data = make_data(STEPS, seed=12)
    start = int(data.timestamps_ns[1234])
    kw = {"timestamps": data.timestamps_ns, "channels": CHANNELS, "model": MODEL, "return_from_ns": start}
    whole = client.score(data.values, **kw)  # type: ignore[arg-type]
    assert whole.start_step == 1234
    assert_identical(client.score(data.values, chunk_steps=100, **kw), whole)  # type: ignore[arg-type]
    past_end = {**kw, "return_from_ns": int(data.timestamps_ns[-1]) + 1}
    assert client.score(data.values, chunk_steps=100, **past_end).steps == 0  # type: ignore[arg-type]


async def test_the_async_client_chunks_too(server: str, trained: JobStatus) -> None:
    data = make_data(STEPS, seed=13)
    async with AsyncClient(server) as client:
        whole = await client.score(data.values, timestamps=data.timestamps_ns, channels=CHANNELS, model=MODEL)
        chunked = await client.score(
            data.values, timestamps=data.timestamps_ns, channels=CHANNELS, model=MODEL, chunk_steps=300
        )
    assert_identical(chunked, whole)


@pytest.mark.parametrize("smoothing", [1, 5])
@pytest.mark.parametrize("stride", [3, 8])
def test_planned_calls_keep_every_step_once_with_enough_context(smoothing: int, stride: int) -> None:
    geometry = Geometry(window=16, stride=stride, smoothing=smoothing)
    calls = plan_calls(1000, 37, geometry, 100)
    assert [c.keep_start for c in calls] == list(range(37, 1000, 100))
    assert [c.keep_stop for c in calls] == [*range(137, 1000, 100), 1000]
    for call in calls:
        assert call.read_start % stride == 0
        assert call.read_start == 0 or call.keep_start - call.read_start >= geometry.context
        assert call.read_stop == 1000 or call.read_stop == call.keep_stop + 16


def test_the_cli_scores_a_file_longer_than_one_call(
    cli_env: str, trained: JobStatus, tmp_path: Path, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(20_000, seed=14)
    path = write_csv(tmp_path / "long.csv", data)
    out = tmp_path / "scores.csv"
    # 1 MiB messages: about 6,000 steps of scores a call
    assert main(["--max-message-mb", "1", "score", str(path), "-m", MODEL, "-o", str(out)]) == 0
    with out.open() as handle:
        scores = [float(row["score"]) for row in csv.DictReader(handle)]
    whole = client.score(data.values, timestamps=data.timestamps_ns, channels=CHANNELS, model=MODEL)
    assert len(scores) == 20_000
    np.testing.assert_allclose(scores, whole.score, rtol=1e-5)  # the CSV keeps 6 digits


def test_range_scores_join_bit_for_bit_too(client: Client, train_data: Data) -> None:
    """A range score looks ahead half its span: the chunks read that far past what they keep."""
    settings = replace(TINY_SETTINGS, range_scores=True, smoothing=3)
    status = client.train(train_data.values, channels=CHANNELS, model="ranged", settings=settings).wait()
    assert status.version is not None
    version = next(v for v in client.model("ranged").versions if v.version == status.version)
    assert version.metadata["data_choices"]["range_span"] > 1  # the look-ahead is really there
    data = make_data(STEPS, seed=17, anomaly=(900, 940))
    kw = {"timestamps": data.timestamps_ns, "channels": CHANNELS, "model": "ranged"}
    whole = client.score(data.values, **kw)  # type: ignore[arg-type]
    for chunk_steps in (9, 150):
        assert_identical(client.score(data.values, chunk_steps=chunk_steps, **kw), whole)  # type: ignore[arg-type]

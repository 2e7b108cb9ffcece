"""Correctness against a real influxd and a real gRPC server: scores that do not depend on
chunks or passes, no scores from a missing tail, late data, retention, backfill's episodes,
resumable and interruptible backfills, and the fill policy."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from stad.core.demo_data import DemoData
from stad.influx_task.local_influxd import Influxd
from stad.influx_task.runner import ChunkReport, PassStats
from stad.influx_task.task import Task
from stad.server.embedded import EmbeddedServer
from tests.influx import kit
from tests.influx.kit import SETTLE, STEP, STEPS, UNITS

FIRST = 40  # the first step every variant scores

Written = dict[tuple[str, int], dict[str, object]]


def _final(data: DemoData) -> int:
    return int(data.timestamps_ns[-1]) + SETTLE


def _passes(
    influxd: Influxd,
    target: str,
    source: str,
    out: str,
    data: DemoData,
    clocks: Sequence[int],
    **extra: object,
) -> list[PassStats]:
    """`once` at each clock, the first starting at step FIRST, scores going to database `out`."""
    influxd.query(f'DROP DATABASE "{out}"')
    influxd.query(f'CREATE DATABASE "{out}"')
    lookback = clocks[0] - int(data.timestamps_ns[FIRST])
    job = kit.pipeline(source, data, output_database=out, initial_lookback_ns=lookback, **extra)
    clock = [clocks[0]]
    outcome = []
    with Task(kit.config(influxd.url, target, (job,)), now_ns=lambda: clock[0]) as task:
        for now in clocks:
            clock[0] = now
            stats = task.once()["pumps"]
            assert not isinstance(stats, Exception), stats
            outcome.append(stats)
    return outcome


def _output(influxd: Influxd, out: str) -> tuple[Written, Written]:
    return kit.written(influxd.url, out, "anomaly_scores"), kit.written(influxd.url, out, "anomaly_events")


@pytest.fixture(scope="module")
def reference(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData]
) -> tuple[Written, Written]:
    """One pass over all of the data, in one chunk: what every other way must write."""
    source, data = trained
    _passes(influxd, server.target, source, "reference", data, [_final(data)])
    scores, events = _output(influxd, "reference")
    assert len(scores) == 2 * (STEPS - FIRST)
    assert events, "the demo data should raise at least one episode"
    return scores, events


@pytest.mark.parametrize(
    ("clock_steps", "extra"),
    [
        ([None], {"chunk_steps": 7}),
        ([97, 150, 151, 260, None], {"chunk_steps": 23}),
        ([60, 333, None], {"chunk_steps": 50, "series_per_call": 1}),
        ([200, 310, None], {"chunk_steps": 1000, "lateness_ns": 5 * STEP}),
    ],
)
def test_scores_and_episodes_do_not_depend_on_chunks_or_passes(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    clock_steps: list[int | None],
    extra: dict[str, object],
) -> None:
    source, data = trained
    clocks = [_final(data) if s is None else int(data.timestamps_ns[s]) + STEP // 3 for s in clock_steps]
    _passes(influxd, server.target, source, "variant", data, clocks, **extra)
    scores, events = _output(influxd, "variant")
    if "lateness_ns" in extra:  # the last steps wait out the lateness: compare what is written
        assert len(scores) > 2 * (STEPS - FIRST - 20)
        assert scores == {k: reference[0][k] for k in scores}
    else:
        assert scores == reference[0]  # bit for bit, every field of every step
        assert events == reference[1]


def test_a_first_pass_with_nothing_final_yet_still_starts_the_job_there(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
) -> None:
    """3 steps of lookback are less than the model's windows and range reach: the first
    pass can score nothing, but the job starts there (it used to restart at each later
    pass's own lookback and never score at all)."""
    source, data = trained
    early = int(data.timestamps_ns[FIRST + 3]) + STEP // 3
    first, last = _passes(influxd, server.target, source, "variant", data, [early, _final(data)])
    assert first.steps == 0 and last.steps == 2 * (STEPS - FIRST)  # two series
    assert _output(influxd, "variant") == reference


def test_backfill_in_small_chunks_writes_what_one_pass_writes(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
) -> None:
    source, data = trained
    influxd.query('CREATE DATABASE "backfilled"')
    job = kit.pipeline(source, data, output_database="backfilled", chunk_steps=11)
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: _final(data)) as task:
        stats = task.backfill("pumps", int(data.timestamps_ns[FIRST]), _final(data))
    assert not stats.interrupted
    assert _output(influxd, "backfilled") == reference


def test_steps_after_the_last_observed_one_wait_for_data_or_lateness(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    database: str,
) -> None:
    data = trained[1]
    kit.write_rows(influxd.url, database, data, range(201))  # the feed stops after step 200
    lateness = 10 * STEP
    clock = [int(data.timestamps_ns[200]) + 3 * STEP]
    job = kit.pipeline(
        database,
        data,
        output_database=database,
        lateness_ns=lateness,
        initial_lookback_ns=clock[0] - int(data.timestamps_ns[FIRST]),
    )
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: clock[0]) as task:
        task.once()
        held = kit.written(influxd.url, database, "anomaly_scores")
        last = max(t for _, t in held)
        assert last < int(data.timestamps_ns[200])  # the last steps wait for their windows' data
        assert held == {k: reference[0][k] for k in held}  # none saw the missing tail as data
        kit.write_rows(influxd.url, database, data, range(201, 260))  # the feed resumes
        clock[0] = int(data.timestamps_ns[240])
        task.once()
        resumed = kit.written(influxd.url, database, "anomaly_scores")
        assert max(t for _, t in resumed) > int(data.timestamps_ns[200])
        assert resumed == {k: reference[0][k] for k in resumed}
        clock[0] = int(data.timestamps_ns[259]) + lateness + SETTLE  # the feed stopped for good
        task.once()
    final = kit.written(influxd.url, database, "anomaly_scores")
    assert sorted({t for _, t in final}) == data.timestamps_ns[FIRST:260].tolist()


def test_late_points_within_the_horizon_are_rescored_beyond_it_backfill_is_named(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = trained[1]
    hole, old_hole = range(330, 336), range(250, 253)
    kit.write_rows(influxd.url, database, data, range(STEPS), shift=0.0)
    influxd.query(
        f'DELETE FROM "pump" WHERE time >= {int(data.timestamps_ns[hole[0]])} AND '
        f"time <= {int(data.timestamps_ns[hole[-1]])}",
        database,
    )
    influxd.query(
        f'DELETE FROM "pump" WHERE time >= {int(data.timestamps_ns[old_hole[0]])} AND '
        f"time <= {int(data.timestamps_ns[old_hole[-1]])}",
        database,
    )
    final = _final(data)
    job = kit.pipeline(
        database,
        data,
        output_database=database,
        lateness_ns=100 * STEP,
        chunk_steps=40,
        initial_lookback_ns=final - int(data.timestamps_ns[FIRST]),
    )
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task:
        first = task.once()["pumps"]
        assert isinstance(first, PassStats) and not first.rescored
        before = kit.written(influxd.url, database, "anomaly_scores")
        assert not {int(data.timestamps_ns[t]) for t in (*hole, *old_hole)} & {t for _, t in before}
        kit.write_rows(influxd.url, database, data, hole)  # late, within the horizon
        kit.write_rows(influxd.url, database, data, old_hole)  # late, beyond it
        with caplog.at_level(logging.WARNING, logger="stad.influx_task"):
            second = task.once()["pumps"]
        assert isinstance(second, PassStats)
        assert second.rescored == {f"pump,plant=p1,unit={u}" for u in UNITS}
        after = kit.written(influxd.url, database, "anomaly_scores")
        late_steps = {int(data.timestamps_ns[t]) for t in hole}
        assert late_steps <= {t for _, t in after}
        rescored = {k: v for k, v in after.items() if k[1] >= int(data.timestamps_ns[300])}
        assert rescored == {k: reference[0][k] for k in rescored}  # as if never late
        assert "beyond the lateness horizon" in caplog.text and "stad influx backfill" in caplog.text
        assert not {int(data.timestamps_ns[t]) for t in old_hole} & {t for _, t in after}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stad.influx_task"):
            third = task.once()["pumps"]
        assert isinstance(third, PassStats) and not third.rescored
        assert "beyond the lateness horizon" not in caplog.text  # said once
        task.backfill("pumps", int(data.timestamps_ns[230]), int(data.timestamps_ns[280]))
    healed = kit.written(influxd.url, database, "anomaly_scores")
    assert {int(data.timestamps_ns[t]) for t in old_hole} <= {t for _, t in healed}
    assert healed == {k: reference[0][k] for k in healed}


def test_points_dropped_by_a_short_retention_count_as_written(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    influxd.query(f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 1h REPLICATION 1')
    final = _final(data)
    job = kit.pipeline(database, data, output_retention_policy="short", chunk_steps=100)
    with (
        caplog.at_level(logging.WARNING, logger="stad.influx_task"),
        Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task,
    ):
        first = task.once()["pumps"]
        second = task.once()["pumps"]
    assert isinstance(first, PassStats) and first.steps == 2 * STEPS  # all older than 1 h: dropped
    assert isinstance(second, PassStats) and second.steps == 0  # the checkpoint advanced
    assert caplog.text.count("older than the retention policy") == 1
    assert kit.query(influxd.url, database, 'SELECT * FROM "short"."anomaly_scores"') == []


def test_a_partial_backfill_leaves_episodes_whole(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
) -> None:
    source, data = trained
    _passes(influxd, server.target, source, "episodes", data, [_final(data)])
    long_ones = sorted(
        (t, int(e["end_time"]))  # type: ignore[call-overload]
        for (_, t), e in reference[1].items()
        if int(e["end_time"]) - t >= 2 * STEP  # type: ignore[call-overload]
    )
    assert len(long_ones) >= 2, reference[1]
    (a_start, _), (b_start, _) = long_ones[0], long_ones[-1]
    job = kit.pipeline(source, data, output_database="episodes", chunk_steps=13)
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: _final(data)) as task:
        task.backfill("pumps", a_start + STEP, b_start + STEP)  # starts and stops inside episodes
    assert _output(influxd, "episodes") == reference


def test_backfill_resumes_where_it_was_interrupted(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    job = kit.pipeline(database, data, chunk_steps=20)
    start, stop = int(data.timestamps_ns[FIRST]), int(data.timestamps_ns[-1]) + STEP
    halt = threading.Event()
    chunks: list[ChunkReport] = []

    def after_chunk(report: ChunkReport) -> None:
        chunks.append(report)
        if len(chunks) == 3:
            halt.set()

    config = kit.config(influxd.url, server.target, (job,))
    with Task(config, now_ns=lambda: _final(data), stop=halt, on_chunk=after_chunk) as task:
        cut = task.backfill("pumps", start, stop)
    # the chunks already read when it stopped are finished; the rest is left
    assert cut.interrupted and 3 <= len(chunks) < (STEPS - FIRST) // 20
    with Task(config, now_ns=lambda: _final(data)) as task:
        rest = task.backfill("pumps", start, stop)
        again = task.backfill("pumps", start, stop)
        redo = task.backfill("pumps", start, stop, restart=True)
    total = 2 * (STEPS - FIRST)
    assert not rest.interrupted and cut.steps + rest.steps == total  # nothing scored twice
    # a finished backfill run again scores its range again (it used to do nothing and say
    # "0 steps scored", which left a new output database empty)
    assert again.steps == total and redo.steps == total


def test_sigterm_during_backfill_exits_non_zero_saying_so(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str, tmp_path: Path
) -> None:
    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    config = tmp_path / "jobs.toml"
    config.write_text(f"{kit.pipeline_toml(database, data)}\ncontext = {kit.CONTEXT}\nchunk_steps = 3\n")
    command = [
        *(sys.executable, "-m", "stad.influx_task", "backfill", "--config", str(config)),
        *("--url", influxd.url, "--server", server.target, "--pipeline", "pumps", "--no-progress"),
        *("--start", str(int(data.timestamps_ns[0])), "--stop", str(int(data.timestamps_ns[-1]))),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        deadline = time.monotonic() + 120
        while not kit.query(influxd.url, database, 'SELECT * FROM "stad_checkpoint"'):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no backfill progress within 120 s"
            time.sleep(0.05)  # polling the condition, bounded by the deadline
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err.decode()
    assert "interrupted by signal 15" in err.decode() and "resume" in err.decode()


@pytest.mark.parametrize("fill", ["previous", "linear"])
def test_filled_steps_feed_the_model_but_get_no_score(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str, fill: str
) -> None:
    data = trained[1]
    hole = range(150, 153)
    kit.write_rows(influxd.url, database, data, range(hole.start))
    kit.write_rows(influxd.url, database, data, range(hole.stop, STEPS))
    job = kit.pipeline(
        database, data, fill=fill, initial_lookback_ns=_final(data) - int(data.timestamps_ns[FIRST])
    )
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: _final(data)) as task:
        task.once()
    times = {t for _, t in kit.written(influxd.url, database, "anomaly_scores")}
    expected = set(data.timestamps_ns[FIRST:].tolist()) - {int(data.timestamps_ns[t]) for t in hole}
    assert times == expected


def test_a_failed_write_mid_pipeline_leaves_no_checkpoint_ahead_of_the_data(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], database: str
) -> None:
    from stad.influx_task.transport import InfluxError

    data = trained[1]
    kit.write_demo(influxd.url, database, data)
    final = _final(data)
    job = kit.pipeline(database, data, chunk_steps=25, initial_lookback_ns=final - int(data.timestamps_ns[0]))
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task:
        write = task.writer.write_lines  # scores and checkpoints alike
        calls = [0]

        def fail_on_the_fifth(lines: object, **where: object) -> int:
            calls[0] += 1
            if calls[0] == 5:
                raise InfluxError("injected: a write refused", status=400)
            return write(lines, **where)  # type: ignore[arg-type]

        task.writer.write_lines = fail_on_the_fifth  # type: ignore[method-assign]
        outcome = task.once()["pumps"]
    assert isinstance(outcome, InfluxError) and "injected" in str(outcome)
    found = kit.query(
        influxd.url, database, 'SELECT last("next_ns") FROM "stad_checkpoint" GROUP BY "series"'
    )
    done = {s["tags"]["series"]: int(s["values"][0][1]) for s in found}
    assert set(done) == {f"pump,plant=p1,unit={u}" for u in UNITS}
    scores = kit.written(influxd.url, database, "anomaly_scores")
    for unit in UNITS:
        times = sorted(t for u, t in scores if u == unit)
        # exactly the steps before the checkpoint: the chunks after the failed one were not written
        assert times == [t for t in data.timestamps_ns.tolist() if t < done[f"pump,plant=p1,unit={unit}"]]
        assert 0 < len(times) < STEPS


def test_range_scores_do_not_depend_on_chunks_or_passes_either(
    influxd: Influxd, server: EmbeddedServer, trained: tuple[str, DemoData], ranged: str
) -> None:
    """A range score looks ahead half its span: the task holds steps back until that has come."""
    source, data = trained
    clocks = [int(data.timestamps_ns[s]) + STEP // 3 for s in (97, 150, 260)] + [_final(data)]
    _passes(influxd, server.target, source, "ranged_whole", data, [_final(data)], model=ranged)
    _passes(influxd, server.target, source, "ranged_parts", data, clocks, model=ranged, chunk_steps=23)
    whole, parts = _output(influxd, "ranged_whole"), _output(influxd, "ranged_parts")
    assert len(whole[0]) == 2 * (STEPS - FIRST)
    assert parts == whole  # bit for bit, every field of every step, and the same episodes


def _events_near(events: Written, step_ns: int) -> set[tuple[str, int]]:
    """Events that start at most a window before `step_ns` and not after it."""
    return {k for k in events if step_ns - kit.WINDOW * STEP <= k[1] <= step_ns}


def test_a_rescore_for_late_data_deletes_the_events_and_scores_it_no_longer_writes(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    database: str,
) -> None:
    data = trained[1]
    bad, dropped = 100, 140  # quiet steps: a bad value there raises an episode of its own
    kit.write_demo(influxd.url, database, data)
    for step in (bad, dropped):
        kit.write_rows(influxd.url, database, data, range(step, step + 1), shift=50.0)
    lateness = 400 * STEP
    final = _final(data) + lateness  # the tail has waited out the lateness: every step is final
    job = kit.pipeline(
        database,
        data,
        output_database=database,
        lateness_ns=lateness,
        chunk_steps=40,
        initial_lookback_ns=final - int(data.timestamps_ns[FIRST]),
    )
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task:
        task.once()
        scores, events = _output(influxd, database)
        for step in (bad, dropped):
            assert _events_near(events, int(data.timestamps_ns[step])) - reference[1].keys()
        kit.write_rows(influxd.url, database, data, range(bad, bad + 1))  # corrected late
        influxd.query(f'DELETE FROM "pump" WHERE time = {int(data.timestamps_ns[dropped])}', database)
        second = task.once()["pumps"]
    assert isinstance(second, PassStats) and second.rescored == {f"pump,plant=p1,unit={u}" for u in UNITS}
    scores, events = _output(influxd, database)
    assert not _events_near(events, int(data.timestamps_ns[bad])) - reference[1].keys()  # corrected
    dropped_ns = int(data.timestamps_ns[dropped])
    assert not {k for k in scores if k[1] == dropped_ns}  # no data there now: no score either
    assert not _events_near(events, dropped_ns) - reference[1].keys()
    reach = 2 * kit.WINDOW * STEP  # what the hole may change; elsewhere all is as if never wrong

    def away(written: Written) -> Written:
        return {k: v for k, v in written.items() if abs(k[1] - dropped_ns) > reach}

    assert away(scores) == away(reference[0])
    assert away(events) == away(reference[1])


def test_a_backfill_deletes_the_events_it_no_longer_writes_and_none_outside_its_range(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    database: str,
) -> None:
    data = trained[1]
    # quiet steps, each given a bad value; the episode `before` raises ends before `start`
    # with a range score's look-ahead too
    before, inside, after = 70, 130, 180
    start, stop = 110, 160
    kit.write_demo(influxd.url, database, data)
    for step in (before, inside, after):
        kit.write_rows(influxd.url, database, data, range(step, step + 1), shift=50.0)
    final = _final(data)
    job = kit.pipeline(
        database, data, output_database=database, initial_lookback_ns=final - int(data.timestamps_ns[FIRST])
    )
    near = {step: int(data.timestamps_ns[step]) for step in (before, inside, after)}
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task:
        task.once()
        stale = _output(influxd, database)[1]
        for step in near.values():
            assert _events_near(stale, step) - reference[1].keys()
        for step in (before, inside, after):
            kit.write_rows(influxd.url, database, data, range(step, step + 1))  # corrected
        task.backfill("pumps", int(data.timestamps_ns[start]), int(data.timestamps_ns[stop]))
    scores, events = _output(influxd, database)
    assert not _events_near(events, near[inside]) - reference[1].keys()
    outside = {k for k in stale if not near[inside] - kit.WINDOW * STEP <= k[1] < near[inside] + STEP}
    assert {k: events.get(k) for k in outside} == {k: stale[k] for k in outside}  # left as they were
    rescored = range(int(data.timestamps_ns[start]), int(data.timestamps_ns[stop]))
    assert {k: v for k, v in scores.items() if k[1] in rescored} == {
        k: v for k, v in reference[0].items() if k[1] in rescored
    }


def test_a_rescore_that_starts_inside_an_open_episode_keeps_it_whole(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    reference: tuple[Written, Written],
    database: str,
) -> None:
    data = trained[1]
    chunk = 20  # passes checkpoint, and keep the episode state, every 20 steps from FIRST
    lateness = 400 * STEP
    final = _final(data) + lateness
    job = kit.pipeline(
        database,
        data,
        output_database=database,
        lateness_ns=lateness,
        chunk_steps=chunk,
        initial_lookback_ns=final - int(data.timestamps_ns[FIRST]),
    )
    boundaries = [int(data.timestamps_ns[s]) for s in range(FIRST + chunk, STEPS, chunk)]
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: final) as task:
        runner = task.runner(job)
        # a bad value whose rescore starts at a checkpoint inside an episode of the reference
        choices = [
            (step, b)
            for (_, start), event in sorted(reference[1].items())
            for b in boundaries
            if start < b < int(event["end_time"])  # type: ignore[call-overload]
            for step in range(STEPS)
            if b <= runner._first_affected(int(data.timestamps_ns[step])) < b + chunk * STEP
        ]
        assert choices, "no episode of the reference spans a checkpoint"
        bad = choices[0][0]
        kit.write_demo(influxd.url, database, data)
        kit.write_rows(influxd.url, database, data, range(bad, bad + 1), shift=50.0)
        task.once()
        assert _output(influxd, database) != reference
        kit.write_rows(influxd.url, database, data, range(bad, bad + 1))  # corrected late
        second = task.once()["pumps"]
    assert isinstance(second, PassStats) and second.rescored
    scores, events = _output(influxd, database)
    assert scores == reference[0]
    assert events == reference[1]  # the open episode rewritten, nothing stale


@pytest.mark.parametrize("model", ["pumps", "ranged"])
def test_following_an_episode_past_the_end_of_a_feed_skips_the_silence(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    ranged: str,
    database: str,
    model: str,
) -> None:
    """A feed that stops inside an episode: the backfill follows it to the data's end, then
    finds in one query that nothing follows, instead of reading up to now chunk by chunk."""
    data = trained[1]
    kit.write_rows(influxd.url, database, data, range(240))
    kit.write_rows(influxd.url, database, data, range(240, 260), shift=50.0)  # it ends in an episode
    name = ranged if model == "ranged" else model
    job = kit.pipeline(database, data, output_database=database, model=name, chunk_steps=100)
    with Task(kit.config(influxd.url, server.target, (job,))) as task:  # now: months after the data
        stats = task.backfill("pumps", int(data.timestamps_ns[100]), int(data.timestamps_ns[300]))
    assert not stats.interrupted
    # [100, 200), [200, 300) and one chunk past --stop for the open episode, whatever the look-ahead
    assert stats.chunks == 3
    scored = sorted({t for _, t in kit.written(influxd.url, database, "anomaly_scores")})
    assert scored == data.timestamps_ns[100:260].tolist()
    events = kit.written(influxd.url, database, "anomaly_events")
    last = {unit: max(t for u, t in events if u == unit) for unit in UNITS}
    assert all(events[(unit, t)]["ongoing"] is True for unit, t in last.items())


def test_the_held_back_tail_of_a_range_scored_series_is_written_once_it_is_final(
    influxd: Influxd,
    server: EmbeddedServer,
    trained: tuple[str, DemoData],
    ranged: str,
    database: str,
) -> None:
    """After the feed stops, a range score's last steps wait `lateness` and their windows, as any
    model's do, and the look-ahead's steps beyond; then each is written once, as one pass over
    the whole data would have written it."""
    data = trained[1]
    kit.write_rows(influxd.url, database, data, range(260))
    lateness = 10 * STEP
    settled = int(data.timestamps_ns[259]) + lateness + (1 + kit.WINDOW) * STEP  # no look-ahead: done
    early = int(data.timestamps_ns[259]) + 3 * STEP
    clock = [early]
    job = kit.pipeline(
        database,
        data,
        output_database=database,
        model=ranged,
        lateness_ns=lateness,
        chunk_steps=37,
        initial_lookback_ns=early - int(data.timestamps_ns[FIRST]),
    )
    with Task(kit.config(influxd.url, server.target, (job,)), now_ns=lambda: clock[0]) as task:
        ahead = task.runner(job).geometry.reach.range_after
        assert ahead > 0
        counted = []
        for now in (early, settled, settled + ahead * STEP, settled + 50 * STEP):
            clock[0] = now
            stats = task.once()["pumps"]
            assert not isinstance(stats, Exception), stats
            counted.append(stats.steps)
            written = kit.written(influxd.url, database, "anomaly_scores")
            if now == settled:
                held = max(t for _, t in written)
                assert held < int(data.timestamps_ns[259])  # the range after the last steps may still change
    assert sorted({t for _, t in written}) == data.timestamps_ns[FIRST:260].tolist()
    assert sum(counted) == len(written) == 2 * (260 - FIRST)  # each step scored once
    assert counted[-1] == 0
    later = settled + 50 * STEP
    lookback = later - int(data.timestamps_ns[FIRST])
    whole = kit.pipeline(
        database, data, output_database="ranged_once", model=ranged, initial_lookback_ns=lookback
    )
    influxd.query('DROP DATABASE "ranged_once"')
    influxd.query('CREATE DATABASE "ranged_once"')
    with Task(kit.config(influxd.url, server.target, (whole,)), now_ns=lambda: later) as task:
        task.once()
    assert written == kit.written(influxd.url, "ranged_once", "anomaly_scores")  # bit for bit

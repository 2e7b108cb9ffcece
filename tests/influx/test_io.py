"""Reads, writes, grid, checkpoints and errors against a real influxd."""

from __future__ import annotations

import http.server
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from stad.influx_task.checkpoint import Checkpoint, FileCheckpointStore, InfluxCheckpointStore
from stad.influx_task.config import Connection, Pipeline
from stad.influx_task.eraser import SpanEraser
from stad.influx_task.events import Episode
from stad.influx_task.flux import FluxReader
from stad.influx_task.influxql import InfluxQLReader, build_select, parse_response
from stad.influx_task.local_influxd import Influxd, free_port
from stad.influx_task.points import Point, to_line
from stad.influx_task.retry import RetryPolicy, retry_call
from stad.influx_task.transport import InfluxError, InfluxUnavailable, Transport, is_retryable
from stad.influx_task.writer import LineWriter

S = 10**9
T0 = 1_700_000_000 * S


@pytest.fixture
def transport(influxd: Influxd) -> Iterator[Transport]:
    t = Transport(Connection(url=influxd.url))
    yield t
    t.close()


def _job(database: str, **extra: object) -> Pipeline:
    base: dict[str, object] = dict(
        name="j",
        database=database,
        measurement="pump",
        fields=("a", "b"),
        model="m",
        interval_ns=10 * S,
        group_by=("site",),
    )
    base.update(extra)
    return Pipeline(**base)  # type: ignore[arg-type]


def test_influxql_reads_grid_means_per_tag_set(transport: Transport, database: str) -> None:
    writer = LineWriter(transport)
    points = []
    for site, offset in (("north", 0.0), ("south", 100.0)):
        for k in range(6):  # two raw points per 10 s window: 0 s and 5 s into it
            t = T0 + k * 5 * S
            points.append(
                Point("pump", {"site": site, "unit": str(k % 2)}, {"a": offset + k, "b": offset - k}, t)
            )
    points.append(Point("pump", {"site": "east"}, {"a": 1.0, "b": 2.0}, T0 + 100 * S))  # outside range
    assert writer.write(points, database=database) == len(points)
    job = _job(database)
    blocks = InfluxQLReader(transport).read(job, T0 - 10 * S, T0 + 40 * S)
    by_site = {b.tags["site"]: b for b in blocks}
    assert sorted(by_site) == ["north", "south"]
    north = by_site["north"]
    # InfluxQL labels each window by its start; fill(null) gives NaN for empty windows.
    assert north.timestamps_ns.tolist() == [T0 - 10 * S, T0, T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    np.testing.assert_allclose(north.values[1:4], [[0.5, -0.5], [2.5, -2.5], [4.5, -4.5]])
    assert np.isnan(north.values[0]).all() and np.isnan(north.values[4]).all()
    np.testing.assert_allclose(by_site["south"].values[1], [100.5, 99.5])


def test_tag_filter_narrows_series(transport: Transport, database: str) -> None:
    LineWriter(transport).write(
        [Point("pump", {"site": s}, {"a": float(i), "b": 0.0}, T0) for i, s in enumerate(["x", "y", "z"])],
        database=database,
    )
    job = _job(database, tag_filter={"site": ("x", "z")})
    blocks = InfluxQLReader(transport).read(job, T0, T0 + 10 * S)
    assert sorted(b.tags["site"] for b in blocks) == ["x", "z"]
    assert "(\"site\" = 'x' OR \"site\" = 'z')" in build_select(job, T0, T0 + 10 * S)


def test_line_protocol_escaping_round_trips(transport: Transport, database: str) -> None:
    odd_tag = "a b,c=d\\e"
    odd_text = 'say "hi", \\ then'
    point = Point(
        "m x,y", {"t k": odd_tag}, {"f 1": odd_text, "n": 3, "ok": True, "v": 0.1, "skip": float("nan")}, T0
    )
    line = to_line(point)
    assert line is not None and "skip" not in line
    LineWriter(transport).write([point], database=database)
    reader = InfluxQLReader(transport)
    series = reader.query('SELECT * FROM "m x,y"', database=database)
    assert len(series) == 1
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=True))
    assert row == {"time": T0, "f 1": odd_text, "n": 3, "ok": True, "t k": odd_tag, "v": 0.1}


def _outputs(transport: Transport, database: str) -> set[tuple[str, str, str, int]]:
    """(measurement, site, model, time) of every output point."""
    found = set()
    for measurement in ("anomaly_scores", "anomaly_events"):
        for item in InfluxQLReader(transport).query(
            f'SELECT * FROM "{measurement}" GROUP BY *', database=database
        ):
            for row in item["values"]:
                found.add((measurement, item["tags"]["site"], item["tags"]["model"], int(row[0])))
    return found


def test_the_eraser_deletes_the_spans_of_the_named_series_only(transport: Transport, database: str) -> None:
    job = _job(database)
    sites = ("north", "it's \\ odd", "")  # "": a series without the tag
    points = [
        Point(
            m, {"site": site, "model": model, "source_measurement": "pump"}, {"score": 1.0}, T0 + k * 10 * S
        )
        for m in ("anomaly_scores", "anomaly_events")
        for site in (*sites, "south")
        for model in ("m", "other")
        for k in range(5)
    ]
    LineWriter(transport).write(points, database=database)
    every = _outputs(transport, database)
    SpanEraser(transport).erase(job, {(T0 + 10 * S, T0 + 30 * S): [{"site": s} for s in sites]})
    gone = {
        (m, s, "m", T0 + k * 10 * S)
        for m in ("anomaly_scores", "anomaly_events")
        for s in sites
        for k in (1, 2)
    }
    assert _outputs(transport, database) == every - gone


def test_the_eraser_without_a_delete_endpoint_says_so_once_and_deletes_nothing(
    influxd: Influxd, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job(database)
    plain = Transport(Connection(url=influxd.url))
    LineWriter(plain).write(
        [Point("anomaly_events", {"site": "x", "model": "m", "source_measurement": "pump"}, {"v": 1.0}, T0)],
        database=database,
    )
    v2 = Transport(Connection(url=influxd.url, org="o"))  # influxd 1.6 has no /api/v2/delete
    eraser = SpanEraser(v2)
    with caplog.at_level(logging.WARNING, logger="stad.influx_task"):
        for _ in range(2):
            eraser.erase(job, {(T0, T0 + S): [{"site": "x"}]})
    assert eraser.unsupported and caplog.text.count("cannot delete points") == 1
    assert _outputs(plain, database) == {("anomaly_events", "x", "m", T0)}
    plain.close()
    v2.close()


def test_series_are_listed_with_their_group_by_tags(
    transport: Transport, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    odd = "a b,c=d"
    LineWriter(transport).write(
        [
            Point("pump", tags, {"a": 1.0}, T0)
            for tags in (
                {"site": odd, "plant": "p1"},
                {"site": "x", "plant": "p1", "unit": "1"},
                {"site": "x", "plant": "p1", "unit": "2"},
                {"plant": "p1"},
                {"site": "y", "plant": "p2"},
            )
        ],
        database=database,
    )
    job = _job(database, tag_filter={"plant": ("p1",)})
    assert InfluxQLReader(transport).series_tags(job) == [{"site": ""}, {"site": odd}, {"site": "x"}]
    reader = InfluxQLReader(transport)
    with caplog.at_level(logging.WARNING, logger="stad.influx_task"):  # a server that cannot list
        assert reader.series_tags(_job("no_such_database")) is None
        assert reader.series_tags(_job("no_such_database")) is None
    assert caplog.text.count("every shard reads all") == 1


def test_writes_are_checked(transport: Transport, database: str) -> None:
    writer = LineWriter(transport)
    with pytest.raises(InfluxError, match="HTTP 400") as bad:
        writer.write_lines(["pump a=1.0 notatime"], database=database)
    assert not isinstance(bad.value, InfluxUnavailable) and bad.value.status == 400
    with pytest.raises(InfluxError, match="HTTP 404") as missing:
        writer.write_lines(["pump a=1.0 1"], database="no_such_database")
    assert missing.value.status == 404


def test_connection_refused_is_retryable() -> None:
    transport = Transport(Connection(url=f"http://127.0.0.1:{free_port()}", timeout_ms=2000))
    with pytest.raises(InfluxUnavailable):
        InfluxQLReader(transport).query("SHOW DATABASES")
    transport.close()


def test_query_errors_name_the_problem(transport: Transport, database: str) -> None:
    with pytest.raises(InfluxError, match="error parsing query") as bad:
        InfluxQLReader(transport).query("SELEKT nonsense", database=database)
    assert not is_retryable(bad.value)
    # what influxd answers a query in flight while it shuts down: retried, not a failed pass
    with pytest.raises(InfluxUnavailable, match="query engine shutdown"):
        parse_response(b'{"results":[{"statement_id":0,"error":"query engine shutdown"}]}')
    for garbage in (b"<html>proxy error</html>", b'{"results": [', b"\xff\xfe"):
        with pytest.raises(InfluxError, match="InfluxQL answer is not JSON") as bad:
            parse_response(garbage)
        assert not is_retryable(bad.value)


def test_influx_checkpoint_store_keeps_latest_per_series(transport: Transport, database: str) -> None:
    store = InfluxCheckpointStore(InfluxQLReader(transport), LineWriter(transport), database=database)
    assert store.load("job1") == {}
    episode = Episode(start_ns=T0, last_ns=T0 + 10 * S, max_score=7.5, contributions={"a": 0.7})
    store.save("job1", [Checkpoint("pump,site=x", T0), Checkpoint("pump,site=y", T0 + 10 * S)])
    store.save("job1", [Checkpoint("pump,site=x", T0 + 20 * S, episode)])
    store.save("job2", [Checkpoint("pump,site=x", T0 + 90 * S)])
    loaded = store.load("job1")
    assert {k: v.next_ns for k, v in loaded.items()} == {
        "pump,site=x": T0 + 20 * S,
        "pump,site=y": T0 + 10 * S,
    }
    assert loaded["pump,site=x"].episode == episode
    assert loaded["pump,site=y"].episode is None


def test_file_checkpoint_store(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "state" / "ckpt.json")
    assert store.load("j") == {}
    store.save("j", [Checkpoint("s1", 5), Checkpoint("s2", 7)])
    store.save("j", [Checkpoint("s1", 9, Episode(1, 2, 3.0, {"a": 1.0}))])
    loaded = FileCheckpointStore(tmp_path / "state" / "ckpt.json").load("j")
    assert {k: v.next_ns for k, v in loaded.items()} == {"s1": 9, "s2": 7}
    assert loaded["s1"].episode == Episode(1, 2, 3.0, {"a": 1.0})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        FileCheckpointStore(tmp_path / "bad.json").load("j")


def test_flux_on_influxdb_1_6_fails_clearly(influxd: Influxd, database: str) -> None:
    """1.6 has no Flux endpoint: the reader must say so, not return nothing."""
    reader = FluxReader(Connection(url=influxd.url))
    try:
        with pytest.raises(InfluxError, match="404") as caught:
            reader.read(_job(database), T0, T0 + 10 * S)
        assert not isinstance(caught.value, InfluxUnavailable)
    finally:
        reader.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0), then 503, then forwards to the real influxd."""

    upstream = ""
    answers: ClassVar[list[tuple[int, dict[str, str]]]] = []

    def _handle(self) -> None:
        if self.answers:
            status, headers = self.answers.pop(0)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(self.upstream + self.path, data=body, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_overloaded_influxdb_is_retried_honouring_retry_after(influxd: Influxd, database: str) -> None:
    _Flaky.upstream = influxd.url
    _Flaky.answers = [(429, {"Retry-After": "0"}), (503, {})]
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=proxy.serve_forever)
    thread.start()
    transport = Transport(Connection(url=f"http://127.0.0.1:{proxy.server_address[1]}"))
    waits: list[tuple[int, float]] = []
    try:
        line = f"pump a=1.5 {T0}"
        retry_call(
            lambda: LineWriter(transport).write_lines([line], database=database),
            RetryPolicy(base_s=0.05, cap_s=0.2, deadline_s=30),
            is_retryable,
            on_retry=lambda exc, attempt, delay: waits.append((getattr(exc, "status", 0), delay)),
        )
    finally:
        transport.close()
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert [status for status, _ in waits] == [429, 503]
    assert waits[0][1] == 0.0  # Retry-After: 0, not a random backoff
    assert 0.0 <= waits[1][1] <= 0.1  # second attempt: jitter below base * 2
    direct = Transport(Connection(url=influxd.url))
    rows = InfluxQLReader(direct).query('SELECT "a" FROM "pump"', database=database)
    direct.close()
    assert rows[0]["values"] == [[T0, 1.5]]

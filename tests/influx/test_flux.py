"""Flux path: query building and annotated-CSV parsing on responses in the documented format."""

from __future__ import annotations

import numpy as np
import pytest

from stad.influx_task.config import Pipeline
from stad.influx_task.flux import (
    blocks_from_records,
    build_flux,
    parse_annotated_csv,
)
from stad.influx_task.times import ns_from_rfc3339, rfc3339_from_ns
from stad.influx_task.transport import InfluxError

S = 10**9
T0 = 1_700_000_000 * S


def _job(**extra: object) -> Pipeline:
    base: dict[str, object] = dict(
        name="j",
        database="db",
        measurement="pump",
        fields=("a", "b"),
        model="m",
        interval_ns=10 * S,
        group_by=("site",),
    )
    base.update(extra)
    return Pipeline(**base)  # type: ignore[arg-type]


def test_rfc3339_round_trip_keeps_nanoseconds() -> None:
    for t in (0, T0, T0 + 1, T0 + 123_456_789):
        assert ns_from_rfc3339(rfc3339_from_ns(t)) == t
    assert ns_from_rfc3339("2023-11-14T22:13:20Z") == T0
    assert ns_from_rfc3339("2023-11-14T22:13:20.5Z") == T0 + S // 2
    assert ns_from_rfc3339("2023-11-14T23:13:20.000000001+01:00") == T0 + 1
    with pytest.raises(ValueError, match="2023-13"):
        ns_from_rfc3339("2023-13-01T00:00:00Z")


def test_build_flux_filters_groups_and_windows() -> None:
    job = _job(retention_policy="autogen", tag_filter={"site": ("a", 'b"x')}, aggregate="max")
    query = build_flux(job, T0, T0 + 60 * S)
    assert query.startswith('from(bucket: "db/autogen")')
    assert "range(start: 2023-11-14T22:13:20.000000000Z, stop: 2023-11-14T22:14:20.000000000Z)" in query
    assert 'r._measurement == "pump"' in query
    assert 'r._field == "a" or r._field == "b"' in query
    assert 'r["site"] == "a" or r["site"] == "b\\"x"' in query
    assert 'group(columns: ["_field", "site"])' in query
    assert "aggregateWindow(every: 10000000000ns, fn: max, createEmpty: true)" in query
    assert "sort(" not in query
    assert 'sort(columns: ["_time"])' in build_flux(_job(aggregate="last"), T0, T0 + 60 * S)
    with pytest.raises(ValueError, match="empty time range"):
        build_flux(job, T0, T0)


DOCUMENTED = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string
#group,false,false,true,true,false,false,true,true
#default,_result,,,,,,,
,result,table,_start,_stop,_time,_value,_field,site
,,0,2023-11-14T22:13:20Z,2023-11-14T22:13:50Z,2023-11-14T22:13:30Z,1.5,a,north
,,0,2023-11-14T22:13:20Z,2023-11-14T22:13:50Z,2023-11-14T22:13:40Z,,a,north
,,1,2023-11-14T22:13:20Z,2023-11-14T22:13:50Z,2023-11-14T22:13:30Z,2.5,b,north
,,1,2023-11-14T22:13:20Z,2023-11-14T22:13:50Z,2023-11-14T22:13:40Z,3.5,b,north

#datatype,string,long,dateTime:RFC3339Nano,double,string,string,boolean
#group,false,false,false,false,true,true,false
#default,other,,,,,,
,result,table,_time,_value,_field,site,flag
,,2,2023-11-14T22:13:30.000000000Z,7,a,south,true
"""


def test_parse_documented_annotated_csv() -> None:
    records = list(parse_annotated_csv(DOCUMENTED))
    assert len(records) == 5
    assert records[0]["result"] == "_result"  # from #default
    assert records[0]["table"] == 0
    assert records[0]["_time"] == T0 + 10 * S
    assert records[0]["_value"] == 1.5
    assert records[1]["_value"] is None  # empty cell, empty default
    assert records[4]["result"] == "other"
    assert records[4]["flag"] is True
    assert records[4]["_value"] == 7.0


def test_blocks_pivot_fields_and_shift_stop_labels_to_starts() -> None:
    blocks = blocks_from_records(list(parse_annotated_csv(DOCUMENTED)), _job(), label="stop")
    assert [dict(b.tags) for b in blocks] == [{"site": "north"}, {"site": "south"}]
    north = blocks[0]
    # Flux labelled the window [T0, T0+10s) by its stop T0+10s: the start label is T0.
    assert north.timestamps_ns.tolist() == [T0, T0 + 10 * S]
    np.testing.assert_array_equal(north.values, [[1.5, 2.5], [np.nan, 3.5]])
    south = blocks[1]
    np.testing.assert_array_equal(south.values, [[7.0, np.nan]])


def test_flux_error_table_raises() -> None:
    text = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,bad query here,897\n"
    with pytest.raises(InfluxError, match="bad query here"):
        list(parse_annotated_csv(text))


def test_ragged_row_raises() -> None:
    text = "#datatype,string,double\n#group,false,false\n#default,,\n,result,_value\n,,1.0,extra\n"
    with pytest.raises(InfluxError, match="cells"):
        list(parse_annotated_csv(text))

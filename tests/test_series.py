import numpy as np
import pytest

from stad.core.series import align_channels, make_series, series_from_proto, series_to_proto
from stad.v1 import series_pb2


def test_round_trip_keeps_values_nan_and_timestamps() -> None:
    values = np.array([[1.0, np.nan], [2.5, 3.0], [4.0, 5.0]])
    series = make_series(values, channels=["a", "b"], timestamps_ns=[10, 20, 30])
    decoded = series_from_proto(series_to_proto(series))
    np.testing.assert_array_equal(decoded.values, values)
    assert decoded.channels == ("a", "b")
    assert decoded.timestamps_ns is not None
    assert decoded.timestamps_ns.tolist() == [10, 20, 30]


def test_one_dimensional_values_are_one_channel() -> None:
    series = make_series([1.0, 2.0, 3.0])
    assert series.values.shape == (3, 1)
    assert series.channels == ("ch0",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"values": [[1.0, 2.0], [3.0, np.inf]], "channels": ["flow", "pressure"]},
            "channel 'pressure' has inf at step 1; use NaN for missing values",
        ),
        ({"values": np.zeros((0, 2))}, "empty"),
        ({"values": np.zeros((2, 2, 2))}, "T x C"),
        ({"values": [[1.0, 2.0]], "channels": ["a"]}, "1 channel names for 2"),
        ({"values": [[1.0, 2.0]], "channels": ["a", "a"]}, "unique"),
        ({"values": [[1.0], [2.0]], "timestamps_ns": [5, 5]}, "strictly increasing"),
        ({"values": [[1.0], [2.0]], "timestamps_ns": [5]}, "1 timestamps for 2 steps"),
    ],
)
def test_bad_series_raise_value_error_naming_the_problem(kwargs: dict[str, object], message: str) -> None:
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=message):
        make_series(values, **kwargs)  # type: ignore[arg-type]


def test_proto_with_ragged_values_is_rejected() -> None:
    message = series_pb2.Series(channels=["a", "b"], values=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="not a multiple of its 2 channels"):
        series_from_proto(message)


def test_align_channels_reorders_by_name_and_rejects_mismatch() -> None:
    series = make_series([[1.0, 2.0]], channels=["b", "a"])
    np.testing.assert_array_equal(align_channels(series, ["a", "b"]), [[2.0, 1.0]])
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['b'\]"):
        align_channels(series, ["a", "c"])

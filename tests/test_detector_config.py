"""The one declaration of the detector's settings: validation, flat names, round trips."""

import re
import typing
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from stad.client import TrainingSettings
from stad.core.detector_config import SETTINGS, SETTINGS_BY_NAME, DetectorConfig, SettingError
from stad.v1 import training_pb2


def test_defaults_round_trip_through_plain_data() -> None:
    config = DetectorConfig().replace(window=32, smoothing=5, level_baseline=True)
    assert DetectorConfig.from_dict(config.to_dict()) == config
    assert DetectorConfig.from_flat(config.to_flat()) == config
    assert config.model.window == 32 and config.scoring.smoothing == 5


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"window": 30}, "window"),  # not a multiple of patch
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"dropout": 2.0}, "dropout"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"level_baseline": 1}, "level_baseline"),
        ({"score_stride": 65}, "score_stride"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_values_name_the_setting_and_the_rule(values: dict[str, object], name: str) -> None:
    with pytest.raises(SettingError) as info:
        DetectorConfig.from_flat(values)
    assert info.value.name == name
    assert info.value.rule and name in str(info.value)


def test_unknown_saved_keys_are_refused() -> None:
    data = DetectorConfig().to_dict()
    data["scoring"]["retired_setting"] = 1
    with pytest.raises(SettingError, match="retired_setting"):
        DetectorConfig.from_dict(data)
    with pytest.raises(SettingError, match="extra"):
        DetectorConfig.from_dict({**DetectorConfig().to_dict(), "extra": {}})


def test_every_setting_is_declared_once_with_help_and_a_valid_default() -> None:
    assert len(SETTINGS_BY_NAME) == len(SETTINGS)
    for info in SETTINGS:
        assert info.help, info.name
        assert info.check(info.default) == info.default


# Where the declaration meets the wire and the client.

PROTO_TYPES = {
    int: {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64},
    float: {FieldDescriptor.TYPE_DOUBLE},
    bool: {FieldDescriptor.TYPE_BOOL},
}
SPEC_FIELDS_BESIDE_SETTINGS = {"model", "activate", "description"}
TRAINING_PROTO = Path(__file__).resolve().parents[1] / "protos" / "stad" / "v1" / "training.proto"


def test_training_spec_has_an_optional_field_of_the_right_kind_for_every_setting() -> None:
    fields = training_pb2.TrainingSpec.DESCRIPTOR.fields_by_name
    assert set(fields) - SPEC_FIELDS_BESIDE_SETTINGS == set(SETTINGS_BY_NAME)
    for info in SETTINGS:
        field = fields[info.name]
        assert field.type in PROTO_TYPES[info.kind], info.name
        assert field.has_presence, f"{info.name} must be optional: unset means the server's default"


def test_training_spec_documents_each_setting_with_its_help() -> None:
    text = TRAINING_PROTO.read_text()
    for info in SETTINGS:
        declared = re.search(rf"// (.*)\n\s*optional \w+ {info.name} = \d+;", text)
        assert declared is not None, info.name
        assert declared.group(1) == info.help


def test_training_settings_cover_exactly_the_declaration() -> None:
    hints = typing.get_type_hints(TrainingSettings)
    assert set(hints) == set(SETTINGS_BY_NAME)
    for info in SETTINGS:
        assert hints[info.name] == info.kind | None, info.name
    assert TrainingSettings().given() == {}


def test_training_settings_check_each_value_on_construction() -> None:
    settings = TrainingSettings(window=32, learning_rate=1, level_baseline=True)
    assert settings.given() == {"window": 32, "learning_rate": 1.0, "level_baseline": True}
    assert isinstance(settings.learning_rate, float)
    with pytest.raises(SettingError) as info:
        TrainingSettings(epochs=0)
    assert (info.value.name, info.value.value, info.value.rule) == ("epochs", 0, "must be an integer >= 1")
    with pytest.raises(SettingError, match="dropout"):
        TrainingSettings(dropout=1.5)

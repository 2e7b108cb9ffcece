"""The one declaration of the detector's settings: validation, flat names, round trips."""

import pytest

from stad.core.detector_config import SETTINGS, SETTINGS_BY_NAME, DetectorConfig, SettingError


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

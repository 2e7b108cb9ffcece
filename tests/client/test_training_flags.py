"""`stad train` and `stad influx train` take a flag per declared detector setting, with its default."""

from __future__ import annotations

import argparse

import pytest

from stad.client import TrainingSettings
from stad.client.cli import build_parser
from stad.client.cli.training_flags import flag, training_settings
from stad.core.detector_config import SETTINGS


def _command(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command: argparse.ArgumentParser = subparsers.choices[name]
    return command


def _train_parsers() -> dict[str, argparse.ArgumentParser]:
    parsers = {"stad train": _command(build_parser(), "train")}
    try:
        from stad.influx_task.cli import _parser
    except ImportError:  # no influx extra
        return parsers
    parsers["stad influx train"] = _command(_parser(), "train")
    return parsers


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("command", ["stad train", "stad influx train"])
def test_every_setting_has_a_flag_showing_its_default(command: str) -> None:
    parsers = _train_parsers()
    if command not in parsers:
        pytest.skip("the influx extra is not installed")
    flags = _flags(parsers[command])
    for info in SETTINGS:
        action = flags[flag(info.name)]
        assert action.dest == info.name and action.default is None  # unset: the server's default
        shown = str(info.default).lower() if info.kind is bool else str(info.default)
        assert action.help is not None and action.help.endswith(f"(default: {shown})"), action.help
        if info.kind is bool:
            assert f"--no-{info.name.replace('_', '-')}" in flags


def test_both_train_commands_take_the_same_setting_flags_and_activate_by_default() -> None:
    parsers = _train_parsers()
    if len(parsers) < 2:
        pytest.skip("the influx extra is not installed")
    stad, influx = (_flags(parser) for parser in parsers.values())
    names = [flag(info.name) for info in SETTINGS] + ["--activate", "--no-activate"]
    assert [(stad[n].help, stad[n].default) for n in names] == [
        (influx[n].help, influx[n].default) for n in names
    ]
    assert stad["--activate"].default is True


def _parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", "data.csv", "--model", "m", *flags])


def test_only_the_settings_given_are_sent() -> None:
    assert training_settings(_parse()) == TrainingSettings()
    args = _parse("--n-layers", "3", "--learning-rate", "0.01", "--seed", "0")
    assert training_settings(args) == TrainingSettings(n_layers=3, learning_rate=0.01, seed=0)
    assert _parse().activate is True and _parse("--no-activate").activate is False


def test_the_old_flag_names_still_work_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert training_settings(_parse("--layers", "3", "--heads", "2")) == TrainingSettings(
        n_layers=3, n_heads=2
    )
    assert "--layers is deprecated; use --n-layers" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        (["--epochs", "0"], "must be an integer >= 1, got 0"),
        (["--patch", "2.5"], "must be an integer >= 1, got 2.5"),
        (["--val-fraction", "0.95"], "must be a number in [0, 0.9], got 0.95"),
        (["--epochs", str(2**31)], f"must be an integer in [1, {2**31 - 1}], got {2**31}"),  # int32
        (["--seed", str(2**63)], f"must be an integer in [0, {2**63 - 1}], got {2**63}"),  # int64
    ],
)
def test_a_value_out_of_its_bounds_is_refused_with_the_rule(
    given: list[str], rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*given)
    assert exit_info.value.code == 2
    assert f"argument {given[0]}: {rule}" in capsys.readouterr().err


def test_every_flag_reaches_the_client_settings() -> None:
    given: list[str] = []
    for info in SETTINGS:
        if info.kind is bool:
            given.append(flag(info.name) if info.default else f"--no-{flag(info.name)[2:]}")
        else:
            given += [flag(info.name), str(info.default)]
    expected = TrainingSettings(**{info.name: info.default for info in SETTINGS})
    assert training_settings(_parse(*given)) == expected

"""The training flags of `stad train` and `stad influx train`, derived from the one declaration of
every detector setting (`stad.core.detector_config.SETTINGS`): `n_layers` is `--n-layers`, a bool
is `--x/--no-x`, `--help` shows the declared default, and only what the user sets is sent (the
server's defaults fill in the rest)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from google.protobuf.descriptor import FieldDescriptor

from stad.client._types import TrainingSettings
from stad.client.cli.options import DeprecatedAlias
from stad.core.detector_config import SETTINGS, SETTINGS_BY_NAME, SettingError, SettingInfo, Value
from stad.v1 import training_pb2 as _training_pb2

# old flag: the setting it means (the old `stad train` spelling)
DEPRECATED_FLAGS = {"--layers": "n_layers", "--heads": "n_heads"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per detector setting, and --activate/--no-activate (on by default)."""
    group = parser.add_argument_group("detector settings (unset: the server's default)")
    for info in SETTINGS:
        help_text = (
            f"{info.help} (default: {str(info.default).lower() if info.kind is bool else info.default})"
        )
        if info.kind is bool:
            group.add_argument(
                flag(info.name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            metavar = "N" if info.kind is int else "X"
            group.add_argument(
                flag(info.name), type=_parser(info), default=None, metavar=metavar, help=help_text
            )
    for old, name in DEPRECATED_FLAGS.items():
        group.add_argument(
            old,
            dest=name,
            type=_parser(SETTINGS_BY_NAME[name]),
            action=DeprecatedAlias,
            help=argparse.SUPPRESS,
        )
    parser.add_argument(
        "--activate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="make the new version the active one",
    )


def _parser(info: SettingInfo) -> Callable[[str], Value]:
    low, high = _int_range(info.name) if info.kind is int else (None, None)

    def parse(text: str) -> Value:
        try:
            value = info.check(info.kind(text))
        except (ValueError, SettingError) as exc:
            raise argparse.ArgumentTypeError(f"{info.rule}, got {text}") from exc
        if low is not None and high is not None and not low <= value <= high:  # what the proto holds
            floor = low if info.low is None else int(info.low)
            raise argparse.ArgumentTypeError(f"must be an integer in [{floor}, {high}], got {text}")
        return value

    parse.__name__ = info.kind.__name__
    return parse


def _int_range(name: str) -> tuple[int, int]:
    """The range of the setting's integer field in stad.v1.TrainingSpec (int32 or int64)."""
    bits = 64 if _FIELDS[name].type == FieldDescriptor.TYPE_INT64 else 32
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


_FIELDS = _training_pb2.TrainingSpec.DESCRIPTOR.fields_by_name


def training_settings(args: argparse.Namespace) -> TrainingSettings:
    """The settings the user set, by setting name."""
    return TrainingSettings(
        **{info.name: value for info in SETTINGS if (value := getattr(args, info.name, None)) is not None}
    )

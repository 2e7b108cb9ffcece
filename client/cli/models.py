"""`stad models list|show|delete|activate`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from stad.client._types import ModelInfo
from stad.client.cli.connect import connect
from stad.client.cli.errors import EXIT_OK
from stad.client.cli.options import Commands, opt
from stad.client.cli.output import emit, emit_json, number, table


def register(commands: Commands) -> None:
    models = commands.group("models", "list, show, delete or activate models")
    models.add("list", cmd_list, "list models")
    show = models.add("show", cmd_show, "show a model's versions")
    show.add_argument("name")
    show.add_argument("--version")
    delete = models.add("delete", cmd_delete, "delete a model or one version")
    delete.add_argument("name")
    delete.add_argument("--version")
    activate = models.add("activate", cmd_activate, "make a version the active one")
    activate.add_argument("name")
    activate.add_argument("version")


def _rows(models: Sequence[ModelInfo]) -> list[list[str]]:
    rows = []
    for info in models:
        active = info.active
        rows.append(
            [
                info.name,
                info.active_version or "-",
                str(len(info.versions)),
                ", ".join(active.channels) if active else "-",
                f"{active.threshold:.4g}" if active else "-",
            ]
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.models()
    if opt(args, "json"):
        emit_json(models)
    elif models:
        print(table(_rows(models), ["model", "active", "versions", "channels", "threshold"]))
    else:
        print("no models")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.model(args.name, version=args.version)
    if opt(args, "json"):
        emit_json(info)
        return EXIT_OK
    print(f"model {info.name} (active version: {info.active_version or 'none'})")
    for item in info.versions:
        marker = "*" if item.version == info.active_version else " "
        created = item.created_at.isoformat(timespec="seconds") if item.created_at else "-"
        print(
            f"{marker} version {item.version}  created {created}  window {item.window}"
            f"  threshold {item.threshold:.4g}"
        )
        print(f"    channels: {', '.join(item.channels)}")
        for warning in item.warnings:
            print(f"    warning: {warning.message}")
        for group, values in item.config.items():
            print(f"    {group}: " + ", ".join(f"{name}={value}" for name, value in values.items()))
        for line in _choice_lines(item.fit_choices, item.window):
            print(f"    {line}")
        print(f"    trained on {item.train_steps} steps")
        if item.description:
            print(f"    {item.description}")
        if item.metrics:
            print("    " + ", ".join(f"{key} {number(value)}" for key, value in sorted(item.metrics.items())))
    return EXIT_OK


def _choice_lines(choices: Mapping[str, Any], window: int) -> list[str]:
    """`models show`'s lines for what the detector chose from the training data."""
    if not choices:
        return []
    period = choices.get("dominant_period")
    chosen_window = []
    if choices.get("window_from_period"):
        chosen_window = [f"window {window} ({'from the period' if period else 'no period: the fallback'})"]
    lines = [
        "chosen at fit: "
        + ", ".join(
            [
                *chosen_window,
                f"dominant period {f'{period} steps' if period else 'none'}",
                _range_text(choices),
            ]
        )
    ]
    if "scaling" in choices:
        lines.append(f"scaling: {choices['scaling']}")
    by_kind: dict[str, list[str]] = {}
    for name, kind in choices.get("channel_kinds", {}).items():
        by_kind.setdefault(kind, []).append(name)
    varying = len(by_kind.pop("varying", []))
    kinds = [f"{kind} {', '.join(names)}" for kind, names in sorted(by_kind.items())]
    lines.append("channel kinds: " + "; ".join([*kinds, f"{varying} varying"]))
    counted, scored = choices.get("counted_channels"), choices.get("scored_channels")
    if counted is not None and scored is not None and counted < scored:
        lines.append(
            f"step score counts {counted} of the {scored} predicted channels (binary ones are inputs only)"
        )
    return lines


def cmd_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_model(args.name, version=args.version)
    what = f"{args.name} version {args.version}" if args.version else args.name
    emit(args, {"deleted": args.name, "version": args.version}, f"deleted {what}")
    return EXIT_OK


def cmd_activate(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.activate(args.name, args.version)
    emit(args, info, f"{info.name}: active version {info.active_version}")
    return EXIT_OK


def _range_text(choices: Mapping[str, Any]) -> str:
    span = choices.get("range_span")
    if span == 1:
        return "no range scores"
    return f"range span {span} (of means over {choices.get('range_mean_span', 1)})"

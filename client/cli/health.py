"""`stad health`: is the server serving?"""

from __future__ import annotations

import argparse

from stad.client.cli.connect import connect
from stad.client.cli.errors import EXIT_FAILURE, EXIT_OK
from stad.client.cli.options import Commands
from stad.client.cli.output import emit


def register(commands: Commands) -> None:
    commands.add("health", cmd_health, "check that the server is serving")


def cmd_health(args: argparse.Namespace) -> int:
    with connect(args) as client:
        health = client.health()
    emit(args, {"status": health.status, "serving": health.serving}, health.status)
    return EXIT_OK if health.serving else EXIT_FAILURE

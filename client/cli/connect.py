"""A client for the command: to --server / $STAD_SERVER, or to an embedded server on loopback."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from stad.client._channel import DEFAULT_MAX_MESSAGE_MB, DEFAULT_TIMEOUT_S
from stad.client._client import Client
from stad.client.cli.errors import UsageError, import_extra
from stad.client.cli.options import opt, positive_int
from stad.core.tokens import read_tokens


def default_home() -> Path:
    """Where the embedded server keeps models: $STAD_HOME, else the user's data directory
    (~/.local/share/stad on Linux)."""
    if os.environ.get("STAD_HOME"):
        return Path(os.environ["STAD_HOME"]).expanduser()
    return Path(platformdirs.user_data_dir("stad", appauthor=False))


def server_given(args: argparse.Namespace) -> bool:
    return bool(opt(args, "server") or os.environ.get("STAD_SERVER"))


@contextlib.contextmanager
def connect(args: argparse.Namespace, *, long_running: bool = False) -> Iterator[Client]:
    """A client for the global options.

    Calls get --timeout as deadline, else 60 s; `long_running` commands (scoring a
    whole file, uploading training data) get none unless --timeout is given.
    """
    timeout_s = opt(args, "timeout") or (None if long_running else DEFAULT_TIMEOUT_S)
    max_message_mb = _max_message_mb(args)
    if server_given(args):
        tls: bool | str | None = opt(args, "ca_cert") or bool(opt(args, "tls"))
        client_cert, client_key = opt(args, "client_cert"), opt(args, "client_key")
        if (client_cert or client_key) and not tls:
            raise UsageError("--client-cert and --client-key need --tls or --ca-cert")
        target = opt(args, "server") or os.environ["STAD_SERVER"]
        try:
            client = Client(
                target,
                token=_token(args),
                tls=tls,
                client_cert=client_cert,
                client_key=client_key,
                timeout_s=timeout_s,
                max_message_mb=max_message_mb,
            )
        except ValueError as exc:  # a bad token or an unreadable CA file
            raise UsageError(str(exc)) from exc
        with client:
            yield client
        return
    embedded = import_extra(
        "stad.server.embedded", "server", "no --server or STAD_SERVER given, and the embedded server"
    )
    settings = import_extra("stad.server.settings", "server", "the embedded server")
    model_dir = (Path(opt(args, "home")) if opt(args, "home") else default_home()) / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    with (
        embedded.EmbeddedServer(
            model_dir,
            device=opt(args, "device") or "auto",
            settings=settings.Settings(model_dir=model_dir, max_message_mb=max_message_mb),
        ) as server,
        Client(server.target, timeout_s=timeout_s, max_message_mb=max_message_mb) as client,
    ):
        yield client


def _token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file's first token, else $STAD_TOKEN, else $STAD_TOKEN_FILE's."""
    if opt(args, "token"):
        return str(args.token)
    if opt(args, "token_file"):
        return _first_token(args.token_file)
    if os.environ.get("STAD_TOKEN"):
        return os.environ["STAD_TOKEN"]
    if os.environ.get("STAD_TOKEN_FILE"):
        return _first_token(os.environ["STAD_TOKEN_FILE"])
    return None


def _first_token(path: str) -> str:
    try:
        return read_tokens(path)[0]
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _max_message_mb(args: argparse.Namespace) -> int:
    """--max-message-mb, else $STAD_MAX_MESSAGE_MB (the server's variable too), else 64."""
    given: int | None = opt(args, "max_message_mb")
    if given is not None:
        return given
    text = os.environ.get("STAD_MAX_MESSAGE_MB", "")
    if not text:
        return DEFAULT_MAX_MESSAGE_MB
    try:
        return positive_int(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"STAD_MAX_MESSAGE_MB must be a positive integer, got {text!r}") from exc

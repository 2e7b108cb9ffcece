"""Channel settings shared by the sync and async clients: limits, keepalive, TLS, auth, retries."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import TypeAlias

import grpc

from stad.client._exceptions import ClientClosedError, from_rpc_error
from stad.core.types import MIB

# The largest message either way, in MiB: the server's default, and the same
# setting name (max_message_mb, STAD_MAX_MESSAGE_MB) as the server's.
DEFAULT_MAX_MESSAGE_MB = 64
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3
# How often a training watch reconnects after UNAVAILABLE, and how often a
# job's state is polled when the server ends the watch before the job ends.
WATCH_RECONNECTS = 5
POLL_S = 0.5

# True: TLS with the system's root certificates; a path: TLS trusting that PEM
# CA file; ChannelCredentials: used as given; None/False: plaintext.
TLSOption: TypeAlias = bool | str | os.PathLike[str] | grpc.ChannelCredentials | None


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Ping an idle connection only while calls are open (e.g. a long watch),
        # no more often than the server's default minimum ping interval allows.
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


# A client certificate (PEM chain) and its key, read when TLS is on and no paths are given.
CLIENT_CERT_ENV = "STAD_CLIENT_CERT"
CLIENT_KEY_ENV = "STAD_CLIENT_KEY"

PathLike: TypeAlias = str | os.PathLike[str]


def credentials(
    tls: TLSOption, *, client_cert: PathLike | None = None, client_key: PathLike | None = None
) -> grpc.ChannelCredentials | None:
    """Channel credentials for a TLS option, None for plaintext.

    `client_cert`/`client_key` (else $STAD_CLIENT_CERT/$STAD_CLIENT_KEY) present a client
    certificate, for servers that require one (mutual TLS); they need TLS on.
    """
    given = client_cert is not None or client_key is not None
    if tls is None or tls is False:
        if given:
            raise ValueError(
                "client_cert and client_key need TLS: give tls=True or the CA certificate's path"
            )
        return None
    if isinstance(tls, grpc.ChannelCredentials):
        if given:
            raise ValueError("give the client certificate inside the ChannelCredentials passed as tls")
        return tls
    if not given:
        client_cert = os.environ.get(CLIENT_CERT_ENV) or None
        client_key = os.environ.get(CLIENT_KEY_ENV) or None
    if (client_cert is None) != (client_key is None):
        raise ValueError(
            f"give client_cert and client_key together (or {CLIENT_CERT_ENV} and {CLIENT_KEY_ENV})"
        )
    root = None if tls is True else _read_pem(tls, "TLS CA certificate")
    if client_cert is None or client_key is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read_pem(client_key, "client key"),
        certificate_chain=_read_pem(client_cert, "client certificate"),
    )


def _read_pem(path: PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from exc


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Per-call metadata: the bearer token when one is given."""
    if token is None:
        return ()
    if not token or any(ch.isspace() for ch in token):
        raise ValueError("token must be a non-empty string without whitespace")
    return (("authorization", f"Bearer {token}"),)


def backoff_s(attempt: int) -> float:
    """Delay before retry number `attempt` (0-based): exponential with full jitter, max 2 s."""
    return random.uniform(0.0, min(2.0, 0.1 * 2**attempt))


def should_retry(exc: grpc.RpcError, *, idempotent: bool, attempt: int, retries: int) -> bool:
    return idempotent and attempt < retries and exc.code() == grpc.StatusCode.UNAVAILABLE


def deadline_after(timeout_s: float | None) -> float | None:
    """The monotonic-clock deadline `timeout_s` from now (None: no deadline)."""
    return None if timeout_s is None else time.monotonic() + timeout_s


def remaining_s(deadline: float | None) -> float | None:
    """The time left before `deadline` as a call timeout (at least 1 ms)."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def retry_delay(
    exc: grpc.RpcError, *, deadline: float | None, idempotent: bool, attempt: int, retries: int
) -> float:
    """The delay before retrying a failed unary call; raises the client's error when it is not retried."""
    delay = backoff_s(attempt)
    in_time = deadline is None or time.monotonic() + delay < deadline
    if in_time and should_retry(exc, idempotent=idempotent, attempt=attempt, retries=retries):
        return delay
    raise from_rpc_error(exc) from exc


def reconnect_delay(exc: grpc.RpcError, reconnects: int) -> float:
    """The delay before reopening a broken watch stream; raises the client's error when it is not."""
    if exc.code() == grpc.StatusCode.UNAVAILABLE and reconnects < WATCH_RECONNECTS:
        return backoff_s(reconnects)
    raise from_rpc_error(exc) from exc


class ClientBase:
    """The settings and open/closed state shared by Client and AsyncClient."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None,
        timeout_s: float | None,
        retries: int,
        max_message_mb: int,
        channel_given: bool,
    ) -> None:
        if not channel_given and not target:
            raise ValueError("give a target such as '127.0.0.1:50051' or a channel")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive or None, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_message_mb < 1:
            raise ValueError(f"max_message_mb must be at least 1, got {max_message_mb}")
        self.target = target
        self._metadata = call_metadata(token)
        self._timeout_s = timeout_s
        self._retries = retries
        self.max_message_bytes = max_message_mb * MIB
        self._channel_options = channel_options(self.max_message_bytes)
        self._owns_channel = not channel_given
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

"""Channel settings shared by the sync and async clients: limits, keepalive, TLS, auth, retries."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TypeAlias

import grpc

# Matches the server's default limit on both directions.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3

# True: TLS with the system's root certificates; a path: TLS trusting that PEM
# CA file; ChannelCredentials: used as given; None/False: plaintext.
TLSOption: TypeAlias = bool | str | os.PathLike[str] | grpc.ChannelCredentials | None

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Ping an idle connection only while calls are open (e.g. a long watch),
    # no more often than the server's default minimum ping interval allows.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
]


def credentials(tls: TLSOption) -> grpc.ChannelCredentials | None:
    """Channel credentials for a TLS option, None for plaintext."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    path = Path(tls)
    try:
        return grpc.ssl_channel_credentials(root_certificates=path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read the TLS CA certificate {str(path)!r}: {exc.strerror}") from exc


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

"""Exceptions raised by the stad client.

    StadError
    ├── ClientClosedError          the client was used after close()
    ├── DataError (ValueError)     a data file or array the client cannot send
    ├── TrainingFailedError        a training job ended FAILED (or CANCELLED)
    └── ServerError                the server answered with a non-OK status
        ├── InvalidArgument        INVALID_ARGUMENT, OUT_OF_RANGE
        ├── NotFound               NOT_FOUND
        ├── AlreadyExists          ALREADY_EXISTS
        ├── FailedPrecondition     FAILED_PRECONDITION
        ├── ResourceExhausted      RESOURCE_EXHAUSTED
        ├── DeadlineExceeded       DEADLINE_EXCEEDED
        ├── Unavailable            UNAVAILABLE
        ├── Cancelled              CANCELLED
        ├── Unauthenticated        UNAUTHENTICATED
        ├── PermissionDenied       PERMISSION_DENIED
        └── InternalError          INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ABORTED

`from_rpc_error` is the one place where `grpc.RpcError` becomes one of these.
"""

from __future__ import annotations

import re

import grpc

from stad.core.quoting import shorten
from stad.core.types import MIB


class StadError(Exception):
    """Base of every error the client raises."""


class ClientClosedError(StadError):
    """The client was used after it was closed."""


class DataError(StadError, ValueError):
    """Input data (a file, an array) that cannot be sent; the message names the bad value."""


class TrainingFailedError(StadError):
    """A training job ended without producing a model version."""

    def __init__(self, message: str, *, job_id: str, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class ServerError(StadError):
    """The server answered with a non-OK gRPC status."""

    def __init__(self, message: str, *, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class InvalidArgument(ServerError):
    pass


class NotFound(ServerError):
    pass


class AlreadyExists(ServerError):
    pass


class FailedPrecondition(ServerError):
    pass


class ResourceExhausted(ServerError):
    pass


class DeadlineExceeded(ServerError):
    pass


class Unavailable(ServerError):
    pass


class Cancelled(ServerError):
    pass


class Unauthenticated(ServerError):
    pass


class PermissionDenied(ServerError):
    pass


class InternalError(ServerError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ServerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def from_rpc_error(exc: grpc.RpcError) -> ServerError:
    """Translate a gRPC error into the client's hierarchy (raise it `from exc`)."""
    code = exc.code()
    details = shorten(exc.details() or code.name.lower().replace("_", " "))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        details = _explain_message_size(details)
    return _BY_CODE.get(code, InternalError)(details, code=code)


# gRPC's own wording when a message is over a side's max message size, such as
# "CLIENT: Sent message larger than max (1200040 vs. 1048576)".
_TOO_LARGE = re.compile(r"(CLIENT|SERVER): (Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")
# Which message it was, for each side and direction, and how else to make it fit.
_WHICH = {
    ("CLIENT", "Sent"): ("request", "send less per call"),
    ("CLIENT", "Received"): ("response", "ask for less per call (stream_score for long series)"),
    ("SERVER", "Received"): (
        "request",
        "send less per call (training uploads come in chunks of a quarter of the client's "
        "max_message_mb: set it to the server's)",
    ),
    ("SERVER", "Sent"): ("response", "ask for less per call (stream_score for long series)"),
}


def _explain_message_size(details: str) -> str:
    """gRPC's message-size error as which message was over whose limit, and the setting to raise."""
    match = _TOO_LARGE.search(details)
    if match is None:
        return details
    side, direction, size, limit = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
    whose = "client" if side == "CLIENT" else "server"
    message, otherwise = _WHICH[side, direction]
    return (
        f"the {message} is {_mib(size)}, more than the {whose}'s max message size of {_mib(limit)}; "
        f"raise the {whose}'s max_message_mb (--max-message-mb or STAD_MAX_MESSAGE_MB), or {otherwise}"
    )


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB ({size} bytes)"

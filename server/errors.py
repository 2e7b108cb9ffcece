"""Domain errors of the server and their one mapping to gRPC status codes.

StadServerError
├── InvalidArgumentError      INVALID_ARGUMENT   (also: any ValueError)
├── NotFoundError             NOT_FOUND
├── FailedPreconditionError   FAILED_PRECONDITION
├── ResourceExhaustedError    RESOURCE_EXHAUSTED
├── DeadlineExceededError     DEADLINE_EXCEEDED
└── UnavailableError          UNAVAILABLE
RequestCutOff                 RESOURCE_EXHAUSTED (a CancelledError: gRPC ended the call)
"""

from __future__ import annotations

import asyncio

import grpc


class StadServerError(Exception):
    """Base of the errors the server turns into a status code."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgumentError(StadServerError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(StadServerError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(StadServerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(StadServerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(StadServerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(StadServerError):
    code = grpc.StatusCode.UNAVAILABLE


class RequestCutOff(asyncio.CancelledError):
    """gRPC cut a request stream off at a message over the server's receive limit and
    cancelled the call; the caller got RESOURCE_EXHAUSTED from gRPC itself."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller sees for `exc`."""
    if isinstance(exc, StadServerError | RequestCutOff):
        return exc.code, str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"

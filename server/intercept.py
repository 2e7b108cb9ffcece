"""What a call meets before its handler: the bearer-token check and tolerant message decoding.

Both run in gRPC server interceptors, so that a call without the token is refused before
its message is read, and a message that does not decode gets INVALID_ARGUMENT on every
method (gRPC's own answer is UNKNOWN, with a traceback in the log). Bad calls are logged
as one line each, at most a few per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from stad.core.quoting import quote
from stad.server.errors import InvalidArgumentError
from stad.server.metrics import ServerMetrics

log = logging.getLogger("stad.server.calls")

# How long a refused request stream is read on, so that the client sees the status.
DRAIN_S = 10.0

# Services any caller may use without the token: probes and tooling need them.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# grpc's classes are generic in its type stubs only
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Interceptor: TypeAlias = aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = aio.ServerInterceptor
# gRPC's continuation answers None for a method no service has (the stubs say otherwise).
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class RateLimitedLog:
    """Warnings of one kind at most `per_period` times each `period_s`; the lines held
    back are counted in the next line that gets through."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_period: int = 5,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_period = per_period
        self._period_s = period_s
        self._clock = clock
        self._windows: dict[str, list[float]] = {}  # kind -> [start, logged, held back]

    def warning(self, kind: str, message: str) -> None:
        now = self._clock()
        window = self._windows.setdefault(kind, [now, 0, 0])
        if now - window[0] >= self._period_s:
            window[:] = [now, 0, window[2]]
        if window[1] >= self._per_period:
            window[2] += 1
            return
        held = int(window[2])
        suffix = f" ({held} more like it not logged)" if held else ""
        self._logger.warning("%s%s", message, suffix)
        window[1] += 1
        window[2] = 0


def method_name(full: str) -> str:
    """'/stad.v1.ScoringService/Score' -> 'Score'."""
    return full.rsplit("/", 1)[-1]


def _refusal(code: grpc.StatusCode, message: str) -> Handler:
    """A handler that answers `code` without reading the request (it takes the request
    stream and never iterates it, whatever the method's own kind)."""

    async def refuse(request_iterator: object, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)


class TokenCheck(Interceptor):
    """Refuses stad.v1 calls without 'authorization: Bearer T' for one of `tokens`;
    OPEN_SERVICES stay open. No tokens: every call passes."""

    def __init__(self, tokens: Sequence[str], metrics: ServerMetrics, bad_calls: RateLimitedLog) -> None:
        self._expected = [f"Bearer {token}".encode() for token in tokens]
        self._metrics = metrics
        self._bad_calls = bad_calls

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        if not self._expected or details.method.startswith(OPEN_SERVICES) or self._authorized(details):
            return await continuation(details)
        method = method_name(details.method)
        self._metrics.requests.labels(method=method, outcome=grpc.StatusCode.UNAUTHENTICATED.name).inc()
        self._bad_calls.warning("unauthenticated", f"refused {method}: missing or wrong bearer token")
        return _refusal(
            grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token in the 'authorization' metadata"
        )

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
        # compare with every token, so the time taken does not tell which one nearly matched
        matches = [hmac.compare_digest(given, expected) for expected in self._expected]
        return any(matches)


class CorruptMessage(InvalidArgumentError):
    """A request message that does not decode as its type."""


class _Undecodable:
    """What a request deserializer returns for bytes it cannot decode."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class DecodeCheck(Interceptor):
    """Decodes requests so that bytes that are not the method's message get
    INVALID_ARGUMENT, logged as one rate-limited line without a traceback."""

    def __init__(self, bad_calls: RateLimitedLog) -> None:
        self._bad_calls = bad_calls

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        handler: Handler | None = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler  # type: ignore[return-value]
        method = method_name(details.method)
        deserialize = handler.request_deserializer

        def tolerant(data: bytes) -> object:
            try:
                return deserialize(data)
            except Exception as exc:  # whatever the decoder raises, the bytes were bad
                return _Undecodable(f"{type(exc).__name__}: {exc}")

        kind = _kind(handler)
        wrapped = _WRAPPERS[kind](getattr(handler, kind), method, self._bad_calls)
        replaced: Handler = handler._replace(  # type: ignore[attr-defined]
            request_deserializer=tolerant, **{kind: wrapped}
        )
        return replaced


def _kind(handler: Handler) -> str:
    return ("stream_" if handler.request_streaming else "unary_") + (
        "stream" if handler.response_streaming else "unary"
    )


def _corrupt(method: str, reason: str, bad_calls: RateLimitedLog) -> CorruptMessage:
    bad_calls.warning("corrupt", f"refused {method}: the request message does not decode ({quote(reason)})")
    return CorruptMessage(f"the request is not a valid {method} message: it does not decode")


async def _decoded(
    requests: AsyncIterator[object], method: str, bad_calls: RateLimitedLog
) -> AsyncIterator[object]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            await drain(requests)
            raise _corrupt(method, request.reason, bad_calls)
        yield request


async def _results(result: object) -> AsyncIterator[object]:
    """The messages of a response-streaming behaviour, whether it yields them or writes
    them with context.write and returns None."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result


def _unary_unary(behavior: Any, method: str, bad_calls: RateLimitedLog) -> Any:
    async def wrapped(request: object, context: aio.ServicerContext[Any, Any]) -> object:
        try:
            if isinstance(request, _Undecodable):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, str(_corrupt(method, request.reason, bad_calls))
                )
            return await behavior(request, context)
        except BaseException as exc:
            del request
            _release_frames(exc)
            raise

    return wrapped


def _unary_stream(behavior: Any, method: str, bad_calls: RateLimitedLog) -> Any:
    async def wrapped(request: object, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[object]:
        try:
            if isinstance(request, _Undecodable):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, str(_corrupt(method, request.reason, bad_calls))
                )
            async for item in _results(behavior(request, context)):
                yield item
        except BaseException as exc:
            del request
            _release_frames(exc)
            raise

    return wrapped


def _release_frames(exc: BaseException) -> None:
    """gRPC keeps an aborted call's exception in the call's state, in a reference cycle with
    the frames of its traceback: the request and the arrays made of it would live on until
    the cyclic garbage collector ran. Clearing the finished frames' locals frees them now."""
    traceback.clear_frames(exc.__traceback__)


async def drain(requests: AsyncIterator[object]) -> None:
    """Reads and drops what the client still sends, for at most DRAIN_S, so that it has
    finished writing when the status goes out: grpc's asyncio client reports INTERNAL
    ("Internal error from Core") instead of the server's status when a call ends while
    it is still writing (grpc/grpc#36066)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_S):
            async for _ in requests:
                pass


def _stream_unary(behavior: Any, method: str, bad_calls: RateLimitedLog) -> Any:
    async def wrapped(requests: AsyncIterator[object], context: aio.ServicerContext[Any, Any]) -> object:
        try:
            return await behavior(_decoded(requests, method, bad_calls), context)
        except CorruptMessage as exc:  # a handler that does not map errors itself
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BaseException as exc:
            _release_frames(exc)
            raise

    return wrapped


def _stream_stream(behavior: Any, method: str, bad_calls: RateLimitedLog) -> Any:
    async def wrapped(
        requests: AsyncIterator[object], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[object]:
        try:
            async for item in _results(behavior(_decoded(requests, method, bad_calls), context)):
                yield item
        except CorruptMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BaseException as exc:
            _release_frames(exc)
            raise

    return wrapped


_WRAPPERS = {
    "unary_unary": _unary_unary,
    "unary_stream": _unary_stream,
    "stream_unary": _stream_unary,
    "stream_stream": _stream_stream,
}

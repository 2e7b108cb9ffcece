"""What every RPC of the stad services goes through: shutdown refusal, the one place
domain errors become status codes, metrics, and in-flight counting (the token is
checked before, in stad.server.intercept)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

from stad.core.quoting import shorten
from stad.server.errors import RequestCutOff, status_for
from stad.server.metrics import ServerMetrics

R = TypeVar("R")


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Outcome:
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""


class CallGuard:
    """Wraps handler bodies; `draining` makes new calls fail with UNAVAILABLE."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        await self._idle.wait()

    async def unary(
        self, method: str, context: aio.ServicerContext[Any, Any], body: Callable[[], Awaitable[R]]
    ) -> R:
        async with self._guarded(method, context) as outcome:
            self._admit(context)
            return await body()
        await context.abort(outcome.code, outcome.message)
        raise AssertionError("unreachable: abort raises")

    async def stream(
        self, method: str, context: aio.ServicerContext[Any, Any], body: AsyncIterator[R]
    ) -> AsyncIterator[R]:
        async with self._guarded(method, context) as outcome:
            self._admit(context)
            async for item in body:
                yield item
        if outcome.code is not grpc.StatusCode.OK:
            await context.abort(outcome.code, outcome.message)

    @asynccontextmanager
    async def _guarded(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[_Outcome]:
        """Count and time the call; an Exception in the block is swallowed and its status
        recorded in the outcome (the caller aborts with it); cancellation and BaseExceptions
        propagate, counted with the status gRPC gave the caller."""
        began = self._enter(method)
        outcome = _Outcome()
        try:
            yield outcome
        except BaseException as exc:
            outcome.code, message = self._failure(exc, context)
            outcome.message = shorten(message)  # past gRPC's metadata limit the caller gets no message
            if not isinstance(exc, Exception):
                raise
        finally:
            self._leave(method, outcome.code, began)

    def _admit(self, context: aio.ServicerContext[Any, Any]) -> None:
        if self.draining:
            raise _Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry elsewhere")

    def _failure(
        self, exc: BaseException, context: aio.ServicerContext[Any, Any]
    ) -> tuple[grpc.StatusCode, str]:
        if isinstance(exc, _Refused):
            return exc.code, str(exc)
        if isinstance(exc, asyncio.CancelledError) and not isinstance(exc, RequestCutOff):
            # gRPC cancelled the call; what the caller got depends on why
            if _deadline_passed(context):
                return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed"
            if self.draining:
                return grpc.StatusCode.UNAVAILABLE, "the server stopped before the call finished"
        return status_for(exc)

    def _enter(self, method: str) -> float:
        self.in_flight += 1
        self._idle.clear()
        return time.perf_counter()

    def _leave(self, method: str, outcome: grpc.StatusCode, began: float) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        self._metrics.requests.labels(method=method, outcome=outcome.name).inc()
        self._metrics.request_seconds.labels(method=method).observe(time.perf_counter() - began)


# The caller's deadline fires before the server's copy of it (that one starts when the call
# arrives), so a cancel this close to the server's deadline is the caller's deadline passing.
DEADLINE_SLACK_S = 0.25


def _deadline_passed(context: aio.ServicerContext[Any, Any]) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SLACK_S


def deadline_of(context: aio.ServicerContext[Any, Any]) -> float | None:
    """The call's deadline in event-loop time, or None."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining

"""A memory budget for scoring requests, taken before their message is read.

gRPC reads a unary request whole before its handler runs, so 24 concurrent 32 MiB Score
calls would hold 24 decoded copies at once. `MemoryGate` turns Score and StreamScore into
request-streaming handlers that first wait for room in a `RequestMemory` budget and only
then read their message; until then its bytes stay with the client, held back by HTTP/2
flow control. A call reserves the largest message it may bring; once the message is read,
the reservation becomes what the call really costs (MEMORY_PER_BYTE times its size), so
small calls pass at once while large ones take turns. A call that finds no room before its
deadline gets RESOURCE_EXHAUSTED. (StartTraining streams are bounded by --max-training-mb
and spill to disk while they queue.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from stad.core.types import MIB
from stad.server.intercept import Continuation, Handler, Interceptor, method_name
from stad.server.metrics import ServerMetrics

# The unary-request methods whose requests carry series.
GATED_METHODS = frozenset({"/stad.v1.ScoringService/Score", "/stad.v1.ScoringService/StreamScore"})
# What a scoring request costs per byte of its message while it is served: the bytes, the
# decoded message, its arrays and the windows made of them (measured on a 32 MiB Score call).
MEMORY_PER_BYTE = 4


class NoRoom(Exception):
    """The budget had no room for a call before its deadline."""


class RequestMemory:
    """Bytes reserved by calls in progress, at most `budget` when a call is let in; a
    reservation larger than the budget is cut to it, so that one call alone always fits."""

    def __init__(self, budget: int, on_wait: Callable[[], object] = lambda: None) -> None:
        self.budget = budget
        self.reserved = 0
        self._on_wait = on_wait  # called for each reservation that does not fit at once
        self._room = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int, timeout_s: float | None) -> AsyncIterator[Reservation]:
        """Wait up to `timeout_s` (None: as long as it takes) for `size` bytes (NoRoom if
        they never come), hold them for the block, then give back what is left of them."""
        reservation = Reservation(self, min(size, self.budget))
        async with self._room:
            if not self._fits(reservation.size):
                self._on_wait()
            try:
                await asyncio.wait_for(self._room.wait_for(lambda: self._fits(reservation.size)), timeout_s)
            except TimeoutError:
                raise NoRoom from None
            self._take(reservation.size)
        try:
            yield reservation
        finally:
            await self._give_back(reservation.size)
            reservation.size = 0

    def _fits(self, size: int) -> bool:
        return self.reserved + size <= self.budget

    def _take(self, size: int) -> None:
        self.reserved += size

    async def _give_back(self, size: int) -> None:
        # the bytes go back at once, so that a cancellation while waking the waiters
        # cannot lose them; the wake-up itself is shielded from that cancellation
        self.reserved -= size
        await asyncio.shield(self._wake())

    async def _wake(self) -> None:
        async with self._room:
            self._room.notify_all()


class Reservation:
    """The bytes one call holds. `settle` makes them what its message really costs; more
    than reserved is taken without waiting (the message is in memory by then), and later
    calls wait until the total is back under the budget."""

    def __init__(self, memory: RequestMemory, size: int) -> None:
        self._memory = memory
        self.size = size

    async def settle(self, size: int) -> None:
        if size > self.size:
            self._memory._take(size - self.size)
        else:
            await self._memory._give_back(self.size - size)
        self.size = size


class MemoryGate(Interceptor):
    """Makes GATED_METHODS wait for room in `memory` before their request is read."""

    def __init__(self, budget: int, max_message_bytes: int, metrics: ServerMetrics) -> None:
        self._memory = RequestMemory(budget, on_wait=metrics.request_memory_waits.inc)
        self._max_message_bytes = max_message_bytes
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        handler: Handler | None = await continuation(details)
        if handler is None or details.method not in GATED_METHODS or handler.request_streaming:
            return handler  # type: ignore[return-value]
        return self._gated(handler, method_name(details.method))

    @contextlib.asynccontextmanager
    async def _room(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Reservation]:
        try:
            async with self._memory.reserve(self._max_message_bytes, context.time_remaining()) as held:
                self._metrics.request_memory.set(self._memory.reserved)
                yield held
        except NoRoom:
            self._metrics.requests.labels(method=method, outcome="RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server's memory for requests ({self._memory.budget // MIB} MiB, "
                "--max-request-memory-mb) stayed full until the deadline; retry later",
            )
        finally:
            self._metrics.request_memory.set(self._memory.reserved)

    def _gated(self, handler: Handler, method: str) -> Handler:
        """The unary-request handler as a request-streaming one that reads its one message
        once there is room for it."""

        async def one_message(
            requests: AsyncIterator[object], context: aio.ServicerContext[Any, Any], held: Reservation
        ) -> object:
            request = await anext(requests, None)
            # reading on to the end of the stream also drops gRPC's own reference to the message
            if request is None or await anext(requests, None) is not None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"a {method} call carries exactly one request message"
                )
            await held.settle(_cost(request))
            return request

        if handler.response_streaming:
            behavior: Any = handler.unary_stream  # an async behaviour (the stubs know only sync ones)

            async def streamed(
                requests: AsyncIterator[object], context: aio.ServicerContext[Any, Any]
            ) -> Any:
                async with self._room(method, context) as held:
                    async for item in behavior(await one_message(requests, context, held), context):
                        yield item

            return grpc.stream_stream_rpc_method_handler(
                streamed, handler.request_deserializer, handler.response_serializer
            )
        answer: Any = handler.unary_unary

        async def answered(requests: AsyncIterator[object], context: aio.ServicerContext[Any, Any]) -> Any:
            async with self._room(method, context) as held:
                return await answer(await one_message(requests, context, held), context)

        return grpc.stream_unary_rpc_method_handler(
            answered, handler.request_deserializer, handler.response_serializer
        )


def _cost(request: object) -> int:
    byte_size = getattr(request, "ByteSize", None)
    return MEMORY_PER_BYTE * int(byte_size()) if byte_size is not None else 0

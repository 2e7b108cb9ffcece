"""stad.v1.ModelService over the registry."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio

from stad.server import convert, paging
from stad.server.detector import Detector
from stad.server.errors import InvalidArgumentError
from stad.server.guard import CallGuard
from stad.server.registry import Registry
from stad.v1 import models_pb2 as _models_pb2
from stad.v1 import models_pb2_grpc as _models_pb2_grpc

Context = aio.ServicerContext[Any, Any]


def page_bounds(page_size: int, page_token: str, names: list[str]) -> tuple[list[str], str]:
    """The page of `names` (sorted) after the token, and the next token ("" at the end)."""
    size = paging.page_size(page_size)
    after = paging.decode_token(page_token, "after:") if page_token else ""
    remaining = [name for name in names if name > after]
    page = remaining[:size]
    token = ""
    if len(remaining) > size:
        token = paging.encode_token("after:", page[-1])
    return page, token


class ModelServicer(_models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: Registry[Detector], guard: CallGuard) -> None:
        self._registry = registry
        self._guard = guard

    async def ListModels(
        self, request: _models_pb2.ListModelsRequest, context: Context
    ) -> _models_pb2.ListModelsResponse:
        async def body() -> _models_pb2.ListModelsResponse:
            names = await asyncio.to_thread(self._registry.model_names)
            page, token = page_bounds(request.page_size, request.page_token, names)
            records = await asyncio.to_thread(lambda: [self._registry.model_record(n) for n in page])
            return _models_pb2.ListModelsResponse(
                models=[convert.model_message(r) for r in records], next_page_token=token
            )

        return await self._guard.unary("ListModels", context, body)

    async def GetModel(self, request: _models_pb2.GetModelRequest, context: Context) -> _models_pb2.Model:
        async def body() -> _models_pb2.Model:
            record = await asyncio.to_thread(self._registry.model_record, request.name, request.version)
            return convert.model_message(record)

        return await self._guard.unary("GetModel", context, body)

    async def DeleteModel(
        self, request: _models_pb2.DeleteModelRequest, context: Context
    ) -> _models_pb2.DeleteModelResponse:
        async def body() -> _models_pb2.DeleteModelResponse:
            await asyncio.to_thread(self._registry.delete, request.name, request.version)
            return _models_pb2.DeleteModelResponse()

        return await self._guard.unary("DeleteModel", context, body)

    async def SetActiveVersion(
        self, request: _models_pb2.SetActiveVersionRequest, context: Context
    ) -> _models_pb2.Model:
        async def body() -> _models_pb2.Model:
            if not request.version:
                raise InvalidArgumentError("no version named to activate")
            await asyncio.to_thread(self._registry.set_active, request.name, request.version)
            record = await asyncio.to_thread(self._registry.model_record, request.name)
            return convert.model_message(record)

        return await self._guard.unary("SetActiveVersion", context, body)

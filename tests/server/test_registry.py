"""The on-disk registry, and ModelService over a real channel."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from stad.server.app import StadServer
from stad.server.detector import Detector
from stad.server.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from stad.server.registry import Registry
from stad.v1 import models_pb2, models_pb2_grpc
from tests.server.conftest import CHANNELS, MODEL, MakeServer


def test_versions_are_numbered_immutable_and_activatable(tmp_path: Path, saved_model: Path) -> None:
    loads: list[Path] = []

    def loader(path: Path) -> Detector:
        loads.append(path)
        return Detector.load(path)

    registry = Registry(tmp_path, loader, max_cached=1)
    assert registry.register("m", saved_model) == "1"
    assert registry.register("m", saved_model, activate=True, description="second") == "2"
    assert registry.versions("m") == ["1", "2"]
    assert registry.active_version("m") == "2"
    assert registry.resolve("m") == "2" and registry.resolve("m", "1") == "1"
    record = registry.version_record("m", "2")
    assert record.description == "second" and record.metadata["channels"] == list(CHANNELS)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # no leftovers

    first = registry.load("m", "1")
    assert registry.load("m", "1") is first  # cached
    registry.load("m", "2")  # evicts version 1 (max_cached=1)
    assert registry.load("m", "1") is not first
    assert len(loads) == 3

    registry.delete("m", "2")
    assert registry.versions("m") == ["1"] and registry.active_version("m") == ""
    with pytest.raises(FailedPreconditionError, match="model 'm' has no active version"):
        registry.resolve("m")
    assert registry.register("m", saved_model) == "3"  # a deleted version's number is not reused
    registry.delete("m")
    assert registry.model_names() == []
    with pytest.raises(NotFoundError, match="unknown model 'm'"):
        registry.versions("m")
    assert registry.register("m", saved_model) == "4"  # nor after the whole model was deleted
    assert Registry(tmp_path, loader).register("m", saved_model) == "5"  # the mark is on disk
    assert registry.model_names() == ["m"]


def test_bad_names_and_sources_are_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path, Detector.load)
    for name in ("", "../up", ".hidden", "a" * 65, "sp ace"):
        with pytest.raises(InvalidArgumentError, match="bad model name"):
            registry.register(name, tmp_path)
    with pytest.raises(InvalidArgumentError, match="not a saved model"):
        registry.register("ok", tmp_path)


async def test_model_service(make_server: MakeServer, model_dir: Path, saved_model: Path) -> None:
    registry = Registry(model_dir, Detector.load)
    for name in ("alpha", "beta", "gamma"):
        registry.register(name, saved_model)
    registry.register(MODEL, saved_model, description="two")
    _, channel = await make_server()
    stub = models_pb2_grpc.ModelServiceStub(channel)

    first = await stub.ListModels(models_pb2.ListModelsRequest(page_size=3))
    assert [m.name for m in first.models] == ["alpha", "beta", "gamma"]
    rest = await stub.ListModels(models_pb2.ListModelsRequest(page_size=3, page_token=first.next_page_token))
    assert [m.name for m in rest.models] == [MODEL] and rest.next_page_token == ""

    model = await stub.GetModel(models_pb2.GetModelRequest(name=MODEL))
    assert model.active_version == "1"
    assert [v.version for v in model.versions] == ["1", "2"]
    version = model.versions[1]
    assert version.description == "two" and list(version.channels) == list(CHANNELS)
    assert version.window == 16 and version.train_steps == 600 and version.threshold > 0
    assert '"format": "stad-detector"' in version.metadata_json

    activated = await stub.SetActiveVersion(models_pb2.SetActiveVersionRequest(name=MODEL, version="2"))
    assert activated.active_version == "2"
    await stub.DeleteModel(models_pb2.DeleteModelRequest(name=MODEL, version="2"))
    model = await stub.GetModel(models_pb2.GetModelRequest(name=MODEL))
    assert model.active_version == "" and [v.version for v in model.versions] == ["1"]
    await stub.DeleteModel(models_pb2.DeleteModelRequest(name="gamma"))

    failures: list[tuple[Awaitable[Any], grpc.StatusCode, str]] = [
        (
            stub.GetModel(models_pb2.GetModelRequest(name="gamma")),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'gamma'",
        ),
        (
            stub.GetModel(models_pb2.GetModelRequest(name=MODEL, version="9")),
            grpc.StatusCode.NOT_FOUND,
            "has no version '9'",
        ),
        (
            stub.SetActiveVersion(models_pb2.SetActiveVersionRequest(name=MODEL, version="2")),
            grpc.StatusCode.NOT_FOUND,
            "has no version '2'",
        ),
        (
            stub.DeleteModel(models_pb2.DeleteModelRequest(name="nope")),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'nope'",
        ),
        (
            stub.ListModels(models_pb2.ListModelsRequest(page_token="%%%")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad page_token",
        ),
        (
            stub.ListModels(models_pb2.ListModelsRequest(page_size=5000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size must be in 0..1000, got 5000",
        ),
    ]
    for call, code, message in failures:
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is code
        assert message in str(caught.value.details())


async def test_stopped_server_stays_stopped(served: tuple[StadServer, aio.Channel]) -> None:
    server, channel = served
    stub = models_pb2_grpc.ModelServiceStub(channel)
    await stub.ListModels(models_pb2.ListModelsRequest(), timeout=10)  # serving before the stop
    await server.stop(grace_s=1)
    await server.stop(grace_s=1)  # idempotent
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

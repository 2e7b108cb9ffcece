"""Fuzzed stad.v1 calls: corrupt bytes, random messages, and valid requests with one field mutated.

Every request is raw bytes sent through a channel's generic `unary_unary`-style
callables (no stubs), so corrupt wire bytes reach the server as they are. Which
methods exist, and whether they stream, is read from the service descriptors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, message, message_factory

from stad.v1 import models_pb2, scoring_pb2, training_pb2

SERVICES = (
    scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"],
    training_pb2.DESCRIPTOR.services_by_name["TrainingService"],
    models_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
PROTECTED_MODEL = "chaos"  # the fuzz never deletes the model it scores with
FD = descriptor.FieldDescriptor


@dataclass(frozen=True)
class Method:
    path: str  # "/stad.v1.ScoringService/Score"
    name: str
    request_class: type[message.Message]
    client_streaming: bool
    server_streaming: bool


def methods() -> list[Method]:
    found = []
    for service in SERVICES:
        for method in service.methods:
            found.append(
                Method(
                    path=f"/{service.full_name}/{method.name}",
                    name=method.name,
                    request_class=message_factory.GetMessageClass(method.input_type),
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                )
            )
    return found


def _random_text(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.2:
        return ""
    if choice < 0.4:
        return rng.choice(["chaos", "fuzz", "1", "0", "-1", "..", "a/b", "é", "\x00"])
    if choice < 0.9:
        return "".join(chr(rng.randrange(32, 0x250)) for _ in range(rng.randrange(1, 80)))
    return "x" * rng.randrange(1_000, 30_000)


def _random_scalar(field: Any, rng: random.Random) -> object:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return _random_text(rng)
    if kind == FD.TYPE_BYTES:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return rng.choice([0.0, 1.0, -1.0, 1e308, -1e308, float("nan"), float("inf"), rng.gauss(0, 1e3)])
    if kind == FD.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values])
    unsigned = kind in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
    wide = kind in (FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64)
    high = 2**64 - 1 if unsigned and wide else 2**32 - 1 if unsigned else 2**63 - 1 if wide else 2**31 - 1
    low = 0 if unsigned else -high - 1
    return rng.choice([0, 1, 2, high, low, rng.randint(low, high), rng.randint(0, 100)])


def fill_random(target: message.Message, rng: random.Random, depth: int = 0) -> None:
    """Set random values on a random subset of the message's fields, recursively."""
    for field in target.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        if field.is_repeated:
            container = getattr(target, field.name)
            count = rng.randrange(0, 400 if field.type == FD.TYPE_DOUBLE else 4)
            for _ in range(count):
                if field.type == FD.TYPE_MESSAGE:
                    if depth < 3:
                        fill_random(container.add(), rng, depth + 1)
                else:
                    container.append(_random_scalar(field, rng))
        elif field.type == FD.TYPE_MESSAGE:
            if depth < 3:
                fill_random(getattr(target, field.name), rng, depth + 1)
        else:
            setattr(target, field.name, _random_scalar(field, rng))


def mutate_one_field(target: message.Message, rng: random.Random) -> None:
    """Replace one field somewhere in the message tree with a random value."""
    present = target.ListFields()
    field: Any
    if not present or rng.random() < 0.2:
        field = rng.choice(target.DESCRIPTOR.fields)
    else:
        field, value = rng.choice(present)
        if field.type == FD.TYPE_MESSAGE and rng.random() < 0.6:
            inner = value[rng.randrange(len(value))] if field.is_repeated else value
            if len(inner.DESCRIPTOR.fields):
                mutate_one_field(inner, rng)
                return
    target.ClearField(field.name)
    if field.is_repeated or field.type == FD.TYPE_MESSAGE:
        holder = type(target)()
        fill_random(holder, rng, depth=2)
        if holder.HasField(field.name) if not field.is_repeated else len(getattr(holder, field.name)):
            getattr(target, field.name).MergeFrom(getattr(holder, field.name))
    else:
        setattr(target, field.name, _random_scalar(field, rng))


def corrupt(data: bytes, rng: random.Random) -> bytes:
    """Flip bits, truncate, or splice random bytes into serialized data."""
    if not data or rng.random() < 0.3:
        return rng.randbytes(rng.randrange(1, 2048))
    raw = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.5:
        raw = raw[: rng.randrange(len(raw))]
    if rng.random() < 0.3:
        at = rng.randrange(len(raw) + 1)
        raw[at:at] = rng.randbytes(rng.randrange(1, 64))
    return bytes(raw)


def safe_for_the_bench(method: Method, data: bytes) -> bool:
    """False for a DeleteModel that would delete the model the bench scores with."""
    if method.name != "DeleteModel":
        return True
    try:
        parsed = method.request_class.FromString(data)
    except Exception:
        return True
    return getattr(parsed, "name", "") != PROTECTED_MODEL


def fuzz_requests(
    method: Method, valid: Callable[[], list[message.Message]], rng: random.Random
) -> list[bytes]:
    """The raw request messages of one fuzzed call (more than one for a request stream)."""
    kind = rng.random()
    base = valid()
    if kind < 0.35:  # corrupt wire bytes
        out = [corrupt(m.SerializeToString(), rng) for m in base]
    elif kind < 0.6:  # random message of the right type
        out = []
        for _ in base:
            random_message = method.request_class()
            fill_random(random_message, rng)
            out.append(random_message.SerializeToString())
    else:  # a valid request with one field mutated
        target = base[rng.randrange(len(base))]
        mutate_one_field(target, rng)
        out = [m.SerializeToString() for m in base]
    return out if method.client_streaming else out[:1]

"""Training jobs as server and client both see them: the job's state and its progress reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stad.v1 import training_pb2 as _training_pb2

_PROTO_PREFIX = "JOB_STATE_"  # the proto's JobState values are this prefix and the member's name
_PROTO_NAMES: dict[int, str] = {number: name for name, number in _training_pb2.JobState.items()}


class JobState(enum.Enum):
    UNSPECIFIED = "unspecified"  # the proto's default: a state this side does not know
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        """The state of a proto `JobState` number; one this side does not know is UNSPECIFIED."""
        name = _PROTO_NAMES.get(value, "").removeprefix(_PROTO_PREFIX)
        return cls.__members__.get(name, cls.UNSPECIFIED)

    def to_proto(self) -> _training_pb2.JobState.ValueType:
        return _training_pb2.JobState.Value(_PROTO_PREFIX + self.name)


# The states a job can be in on the server (UNSPECIFIED only names what a client cannot read).
JOB_STATES: tuple[JobState, ...] = tuple(state for state in JobState if state is not JobState.UNSPECIFIED)


@dataclass(frozen=True)
class TrainingProgress:
    """One progress report; steps count optimiser steps over all phases."""

    phase: str  # "pretrain" or "finetune"
    epoch: int
    epochs: int
    step: int
    steps_total: int
    train_loss: float
    val_loss: float
    mask_ratio: float
    eta_s: float

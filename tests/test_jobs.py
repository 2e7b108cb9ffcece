"""The job state and progress record that server and client share, against the proto."""

from __future__ import annotations

from dataclasses import fields

from stad.core.jobs import JOB_STATES, JobState, TrainingProgress
from stad.v1 import training_pb2


def test_every_proto_state_is_a_job_state_and_back() -> None:
    for number in training_pb2.JobState.values():
        state = JobState.from_proto(number)
        assert state.to_proto() == number
        assert training_pb2.JobState.Name(number) == f"JOB_STATE_{state.name}"
    assert len(JobState) == len(training_pb2.JobState.values())


def test_a_state_the_proto_does_not_know_reads_as_unspecified() -> None:
    unknown = max(training_pb2.JobState.values()) + 1
    assert JobState.from_proto(unknown) is JobState.UNSPECIFIED


def test_server_states_leave_out_unspecified_and_finished_is_the_end() -> None:
    assert JobState.UNSPECIFIED not in JOB_STATES
    assert {s for s in JOB_STATES if s.finished} == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def test_progress_fields_are_the_proto_message_fields() -> None:
    message = training_pb2.TrainingProgress.DESCRIPTOR.fields
    assert [f.name for f in fields(TrainingProgress)] == [f.name for f in message]

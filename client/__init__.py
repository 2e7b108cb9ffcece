"""The stad client: a typed gRPC client (sync and async) and the `stad` CLI.

    from stad.client import Client

    with Client("127.0.0.1:50051") as client:
        result = client.score(values, timestamps=times, channels=names, model="pumps")
        print(result.score, result.is_anomaly, result.spans())

Importing this package never imports torch.
"""

from stad.client._async_client import AsyncClient, AsyncTrainingJob
from stad.client._client import Client, TrainingJob
from stad.client._convert import SeriesInput
from stad.client._exceptions import (
    AlreadyExists,
    Cancelled,
    ClientClosedError,
    DataError,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    StadError,
    TrainingFailedError,
    Unauthenticated,
    Unavailable,
)
from stad.client._types import (
    HealthStatus,
    JobStatus,
    ModelInfo,
    ModelVersionInfo,
    ScoreResult,
    TrainingSettings,
)
from stad.core.jobs import JobState, TrainingProgress
from stad.core.series import SeriesData, make_series

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncTrainingJob",
    "Cancelled",
    "Client",
    "ClientClosedError",
    "DataError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HealthStatus",
    "InternalError",
    "InvalidArgument",
    "JobState",
    "JobStatus",
    "ModelInfo",
    "ModelVersionInfo",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ScoreResult",
    "SeriesData",
    "SeriesInput",
    "ServerError",
    "StadError",
    "TrainingFailedError",
    "TrainingJob",
    "TrainingProgress",
    "TrainingSettings",
    "Unauthenticated",
    "Unavailable",
    "make_series",
]

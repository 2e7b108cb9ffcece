"""Server settings: command-line flags, each also readable from a STAD_* environment variable.

A flag given on the command line wins over its environment variable, which wins
over the default. `--max-batch-windows` is read from `STAD_MAX_BATCH_WINDOWS`, and
so on for every flag.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from stad.core.tokens import read_tokens
from stad.core.types import MIB
from stad.server.job_limits import JobLimits

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Settings:
    """Everything the server can be configured with."""

    model_dir: Path
    address: str = "127.0.0.1:50051"
    device: str = "auto"
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    metrics_address: str = "127.0.0.1"
    max_batch_windows: int = 64
    max_queue_delay_ms: float = 5.0
    max_queue_windows: int = 8192
    max_message_mb: int = 64
    token: str | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_concurrent_rpcs: int = 256
    max_request_memory_mb: int = 0  # 0: 1.5 x max_message_mb
    grace_s: float = 10.0
    max_concurrent_jobs: int = 1
    max_queued_jobs: int = 64
    max_training_mb: int = 512
    max_queued_mb: int = 4096
    max_parameters: int = JobLimits.max_parameters
    max_channels: int = JobLimits.max_channels
    max_window: int = JobLimits.max_window
    max_epochs: int = JobLimits.max_epochs
    max_job_memory_mb: int = JobLimits.max_job_memory_mb
    max_job_s: float = 6 * 3600.0
    max_cached_models: int = 8
    torch_threads: int = 0  # 0: auto, see threads_for_torch
    server_id: str = ""  # "": this host's name

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in (
            "max_batch_windows",
            "max_queue_windows",
            "max_message_mb",
            "max_concurrent_jobs",
            "max_queued_jobs",
            "max_training_mb",
            "max_queued_mb",
            "max_parameters",
            "max_channels",
            "max_window",
            "max_epochs",
            "max_job_memory_mb",
            "max_cached_models",
            "max_concurrent_rpcs",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_request_memory_mb < 0:
            raise ValueError(f"max_request_memory_mb must be >= 0, got {self.max_request_memory_mb}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")
        if not self.max_job_s > 0:
            raise ValueError(f"max_job_s must be > 0, got {self.max_job_s}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("client_ca needs tls_cert and tls_key: client certificates need TLS")
        if self.max_queue_windows < self.max_batch_windows:
            raise ValueError(
                f"max_queue_windows ({self.max_queue_windows}) must be at least "
                f"max_batch_windows ({self.max_batch_windows})"
            )

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * MIB

    @property
    def request_memory_bytes(self) -> int:
        """The budget of scoring requests: by default room for one largest message being read
        while the calls already read keep half as much again."""
        return (self.max_request_memory_mb or self.max_message_mb * 3 // 2) * MIB

    def accepted_tokens(self) -> list[str]:
        """Every accepted bearer token (none: calls need no token); reads --token-file."""
        tokens = [self.token] if self.token is not None else []
        if self.token_file is not None:
            tokens += read_tokens(self.token_file)
        return tokens

    @property
    def job_limits(self) -> JobLimits:
        return JobLimits(
            max_parameters=self.max_parameters,
            max_channels=self.max_channels,
            max_window=self.max_window,
            max_epochs=self.max_epochs,
            max_job_memory_mb=self.max_job_memory_mb,
        )

    @property
    def server_name(self) -> str:
        """Whose training jobs are whose in a model dir that replicas share."""
        return self.server_id or socket.gethostname()


_FLAGS: dict[str, tuple[type, str]] = {
    "address": (str, "HOST:PORT to listen on (default 127.0.0.1:50051)"),
    "model_dir": (Path, "model registry directory (required)"),
    "device": (str, "auto, cpu or cuda (default auto: cuda when present)"),
    "metrics_port": (int, "serve Prometheus metrics on this HTTP port (default: off)"),
    "metrics_address": (str, "address of the metrics endpoint (default 127.0.0.1)"),
    "max_batch_windows": (int, "windows per batch at most (default 64; 1 turns batching off)"),
    "max_queue_delay_ms": (float, "longest wait of a request for its batch to fill (default 5)"),
    "max_queue_windows": (int, "windows waiting per model version at most (default 8192)"),
    "max_message_mb": (int, "largest gRPC message in MiB, both ways (default 64)"),
    "token": (
        str,
        "require 'authorization: Bearer TOKEN' metadata on every stad.v1 call (health checks "
        "and reflection stay open, so probes work without it)",
    ),
    "token_file": (
        Path,
        "file of accepted bearer tokens, one a line ('#' comments allowed): keeps them out of "
        "`ps`; several lines let clients move to a new token (with --token too, both are accepted)",
    ),
    "tls_cert": (Path, "PEM certificate chain; serve TLS (with --tls-key)"),
    "tls_key": (Path, "PEM private key for --tls-cert"),
    "client_ca": (
        Path,
        "PEM CA certificates: require every client to present a certificate signed by one "
        "(mutual TLS; needs --tls-cert)",
    ),
    "max_concurrent_rpcs": (
        int,
        "calls in progress at most, open ones (health, reflection) included; more get "
        "RESOURCE_EXHAUSTED at once (default 256)",
    ),
    "max_request_memory_mb": (
        int,
        "memory in MiB for the Score and StreamScore requests being served (about 4x their "
        "size); a call waits for room before its message is read, up to its deadline, and "
        "one call alone always gets in (default 0: 1.5 x --max-message-mb)",
    ),
    "grace_s": (float, "seconds in-flight calls get to finish on shutdown (default 10)"),
    "max_concurrent_jobs": (int, "training jobs running at once (default 1)"),
    "max_queued_jobs": (int, "training jobs waiting at most (default 64)"),
    "max_training_mb": (int, "largest training data set in MiB of float64 values (default 512)"),
    "max_queued_mb": (
        int,
        "training data of queued jobs in MiB at most, kept on disk in the model dir (default 4096)",
    ),
    "max_parameters": (int, "network parameters of a job's model at most (default 50,000,000)"),
    "max_channels": (int, "channels of a training job at most (default 1024)"),
    "max_window": (int, "window (steps) of a training job at most (default 4096)"),
    "max_epochs": (int, "epochs and finetune_epochs of a training job at most (default 10000)"),
    "max_job_memory_mb": (
        int,
        "estimated peak memory of one training job in MiB at most; larger jobs are refused "
        "before they start (default 8192)",
    ),
    "max_job_s": (float, "wall-clock seconds a training job may run; then it fails (default 21600)"),
    "max_cached_models": (int, "loaded model versions kept in memory (default 8)"),
    "torch_threads": (
        int,
        "torch intra-op threads for scoring and for each training job (default 0: half the "
        "CPU cores, at least 1, since scoring and a training job run side by side)",
    ),
    "server_id": (
        str,
        "this server's name in the job history, for replicas sharing one model dir; keep it "
        "stable across restarts (default: the host name)",
    ),
}


def env_name(field_name: str) -> str:
    return "STAD_" + field_name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stad serve",
        description="Serve stad models over gRPC. Every flag can also be set as STAD_<FLAG>, "
        "e.g. STAD_MODEL_DIR, STAD_MAX_BATCH_WINDOWS.",
    )
    for name, (kind, text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=kind, default=None, help=f"{text} [{env_name(name)}]")
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then STAD_* variables, then defaults; ValueError names a bad one."""
    environ = os.environ if environ is None else environ
    parsed = vars(build_parser().parse_args(argv))
    values: dict[str, object] = {}
    for field in fields(Settings):
        if field.name not in _FLAGS:
            continue
        kind = _FLAGS[field.name][0]
        value = parsed.get(field.name)
        if value is None and env_name(field.name) in environ:
            raw = environ[env_name(field.name)]
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{env_name(field.name)}={raw!r} is not a valid {kind.__name__}") from None
        if value is not None:
            values[field.name] = value
    if "model_dir" not in values:
        raise ValueError(f"--model-dir (or {env_name('model_dir')}) is required")
    return Settings(**values)  # type: ignore[arg-type]


def threads_for_torch(setting: int) -> int:
    """Intra-op threads to use for a `torch_threads` setting (0: half the cores, at least 1).

    Scoring and a training job run in separate processes on the same cores; torch's own
    default (every core in each) oversubscribes them, which slowed training 20x in our runs.
    """
    return setting if setting > 0 else max(1, (os.cpu_count() or 2) // 2)

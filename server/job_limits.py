"""What one training job may ask for: operator-set limits and a memory estimate made before it runs.

The estimate reads the job's settings from `stad.core.detector_config.DetectorConfig` (the one
declaration of every detector setting) plus the data's channels and steps; it models the
published architecture (patch tokens per channel, temporal and cross-channel attention, an MLP)
from above rather than building the network, so it costs nothing and cannot run out of memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stad.core.detector_config import DetectorConfig
from stad.core.types import MIB
from stad.server.detector.choices import largest_auto_window
from stad.server.errors import InvalidArgumentError, ResourceExhaustedError

RUNTIME_BYTES = 384 * MIB  # a training process with torch imported, before any data
BYTES_PER_VALUE = 64  # the data as received, scaled, masks, and the calibration scores per (step, channel)
OPTIMIZER_COPIES = 4  # weights, gradients and AdamW's two moments
FLOAT_BYTES = 4


@dataclass(frozen=True)
class JobLimits:
    """Operator-set bounds on a training job; each names the flag that sets it."""

    max_parameters: int = 50_000_000
    max_channels: int = 1024
    max_window: int = 4096
    max_epochs: int = 10_000
    max_job_memory_mb: int = 8192

    def check(self, flat_config: Mapping[str, object], channels: int, steps: int) -> int:
        """The job's estimated peak memory in bytes, or ResourceExhaustedError naming the
        limit it breaks and its flag."""
        try:
            config = DetectorConfig.from_flat(flat_config)
        except ValueError as exc:
            raise InvalidArgumentError(f"bad training setting: {exc}") from exc
        if config.model.window == 0:  # chosen from the data at fit time: bound it by the longest choice
            config = config.replace(window=largest_auto_window(config.model.patch))
        _at_most("channels", channels, self.max_channels, "--max-channels")
        _at_most("window", config.model.window, self.max_window, "--max-window")
        _at_most("epochs", config.training.epochs, self.max_epochs, "--max-epochs")
        _at_most("finetune_epochs", config.training.finetune_epochs, self.max_epochs, "--max-epochs")
        _at_most("parameters", parameter_count(config, channels), self.max_parameters, "--max-parameters")
        memory = training_memory_bytes(config, channels, steps)
        if memory > self.max_job_memory_mb * MIB:
            raise ResourceExhaustedError(
                f"the job would need about {memory / MIB:,.0f} MiB of memory, more than the server's "
                f"limit of {self.max_job_memory_mb:,} MiB per job (--max-job-memory-mb); use fewer "
                "channels, steps, layers, a smaller d_model or batch_size"
            )
        return memory


def _at_most(what: str, value: int, limit: int, flag: str) -> None:
    if value > limit:
        raise ResourceExhaustedError(f"{what}={value:,} is over the server's limit of {limit:,} ({flag})")


def parameter_count(config: DetectorConfig, channels: int) -> int:
    """The network's parameters, counted from its shape (an upper bound of the detector's)."""
    m = config.model
    d, ff = m.d_model, m.ff_mult * m.d_model
    patches = m.window // m.patch
    attention = 2 * (4 * d * d + 4 * d)  # temporal and cross-channel: qkv and projection
    mlp = 2 * d * ff + ff + d
    block = attention + mlp + 6 * d  # three layer norms
    embedding = 2 * m.patch * d + d + d + patches * d + channels * d  # + mask token, positions
    output = 2 * d + d * m.patch + m.patch
    head = 2 * (d + channels + 2) * d + d + 2  # the supervised head, when labels are given
    return m.n_layers * block + embedding + output + head


def training_memory_bytes(config: DetectorConfig, channels: int, steps: int) -> int:
    """Peak memory of a training job, estimated from above: runtime, data, optimizer state,
    and the activations autograd keeps for one batch."""
    m, t = config.model, config.training
    patches = m.window // m.patch
    tokens = t.batch_size * channels * patches
    per_token = m.n_layers * ((14 + 2 * m.ff_mult) * m.d_model + 2 * m.n_heads * (patches + channels))
    per_token += 4 * m.d_model + 4 * m.patch
    activations = 2 * FLOAT_BYTES * tokens * per_token  # forward storage and backward buffers
    optimizer = OPTIMIZER_COPIES * FLOAT_BYTES * parameter_count(config, channels)
    data = BYTES_PER_VALUE * steps * channels
    return RUNTIME_BYTES + data + optimizer + activations

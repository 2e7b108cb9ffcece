"""Training: self-supervised masked pretraining, then optional supervised fine-tuning.

AdamW with gradient clipping; early stopping keeps the best epoch's weights.
All randomness comes from one `torch.Generator`; bf16 autocast on CUDA only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stad.core.detector_config import DetectorConfig, TrainingConfig
from stad.core.jobs import TrainingProgress
from stad.server.detector.model import (
    AnomalyHead,
    MaskedPredictor,
    autocast,
    point_mask,
    predict_masked,
    random_masks,
    squared_errors,
)

# Early stopping without a validation split watches this many training windows.
MONITOR_WINDOWS = 512
# Fine-tuning precomputes head inputs for at most this many training windows.
HEAD_MAX_WINDOWS = 8192
# How often (seconds) progress is reported within an epoch; always at epoch end.
PROGRESS_INTERVAL_S = 0.5
MIN_LR_FRACTION = 0.1
# Pretraining takes at least this many optimiser steps, whatever `train_budget` allows.
MIN_PRETRAIN_STEPS = 40
# Early stopping cannot end pretraining before this share of its epochs: a model still on
# its first plateau, on a few validation windows, looked done after `patience` epochs.
MIN_PRETRAIN_SHARE = 0.5


class TrainingCancelled(Exception):
    """Raised by fit when `should_stop()` returned True."""


ProgressCallback = Callable[[TrainingProgress], None]
StopCallback = Callable[[], bool]


class Batch(NamedTuple):
    values: Tensor  # (B, L, C) float32, scaled, 0 where missing
    observed: Tensor  # (B, L, C) bool
    target: Tensor  # (B, L, C) bool, points that count in the loss
    labels: Tensor | None  # (B, L) float32, 1 = anomaly


@dataclass
class WindowSet:
    """Windows of one series, cut on demand so memory stays O(T * C)."""

    values: Tensor  # (T, C) float32, scaled, 0 where missing
    observed: Tensor  # (T, C) bool
    target: Tensor  # (T, C) bool: observed and not labelled anomalous
    labels: Tensor | None  # (T,) float32, 1 = anomaly
    starts: Tensor  # (N,) int64, first step of each window
    window: int

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def evenly(self, count: int) -> WindowSet:
        """At most `count` windows spread evenly over this set."""
        chosen = torch.linspace(0, len(self) - 1, min(len(self), count)).round().long()
        return dataclasses.replace(self, starts=self.starts[chosen.to(self.starts.device)])

    def batch(self, index: Tensor | slice) -> Batch:
        steps = self.starts[index][:, None] + torch.arange(self.window, device=self.starts.device)
        return Batch(  # each gathered as (B, L, ...)
            self.values[steps],
            self.observed[steps],
            self.target[steps],
            None if self.labels is None else self.labels[steps],
        )


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class ProgressReporter:
    """Counts optimiser steps over all phases, computes the ETA, throttles progress
    reports (at most every PROGRESS_INTERVAL_S, always at epoch end) and checks cancellation."""

    def __init__(
        self,
        steps_total: int,
        progress: ProgressCallback | None,
        should_stop: StopCallback | None,
    ) -> None:
        self.steps_total = steps_total
        self.step = 0
        self.progress = progress
        self.should_stop = should_stop
        self.start = time.monotonic()
        self.last_report = self.start
        self.last_step_reported = -1

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(f"training cancelled at step {self.step}")

    def advance(self) -> None:
        self.step += 1

    def report(
        self,
        *,
        force: bool,
        phase: str,
        epoch: int,
        epochs: int,
        train_loss: float,
        val_loss: float,
        mask_ratio: float,
    ) -> None:
        """Send a TrainingProgress for the current step, unless throttled (force: never)."""
        if self.progress is None or self.step == self.last_step_reported:
            return
        now = time.monotonic()
        if not force and now - self.last_report < PROGRESS_INTERVAL_S:
            return
        rate = (now - self.start) / max(self.step, 1)
        eta = max(self.steps_total - self.step, 0) * rate
        self.last_report = now
        self.last_step_reported = self.step
        self.progress(
            TrainingProgress(
                phase=phase,
                epoch=epoch,
                epochs=epochs,
                step=self.step,
                steps_total=self.steps_total,
                train_loss=float(train_loss),
                val_loss=float(val_loss),
                mask_ratio=float(mask_ratio),
                eta_s=float(eta),
            )
        )


def steps_per_epoch(n_windows: int, config: TrainingConfig) -> int:
    used = min(n_windows, config.max_windows_per_epoch or n_windows)
    return max(1, math.ceil(used / config.batch_size))


def pretrain_steps(n_windows: int, n_channels: int, config: DetectorConfig) -> int:
    """Optimiser steps of pretraining: `epochs` epochs, cut to the `train_budget` tokens
    (at least MIN_PRETRAIN_STEPS), so that the cost no longer grows with the series."""
    tc = config.training
    full = steps_per_epoch(n_windows, tc) * tc.epochs
    if not tc.train_budget:
        return full
    tokens_per_step = min(tc.batch_size, max(n_windows, 1)) * n_channels * config.model.n_patches
    return min(full, max(MIN_PRETRAIN_STEPS, tc.train_budget // tokens_per_step))


def learning_rate(step: int, total: int, config: TrainingConfig) -> float:
    """Linear warm-up over warmup_fraction of the steps, then cosine decay to MIN_LR_FRACTION."""
    warmup = max(1, round(config.warmup_fraction * total))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.learning_rate * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * cosine)


@torch.inference_mode()
def masked_loss(
    model: MaskedPredictor, data: WindowSet, groups: int, batch_size: int, spatial: bool = True
) -> float:
    """Mean squared error of the complementary-mask predictions over target points."""
    model.eval()
    total, count = 0.0, 0
    for sl in _batches(len(data), batch_size):
        batch = data.batch(sl)
        prediction = predict_masked(model, batch.values, batch.observed, groups, spatial)
        err = prediction.errors(batch.values, batch.target)
        total += float(err.sum())
        count += int(batch.target.sum())
    return total / max(count, 1)


def _optimizer(params: list[nn.Parameter], config: TrainingConfig) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )


class _EarlyStopping:
    """Keeps a module's weights from its best epoch and says when `patience` epochs brought
    no gain, never before `min_epochs` epochs have run."""

    def __init__(self, module: nn.Module, patience: int, min_epochs: int = 0) -> None:
        self.module = module
        self.patience = patience
        self.min_epochs = min_epochs
        self.epochs = 0
        self.best_loss = math.inf
        self.best_state = self._snapshot()
        self.bad_epochs = 0

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def should_stop(self, monitored: float) -> bool:
        """Record an epoch's monitored loss; True when training should stop."""
        self.epochs += 1
        if monitored < self.best_loss - 1e-12:
            self.best_loss = monitored
            self.best_state = self._snapshot()
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience and self.epochs >= self.min_epochs

    def restore_best(self) -> None:
        """Load the best weights and put the module in eval mode."""
        self.module.load_state_dict(self.best_state)
        self.module.eval()


def _optimizer_step(
    optimizer: torch.optim.Optimizer, loss: Tensor, module: nn.Module, grad_clip: float
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()


def pretrain(
    model: MaskedPredictor,
    train: WindowSet,
    val: WindowSet | None,
    config: DetectorConfig,
    generator: torch.Generator,
    reporter: ProgressReporter,
) -> dict[str, float | int | bool]:
    """Self-supervised masked prediction; returns the run's metrics.

    Each batch hides random tokens (`random_masks`) and regresses the hidden points:
    loss = mean squared error over the hidden points that are observed and not
    labelled anomalous. The learning rate follows `learning_rate`. Early stopping
    watches `masked_loss` (the fixed scoring masks) on validation, else on a fixed
    training sample, since the training loss rises with the mask ratio.
    """
    device = train.values.device
    cfg, tc = model.config, config.training
    per_epoch = steps_per_epoch(len(train), tc)
    total = pretrain_steps(len(train), model.n_channels, config)
    epochs = math.ceil(total / per_epoch)
    optimizer = _optimizer(list(model.parameters()), tc)
    stopping = _EarlyStopping(model, tc.patience, math.ceil(MIN_PRETRAIN_SHARE * epochs))
    epochs_run, step, stopped = 0, 0, False
    train_loss = val_loss = math.nan
    ratio = tc.mask_ratio_start
    dropout_rng = generator
    if device.type != "cpu":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        dropout_rng = torch.Generator(device=device).manual_seed(seed)
    monitor = val if val is not None else train.evenly(MONITOR_WINDOWS)
    for epoch in range(epochs):
        model.train()
        epoch_steps = min(per_epoch, total - step)
        order = torch.randperm(len(train), generator=generator)[: epoch_steps * tc.batch_size]
        running, seen = 0.0, 0
        for sl in _batches(order.shape[0], tc.batch_size):
            reporter.check_stop()
            batch = train.batch(order[sl].to(device))
            # Curriculum: the mask ratio grows linearly from start to end over the run.
            ratio = tc.mask_ratio_start + (tc.mask_ratio_end - tc.mask_ratio_start) * (
                step / max(1, total - 1)
            )
            hidden = random_masks(batch.values.shape[0], model.n_channels, cfg.n_patches, ratio, generator)
            hidden = hidden.to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, tc)
            with autocast(device):
                pred, _ = model(batch.values, batch.observed, hidden, dropout_rng)
            target = point_mask(hidden, cfg.patch) & batch.target  # (B, L, C)
            err = squared_errors(pred.float(), batch.values, target)
            loss = err.sum() / target.sum().clamp(min=1)
            _optimizer_step(optimizer, loss, model, tc.grad_clip)
            running += float(loss.detach()) * batch.values.shape[0]
            seen += batch.values.shape[0]
            step += 1
            reporter.advance()
            reporter.report(
                force=False,
                phase="pretrain",
                epoch=epoch + 1,
                epochs=epochs,
                train_loss=running / seen,
                val_loss=val_loss,
                mask_ratio=ratio,
            )
        epochs_run = epoch + 1
        train_loss = running / max(seen, 1)
        spatial = config.scoring.spatial_weight > 0
        monitored = masked_loss(model, monitor, config.groups, tc.batch_size, spatial)
        val_loss = monitored if val is not None else math.nan
        reporter.report(
            force=True,
            phase="pretrain",
            epoch=epoch + 1,
            epochs=epochs,
            train_loss=train_loss,
            val_loss=val_loss,
            mask_ratio=ratio,
        )
        if stopping.should_stop(monitored):
            stopped = True
            break
    stopping.restore_best()
    return {
        "epochs_run": epochs_run,
        "epochs_planned": epochs,
        "steps": step,
        "steps_planned": total,
        "stopped_early": stopped,
        "final_train_loss": train_loss,
        "best_val_loss" if val is not None else "best_monitor_loss": stopping.best_loss,
        "final_mask_ratio": ratio,
    }


@torch.inference_mode()
def head_inputs(
    model: MaskedPredictor, data: WindowSet, groups: int, batch_size: int, spatial: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Frozen-encoder head inputs of up to HEAD_MAX_WINDOWS evenly spread windows.

    Returns pooled features (N, N_p, D), errors (N, L, C) and labels (N, L).
    """
    model.eval()
    data = data.evenly(HEAD_MAX_WINDOWS)
    pooled, errors, labels = [], [], []
    for sl in _batches(len(data), batch_size):
        batch = data.batch(sl)
        if batch.labels is None:
            raise ValueError("fine-tuning needs labels")
        prediction = predict_masked(model, batch.values, batch.observed, groups, spatial)
        pooled.append(prediction.pooled)
        errors.append(prediction.errors(batch.values, batch.observed))
        labels.append(batch.labels)
    return torch.cat(pooled), torch.cat(errors), torch.cat(labels)


def finetune(
    model: MaskedPredictor,
    head: AnomalyHead,
    train: WindowSet,
    val: WindowSet | None,
    config: DetectorConfig,
    generator: torch.Generator,
    reporter: ProgressReporter,
) -> dict[str, float | int | bool]:
    """Train the head (encoder frozen) with class-weighted BCE on per-step labels."""
    tc, spatial = config.training, config.scoring.spatial_weight > 0
    pooled, errors, labels = head_inputs(model, train, config.groups, tc.batch_size, spatial)
    positives = float(labels.sum())
    negatives = float(labels.numel()) - positives
    pos_weight = torch.tensor(negatives / max(positives, 1.0), device=labels.device)
    val_inputs = None
    if val is not None and val.labels is not None:
        val_inputs = head_inputs(model, val, config.groups, tc.batch_size, spatial)
    optimizer = _optimizer(list(head.parameters()), tc)
    per_epoch = steps_per_epoch(labels.shape[0], tc)
    stopping = _EarlyStopping(head, tc.patience)
    epochs_run = 0
    train_loss = val_loss = math.nan

    def bce(p: Tensor, e: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(head(p, e), y, pos_weight=pos_weight)

    for epoch in range(tc.finetune_epochs):
        head.train()
        order = torch.randperm(labels.shape[0], generator=generator)
        order = order[: per_epoch * tc.batch_size]
        running, seen = 0.0, 0
        for sl in _batches(order.shape[0], tc.batch_size):
            reporter.check_stop()
            idx = order[sl].to(labels.device)
            loss = bce(pooled[idx], errors[idx], labels[idx])
            _optimizer_step(optimizer, loss, head, tc.grad_clip)
            running += float(loss.detach()) * idx.shape[0]
            seen += idx.shape[0]
            reporter.advance()
        epochs_run = epoch + 1
        train_loss = running / max(seen, 1)
        head.eval()
        if val_inputs is not None:
            with torch.inference_mode():
                val_loss = float(bce(*val_inputs))
        monitored = val_loss if val_inputs is not None else train_loss
        reporter.report(
            force=True,
            phase="finetune",
            epoch=epoch + 1,
            epochs=tc.finetune_epochs,
            train_loss=train_loss,
            val_loss=val_loss,
            mask_ratio=0.0,
        )
        if stopping.should_stop(monitored):
            break
    stopping.restore_best()
    return {
        "finetune_epochs_run": epochs_run,
        "finetune_train_loss": train_loss,
        "finetune_best_loss": stopping.best_loss,
        "positive_fraction": positives / max(positives + negatives, 1.0),
    }

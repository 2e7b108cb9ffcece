"""The spatio-temporal masked-prediction Transformer.

Each channel's window of L steps is cut into N = L / P patches; every
(channel, patch) pair is one token. A layer attends along time within each
channel, then across channels within each patch, then applies an MLP. Hidden
tokens (masked, or with no observed value) are replaced by a learned mask
token, and the network predicts every point of every token from the rest.

Shapes: B windows, L steps, C channels, N patches per channel, P steps per
patch, D model width.

Randomness (weight init, dropout) comes only from an explicit
`torch.Generator`, never from the global RNG, so training is reproducible
even when several models train in one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    n_channels: int
    window: int = 64
    patch: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.1
    ff_mult: int = 2
    # Predict each channel relative to the mean of its visible points in the
    # window (0 when none is visible), so predictions can follow a level the
    # bounded, layer-normalised network could not reach on its own.
    level_baseline: bool = False

    def __post_init__(self) -> None:
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {self.n_channels}")
        if self.patch < 1 or self.window < self.patch or self.window % self.patch:
            raise ValueError(f"window ({self.window}) must be a positive multiple of patch ({self.patch})")
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a positive multiple of n_heads ({self.n_heads})"
            )
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ff_mult < 1:
            raise ValueError(f"ff_mult must be >= 1, got {self.ff_mult}")

    @property
    def n_patches(self) -> int:
        return self.window // self.patch


def seeded_dropout(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout drawing its mask from `generator`; identity when generator is None."""
    if generator is None or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (S, T, D)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        s, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # (S, T, D) -> (S, H, T, D/H)
        q = q.view(s, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        k = k.view(s, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        v = v.view(s, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(s, t, d)  # (S, T, D)
        out: Tensor = self.proj(y)
        return out


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ff_mult * config.d_model)
        self.proj = nn.Linear(config.ff_mult * config.d_model, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.proj(F.gelu(self.fc(x)))
        return out


class Block(nn.Module):
    """Temporal attention, cross-channel attention, MLP; each pre-norm and residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dropout = config.dropout
        self.ln_time = nn.LayerNorm(config.d_model)
        self.attn_time = SelfAttention(config)
        self.ln_chan = nn.LayerNorm(config.d_model)
        self.attn_chan = SelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        b, c, n, d = x.shape
        h = self.attn_time(self.ln_time(x).reshape(b * c, n, d))  # (B*C, N, D)
        x = x + seeded_dropout(h.view(b, c, n, d), self.dropout, generator)
        xc = self.ln_chan(x).transpose(1, 2).reshape(b * n, c, d)  # (B*N, C, D)
        h = self.attn_chan(xc).view(b, n, c, d).transpose(1, 2)  # (B, C, N, D)
        x = x + seeded_dropout(h, self.dropout, generator)
        x = x + seeded_dropout(self.mlp(self.ln_mlp(x)), self.dropout, generator)
        return x


class MaskedPredictor(nn.Module):
    """Predicts every point of a window from the tokens that are not hidden."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = nn.Linear(2 * config.patch, d)  # patch values + observed flags
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.pos_time = nn.Parameter(torch.zeros(config.n_patches, d))
        self.pos_chan = nn.Parameter(torch.zeros(config.n_channels, d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_out = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.patch)

    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-style init (normal 0.02, zero biases) from `generator`."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
            for param in (self.mask_token, self.pos_time, self.pos_chan):
                nn.init.normal_(param, 0.0, 0.02, generator=generator)

    def forward(
        self,
        values: Tensor,
        observed: Tensor,
        hidden: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Predict all points.

        values: (B, L, C) float, scaled, 0 where not observed (never NaN).
        observed: (B, L, C) bool. hidden: (B, C, N) bool, True = token masked.
        generator: dropout randomness; None disables dropout (evaluation).
        Returns the prediction (B, L, C) and the token features (B, C, N, D).
        """
        cfg = self.config
        if values.dim() != 3 or values.shape[1:] != (cfg.window, cfg.n_channels):
            raise ValueError(
                f"values must have shape (B, {cfg.window}, {cfg.n_channels}), got {tuple(values.shape)}"
            )
        if observed.shape != values.shape:
            raise ValueError(f"observed shape {tuple(observed.shape)} != values shape {tuple(values.shape)}")
        b, L, c = values.shape
        n, p = cfg.n_patches, cfg.patch
        if hidden.shape != (b, c, n):
            raise ValueError(f"hidden must have shape {(b, c, n)}, got {tuple(hidden.shape)}")

        v = values.transpose(1, 2).reshape(b, c, n, p)  # (B, C, N, P)
        o = observed.transpose(1, 2).reshape(b, c, n, p).to(values.dtype)  # (B, C, N, P)
        hidden = hidden | (o.sum(-1) == 0)
        x = self.embed(torch.cat((v * o, o), dim=-1))  # (B, C, N, D)
        x = torch.where(hidden.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + self.pos_time[None, None, :, :] + self.pos_chan[None, :, None, :]
        for block in self.blocks:
            x = block(x, generator)
        features = self.ln_out(x)
        pred = self.out(features)  # (B, C, N, P)
        pred = pred.reshape(b, c, L).transpose(1, 2)  # (B, L, C)
        if cfg.level_baseline:
            visible = o * (~hidden).unsqueeze(-1).to(o.dtype)  # (B, C, N, P)
            count = visible.sum(dim=(2, 3))  # (B, C)
            level = (v * visible).sum(dim=(2, 3)) / count.clamp(min=1.0)  # (B, C)
            pred = pred + level.unsqueeze(1)  # (B, L, C)
        return pred, features


class AnomalyHead(nn.Module):
    """Supervised per-step classifier over token features and prediction errors.

    Input per step: the channel-mean of the features of the tokens covering it
    (D), log1p of each channel's squared error (C), and their mean and max (2).
    The channel-mean of the features (B, N, D) is what callers pass in.
    """

    def __init__(self, config: ModelConfig, hidden: int = 64) -> None:
        super().__init__()
        self.config = config
        self.fc = nn.Linear(config.d_model + config.n_channels + 2, hidden)
        self.proj = nn.Linear(hidden, 1)

    def init_weights(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for lin in (self.fc, self.proj):
                nn.init.normal_(lin.weight, 0.0, 1.0 / math.sqrt(lin.in_features), generator=generator)
                nn.init.zeros_(lin.bias)

    def forward(self, pooled: Tensor, errors: Tensor) -> Tensor:
        """pooled features (B, N, D), errors (B, L, C) -> logits (B, L)."""
        cfg = self.config
        if pooled.dim() != 3 or pooled.shape[1:] != (cfg.n_patches, cfg.d_model):
            raise ValueError(
                f"pooled must have shape (B, {cfg.n_patches}, {cfg.d_model}), got {tuple(pooled.shape)}"
            )
        f = pooled.repeat_interleave(cfg.patch, dim=1)  # (B, L, D)
        e = torch.log1p(errors)  # (B, L, C)
        stats = torch.stack((e.mean(-1), e.amax(-1)), dim=-1)  # (B, L, 2)
        h = F.gelu(self.fc(torch.cat((f, e, stats), dim=-1)))  # (B, L, hidden)
        logits: Tensor = self.proj(h).squeeze(-1)  # (B, L)
        return logits

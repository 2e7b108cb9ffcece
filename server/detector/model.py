"""The spatio-temporal masked-prediction Transformer, its masks and its inference forward.

Each channel's window of L steps is cut into N = L / P patches; every
(channel, patch) pair is one token. A layer attends along time within each
channel, then across channels within each patch, then applies an MLP. Hidden
tokens (masked, or with no observed value) are replaced by a learned mask
token, and the network predicts every point of every token from the rest.

Shapes: B windows, L steps, C channels, N patches per channel, P steps per
patch, D model width, K mask groups.

Randomness (weight init, dropout, training masks) comes only from an explicit
`torch.Generator`, never from the global RNG, so training is reproducible
even when several models train in one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stad.core.detector_config import ModelConfig


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
    """Predicts every point of a window of `n_channels` channels from the tokens that are not hidden."""

    def __init__(self, config: ModelConfig, n_channels: int) -> None:
        super().__init__()
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        self.config = config
        self.n_channels = n_channels
        d = config.d_model
        self.embed = nn.Linear(2 * config.patch, d)  # patch values + observed flags
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.pos_time = nn.Parameter(torch.zeros(config.n_patches, d))
        self.pos_chan = nn.Parameter(torch.zeros(n_channels, d))
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
        With `level_baseline`, each channel is predicted relative to the mean of
        its visible points in the window (0 when none is visible), so predictions
        can follow a level the bounded, layer-normalised network could not reach.
        """
        cfg = self.config
        if values.dim() != 3 or values.shape[1:] != (cfg.window, self.n_channels):
            raise ValueError(
                f"values must have shape (B, {cfg.window}, {self.n_channels}), got {tuple(values.shape)}"
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

    def __init__(self, config: ModelConfig, n_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.config = config
        self.fc = nn.Linear(config.d_model + n_channels + 2, hidden)
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


# ----------------------------------------------------------------------------- masks


def group_masks(n_channels: int, n_patches: int, groups: int) -> Tensor:
    """K complementary token masks, (K, C, N) bool: token (c, n) is hidden in group (n + c) % K.

    Every token is hidden in exactly one group; in each group a hidden token's
    temporal neighbours and most of its peers at the same time are visible.
    """
    c = torch.arange(n_channels)[:, None]
    n = torch.arange(n_patches)[None, :]
    group = (n + c) % groups  # (C, N)
    return group[None, :, :] == torch.arange(groups)[:, None, None]  # (K, C, N)


def channel_masks(n_channels: int, n_patches: int, groups: int) -> Tensor:
    """Complementary whole-channel masks, (K_s, C, N) bool: channel c hidden in group c % K_s.

    K_s = min(groups, C); none (K_s = 0) for a single channel. Hidden channels
    are predicted from their peers alone, which exposes a sensor decoupling
    from the others even when its own history looks normal.
    """
    count = min(groups, n_channels) if n_channels > 1 else 0
    group = (torch.arange(n_channels) % max(count, 1))[:, None].expand(n_channels, n_patches)  # (C, N)
    return group[None, :, :] == torch.arange(count)[:, None, None]  # (K_s, C, N)


def random_masks(
    batch: int, n_channels: int, n_patches: int, ratio: float, generator: torch.Generator
) -> Tensor:
    """(B, C, N) bool training masks, at least one hidden token per window.

    Half the windows (when C > 1) hide whole channels, each with probability
    `ratio` and never all of them; the others hide single tokens with
    probability `ratio`. The mix teaches prediction from time and from peers.
    """
    hidden = torch.rand((batch, n_channels, n_patches), generator=generator) < ratio
    if n_channels > 1:
        by_channel = torch.rand((batch,), generator=generator) < 0.5
        chan = torch.rand((batch, n_channels), generator=generator) < ratio  # (B, C)
        keep = torch.randint(0, n_channels, (batch,), generator=generator)
        chan[torch.arange(batch), keep] = False
        hidden = torch.where(by_channel[:, None, None], chan[:, :, None], hidden)
    # Guarantee a target in every window: hide one random token where none is.
    flat = hidden.reshape(batch, n_channels * n_patches)  # (B, C*N), a view
    empty = ~flat.any(dim=1)
    pick = torch.randint(0, n_channels * n_patches, (batch,), generator=generator)
    flat[empty, pick[empty]] = True
    return flat.view(batch, n_channels, n_patches)  # (B, C, N)


def point_mask(hidden: Tensor, patch: int) -> Tensor:
    """Token mask (..., C, N) -> point mask (..., L, C)."""
    return hidden.repeat_interleave(patch, dim=-1).transpose(-1, -2)  # (..., L, C)


# ------------------------------------------------------------------- inference forward


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def squared_errors(prediction: Tensor, values: Tensor, observed: Tensor) -> Tensor:
    """(B, L, C) squared errors, 0 where not observed."""
    return torch.where(observed, (prediction - values) ** 2, torch.zeros_like(values))


@dataclass
class MaskedPrediction:
    """Every point predicted while hidden, by two complementary mask families."""

    temporal: Tensor  # (B, L, C) from K diagonal token masks: own history and peers visible
    spatial: Tensor | None  # (B, L, C) from whole-channel masks: peers only; None if C == 1
    pooled: Tensor  # (B, N, D) channel-mean features of each token from the pass hiding it

    def family_errors(self, values: Tensor, observed: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, L, C) squared errors of each family, 0 where not observed."""
        spatial = None if self.spatial is None else squared_errors(self.spatial, values, observed)
        return squared_errors(self.temporal, values, observed), spatial

    def errors(self, values: Tensor, observed: Tensor) -> Tensor:
        """(B, L, C) squared errors averaged over the families, 0 where not observed."""
        temporal, spatial = self.family_errors(values, observed)
        return temporal if spatial is None else 0.5 * (temporal + spatial)


def predict_masked(
    model: MaskedPredictor, values: Tensor, observed: Tensor, groups: int, spatial: bool = True
) -> MaskedPrediction:
    """All K + K_s complementary masked passes over (B, L, C) windows in one batched forward.

    Each token is hidden in exactly one of the K `group_masks` and each channel
    in one of the K_s `channel_masks` (spatial=False: K_s = 0), so every point
    is predicted once per family while hidden. Each window's result depends
    only on that window.
    """
    cfg, c = model.config, model.n_channels
    b = values.shape[0]
    temporal = group_masks(c, cfg.n_patches, groups)  # (K, C, N)
    spatial_masks = channel_masks(c, cfg.n_patches, groups if spatial else 0)  # (K_s, C, N)
    k, ks = temporal.shape[0], spatial_masks.shape[0]
    masks = torch.cat((temporal, spatial_masks)).to(values.device)  # (K+K_s, C, N)
    hidden = masks.repeat_interleave(b, dim=0)  # ((K+K_s)*B, C, N), row g*B + i
    with autocast(values.device):
        pred, feats = model(values.repeat(k + ks, 1, 1), observed.repeat(k + ks, 1, 1), hidden)
    pred = pred.float().view(k + ks, b, cfg.window, c)  # (K+K_s, B, L, C)
    pm = point_mask(masks, cfg.patch).to(pred.dtype)[:, None]  # (K+K_s, 1, L, C)
    chosen = pred * pm
    feats = feats[: k * b].float().view(k, b, c, cfg.n_patches, cfg.d_model)  # (K, B, C, N, D)
    tm = masks[:k].to(feats.dtype)[:, None, :, :, None]  # (K, 1, C, N, 1)
    return MaskedPrediction(
        temporal=chosen[:k].sum(dim=0),  # (B, L, C)
        spatial=chosen[k:].sum(dim=0) if ks else None,  # (B, L, C)
        pooled=(feats * tm).sum(dim=0).mean(dim=1),  # (B, N, D)
    )

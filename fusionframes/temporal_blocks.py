"""Temporal layers that turn the Kandinsky-3 image U-Net into the video U-Nets.

Frames travel in the batch axis as ``(clips * frames)`` with frames fastest; every temporal layer unfolds that axis,
mixes along time and folds it back. What the layers need besides the features is one ``TemporalState``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .layers import Attention, ConditionalGroupNorm, TemporalAttention, feed_forward


@dataclass
class TemporalState:
    """How the batch is laid out in time and how temporal layers are conditioned and weighted.

    frames: frames (keyframe models) or groups (interpolation models) per clip; the batch is ``clips * frames``.
    norm_embed: conditioning of the temporal norms, (B, E).
    position_embed: the frame-position embedding (1.0's temporal attention conditions its first norm on it alone).
    gate: per-sample factor of the learned merges (1.1 interpolation switches temporal layers off per branch).
    conv_strength, attention_strength: scale the residual of temporal convolution / attention blocks
        (1 = the trained model, 0 = the block is off); used by the Temporal Block Selector.
    """

    frames: int
    norm_embed: torch.Tensor | None = None
    position_embed: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    conv_strength: float = 1.0
    attention_strength: float = 1.0

    def merge_weight(self, merge: torch.Tensor, batch: int) -> torch.Tensor:
        """Learned merge factor, gated per sample; the gate is halved while it is longer than the batch."""
        if self.gate is None:
            return merge
        gate = self.gate
        while gate.shape[0] > batch:
            gate = gate[::2]
        return merge * gate.to(merge.dtype)[:, None, None, None]


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    return rearrange(x, "(b t) c h w -> b c t h w", t=frames)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c t h w -> (b t) c h w")


def temporal_conv(conv: nn.Conv3d, x: torch.Tensor, frames: int) -> torch.Tensor:
    return fold_frames(conv(unfold_frames(x, frames)))


class TemporalResNetBlock(nn.Module):
    """Four (norm, SiLU, k x 1 x 1 conv) stages with a bottleneck, added residually (keyframe U-Nets).

    Keys: ``temporal_resnet_blocks.{i}.0.context_mlp.1.*`` (norm) and ``temporal_resnet_blocks.{i}.2.*`` (conv).
    """

    def __init__(self, channels: int, time_embed_dim: int, groups: int = 32, compression_ratio: int = 2) -> None:
        super().__init__()
        hidden = channels // compression_ratio
        stages = [(channels, hidden, 1), (hidden, hidden, 3), (hidden, hidden, 3), (hidden, channels, 1)]
        self.temporal_resnet_blocks = nn.ModuleList(
            nn.ModuleList([
                ConditionalGroupNorm(groups, c_in, time_embed_dim),
                nn.SiLU(),
                nn.Conv3d(c_in, c_out, (k, 1, 1), padding=(k // 2, 0, 0)),
            ])
            for c_in, c_out, k in stages
        )
        last = self.temporal_resnet_blocks[-1][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        out = x
        for norm, activation, conv in self.temporal_resnet_blocks:
            out = temporal_conv(conv, activation(norm(out, state.norm_embed)), state.frames)
        if state.conv_strength != 1.0:
            out = out * state.conv_strength
        return x + out


class KeyframeTemporalAttentionBlock(nn.Module):
    """Attention along time per pixel, then a pointwise MLP, both residual (keyframe U-Nets).

    The two releases differ only in names and conditioning: 1.0 calls the norms ``in_norm``/``out_norm`` and
    conditions the first on the position embedding alone; 1.1 calls them ``temporal_norm``/``ff_norm`` and
    conditions both on the time embedding plus the temporal embedding (``state.norm_embed``).
    """

    def __init__(
        self,
        channels: int,
        time_embed_dim: int,
        groups: int = 32,
        head_dim: int = 64,
        expansion_ratio: int = 4,
        release: str = "1.1",
    ) -> None:
        super().__init__()
        self.release = release
        first, second = ("in_norm", "out_norm") if release == "1.0" else ("temporal_norm", "ff_norm")
        self.first_norm_name, self.second_norm_name = first, second
        self.add_module(first, ConditionalGroupNorm(groups, channels, time_embed_dim))
        self.temporal_attention = TemporalAttention(channels, head_dim)
        nn.init.zeros_(self.temporal_attention.output_layer.weight)
        self.add_module(second, ConditionalGroupNorm(groups, channels, time_embed_dim))
        self.feed_forward = feed_forward(channels, expansion_ratio)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        height, width = x.shape[-2:]
        attention_condition = state.position_embed if self.release == "1.0" else state.norm_embed
        out = getattr(self, self.first_norm_name)(x, attention_condition)
        out = rearrange(out, "(b t) c h w -> b t (h w) c", t=state.frames)
        out = self.temporal_attention(out)
        out = rearrange(out, "b t (h w) c -> (b t) c h w", h=height, w=width)
        strength = state.attention_strength
        x = x + (out if strength == 1.0 else out * strength)
        out = self.feed_forward(getattr(self, self.second_norm_name)(x, state.norm_embed))
        return x + (out if strength == 1.0 else out * strength)


class MergedTemporalConv(nn.Module):
    """A 3 x 1 x 1 temporal convolution blended in with a learned factor: x <- (1 - a) x + a conv(x) (1.1 layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.temporal_merge = nn.Parameter(torch.zeros(1))
        self.temporal_projection = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal_projection.weight)
        nn.init.zeros_(self.temporal_projection.bias)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        return merge_temporal_conv(x, self.temporal_projection, self.temporal_merge, state)


def merge_temporal_conv(
    x: torch.Tensor, conv: nn.Conv3d, merge: torch.Tensor, state: TemporalState
) -> torch.Tensor:
    """(1 - a) x + a conv(x) along time, a = the learned merge (gated per sample when the state has a gate)."""
    out = temporal_conv(conv, x, state.frames)
    alpha = state.merge_weight(merge, x.shape[0])
    return (1 - alpha) * x + alpha * out


class GatedTemporalAttentionBlock(nn.Module):
    """1.1 interpolation: self-attention over the group axis per pixel and an MLP, each blended in by a learned,
    per-sample gated factor (x <- (1 - a) x + a y), which replaces rather than adds."""

    def __init__(
        self, channels: int, time_embed_dim: int, groups: int = 32, head_dim: int = 64, expansion_ratio: int = 4
    ) -> None:
        super().__init__()
        self.temporal_merge1 = nn.Parameter(torch.zeros(1))
        self.temporal_merge2 = nn.Parameter(torch.zeros(1))
        self.in_norm = ConditionalGroupNorm(groups, channels, time_embed_dim)
        self.attention = Attention(channels, channels, channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, time_embed_dim)
        self.feed_forward = feed_forward(channels, expansion_ratio)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = rearrange(self.in_norm(x, state.norm_embed), "(b t) c h w -> (b h w) t c", t=state.frames)
        out = self.attention(out, out)
        out = rearrange(out, "(b h w) t c -> (b t) c h w", h=height, w=width)
        alpha = state.merge_weight(self.temporal_merge1, x.shape[0])
        x = (1 - alpha) * x + alpha * out
        out = self.feed_forward(self.out_norm(x, state.norm_embed))
        alpha = state.merge_weight(self.temporal_merge2, x.shape[0])
        return (1 - alpha) * x + alpha * out

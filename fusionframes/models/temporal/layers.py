"""Temporal layers that turn the Kandinsky-3 image U-Net into the video U-Nets.

Frames travel in the batch axis as ``(clips * frames)`` with frames fastest; every temporal layer unfolds that axis,
mixes along time and folds it back. What the layers need besides the features is one ``TemporalState``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..layers import Attention, ConditionalGroupNorm, TemporalAttention, conv3d, feed_forward


@dataclass
class TemporalState:
    """How the batch is laid out in time and how temporal layers are conditioned and weighted.

    frames: frames (keyframe models) or groups (interpolation models) per clip; the batch is ``clips * frames``.
    norm_embed: conditioning of the temporal norms, (B, E).
    position_embed: the frame-position embedding (1.0's temporal attention conditions its first norm on it alone).
    gate: per-sample factor of the learned merges (1.1 interpolation switches temporal layers off per branch).
    conv_strength, attention_strength: scale the residual of temporal convolution / attention blocks
        (1 = the trained model, 0 = the block is off); used by the Temporal Block Selector.
    levels: the U-Net levels whose keyframe temporal layers act (None = all); the others pass features through.
    """

    frames: int
    norm_embed: torch.Tensor | None = None
    position_embed: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    conv_strength: float = 1.0
    attention_strength: float = 1.0
    levels: frozenset[int] | None = None

    def acts_on(self, level: int | None) -> bool:
        """Whether a temporal layer of ``level`` acts (layers that do not know their level always act)."""
        return self.levels is None or level is None or level in self.levels

    def conv_scale(self, level: int | None) -> float:
        """The residual factor of a temporal convolution at ``level`` (0 = skip it)."""
        return self.conv_strength if self.acts_on(level) else 0.0

    def attention_scale(self, level: int | None) -> float:
        """The residual factor of a temporal attention at ``level`` (0 = skip it)."""
        return self.attention_strength if self.acts_on(level) else 0.0

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
    return fold_frames(conv3d(conv, unfold_frames(x, frames)))


class TemporalLayer(nn.Module):
    """Base of the keyframe models' temporal blocks and layers (all four paper variants).

    Each knows its U-Net level, so the Temporal Block Selector can switch levels off, and which of its layers write
    into the residual stream, so fresh blocks can start as the identity (the image U-Net unchanged) for training.
    """

    level: int | None = None

    def output_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def zero_outputs(self) -> None:
        for layer in self.output_layers():
            nn.init.zeros_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh, untrained values (as a new layer has), with zero outputs: the layer starts as the identity.
        Lets a model built on ``meta`` materialise only its temporal layers."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for module in self.modules():
            if isinstance(module, ConditionalGroupNorm):
                nn.init.zeros_(module.context_mlp[1].weight)
                nn.init.zeros_(module.context_mlp[1].bias)
        self.zero_outputs()


def conv_stage(c_in: int, c_out: int, kernel: tuple[int, int, int], time_embed_dim: int, groups: int) -> nn.ModuleList:
    """[conditional norm, SiLU, same-padded 3D conv]: one stage of a temporal conv block (keys ``0.*``, ``2.*``)."""
    return nn.ModuleList([
        ConditionalGroupNorm(groups, c_in, time_embed_dim),
        nn.SiLU(),
        nn.Conv3d(c_in, c_out, kernel, padding=tuple(k // 2 for k in kernel)),
    ])


def run_stage(stage: nn.ModuleList, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
    """One ``conv_stage`` on frames laid out in the batch axis, its norm conditioned on ``state.norm_embed``."""
    norm, activation, conv = stage
    return temporal_conv(conv, activation(norm(x, state.norm_embed)), state.frames)


class TemporalResNetBlock(TemporalLayer):
    """Four (norm, SiLU, k x 1 x 1 conv) stages with a bottleneck, added residually (keyframe U-Nets).

    Keys: ``temporal_resnet_blocks.{i}.0.context_mlp.1.*`` (norm) and ``temporal_resnet_blocks.{i}.2.*`` (conv).
    """

    def __init__(
        self, channels: int, time_embed_dim: int, groups: int = 32, compression_ratio: int = 2,
        level: int | None = None,
    ) -> None:
        super().__init__()
        self.level = level
        hidden = channels // compression_ratio
        stages = [(channels, hidden, 1), (hidden, hidden, 3), (hidden, hidden, 3), (hidden, channels, 1)]
        self.temporal_resnet_blocks = nn.ModuleList(
            conv_stage(c_in, c_out, (k, 1, 1), time_embed_dim, groups) for c_in, c_out, k in stages
        )
        self.zero_outputs()  # only the last conv: the official initialisation

    def output_layers(self) -> list[nn.Module]:
        return [self.temporal_resnet_blocks[-1][-1]]

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        strength = state.conv_scale(self.level)
        if strength == 0.0:
            return x
        out = x
        for stage in self.temporal_resnet_blocks:
            out = run_stage(stage, out, state)
        if strength != 1.0:
            out = out * strength
        return x + out


def projected_width(hidden: int, groups: int) -> int:
    """Width of the 3x3x3 convs: a third of the bottleneck (27 p^2 = 3 h^2, the 3x1x1 convs' count), rounded down to
    a multiple of the norm groups and at least one group."""
    return max(groups, hidden // 3 // groups * groups)


class TemporalConv3dResNetBlock(TemporalLayer):
    """Conv3dAttn1dBlocks' conv block: the bottleneck of ``TemporalResNetBlock`` with 3x3x3 convs in the middle,
    run on a width projected down (and back up) by two Linear layers so the parameter count stays comparable.

    Keys: ``temporal_resnet_blocks.{0..3}.{0,2}.*`` as the 1D block (stages 1 and 2 narrower, 3x3x3 kernels),
    plus ``down_projection.{weight,bias}`` and ``up_projection.{weight,bias}``.
    """

    def __init__(
        self, channels: int, time_embed_dim: int, groups: int = 32, compression_ratio: int = 2,
        level: int | None = None,
    ) -> None:
        super().__init__()
        self.level = level
        hidden = channels // compression_ratio
        narrow = projected_width(hidden, groups)
        stages = [(channels, hidden, (1, 1, 1)), (narrow, narrow, (3, 3, 3)), (narrow, narrow, (3, 3, 3)),
                  (hidden, channels, (1, 1, 1))]
        self.temporal_resnet_blocks = nn.ModuleList(
            conv_stage(c_in, c_out, kernel, time_embed_dim, groups) for c_in, c_out, kernel in stages
        )
        self.down_projection = nn.Linear(hidden, narrow)
        self.up_projection = nn.Linear(narrow, hidden)
        self.zero_outputs()

    def output_layers(self) -> list[nn.Module]:
        return [self.temporal_resnet_blocks[-1][-1]]

    @staticmethod
    def _channels_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return linear(x.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        strength = state.conv_scale(self.level)
        if strength == 0.0:
            return x
        reduce, first, second, expand = self.temporal_resnet_blocks
        out = self._channels_linear(self.down_projection, run_stage(reduce, x, state))
        out = run_stage(second, run_stage(first, out, state), state)
        out = run_stage(expand, self._channels_linear(self.up_projection, out), state)
        return x + (out if strength == 1.0 else out * strength)


def attention_condition(state: TemporalState, release: str) -> torch.Tensor | None:
    """What a keyframe temporal attention's norm is conditioned on: 1.0 the position embedding alone, 1.1 the time
    plus temporal embedding."""
    return state.position_embed if release == "1.0" else state.norm_embed


class KeyframeTemporalAttentionBlock(TemporalLayer):
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
        level: int | None = None,
    ) -> None:
        super().__init__()
        self.release = release
        self.level = level
        first, second = ("in_norm", "out_norm") if release == "1.0" else ("temporal_norm", "ff_norm")
        self.first_norm_name, self.second_norm_name = first, second
        self.add_module(first, ConditionalGroupNorm(groups, channels, time_embed_dim))
        self.temporal_attention = TemporalAttention(channels, head_dim)
        nn.init.zeros_(self.temporal_attention.output_layer.weight)
        self.add_module(second, ConditionalGroupNorm(groups, channels, time_embed_dim))
        self.feed_forward = feed_forward(channels, expansion_ratio)

    def output_layers(self) -> list[nn.Module]:
        return [self.temporal_attention.output_layer, self.feed_forward[2]]

    def to_tokens(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(b t) c h w -> (clips, tokens attending jointly, groups of tokens, c): every pixel's frames."""
        return rearrange(x, "(b t) c h w -> b t (h w) c", t=frames)

    def from_tokens(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return rearrange(x, "b t (h w) c -> (b t) c h w", h=height, w=width)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        strength = state.attention_scale(self.level)
        if strength == 0.0:
            return x
        height, width = x.shape[-2:]
        out = getattr(self, self.first_norm_name)(x, attention_condition(state, self.release))
        out = self.from_tokens(self.temporal_attention(self.to_tokens(out, state.frames)), height, width)
        x = x + (out if strength == 1.0 else out * strength)
        out = self.feed_forward(getattr(self, self.second_norm_name)(x, state.norm_embed))
        return x + (out if strength == 1.0 else out * strength)


#: the spatial window of the 3D temporal attention (MaxViT block attention)
ATTENTION_WINDOW = (2, 2)


def window_size(size: int, window: int) -> int:
    """The window along one axis; an axis the window does not divide (e.g. a 1-pixel deepest level) gets 1."""
    return window if size % window == 0 else 1


class WindowTemporalAttentionBlock(KeyframeTemporalAttentionBlock):
    """Conv1dAttn3dBlocks' attention: the tokens of each 2x2 spatial window in all T frames attend jointly (MaxViT
    block attention over 2x2xT), with exactly the projections, norms and MLP of the 1D block.

    Keys: those of ``KeyframeTemporalAttentionBlock`` plus the int64 buffer ``attention_window`` (2,), which records
    the window and tells this layout from the 1D one (no extra parameters).
    """

    def __init__(
        self,
        channels: int,
        time_embed_dim: int,
        groups: int = 32,
        head_dim: int = 64,
        expansion_ratio: int = 4,
        release: str = "1.1",
        level: int | None = None,
    ) -> None:
        super().__init__(channels, time_embed_dim, groups, head_dim, expansion_ratio, release, level)
        self.register_buffer("attention_window", torch.tensor(ATTENTION_WINDOW, dtype=torch.int64))
        self.zero_outputs()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.attention_window.copy_(torch.tensor(ATTENTION_WINDOW))

    def to_tokens(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        p, q = (window_size(size, w) for size, w in zip(x.shape[-2:], ATTENTION_WINDOW))
        return rearrange(x, "(b t) c (h p) (w q) -> b (t p q) (h w) c", t=frames, p=p, q=q)

    def from_tokens(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        p, q = (window_size(size, w) for size, w in zip((height, width), ATTENTION_WINDOW))
        return rearrange(x, "b (t p q) (h w) c -> (b t) c (h p) (w q)", p=p, q=q, h=height // p, w=width // q)


class TemporalConvLayer(TemporalLayer):
    """Conv1dAttn1dLayers' conv layer, inside a spatial conv Block after its 3x3 conv: x + s * conv3x1x1(SiLU(norm x)).

    Keys (under the Block's ``temporal_layer``): ``temporal_conv.0.context_mlp.1.*``, ``temporal_conv.2.*``.
    """

    def __init__(self, channels: int, time_embed_dim: int, groups: int = 32, level: int | None = None) -> None:
        super().__init__()
        self.level = level
        self.temporal_conv = conv_stage(channels, channels, (3, 1, 1), time_embed_dim, groups)
        self.zero_outputs()

    def output_layers(self) -> list[nn.Module]:
        return [self.temporal_conv[2]]

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        strength = state.conv_scale(self.level)
        if strength == 0.0:
            return x
        out = run_stage(self.temporal_conv, x, state)
        return x + (out if strength == 1.0 else out * strength)


class TemporalAttentionLayer(TemporalLayer):
    """Conv1dAttn1dLayers' attention layer, inside a spatial AttentionBlock between its attention and its MLP:
    x + s * attention along time per pixel (the spatial block's MLP follows, so the layer has none of its own).

    Keys (under the AttentionBlock's ``temporal_layer``): ``temporal_norm.context_mlp.1.*``,
    ``temporal_attention.{to_query,to_key,to_value,output_layer}.weight``.
    """

    def __init__(
        self, channels: int, time_embed_dim: int, groups: int = 32, head_dim: int = 64, release: str = "1.1",
        level: int | None = None,
    ) -> None:
        super().__init__()
        self.release = release
        self.level = level
        self.temporal_norm = ConditionalGroupNorm(groups, channels, time_embed_dim)
        self.temporal_attention = TemporalAttention(channels, head_dim)
        self.zero_outputs()

    def output_layers(self) -> list[nn.Module]:
        return [self.temporal_attention.output_layer]

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        strength = state.attention_scale(self.level)
        if strength == 0.0:
            return x
        height, width = x.shape[-2:]
        out = self.temporal_norm(x, attention_condition(state, self.release))
        out = rearrange(out, "(b t) c h w -> b t (h w) c", t=state.frames)
        out = rearrange(self.temporal_attention(out), "b t (h w) c -> (b t) c h w", h=height, w=width)
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

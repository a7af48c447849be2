"""The Kandinsky-3 U-Net's spatial blocks and its down/up levels, with room for temporal layers.

Which temporal layers a level gets is decided by a ``TemporalDesign`` (see ``models.temporal.designs``), so the same
skeleton builds the four released video U-Nets and the paper's other variants with the official key names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import nn

from ..layers import Attention, ConditionalGroupNorm, Skip, feed_forward
from ..temporal.designs import TemporalDesign
from ..temporal.layers import MergedTemporalConv, TemporalState, merge_temporal_conv


class Block(nn.Module):
    """Conditional norm -> SiLU -> [2x up] -> conv -> [temporal conv | temporal layer] -> [2x down].

    ``up_resolution``: True = upsample before the conv, False = downsample after it, None = neither.
    ``temporal_conv``: "inline" (1.0 interpolation: ``temporal_merge``/``temporal_projection`` on the block),
    "nested" (1.1 interpolation: inside ``temporal_projection_new``) or "none".
    ``temporal_layer``: a design's temporal layer ``forward(x, state)`` run after the conv (key ``temporal_layer``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        kernel_size: int = 3,
        groups: int = 32,
        up_resolution: bool | None = None,
        temporal_conv: str = "none",
        temporal_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if temporal_conv == "inline":
            self.temporal_merge = nn.Parameter(torch.zeros(1))
        self.group_norm = ConditionalGroupNorm(groups, in_channels, time_embed_dim)
        self.activation = nn.SiLU()
        self.up_sample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2) if up_resolution is True else Skip()
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size, padding=0 if kernel_size == 1 else 1)
        self.down_sample = nn.Conv2d(out_channels, out_channels, 2, stride=2) if up_resolution is False else Skip()
        self.temporal_conv = temporal_conv
        if temporal_conv == "inline":
            self.temporal_projection = nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))
            nn.init.zeros_(self.temporal_projection.weight)
            nn.init.zeros_(self.temporal_projection.bias)
        elif temporal_conv == "nested":
            self.temporal_projection_new = MergedTemporalConv(out_channels)
        elif temporal_conv != "none":
            raise ValueError(f"unknown temporal_conv layout {temporal_conv!r}")
        self.temporal_layer = temporal_layer  # None is a plain attribute: no state-dict key

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, state: TemporalState | None) -> torch.Tensor:
        x = self.projection(self.up_sample(self.activation(self.group_norm(x, time_embed))))
        if state is not None:
            if self.temporal_conv == "inline":
                x = merge_temporal_conv(x, self.temporal_projection, self.temporal_merge, state)
            elif self.temporal_conv == "nested":
                x = self.temporal_projection_new(x, state)
            if self.temporal_layer is not None:
                x = self.temporal_layer(x, state)
        return self.down_sample(x)


#: makes the temporal layer of one conv Block from (output channels, kernel size), or None
BlockLayerFactory = Callable[[int, int], "nn.Module | None"]


class ResNetBlock(nn.Module):
    """Four Blocks (1x1 -> 3x3 -> 3x3 -> 1x1, bottleneck width max(in, out) / compression) plus a shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        groups: int = 32,
        compression_ratio: int = 2,
        up_resolutions: tuple[bool | None, ...] = (None, None, None, None),
        temporal_conv: str = "none",
        temporal_layers: BlockLayerFactory | None = None,
    ) -> None:
        super().__init__()
        hidden = max(in_channels, out_channels) // compression_ratio
        shapes = [(in_channels, hidden, 1), (hidden, hidden, 3), (hidden, hidden, 3), (hidden, out_channels, 1)]
        self.resnet_blocks = nn.ModuleList(
            Block(c_in, c_out, time_embed_dim, k, groups, up, temporal_conv,
                  temporal_layers(c_out, k) if temporal_layers else None)
            for (c_in, c_out, k), up in zip(shapes, up_resolutions)
        )
        upsamples, downsamples = True in up_resolutions, False in up_resolutions
        self.shortcut_up_sample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2) if upsamples else Skip()
        self.shortcut_projection = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else Skip()
        self.shortcut_down_sample = nn.Conv2d(out_channels, out_channels, 2, stride=2) if downsamples else Skip()

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, state: TemporalState | None) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, time_embed, state)
        return self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x))) + out


class AttentionPooling(nn.Module):
    """Adds attention-pooled text to the time embedding; the query is the plain mean over all context positions
    (padding included, as the official code does)."""

    def __init__(self, time_embed_dim: int, context_dim: int, head_dim: int = 64) -> None:
        super().__init__()
        self.attention = Attention(context_dim, time_embed_dim, context_dim, head_dim)

    def forward(self, time_embed: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pooled = self.attention(context.mean(dim=1, keepdim=True), context, mask)
        return time_embed + pooled.squeeze(1)


class AttentionBlock(nn.Module):
    """Self-attention (no context) or cross-attention to the text, [a temporal layer,] then a pointwise MLP; each
    residual. ``temporal_layer`` (key ``temporal_layer``) is a design's ``forward(x, state)`` layer."""

    def __init__(
        self,
        channels: int,
        time_embed_dim: int,
        context_dim: int | None = None,
        groups: int = 32,
        head_dim: int = 64,
        expansion_ratio: int = 4,
        temporal_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, time_embed_dim)
        self.attention = Attention(channels, channels, context_dim or channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, time_embed_dim)
        self.feed_forward = feed_forward(channels, expansion_ratio)
        self.temporal_layer = temporal_layer  # None is a plain attribute: no state-dict key

    def forward(
        self,
        x: torch.Tensor,
        time_embed: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        state: TemporalState | None = None,
    ) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = rearrange(self.in_norm(x, time_embed), "b c h w -> b (h w) c")
        out = self.attention(out, out, None) if context is None else self.attention(out, context, mask)
        x = x + rearrange(out, "b (h w) c -> b c h w", h=height, w=width)
        if state is not None and self.temporal_layer is not None:
            x = self.temporal_layer(x, state)
        return x + self.feed_forward(self.out_norm(x, time_embed))


class LevelSettings:
    """The per-level arguments shared by down and up levels."""

    def __init__(
        self,
        time_embed_dim: int,
        context_dim: int | None,
        num_blocks: int,
        groups: int,
        head_dim: int,
        expansion_ratio: int,
        compression_ratio: int,
        self_attention: bool,
        design: TemporalDesign,
        level: int,
    ) -> None:
        self.time_embed_dim = time_embed_dim
        self.context_dim = context_dim
        self.num_blocks = num_blocks
        self.groups = groups
        self.head_dim = head_dim
        self.expansion_ratio = expansion_ratio
        self.compression_ratio = compression_ratio
        self.self_attention = self_attention
        self.design = design
        self.level = level

    def resnet(self, c_in: int, c_out: int, up: tuple[bool | None, ...] = (None,) * 4) -> ResNetBlock:
        return ResNetBlock(c_in, c_out, self.time_embed_dim, self.groups, self.compression_ratio, up,
                           self.design.block_conv, self.block_layer)

    def block_layer(self, channels: int, kernel_size: int) -> nn.Module | None:
        return self.design.block_layer(channels, kernel_size, self)

    def attention(self, channels: int, context_dim: int | None) -> AttentionBlock:
        return AttentionBlock(channels, self.time_embed_dim, context_dim, self.groups, self.head_dim,
                              self.expansion_ratio, self.design.attention_layer(channels, self))

    def unit(
        self, c_res_in: int, c_attn: int, c_out: int, c_temporal: int, up: tuple, up_in_first: bool
    ) -> nn.ModuleList:
        """[in ResNet, cross-attention | Skip, out ResNet (+ in/out temporal blocks when the design has them)].

        ``up`` goes to the first ResNet on the way up (upsampling) and to the second on the way down.
        """
        first_up = up if up_in_first else (None,) * 4
        second_up = (None,) * 4 if up_in_first else up
        modules = [
            self.resnet(c_res_in, c_attn, first_up),
            self.attention(c_attn, self.context_dim) if self.context_dim else Skip(),
            self.resnet(c_attn, c_out, second_up),
        ]
        pair = [self.design.resnet_block(c_temporal, self) for _ in range(2)]
        if all(block is not None for block in pair):
            modules.extend(pair)
        return nn.ModuleList(modules)

    def temporal_attention(self, channels: int) -> nn.Module:
        block = self.design.attention_block(channels, self) if self.self_attention else None
        return block if block is not None else Skip()


class DownSampleBlock(nn.Module):
    """One encoder level: [self-attention, temporal attention], then ``num_blocks`` units; the last unit's second
    ResNet halves the resolution unless this is the deepest level."""

    def __init__(self, in_channels: int, out_channels: int, settings: LevelSettings, down_sample: bool) -> None:
        super().__init__()
        s = settings
        self.self_attention_block = s.attention(in_channels, None) if s.self_attention else Skip()
        self.temporal_attention_block = s.temporal_attention(in_channels)
        last_up = (None, None, False, None) if down_sample else (None,) * 4
        units = []
        for i in range(s.num_blocks):
            c_in = in_channels if i == 0 else out_channels
            up = last_up if i == s.num_blocks - 1 else (None,) * 4
            units.append(s.unit(c_in, out_channels, out_channels, out_channels, up, up_in_first=False))
        self.resnet_attn_blocks = nn.ModuleList(units)

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, context: torch.Tensor | None,
                mask: torch.Tensor | None, state: TemporalState | None) -> torch.Tensor:
        x = self.self_attention_block(x, time_embed, None, None, state)
        if state is not None:
            x = self.temporal_attention_block(x, state)
        for unit in self.resnet_attn_blocks:
            in_resnet, attention, out_resnet = unit[0], unit[1], unit[2]
            temporal = state is not None and len(unit) == 5
            x = in_resnet(x, time_embed, state)
            if temporal:
                x = unit[3](x, state)
            x = attention(x, time_embed, context, mask, state)
            x = out_resnet(x, time_embed, state)
            if temporal:
                x = unit[4](x, state)
        return x


class UpSampleBlock(nn.Module):
    """One decoder level: ``num_blocks`` units (the first takes the skip connection and doubles the resolution
    unless this is the deepest level), then self-attention and temporal attention in the design's order."""

    def __init__(
        self, in_channels: int, cat_channels: int, out_channels: int, settings: LevelSettings, up_sample: bool
    ) -> None:
        super().__init__()
        s = settings
        widths = [(in_channels + cat_channels, in_channels)] + [(in_channels, in_channels)] * (s.num_blocks - 2)
        widths += [(in_channels, out_channels)]
        first_up = (None, True, None, None) if up_sample else (None,) * 4
        self.resnet_attn_blocks = nn.ModuleList(
            s.unit(c_in, c_in, c_out, c_in, first_up if i == 0 else (None,) * 4, up_in_first=True)
            for i, (c_in, c_out) in enumerate(widths)
        )
        self.attention_order = settings.design.up_attention_order
        for name in self.attention_order:
            if name == "temporal":
                self.temporal_attention_block = s.temporal_attention(out_channels)
            else:
                self.self_attention_block = s.attention(out_channels, None) if s.self_attention else Skip()

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, context: torch.Tensor | None,
                mask: torch.Tensor | None, state: TemporalState | None) -> torch.Tensor:
        for unit in self.resnet_attn_blocks:
            in_resnet, attention, out_resnet = unit[0], unit[1], unit[2]
            temporal = state is not None and len(unit) == 5
            if temporal:
                x = unit[3](x, state)
            x = in_resnet(x, time_embed, state)
            x = attention(x, time_embed, context, mask, state)
            if temporal:
                x = unit[4](x, state)
            x = out_resnet(x, time_embed, state)
        for name in self.attention_order:
            if name == "self":
                x = self.self_attention_block(x, time_embed, None, None, state)
            elif state is not None:
                x = self.temporal_attention_block(x, state)
        return x

"""Temporal designs: which temporal layers each U-Net level gets, one class per variant.

The keyframe U-Nets of both releases use the paper's "Conv1dAttn1dBlocks" (separate temporal ResNet blocks after
every spatial ResNet block and a temporal attention block beside every self-attention block). The interpolation
U-Nets put a merged 3x1x1 temporal conv inside every conv Block (1.1 adds gated temporal attention).

The paper's three other keyframe variants (FusionFrames section 4.1, Table 1), which have no released weights, are
built by the same skeleton: ``Conv1dAttn3dBlocks`` and ``Conv3dAttn1dBlocks`` swap the block types, and
``Conv1dAttn1dLayers`` puts single temporal layers inside the spatial Blocks and AttentionBlocks instead of separate
blocks (through ``block_layer`` / ``attention_layer``). Their state-dict layouts are in ``docs/temporal_variants.md``.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from .layers import (
    GatedTemporalAttentionBlock,
    KeyframeTemporalAttentionBlock,
    TemporalAttentionLayer,
    TemporalConv3dResNetBlock,
    TemporalConvLayer,
    TemporalResNetBlock,
    WindowTemporalAttentionBlock,
)


class LevelSettings(Protocol):
    """What a design reads of a U-Net level (the U-Net's ``LevelSettings`` provides it; no import of the U-Net)."""

    time_embed_dim: int
    groups: int
    head_dim: int
    expansion_ratio: int
    compression_ratio: int
    self_attention: bool
    level: int


class TemporalDesign:
    """No temporal layers: the plain text-to-image U-Net."""

    name = "none"
    #: layout of the temporal conv inside every conv Block: "none", "inline" (1.0) or "nested" (1.1)
    block_conv = "none"
    #: registration and execution order of the attention blocks at the end of an up level
    up_attention_order: tuple[str, ...] = ("temporal", "self")

    def resnet_block(self, channels: int, settings: LevelSettings) -> nn.Module | None:
        """The temporal block placed after each spatial ResNet block, or None."""
        return None

    def attention_block(self, channels: int, settings: LevelSettings) -> nn.Module | None:
        """The temporal attention block placed beside each self-attention block, or None."""
        return None

    def block_layer(self, channels: int, kernel_size: int, settings: LevelSettings) -> nn.Module | None:
        """A temporal layer inside a spatial conv Block, after its conv (``channels`` wide), or None."""
        return None

    def attention_layer(self, channels: int, settings: LevelSettings) -> nn.Module | None:
        """A temporal layer inside a spatial AttentionBlock, between its attention and its MLP, or None."""
        return None


class Conv1dAttn1dBlocks(TemporalDesign):
    """The released keyframe design: temporal 1D-conv ResNet blocks and 1D (per-pixel) temporal attention blocks."""

    name = "Conv1dAttn1dBlocks"

    def __init__(self, release: str) -> None:
        self.release = release

    def resnet_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return TemporalResNetBlock(channels, settings.time_embed_dim, settings.groups, settings.compression_ratio,
                                   level=settings.level)

    def attention_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return KeyframeTemporalAttentionBlock(channels, settings.time_embed_dim, settings.groups, settings.head_dim,
                                              settings.expansion_ratio, release=self.release, level=settings.level)


class Conv1dAttn3dBlocks(Conv1dAttn1dBlocks):
    """The 1D conv blocks with 3D temporal attention blocks: 2x2 spatial windows x all frames attend jointly."""

    name = "Conv1dAttn3dBlocks"

    def attention_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return WindowTemporalAttentionBlock(channels, settings.time_embed_dim, settings.groups, settings.head_dim,
                                            settings.expansion_ratio, release=self.release, level=settings.level)


class Conv3dAttn1dBlocks(Conv1dAttn1dBlocks):
    """3x3x3 temporal conv blocks (on a down-projected width) with the 1D temporal attention blocks."""

    name = "Conv3dAttn1dBlocks"

    def resnet_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return TemporalConv3dResNetBlock(channels, settings.time_embed_dim, settings.groups,
                                         settings.compression_ratio, level=settings.level)


class Conv1dAttn1dLayers(TemporalDesign):
    """Temporal layers mixed into the spatial blocks: a 3x1x1 conv layer after every 3x3 conv of the ResNet blocks and
    a temporal attention layer inside every attention block (self- and cross-attention) of the levels that have
    self-attention.

    Only the 3x3 convs get a temporal layer: the 1x1 convs of the bottleneck mix channels, not neighbours, and two
    layers per ResNet keep the parameter count near the block variants'.
    """

    name = "Conv1dAttn1dLayers"

    def __init__(self, release: str) -> None:
        self.release = release

    def block_layer(self, channels: int, kernel_size: int, settings: LevelSettings) -> nn.Module | None:
        if kernel_size != 3:
            return None
        return TemporalConvLayer(channels, settings.time_embed_dim, settings.groups, level=settings.level)

    def attention_layer(self, channels: int, settings: LevelSettings) -> nn.Module | None:
        if not settings.self_attention:
            return None
        return TemporalAttentionLayer(channels, settings.time_embed_dim, settings.groups, settings.head_dim,
                                      release=self.release, level=settings.level)


class InterpolationDesign(TemporalDesign):
    """The interpolation U-Nets: merged temporal convs across neighbouring groups inside every conv Block;
    1.1 adds gated temporal attention after each self-attention block."""

    name = "interpolation"

    def __init__(self, release: str) -> None:
        self.release = release
        self.block_conv = "inline" if release == "1.0" else "nested"
        self.up_attention_order = ("temporal", "self") if release == "1.0" else ("self", "temporal")

    def attention_block(self, channels: int, settings: LevelSettings) -> nn.Module | None:
        if self.release == "1.0":
            return None
        return GatedTemporalAttentionBlock(channels, settings.time_embed_dim, settings.groups, settings.head_dim,
                                           settings.expansion_ratio)

"""Temporal designs: which temporal layers each U-Net level gets, one class per variant.

The keyframe U-Nets of both releases use the paper's "Conv1dAttn1dBlocks" (separate temporal ResNet blocks after
every spatial ResNet block and a temporal attention block beside every self-attention block). The interpolation
U-Nets put a merged 3x1x1 temporal conv inside every conv Block (1.1 adds gated temporal attention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .temporal_blocks import GatedTemporalAttentionBlock, KeyframeTemporalAttentionBlock, TemporalResNetBlock

if TYPE_CHECKING:
    from .unet_blocks import LevelSettings


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


class Conv1dAttn1dBlocks(TemporalDesign):
    """The released keyframe design: temporal 1D-conv ResNet blocks and 1D (per-pixel) temporal attention blocks."""

    name = "Conv1dAttn1dBlocks"

    def __init__(self, release: str) -> None:
        self.release = release

    def resnet_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return TemporalResNetBlock(channels, settings.time_embed_dim, settings.groups, settings.compression_ratio)

    def attention_block(self, channels: int, settings: LevelSettings) -> nn.Module:
        return KeyframeTemporalAttentionBlock(channels, settings.time_embed_dim, settings.groups, settings.head_dim,
                                              settings.expansion_ratio, release=self.release)


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

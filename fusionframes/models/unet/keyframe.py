"""The keyframe U-Nets: Kandinsky 3 plus temporal blocks, sampling all keyframes of a clip jointly.

Batches are laid out ``(clips, frames)`` with frames fastest; under guidance each branch is one clip. The frame
count is a call argument, not a constructor constant, so any number of keyframes works.
"""

from __future__ import annotations

import torch

from ...errors import InputError
from ..configs import UNetConfig
from ..layers import EmbeddingMLP
from ..temporal.designs import Conv1dAttn1dBlocks, TemporalDesign
from ..temporal.layers import TemporalState
from .blocks import AttentionPooling
from .skeleton import KandinskyUNet


def _check_frames(batch: int, frames: int) -> None:
    if frames < 1 or batch % frames:
        raise InputError(f"a batch of {batch} samples cannot be split into clips of {frames} frames.")


class TemporalStrength:
    """How strongly each kind of temporal block acts (1 = as trained, 0 = off), and on which U-Net levels
    (None = all)."""

    def __init__(self, conv: float = 1.0, attention: float = 1.0, levels: frozenset[int] | None = None) -> None:
        self.conv = float(conv)
        self.attention = float(attention)
        self.levels = levels


class _KeyframeUNet(KandinskyUNet):
    """What both releases' keyframe models register first, in the official order."""

    release = ""

    def _build_keyframe_stem(self, config: UNetConfig, design: TemporalDesign | None) -> None:
        config.validate()
        self.config = config
        self.design = design or Conv1dAttn1dBlocks(self.release)
        self.strength = TemporalStrength()
        e, c = config.time_embed_dim, config.stem_channels
        self.to_time_embed = EmbeddingMLP(c, e)
        self.feature_pooling = AttentionPooling(e, config.context_dim, config.head_dim)
        self.to_temporal_embed = EmbeddingMLP(c, e)
        self.in_layer = torch.nn.Conv2d(config.num_channels, c, kernel_size=3, padding=1)


class KeyframeUNet10(_KeyframeUNet):
    """Kandinsky Video 1.0 keyframe model (4 input channels, eps prediction)."""

    release = "1.0"

    def __init__(self, config: UNetConfig, design: TemporalDesign | None = None) -> None:
        super().__init__()
        self._build_keyframe_stem(config, design)
        self._build_levels(config, self.design)
        self._build_out_layer(config)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        positions: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        """x (clips*frames, 4, h, w); time and positions (clips*frames,) as model time / frame positions."""
        _check_frames(x.shape[0], num_frames)
        time_embed = self.feature_pooling(self.to_time_embed(time), context, context_mask)
        x = self.in_layer(x)
        state = TemporalState(
            frames=num_frames,
            norm_embed=time_embed,
            position_embed=self.to_temporal_embed(positions),
            conv_strength=self.strength.conv,
            attention_strength=self.strength.attention,
            levels=self.strength.levels,
        )
        return self._run_levels(x, time_embed, context, context_mask, state)


class KeyframeUNet11(_KeyframeUNet):
    """Kandinsky Video 1.1 keyframe model: video mode (``in_layer``, temporal blocks) and image mode
    (``image_in_layer``, no temporal layers), chosen by the caller rather than by batch size."""

    release = "1.1"

    def __init__(self, config: UNetConfig, design: TemporalDesign | None = None) -> None:
        super().__init__()
        self._build_keyframe_stem(config, design)
        e, c = config.time_embed_dim, config.stem_channels
        self.image_in_layer = torch.nn.Conv2d(config.num_channels, c, kernel_size=3, padding=1)
        self._build_levels(config, self.design)
        self._build_out_layer(config)
        if config.noise_augmentation:
            self.temporal_noise_aug_time_encoding = EmbeddingMLP(c, e)
        if config.motion_score:
            self.temporal_motion_score_encoding = EmbeddingMLP(c, e)

    def forward_image(
        self, x: torch.Tensor, time: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """Image mode: a plain text-to-image U-Net pass (the 1.1 first frame)."""
        time_embed = self.feature_pooling(self.to_time_embed(time), context, context_mask)
        return self._run_levels(self.image_in_layer(x), time_embed, context, context_mask, None)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        positions: torch.Tensor,
        num_frames: int,
        noise_aug_time: torch.Tensor | None = None,
        motion_score: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Video mode: x (clips*frames, 9, h, w) = [x_t, condition latent, condition mask]."""
        _check_frames(x.shape[0], num_frames)
        time_embed = self.feature_pooling(self.to_time_embed(time), context, context_mask)
        temporal_embed = self.to_temporal_embed(positions)
        if self.config.noise_augmentation and noise_aug_time is not None:
            temporal_embed = temporal_embed + self.temporal_noise_aug_time_encoding(noise_aug_time)
        if self.config.motion_score and motion_score is not None:
            temporal_embed = temporal_embed + self.temporal_motion_score_encoding(motion_score)
        state = TemporalState(
            frames=num_frames,
            norm_embed=time_embed + temporal_embed,
            conv_strength=self.strength.conv,
            attention_strength=self.strength.attention,
            levels=self.strength.levels,
        )
        return self._run_levels(self.in_layer(x), time_embed, context, context_mask, state)

"""The interpolation U-Nets: predict the 3 latent frames between two keyframes.

Input channels are ``[left keyframe (4), noisy middle frames (12), right keyframe (4)]``; the output is the
v-prediction of the three middle frames (frame-major channels). The batch is ``(branches, groups)`` with groups
fastest, and the temporal convs mix neighbouring groups.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError
from ..configs import UNetConfig
from ..layers import EmbeddingMLP
from ..temporal.designs import InterpolationDesign
from ..temporal.layers import TemporalState
from .blocks import AttentionPooling
from .skeleton import KandinskyUNet

#: skip-frame conditioning is an embedding table of this size
SKIP_EMBEDDINGS = 20


def _check_groups(batch: int, groups: int) -> None:
    if groups < 1 or batch % groups:
        raise InputError(f"a batch of {batch} samples cannot be split into branches of {groups} groups.")


class InterpolationUNet10(KandinskyUNet):
    """Kandinsky Video 1.0 interpolation model. Perturbation level is fixed at 0 and merged into the pooled time
    embedding, as the official code does."""

    release = "1.0"

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.design = InterpolationDesign("1.0")
        e, c = config.time_embed_dim, config.stem_channels
        self.to_time_embed = EmbeddingMLP(c, e)
        self.feature_pooling = AttentionPooling(e, config.context_dim, config.head_dim)
        self.perturbation_to_time_embed = EmbeddingMLP(c, e)
        self.time_embed_merge = nn.Parameter(torch.zeros(1))
        self.skip_merge = nn.Parameter(torch.zeros(1))
        self.skip_embeddings = nn.Embedding(SKIP_EMBEDDINGS, e)
        self.in_layer = nn.Conv2d(config.num_channels, c, kernel_size=3, padding=1)
        self._build_levels(config, self.design)
        self._build_out_layer(config)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        skip_frames: torch.Tensor,
        num_groups: int,
    ) -> torch.Tensor:
        _check_groups(x.shape[0], num_groups)
        time_embed = self.feature_pooling(self.to_time_embed(time), context, context_mask)
        perturbation = self.perturbation_to_time_embed(torch.zeros(x.shape[0], device=x.device))
        merge = self.time_embed_merge
        time_embed = merge * perturbation + (1 - merge) * time_embed
        time_embed = self.skip_merge * self.skip_embeddings(skip_frames.long()) + time_embed
        state = TemporalState(frames=num_groups, norm_embed=time_embed)
        return self._run_levels(self.in_layer(x), time_embed, context, context_mask, state)


class InterpolationUNet11(KandinskyUNet):
    """Kandinsky Video 1.1 interpolation model: text-conditioned, with temporal layers gated per sample."""

    release = "1.1"

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.design = InterpolationDesign("1.1")
        e, c = config.time_embed_dim, config.stem_channels
        self.to_time_embed = EmbeddingMLP(c, e)
        self.perturbation_to_time_embed = EmbeddingMLP(c, e)
        self.time_embed_merge = nn.Parameter(torch.zeros(1))
        self.skip_merge = nn.Parameter(torch.zeros(1))
        self.skip_embeddings = nn.Embedding(SKIP_EMBEDDINGS, e)
        self.feature_pooling = AttentionPooling(e, config.context_dim, config.head_dim)
        self.in_layer = nn.Conv2d(config.num_channels, c, kernel_size=3, padding=1)
        self._build_levels(config, self.design)
        self._build_out_layer(config)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        skip_frames: torch.Tensor,
        num_groups: int,
        perturbation_time: torch.Tensor,
        temporal_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``temporal_mask`` (B,): 1 keeps a sample's temporal layers, 0 switches them off (unconditional branch)."""
        _check_groups(x.shape[0], num_groups)
        merge = self.time_embed_merge
        time_embed = self.to_time_embed(time)
        time_embed = merge * self.perturbation_to_time_embed(perturbation_time) + (1 - merge) * time_embed
        time_embed = self.skip_merge * self.skip_embeddings(skip_frames.long()) + time_embed
        time_embed = self.feature_pooling(time_embed, context, context_mask)
        state = TemporalState(frames=num_groups, norm_embed=time_embed, gate=temporal_mask)
        return self._run_levels(self.in_layer(x), time_embed, context, context_mask, state)

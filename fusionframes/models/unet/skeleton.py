"""The Kandinsky-3 U-Net skeleton: levels built from a config and a temporal design, and the shared forward path.

Subclasses (keyframe and interpolation models of both releases) register their top-level modules in the official
order, so their state dicts match the checkpoints key for key.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configs import UNetConfig
from ..interrupt import interruption_point
from ..temporal.designs import TemporalDesign
from ..temporal.layers import TemporalState
from .blocks import DownSampleBlock, LevelSettings, UpSampleBlock
from .step_cache import StepCache


class KandinskyUNet(nn.Module):
    """Base of the video U-Nets. Subclasses call the ``_build_*`` helpers in the official registration order."""

    config: UNetConfig
    design: TemporalDesign
    step_cache: StepCache | None = None  # set by ``step_cache.step_cache`` around a sampling run

    def _build_levels(self, config: UNetConfig, design: TemporalDesign) -> None:
        dims = config.hidden_dims
        pairs = list(zip(dims[:-1], dims[1:]))
        levels = len(pairs)
        context_dims = [config.context_dim if cross else None for cross in config.add_cross_attention]

        def settings(level: int) -> LevelSettings:
            return LevelSettings(
                config.time_embed_dim, context_dims[level], config.num_blocks[level], config.groups,
                config.head_dim, config.expansion_ratio, config.compression_ratio,
                config.add_self_attention[level], design, level,
            )

        self.down_samples = nn.ModuleList(
            DownSampleBlock(c_in, c_out, settings(level), down_sample=level != levels - 1)
            for level, (c_in, c_out) in enumerate(pairs)
        )
        skip_widths = [c_out for c_in, c_out in pairs[:-1]] + [0]
        ups = []
        for step, level in enumerate(reversed(range(levels))):
            c_out, c_in = pairs[level]
            ups.append(UpSampleBlock(c_in, skip_widths[level], c_out, settings(level), up_sample=step != 0))
        self.up_samples = nn.ModuleList(ups)

    def _build_out_layer(self, config: UNetConfig) -> None:
        self.out_layer = nn.Sequential(
            nn.GroupNorm(config.groups, config.stem_channels),
            nn.SiLU(),
            nn.Conv2d(config.stem_channels, config.out_channels, kernel_size=3, padding=1),
        )

    def _run_levels(
        self,
        x: torch.Tensor,
        time_embed: torch.Tensor,
        context: torch.Tensor | None,
        mask: torch.Tensor | None,
        state: TemporalState | None,
    ) -> torch.Tensor:
        cache = self.step_cache
        if cache is None or len(self.down_samples) < 2:
            return self.out_layer(self._levels(x, 0, time_embed, context, mask, state))
        interruption_point()
        top = self.down_samples[0](x, time_embed, context, mask, state)
        if cache.fresh((tuple(x.shape), x.dtype, state is None)):
            cache.deep = self._levels(top, 1, time_embed, context, mask, state)
        interruption_point()
        x = torch.cat([cache.deep, top], dim=1)
        return self.out_layer(self.up_samples[-1](x, time_embed, context, mask, state))

    def _levels(self, x: torch.Tensor, outer: int, time_embed: torch.Tensor, context: torch.Tensor | None,
                mask: torch.Tensor | None, state: TemporalState | None) -> torch.Tensor:
        """The levels from ``outer`` down and back up (0: the whole U-Net before its out layer; 1: everything
        inside the outermost level, whose output the step cache keeps)."""
        skips = []
        for level, down in enumerate(self.down_samples[outer:], start=outer):
            interruption_point()
            x = down(x, time_embed, context, mask, state)
            if level != len(self.down_samples) - 1:
                skips.append(x)
        for step, up in enumerate(self.up_samples[:len(self.up_samples) - outer]):
            interruption_point()
            if step != 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = up(x, time_embed, context, mask, state)
        return x

    @property
    def dtype(self) -> torch.dtype:
        return self.in_layer.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.in_layer.weight.device

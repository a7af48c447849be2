"""Fewer full U-Net passes where the user asks for it: the deep features, which change slowly from one sampling step
to the next, are computed every ``interval`` steps and reused in between, when only the outermost level runs (in the
spirit of DeepCache). Not official and off by default; its error against the full run is measured by
``python -m fusionframes.tools.step_cache_bench``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import InputError


@dataclass
class StepCache:
    """The kept deep features of one sampling run and how often they were computed."""

    interval: int
    calls: int = 0
    full: int = 0
    deep: torch.Tensor | None = None
    key: tuple | None = None

    def fresh(self, key: tuple) -> bool:
        """Whether this call computes the deep features anew (every ``interval``-th call, and whenever the input is
        not the one they were kept for)."""
        full = self.deep is None or key != self.key or self.calls % self.interval == 0
        self.calls += 1
        self.full += full
        self.key = key
        return full


def _unet(network: Any) -> nn.Module:
    """The U-Net inside the views and wrappers the runtime hands to the samplers."""
    from .skeleton import KandinskyUNet

    while not isinstance(network, KandinskyUNet):
        if isinstance(network, nn.Module):
            found = next((m for m in network.modules() if isinstance(m, KandinskyUNet)), None)
            if found is None:
                raise InputError(f"a step cache needs a FusionFrames U-Net, got {type(network).__name__}.")
            return found
        network = network.network  # BranchParallel and similar wrappers
    return network


@contextmanager
def step_cache(network: Any, interval: int) -> Iterator[StepCache | None]:
    """Within it, ``network`` reuses its deep features for ``interval - 1`` calls after each full one (0 or 1:
    every call is a full pass, as officially)."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise InputError(f"the step cache interval must be a whole number >= 0 (0: off), got {interval!r}.")
    if interval <= 1:
        yield None
        return
    unet = _unet(network)
    previous, unet.step_cache = unet.step_cache, StepCache(interval)
    try:
        yield unet.step_cache
    finally:
        unet.step_cache = previous

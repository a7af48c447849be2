"""A noise source for tests: hands out another source's noise and records which (phase, role) was drawn, in order."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusionframes.sampling.noise import NoiseSource


class RecordingNoise(NoiseSource):
    """``source``'s noise, with every draw recorded as (phase, role) in the order the sampler asked."""

    def __init__(self, source: NoiseSource) -> None:
        self.source = source
        self.draws: list[tuple[str, str]] = []

    @property
    def roles(self) -> list[str]:
        return [role for _, role in self.draws]

    def normal(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        self.draws.append((phase, role))
        return self.source.normal(phase, role, shape)

    def uniform(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        self.draws.append((phase, role))
        return self.source.uniform(phase, role, shape)

"""Where sampling noise comes from.

Every random tensor a sampler draws is asked for by *role* (``"init"``, ``"step.007"``, ``"noise_aug"``) inside a
*phase* (``"keyframes"``, ``"interpolation1"``, ...). The default source draws from seeded CPU generators, one stream
per phase, so one seed gives the same video on every device; a recorded source replays the tensors of a parity fixture
instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from ..errors import InputError


class NoiseSource:
    """Hands out the noise tensors of a run. Subclasses decide where they come from."""

    def normal(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal noise, float32 on the CPU."""
        raise NotImplementedError

    def uniform(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        """Uniform noise on [0, 1), float32 on the CPU."""
        raise NotImplementedError


def stream_seed(seed: int, phase: str) -> int:
    """The seed of ``phase``'s own stream: a hash of (seed, phase), the same on every machine and Python."""
    digest = hashlib.sha256(f"fusionframes:{int(seed)}:{phase}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SeededNoise(NoiseSource):
    """Noise from seeded CPU generators, one per phase [OB-44].

    Each phase (``"first_frame"``, ``"keyframes"``, ``"interpolation1"``, ...) draws from its own stream seeded by
    (seed, phase), in the order its sampler asks, so no two stages share draws and a video does not depend on whether
    its stages run in one call or in separate nodes given the same seed."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise InputError(f"seed must be an integer between 0 and 2**64-1, got {seed!r}.")
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, phase: str) -> torch.Generator:
        generator = self._generators.get(phase)
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(stream_seed(self.seed, phase))
            self._generators[phase] = generator
        return generator

    def normal(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator(phase), dtype=torch.float32)

    def uniform(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        return torch.rand(tuple(shape), generator=self.generator(phase), dtype=torch.float32)


class RecordedNoise(NoiseSource):
    """Replays tensors stored as ``noise.PHASE.ROLE`` (the layout of the golden fixtures)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], prefix: str = "noise") -> None:
        self.tensors = tensors
        self.prefix = prefix

    def _take(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        name = f"{self.prefix}.{phase}.{role}"
        if name not in self.tensors:
            raise KeyError(f"recorded noise has no tensor {name!r}")
        tensor = self.tensors[name].float()
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"recorded noise {name!r} has shape {tuple(tensor.shape)}, sampler wants {tuple(shape)}")
        return tensor

    normal = _take
    uniform = _take

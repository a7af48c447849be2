"""Where sampling noise comes from.

Every random tensor a sampler draws is asked for by *role* (``"init"``, ``"step.007"``, ``"noise_aug"``) inside a
*phase* (``"keyframes"``, ``"interpolation1"``, ...). The default source draws from a seeded CPU generator, so one seed
gives the same video on every device; a recorded source replays the tensors of a parity fixture instead.
"""

from __future__ import annotations

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


class SeededNoise(NoiseSource):
    """Noise from one seeded CPU generator, drawn in the order the samplers ask for it."""

    def __init__(self, seed: int) -> None:
        if not 0 <= int(seed) < 2**64:
            raise InputError(f"seed must be between 0 and 2**64-1, got {seed}.")
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def normal(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32)

    def uniform(self, phase: str, role: str, shape: Sequence[int]) -> torch.Tensor:
        return torch.rand(tuple(shape), generator=self.generator, dtype=torch.float32)


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

"""Cheap previews of MoVQ latents: a linear map from the 4 latent channels to RGB, fitted to the loaded MoVQ, and a
sheet that shows every frame of a video latent in one picture.

The map is fitted, not copied from anywhere: a few synthetic images (the corners of the RGB cube and smooth colour
gradients) are encoded with the MoVQ's own encoder, and least squares gives the 4x3 factors and the bias that take
each latent pixel to the mean colour of the 8x8 image pixels it came from. It works for any MoVQ weights (the demo
models' too), at the cost of one small encode per model file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: side of the synthetic fitting images
FIT_SIZE = 64


@dataclass(frozen=True)
class LatentColours:
    """``rgb = latent @ factors + bias`` per latent pixel, RGB in [-1, 1]; ``factors`` is 4 x 3."""

    factors: list[list[float]]
    bias: list[float]

    def to_dict(self) -> dict:
        return {"factors": self.factors, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> LatentColours:
        factors, bias = data["factors"], data["bias"]
        if len(factors) != 4 or any(len(row) != 3 for row in factors) or len(bias) != 3:
            raise ValueError("latent colours need 4x3 factors and 3 bias values")
        return cls([[float(v) for v in row] for row in factors], [float(v) for v in bias])

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, 4, h, w) -> (N, 3, h, w) in [-1, 1] (clamped)."""
        factors = torch.tensor(self.factors, dtype=torch.float32, device=latents.device)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=latents.device)
        rgb = torch.einsum("nchw,cd->ndhw", latents.float(), factors) + bias[None, :, None, None]
        return rgb.clamp(-1, 1)


def fitting_images(size: int = FIT_SIZE) -> torch.Tensor:
    """(16, 3, size, size) in [-1, 1]: the 8 corners of the RGB cube, then 8 two-colour gradients between them."""
    corners = torch.tensor([[r, g, b] for r in (-1.0, 1.0) for g in (-1.0, 1.0) for b in (-1.0, 1.0)])
    images = [corner[:, None, None].expand(3, size, size) for corner in corners]
    ramp = torch.linspace(0, 1, size)
    for index in range(8):
        start, end = corners[index], corners[(index * 3 + 5) % 8]
        weights = ramp[None, :, None] if index % 2 else ramp[None, None, :]
        images.append(start[:, None, None] * (1 - weights) + end[:, None, None] * weights)
    return torch.stack([image.expand(3, size, size) for image in images]).contiguous()


@torch.no_grad()
def fit_latent_colours(movq: torch.nn.Module) -> LatentColours:
    """Least-squares latent -> RGB map of ``movq`` (anything with ``encode(images in [-1, 1]) -> latents``)."""
    weight = next(movq.parameters())
    images = fitting_images()
    latents = movq.encode(images.to(weight.device, weight.dtype)).float().cpu()
    h, w = latents.shape[-2:]
    targets = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    inputs = torch.cat([inputs, torch.ones(inputs.shape[0], 1)], dim=1).double()
    outputs = targets.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(inputs, outputs).solution
    return LatentColours(solution[:-1].tolist(), solution[-1].tolist())


def frames_sheet(latents: torch.Tensor) -> torch.Tensor:
    """A video latent ``[B, C, T, h, w]`` -> ``[1, C, 1, rows * h, columns * w]``: the first video's frames in a grid
    as near square as the frame shape allows, so a one-picture preview shows all of them. Other shapes pass."""
    if latents.dim() != 5 or latents.shape[2] <= 1:
        return latents
    _, channels, frames, h, w = latents.shape
    columns = max(1, min(frames, round(math.sqrt(frames * h / w))))
    rows = math.ceil(frames / columns)
    sheet = latents.new_zeros(channels, rows * h, columns * w)
    for index in range(frames):
        row, column = divmod(index, columns)
        sheet[:, row * h:(row + 1) * h, column * w:(column + 1) * w] = latents[0, :, index]
    return sheet[None, :, None]


def engine_frames(state: torch.Tensor) -> torch.Tensor:
    """A sampler's state in the engine's layout -> a video latent ``[1, 4, T, h, w]`` for :func:`frames_sheet`:
    keyframes (T, 4, h, w) as they are, interpolation groups (G, 12, h, w) as their 3 G new frames."""
    frames = state.reshape(-1, 4, *state.shape[-2:]) if state.shape[1] % 4 == 0 else state
    return frames.transpose(0, 1)[None]


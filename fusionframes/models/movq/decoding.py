"""Decoding and encoding whole videos with a :class:`~.model.MoVQ`: clips of the official length, spatial tiles, and
shrinking clips and tiles when the device runs out of memory.

:meth:`MoVQ.decode <.model.MoVQ.decode>` decodes one batch (for a temporal decoder: one clip); :func:`decode_video`
splits a latent video into clips as the official pipelines do [OB-28], streams every decoded clip to the CPU, and
retries what does not fit in smaller clips and then in tiles. :func:`encode_frames` encodes images a few at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ...errors import InputError, OutOfMemory
from ...runtime.out_of_memory import release_cached_memory
from .model import MoVQ, _check_batch

logger = logging.getLogger(__name__)

OFFICIAL_FRAMES_PER_CLIP = 4  # pipelines decode ``latents.chunk(N // 4)`` [OB-28]
MIN_TILE = 8  # latent pixels: smaller tiles would be mostly border
DEFAULT_TILE_OVERLAP = 4  # latent pixels (32 image pixels)


def official_clip_frames(num_frames: int) -> int:
    """Clip length of the official decode chunking ``latents.chunk(N // 4)`` [OB-28], one clip when N < 4.

    ``torch.chunk(n)`` splits into pieces of ``ceil(N / n)`` frames, the last one shorter: 15 -> 3 x 5,
    12 -> 3 x 4, 177 -> 35 x 5 + 2."""
    if num_frames < 1:
        raise InputError(f"a video needs at least one frame, got {num_frames}.")
    return math.ceil(num_frames / max(num_frames // OFFICIAL_FRAMES_PER_CLIP, 1))


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}.")
    return value


@dataclass(frozen=True)
class Tiles:
    """Spatial tiles for decoding frames too large for the device: ``size`` x ``size`` latent pixels per tile,
    neighbours sharing ``overlap`` latent pixels, which are cross-faded linearly.

    Tiling is an approximation (each tile's group norms and attention see only the tile), as in ComfyUI's tiled VAE
    decoding; an overlap of a few latent pixels hides the seams.
    """

    size: int
    overlap: int = DEFAULT_TILE_OVERLAP

    def __post_init__(self) -> None:
        _positive_int(self.size, "tile size")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size:
            raise InputError(f"tile overlap must be an integer in [0, tile size {self.size}), got {self.overlap!r}.")

    @classmethod
    def from_pixels(cls, size: int, overlap: int, downscale: int) -> Tiles | None:
        """Tiles given in image pixels (as ComfyUI's tiled VAE nodes take them); ``size`` 0 means no tiling."""
        if size == 0:
            return None
        if size < MIN_TILE * downscale:
            raise InputError(f"tile size must be 0 (no tiling) or at least {MIN_TILE * downscale} pixels, got {size}.")
        latent_size = size // downscale
        return cls(latent_size, min(max(overlap, 0) // downscale, latent_size // 2))

    def starts(self, length: int) -> list[int]:
        """Start of every tile along an axis of ``length`` latent pixels; the last tile ends at the border."""
        if length <= self.size:
            return [0]
        stride = self.size - self.overlap
        return [*range(0, length - self.size, stride), length - self.size]


def _fade(length: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: ramps over ``overlap`` pixels on the sides that have a neighbour."""
    weights = torch.ones(length)
    if overlap:
        ramp = (torch.arange(overlap) + 0.5) / overlap
        if fade_in:
            weights[:overlap] = torch.minimum(weights[:overlap], ramp)
        if fade_out:
            weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


def decode_tiles(movq: MoVQ, latents: torch.Tensor, tiles: Tiles) -> torch.Tensor:
    """Decode (B, z, h, w) latents tile by tile into CPU float32 images, cross-fading the overlaps.

    Only one tile's activations are on the device at a time; a batch of a temporal decoder stays one clip.
    """
    scale = movq.downscale
    height, width = latents.shape[-2:]
    rows, cols = tiles.starts(height), tiles.starts(width)
    total = torch.zeros(latents.shape[0], movq.config.out_ch, height * scale, width * scale)
    weight = torch.zeros(height * scale, width * scale)
    for top in rows:
        for left in cols:
            tile = latents[..., top:top + tiles.size, left:left + tiles.size]
            decoded = movq.decode(tile).to("cpu", torch.float32)
            h, w = decoded.shape[-2:]
            overlap = tiles.overlap * scale
            mask = torch.outer(_fade(h, overlap, top > 0, top + tiles.size < height),
                               _fade(w, overlap, left > 0, left + tiles.size < width))
            y, x = top * scale, left * scale
            total[..., y:y + h, x:x + w] += decoded * mask
            weight[y:y + h, x:x + w] += mask
    return total / weight


@torch.no_grad()
def decode_video(movq: MoVQ, latents: torch.Tensor, clip_frames: int | None = None,
                 progress: Callable[[int, int], None] | None = None, tiles: Tiles | None = None) -> torch.Tensor:
    """Decode an (N, z_channels, h, w) latent video clip by clip into (N, out_ch, 8h, 8w) CPU float32 images.

    Each clip is one temporal chunk for a temporal decoder (zero temporal padding at clip borders, no overlap) and a
    plain batch for the image decoder. ``clip_frames`` defaults to the official chunking (:func:`official_clip_frames`).
    ``tiles`` decodes every clip in spatial tiles (default: whole frames). Every decoded clip is moved to the CPU at
    once, so device memory holds one clip (or tile) at a time. When the device runs out of memory, clips are halved
    and then single frames are decoded in ever smaller tiles (see :func:`_decode_shrinking`). ``progress`` is called
    with (frames decoded, N) after each clip.
    """
    total = latents.shape[0]
    images: torch.Tensor | None = None
    start = 0
    for decoded in decode_clips(movq, latents, clip_frames, tiles):
        if images is None:
            images = torch.empty((total, *decoded.shape[1:]), dtype=torch.float32)
        images[start:start + decoded.shape[0]] = decoded
        start += decoded.shape[0]
        if progress is not None:
            progress(start, total)
    assert images is not None
    return images


@torch.no_grad()
def decode_clips(movq: MoVQ, latents: torch.Tensor, clip_frames: int | None = None,
                 tiles: Tiles | None = None) -> Iterator[torch.Tensor]:
    """:func:`decode_video` one clip at a time: yields (n, out_ch, 8h, 8w) CPU float32 images in order, so a caller
    can write each clip to a file and never hold the whole video."""
    _check_batch(latents, "latents", movq.config.z_channels)
    clip = official_clip_frames(latents.shape[0]) if clip_frames is None else _positive_int(clip_frames, "clip_frames")
    for chunk in latents.split(clip):
        for decoded in _decode_shrinking(movq, chunk, tiles):
            yield decoded.to("cpu", torch.float32)


def _smaller_tiles(latents: torch.Tensor, tiles: Tiles | None) -> Tiles | None:
    """The next tiling to try after running out of memory: half the tile side, down to :data:`MIN_TILE`."""
    side = max(latents.shape[-2:]) if tiles is None else tiles.size
    size = (side + 1) // 2
    if size < MIN_TILE:
        return None
    overlap = DEFAULT_TILE_OVERLAP if tiles is None else tiles.overlap
    return Tiles(size, min(overlap, size // 2))


def _decode_shrinking(movq: MoVQ, clip: torch.Tensor, tiles: Tiles | None = None) -> Iterator[torch.Tensor]:
    """Decode a clip; when the device runs out of memory, release it and decode the two halves instead, and a single
    frame in smaller and smaller spatial tiles.

    For the image decoder the halves give identical frames; for the temporal decoder they are separate clips (clip
    borders move), and tiles are an approximation: both are logged. A frame that does not fit even in tiles of
    :data:`MIN_TILE` latent pixels is an error saying what to lower.
    """
    try:
        yield movq.decode(clip) if tiles is None else decode_tiles(movq, clip, tiles)
        return
    except torch.OutOfMemoryError:
        release_cached_memory()
    height, width = (s * movq.downscale for s in clip.shape[-2:])
    if clip.shape[0] == 1:
        smaller = _smaller_tiles(clip, tiles)
        if smaller is None:
            raise OutOfMemory(f"out of device memory decoding a single {width}x{height} frame, even in tiles of "
                              f"{MIN_TILE * movq.downscale} pixels: lower the resolution, or free device memory "
                              "(in ComfyUI: unload other models).") from None
        logger.warning("out of device memory decoding a %dx%d frame: decoding it in tiles of %d pixels", width,
                       height, smaller.size * movq.downscale)
        yield from _decode_shrinking(movq, clip, smaller)
        return
    half = (clip.shape[0] + 1) // 2
    if movq.decodes_clips:
        logger.warning("out of device memory decoding a clip of %d frames: decoding clips of %d instead (clip "
                       "borders move)", clip.shape[0], half)
    for part in clip.split(half):
        yield from _decode_shrinking(movq, part, tiles)


@torch.no_grad()
def encode_frames(movq: MoVQ, images: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Encode (N, in_channels, H, W) images in [-1, 1], ``batch`` at a time, into float32 latents on the MoVQ's
    device (the latents are 64x smaller than the images, so they stay there for the U-Net)."""
    _check_batch(images, "images", movq.config.in_channels, movq.downscale)
    batch = _positive_int(batch, "batch")
    return torch.cat([movq.encode(part).float() for part in images.split(batch)])

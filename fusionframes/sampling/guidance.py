"""Guided denoisers: one per sampling stage, each turning (x_t, model time) into the guided prediction.

They batch the guidance branches into one U-Net call, in the official branch order, so a stage costs one forward
per step. Every denoiser works in float32 outside the model and casts to the model's dtype at its boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from ..models.text.condition import TextCondition
from ..models.unet.interpolation import InterpolationUNet10, InterpolationUNet11
from ..models.unet.keyframe import KeyframeUNet10, KeyframeUNet11
from .schedules import cfg, cfg3

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]

#: guidance branches batched into each U-Net call, by (release, stage): what can run on separate processes
BRANCHES = {("1.0", "keyframes"): 2, ("1.0", "interpolation"): 2, ("1.1", "first_frame"): 2,
            ("1.1", "keyframes"): 3, ("1.1", "interpolation"): 2}


def _branches(*conditions: TextCondition) -> tuple[torch.Tensor, torch.Tensor]:
    context = torch.cat([c.context for c in conditions])
    mask = torch.cat([c.mask for c in conditions]).bool()
    return context, mask


def _times(model_time: int, count: int, device: torch.device) -> torch.Tensor:
    return torch.full((count,), float(model_time), device=device)


def keyframes_10(
    unet: KeyframeUNet10,
    text: TextCondition,
    num_frames: int,
    positions: torch.Tensor,
    guidance: float,
) -> Denoiser:
    """1.0 keyframes: CFG between the prompt and the null context, or ``text.negative`` which replaces it [OB-42]."""
    device, dtype = unet.device, unet.dtype
    text = text.to(device, dtype)
    conditional = text.repeat(num_frames)
    negative = text.negative if text.negative is not None else text.null(unet.null_embedding)
    unconditional = negative.repeat(num_frames)
    context, mask = _branches(conditional, unconditional)
    large_positions = torch.cat([positions, positions]).to(device)

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        large_x = torch.cat([x, x]).to(dtype)
        out = unet(large_x, _times(model_time, 2 * num_frames, device), context, mask, large_positions, num_frames)
        cond, uncond = out.float().chunk(2)
        return cfg(cond, uncond, guidance)

    return denoise


def _neighbour_frames(keyframes: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right keyframes of every group, for [conditional; unconditional (zeroed)] branches."""
    left, right = keyframes[:-1].to(dtype), keyframes[1:].to(dtype)
    return torch.cat([left, torch.zeros_like(left)]), torch.cat([right, torch.zeros_like(right)])


def interpolation_10(
    unet: InterpolationUNet10, keyframes: torch.Tensor, skip_frames: int, guidance: float
) -> Denoiser:
    """1.0 interpolation: both branches see the null context; guidance comes from zeroing the keyframes."""
    device, dtype = unet.device, unet.dtype
    groups = keyframes.shape[0] - 1
    keyframes = keyframes.to(device)
    base = TextCondition(torch.zeros(1, 2, unet.config.context_dim, device=device, dtype=dtype),
                         torch.zeros(1, 2, dtype=torch.long, device=device))
    null = base.null(unet.null_embedding).repeat(groups)
    context, mask = _branches(null, null)
    left, right = _neighbour_frames(keyframes, dtype)
    skips = torch.full((2 * groups,), skip_frames, dtype=torch.long, device=device)

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        large_x = torch.cat([left, torch.cat([x, x]).to(dtype), right], dim=1)
        out = unet(large_x, _times(model_time, 2 * groups, device), context, mask, skips, groups)
        cond, uncond = out.float().chunk(2)
        return cfg(cond, uncond, guidance)

    return denoise


def first_frame_11(unet: KeyframeUNet11, text: TextCondition, guidance: float) -> Denoiser:
    """1.1 first frame: the keyframe U-Net in image mode, CFG between prompt and null context."""
    device, dtype = unet.device, unet.dtype
    text = text.to(device, dtype)
    context, mask = _branches(text, text.null(unet.null_embedding))

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        zeros = torch.zeros(2, unet.config.num_channels - x.shape[1], *x.shape[2:], device=device, dtype=dtype)
        large_x = torch.cat([torch.cat([x, x]).to(dtype), zeros], dim=1)
        out = unet.forward_image(large_x, _times(model_time, 2, device), context, mask)
        cond, uncond = out.float().chunk(2)
        return cfg(cond, uncond, guidance)

    return denoise


def keyframes_11(
    unet: KeyframeUNet11,
    text: TextCondition,
    key_frame: torch.Tensor,
    num_frames: int,
    guidance_text: float,
    guidance_image: float,
    noise_augmentation: int,
    motion_score: int,
) -> Denoiser:
    """1.1 keyframes: three branches (text + key frame, key frame only, neither), combined by ``cfg3``.

    ``key_frame`` is the already noise-augmented latent of frame 0 (4, h, w); it and a mask of ones condition
    frame 0 of the first two branches.
    """
    device, dtype = unet.device, unet.dtype
    h, w = key_frame.shape[-2:]
    condition = torch.zeros(num_frames, key_frame.shape[0], h, w, device=device, dtype=dtype)
    frame_mask = torch.zeros(num_frames, 1, h, w, device=device, dtype=dtype)
    condition[0] = key_frame.to(device, dtype)
    frame_mask[0] = 1
    large_condition = torch.cat([condition, condition, torch.zeros_like(condition)])
    large_mask = torch.cat([frame_mask, frame_mask, torch.zeros_like(frame_mask)])
    text = text.to(device, dtype)
    null = text.null(unet.null_embedding).repeat(num_frames)
    context, mask = _branches(text.repeat(num_frames), null, null)
    positions = torch.arange(num_frames, device=device).repeat(3).float()
    aug = torch.full((3 * num_frames,), noise_augmentation, dtype=torch.int32, device=device)
    motion = torch.full((3 * num_frames,), motion_score, dtype=torch.int32, device=device)

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        large_x = torch.cat([x.repeat(3, 1, 1, 1).to(dtype), large_condition, large_mask], dim=1)
        out = unet(large_x, _times(model_time, 3 * num_frames, device), context, mask, positions, num_frames,
                   aug, motion)
        text_image, image, none = out.float().chunk(3)
        return cfg3(text_image, image, none, guidance_text, guidance_image)

    return denoise


def interpolation_11(
    unet: InterpolationUNet11,
    text: TextCondition,
    keyframes: torch.Tensor,
    skip_frames: int,
    guidance: float,
    perturbation_time: int = 0,
) -> Denoiser:
    """1.1 interpolation: prompt vs null context, zeroed keyframes and temporal layers gated off when unconditional."""
    device, dtype = unet.device, unet.dtype
    groups = keyframes.shape[0] - 1
    keyframes = keyframes.to(device)
    text = text.to(device, dtype)
    if text.context.shape[0] not in (1, groups):
        raise InputError(f"interpolation of {groups} frame pairs takes one prompt or one per pair, got "
                         f"{text.context.shape[0]}.")
    per_pair = text if text.context.shape[0] == groups else text.repeat(groups)  # one prompt per pair: long videos
    null = text.null(unet.null_embedding)
    context, mask = _branches(per_pair, null if null.context.shape[0] == groups else null.repeat(groups))
    left, right = _neighbour_frames(keyframes, dtype)
    skips = torch.full((2 * groups,), skip_frames, dtype=torch.int32, device=device)
    perturbation = torch.full((2 * groups,), perturbation_time, dtype=torch.int32, device=device)
    gate = torch.cat([torch.ones(groups, device=device), torch.zeros(groups, device=device)])

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        large_x = torch.cat([left, torch.cat([x, x]).to(dtype), right], dim=1)
        out = unet(large_x, _times(model_time, 2 * groups, device), context, mask, skips, groups, perturbation, gate)
        cond, uncond = out.float().chunk(2)
        return cfg(cond, uncond, guidance)

    return denoise

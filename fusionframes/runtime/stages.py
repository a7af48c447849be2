"""The pipeline's stages, each a function from tensors to tensors, usable alone (ComfyUI nodes call them one by one).

Sampling stages take their noise from a ``NoiseSource`` under a named phase, so a whole video is reproducible
from one seed and a parity fixture can replay the official noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..io.video import VideoStream
from ..models.movq.decoding import Tiles, decode_clips, decode_video, encode_frames, official_clip_frames
from ..models.movq.model import MoVQ
from ..models.text.condition import TextCondition
from ..models.unet.interpolation import InterpolationUNet10, InterpolationUNet11
from ..models.unet.keyframe import KeyframeUNet10, KeyframeUNet11
from ..releases import LATENT_SCALE, MOTION_SCORES, NOISE_AUGMENTATION_RANGE, VIDEO_LENGTH_10, official_steps
from ..sampling import guidance
from ..sampling.fast import make_schedule
from ..sampling.loop import KnownFrames, OnStep, initial_noise, sample
from ..sampling.noise import NoiseSource
from ..sampling.schedules import K11Schedule
from . import preflight
from .distributed import ONE_PROCESS, Ranks, shared_clips
from .out_of_memory import explain_out_of_memory

#: larger frames would not fit any device (the official models were trained at 512x512)
MAX_SIDE = 4096


def check_size(width: int, height: int) -> None:
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) or not isinstance(height, int):
        raise InputError(f"width and height must be integers, got {width!r} x {height!r}.")
    if width <= 0 or height <= 0 or width % 64 or height % 64:
        raise InputError(f"width and height must be positive multiples of 64, got {width}x{height}.")
    if max(width, height) > MAX_SIDE:
        raise InputError(f"width and height must be at most {MAX_SIDE}, got {width}x{height}.")


#: guidance weights beyond this overflow the guided prediction in float32 (a NaN video) long before they mean anything
MAX_GUIDANCE = 1000.0


def check_guidance(**weights: float) -> None:
    """Guidance weights must be finite numbers of sensible size (NaN, infinity or 1e30 would give a NaN video)."""
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value!r}.")
        if abs(value) > MAX_GUIDANCE:
            raise InputError(f"{name} must be between -{MAX_GUIDANCE:g} and {MAX_GUIDANCE:g} (official values are "
                             f"0.25 to 5), got {value!r}.")


def check_frames(count: object, minimum: int, what: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
        raise InputError(f"{what} must be an integer of at least {minimum}, got {count!r}.")
    return count


def latent_shape(frames: int, height: int, width: int, channels: int = 4) -> tuple[int, int, int, int]:
    check_size(width, height)
    return frames, channels, height // LATENT_SCALE, width // LATENT_SCALE


def positions_10(num_frames: int) -> torch.Tensor:
    """1.0 frame positions: evenly spaced over 180 source frames (official: 0, 12, ..., 168 for 15)."""
    return torch.arange(num_frames) * (VIDEO_LENGTH_10 // num_frames)


def interleave(keyframes: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """N keyframes + (N-1) groups of 3 frames (12 channels) -> 4N-3 frames: frame 4i = keyframe i, 4i+1.. = group i."""
    count, channels = keyframes.shape[:2]
    if groups.shape[0] != count - 1 or groups.shape[1] != 3 * channels:
        raise InputError(f"cannot interleave {count} keyframes with groups of shape {tuple(groups.shape)}.")
    middle = groups.reshape(count - 1, 3, channels, *groups.shape[2:])
    video = torch.zeros(4 * count - 3, channels, *keyframes.shape[2:], dtype=torch.float32, device=keyframes.device)
    video[0::4] = keyframes.float()
    for offset in range(3):
        video[offset + 1::4] = middle[:, offset].float()
    return video


def _advice(width: int, height: int, frames: int | None, what: str) -> str:
    count = f", the number of {what} ({frames})" if frames else ""
    return (f"lower width/height ({width}x{height}){count}, load the model in bf16/fp16, or free device memory "
            "(in ComfyUI: unload other models).")


def _latent_advice(latents: torch.Tensor) -> str:
    height, width = (LATENT_SCALE * s for s in latents.shape[-2:])
    return (f"lower the resolution ({width}x{height}) or the number of frames ({latents.shape[0]}), load the model "
            "in bf16/fp16, or free device memory.")


def _check_keyframes(latents: torch.Tensor, unet: torch.nn.Module) -> None:
    if latents.dim() != 4 or latents.shape[0] < 2:
        raise InputError(f"interpolation needs at least 2 latent frames (N, 4, h, w), got {tuple(latents.shape)}.")
    multiple = unet.config.latent_multiple
    if latents.shape[-2] % multiple or latents.shape[-1] % multiple:
        height, width = (LATENT_SCALE * s for s in latents.shape[-2:])
        raise InputError(f"the interpolation model cannot take {width}x{height} frames: its sides must be multiples "
                         f"of {LATENT_SCALE * multiple} px. Resize the video first (e.g. Upscale Image to a multiple "
                         f"of {LATENT_SCALE * multiple}).")


def sample_keyframes_10(
    unet: KeyframeUNet10,
    text: TextCondition,
    height: int,
    width: int,
    noise: NoiseSource,
    *,
    steps: int = 50,
    guidance_scale: float = 5.0,
    num_frames: int | None = None,
    on_step: OnStep | None = None,
    sampler: str = "official",
) -> torch.Tensor:
    """1.0 keyframes: eps prediction, cosine schedule of ``steps`` bins, 0.98-quantile thresholding; the negative
    prompt, if any, travels in ``text.negative``.

    ``sampler``: "official" (the default, exactly the official DDPM) or a faster option of ``sampling.fast``."""
    num_frames = check_frames(num_frames or unet.config.num_frames or 15, 1, "the number of keyframes")
    check_guidance(guidance_scale=guidance_scale)
    schedule = make_schedule("1.0", "keyframes", sampler, steps)
    denoise = guidance.keyframes_10(unet, text, num_frames, positions_10(num_frames), guidance_scale)
    advice = _advice(width, height, num_frames, "keyframes")
    _, _, h, w = latent_shape(num_frames, height, width)
    preflight.check([preflight.unet_need("sampling keyframes", "keyframes_1.0", unet, num_frames, "keyframes", h, w,
                                         advice)])
    with explain_out_of_memory("sampling keyframes", advice):
        return sample(schedule, denoise, latent_shape(num_frames, height, width), noise, "keyframes",
                      device=unet.device, on_step=on_step)


def interpolate_10(
    unet: InterpolationUNet10,
    keyframes: torch.Tensor,
    noise: NoiseSource,
    *,
    steps: int = 50,
    guidance_scale: float = 0.25,
    skip_frames: int = 3,
    phase: str = "interpolation",
    on_step: OnStep | None = None,
    sampler: str = "official",
) -> torch.Tensor:
    """1.0 interpolation pass: 3 frames between every pair; returns the groups (N-1, 12, h, w)."""
    _check_keyframes(keyframes, unet)
    check_guidance(guidance_scale=guidance_scale)
    schedule = make_schedule("1.0", "interpolation", sampler, steps)
    denoise = guidance.interpolation_10(unet, keyframes, skip_frames, guidance_scale)
    shape = (keyframes.shape[0] - 1, 3 * keyframes.shape[1], *keyframes.shape[2:])
    preflight.check([interpolation_need(unet, keyframes.shape)])
    with explain_out_of_memory("interpolating frames", _latent_advice(keyframes)):
        return sample(schedule, denoise, shape, noise, phase, device=unet.device, on_step=on_step)


def sample_first_frame_11(
    unet: KeyframeUNet11,
    text: TextCondition,
    height: int,
    width: int,
    noise: NoiseSource,
    *,
    guidance_scale: float = 5.0,
    on_step: OnStep | None = None,
    sampler: str = "official",
    steps: int | None = None,
) -> torch.Tensor:
    """1.1 first frame: image mode at twice the target resolution (latent (1, 4, H/4, W/4)), as the official code.

    ``steps`` None = the official 50; other counts need a ``sampler`` other than "official"."""
    check_size(width, height)
    check_guidance(guidance_scale=guidance_scale)
    schedule = make_schedule("1.1", "first_frame", sampler, steps)
    denoise = guidance.first_frame_11(unet, text, guidance_scale)
    shape = (1, 4, height // (LATENT_SCALE // 2), width // (LATENT_SCALE // 2))
    preflight.check([first_frame_need(unet, width, height)])
    with explain_out_of_memory("sampling the first frame (at twice the video's resolution)",
                               _advice(width, height, None, "")):
        return sample(schedule, denoise, shape, noise, "first_frame", device=unet.device, on_step=on_step)


def _to_uint8_image(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> PIL, with the official truncating 8-bit conversion."""
    pixels = ((image.float().clamp(-1, 1) + 1) / 2).clamp(0, 1) * 255
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy().astype(np.uint8))


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale down by max(1, min(w/W, h/H)) and centre-crop to W x H (black where the image is smaller), then RGB.

    As the official code [OB-45]: PIL's default resampling for the image's own mode (bicubic for RGB/RGBA/L, nearest
    for palette images), in that mode, and the conversion to RGB last."""
    check_size(width, height)
    factor = max(1.0, min(image.width / width, image.height / height))
    resized = image.resize((round(image.width / factor), round(image.height / factor)))
    left, top = (resized.width - width) / 2, (resized.height - height) / 2
    return resized.crop((left, top, left + width, top + height)).convert("RGB")


def encode_image(movq: MoVQ, image: Image.Image, width: int, height: int) -> torch.Tensor:
    """An image -> the key-frame latent (4, H/8, W/8) for image-to-video."""
    preflight.check([encode_need(movq, 1, width, height)])
    fitted = np.asarray(fit_image(image, width, height), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(fitted).permute(2, 0, 1)[None] * 2 - 1
    return movq.encode(pixels)[0].float()


def first_frame_to_key_frame(movq: MoVQ, first_frame: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The 1.1 text-to-video round trip: decode the 2x first frame, 8-bit, resize/crop, re-encode."""
    side = LATENT_SCALE * first_frame.shape[-1], LATENT_SCALE * first_frame.shape[-2]
    preflight.check([preflight.movq_need("decoding the first frame (at twice the video's resolution)", "decode",
                                         movq, 1, "frames", side[1], side[0], _advice(width, height, None, ""))])
    image = _to_uint8_image(movq.decode(first_frame)[0])
    return encode_image(movq, image, width, height)


def keyframe_draws_11(key_frame: torch.Tensor, noise: NoiseSource, phase: str, num_frames: int,
                      noise_augmentation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two draws of a 1.1 keyframe stream, in the official order: the starting noise (frames, 4, h, w) and
    the key frame noise-augmented with uniform noise at level ``noise_augmentation`` of the training schedule."""
    x_init = initial_noise(noise, phase, (num_frames, *key_frame.shape))
    augmentation = noise.uniform(phase, "noise_aug", tuple(key_frame.shape))
    training = K11Schedule(official_steps("1.1", "keyframes"), spacing="leading", prediction="epsilon")
    return x_init, training.add_noise(key_frame.float().cpu(), augmentation, noise_augmentation)


def sample_keyframes_11(
    unet: KeyframeUNet11,
    text: TextCondition,
    key_frame: torch.Tensor,
    noise: NoiseSource,
    *,
    num_frames: int = 12,
    guidance_text: float = 5.0,
    guidance_image: float = 2.0,
    noise_augmentation: int = 20,
    motion_score: int = MOTION_SCORES["medium"],
    on_step: OnStep | None = None,
    sampler: str = "official",
    steps: int | None = None,
    phase: str = "keyframes",
    last_frame: torch.Tensor | None = None,
) -> torch.Tensor:
    """1.1 keyframes conditioned on a key-frame latent (4, h, w) as frame 0, with uniform noise augmentation
    (always on the official training schedule, whichever ``sampler`` samples). ``phase`` names the noise stream
    (later segments of a long video draw their own). ``last_frame`` (a latent like ``key_frame``; not official):
    the last keyframe is held to it at every step, so the keyframes end on that frame."""
    check_frames(num_frames, 2, "the number of 1.1 keyframes")
    if last_frame is not None and tuple(last_frame.shape) != tuple(key_frame.shape):
        raise InputError(f"the last frame's latent {tuple(last_frame.shape)} does not match the first frame's "
                         f"{tuple(key_frame.shape)}: give both frames at the video's size.")
    check_guidance(guidance_text=guidance_text, guidance_image=guidance_image)
    low, high = NOISE_AUGMENTATION_RANGE
    if isinstance(noise_augmentation, bool) or not isinstance(noise_augmentation, int) or \
            not low <= noise_augmentation <= high:
        raise InputError(f"noise augmentation must be an integer in [{low}, {high}], got {noise_augmentation!r}.")
    schedule = make_schedule("1.1", "keyframes", sampler, steps)
    shape = (num_frames, *key_frame.shape)
    x_init, augmented = keyframe_draws_11(key_frame, noise, phase, num_frames, noise_augmentation)
    denoise = guidance.keyframes_11(unet, text, augmented, num_frames, guidance_text, guidance_image,
                                    noise_augmentation, motion_score)
    known = None
    if last_frame is not None:  # its own stream: the other draws stay those of the run without a last frame
        known = KnownFrames(-1, last_frame.float().cpu(), noise.normal(f"{phase}.last_frame", "init",
                                                                       tuple(key_frame.shape)))
    height, width = (LATENT_SCALE * s for s in key_frame.shape[-2:])
    preflight.check([keyframes_11_need(unet, num_frames, width, height)])
    with explain_out_of_memory("sampling keyframes", _advice(width, height, num_frames, "keyframes")):
        return sample(schedule, denoise, shape, noise, phase, device=unet.device, x_init=x_init, on_step=on_step,
                      known=known)


def interpolate_11(
    unet: InterpolationUNet11,
    text: TextCondition,
    keyframes: torch.Tensor,
    noise: NoiseSource,
    *,
    guidance_scale: float = 0.5,
    skip_frames: int = 3,
    phase: str = "interpolation",
    on_step: OnStep | None = None,
    sampler: str = "official",
    steps: int | None = None,
) -> torch.Tensor:
    """1.1 interpolation pass: 10 trailing v-prediction steps; returns the groups (N-1, 12, h, w)."""
    _check_keyframes(keyframes, unet)
    check_guidance(guidance_scale=guidance_scale)
    schedule = make_schedule("1.1", "interpolation", sampler, steps)
    denoise = guidance.interpolation_11(unet, text, keyframes, skip_frames, guidance_scale)
    shape = (keyframes.shape[0] - 1, 3 * keyframes.shape[1], *keyframes.shape[2:])
    preflight.check([interpolation_need(unet, keyframes.shape)])
    with explain_out_of_memory("interpolating frames", _latent_advice(keyframes)):
        return sample(schedule, denoise, shape, noise, phase, device=unet.device, on_step=on_step)


def decode_frames(
    movq: MoVQ, latents: torch.Tensor, *, clip_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None, tiles: Tiles | None = None, ranks: Ranks = ONE_PROCESS,
) -> torch.Tensor:
    """Latent video (N, 4, h, w) -> frames (N, 3, H, W) in [0, 1] on the CPU, decoded in the official clips (and in
    spatial ``tiles`` when given). The [-1, 1] -> [0, 1] mapping works in place: a long video's frames are the
    largest tensor of a run, and out of place the mapping held three of them at once. Over several ``ranks`` the
    clips are shared out and the frames come back to rank 0 (the others get no frames)."""
    if latents.dim() == 4:  # other shapes get decode_video's message
        preflight.check([decode_need(movq, latents.shape, clip_frames, tiles)])
    if ranks.world == 1:
        images = decode_video(movq, latents, clip_frames=clip_frames, progress=progress, tiles=tiles)
    else:
        clips = list(_decoded_clips(movq, latents, clip_frames, tiles, ranks))
        images = torch.cat(clips) if clips else torch.empty(0, 3, *(movq.downscale * s for s in latents.shape[-2:]))
        if progress is not None:
            progress(latents.shape[0], latents.shape[0])
    return images.add_(1).div_(2).clamp_(0, 1)


def _decoded_clips(movq: MoVQ, latents: torch.Tensor, clip_frames: int | None, tiles: Tiles | None,
                   ranks: Ranks) -> Iterator[torch.Tensor]:
    """The decoded clips in order (:func:`decode_clips`); over several ranks, shared out (rank 0 gets them)."""
    if ranks.world == 1 or latents.dim() != 4:
        return decode_clips(movq, latents, clip_frames=clip_frames, tiles=tiles)
    length = official_clip_frames(latents.shape[0]) if clip_frames is None else clip_frames
    return shared_clips(list(latents.split(length)),
                        lambda clip: decode_clips(movq, clip, clip_frames=clip.shape[0], tiles=tiles), ranks)


def decode_to_stream(
    movq: MoVQ, latents: torch.Tensor, stream: VideoStream, *, clip_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None, tiles: Tiles | None = None, ranks: Ranks = ONE_PROCESS,
) -> int:
    """:func:`decode_frames` into a :class:`~fusionframes.io.video.VideoStream`, clip by clip: host memory holds one
    clip of frames, whatever the video's length. Returns the number of frames written."""
    if latents.dim() == 4:
        need = decode_need(movq, latents.shape, clip_frames, tiles)
        preflight.check([replace(need, host_bytes=need.host_bytes // latents.shape[0] * need.units)])
    done = 0
    for decoded in _decoded_clips(movq, latents, clip_frames, tiles, ranks):
        stream.append(decoded.add_(1).div_(2).clamp_(0, 1))
        done += decoded.shape[0]
        if progress is not None:
            progress(done, latents.shape[0])
    return done


def encode_video(movq: MoVQ, images: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> latents (N, 4, H/8, W/8) on the MoVQ's device, ``batch`` at a time."""
    if images.dim() == 4 and isinstance(batch, int) and batch > 0:  # other values get encode_frames's message
        count, _, height, width = images.shape
        preflight.check([encode_need(movq, min(batch, count), width, height)])
    height, width = images.shape[-2:]
    with explain_out_of_memory("encoding images", f"lower the resolution ({width}x{height}) or free device memory."):
        return encode_frames(movq, images, batch)


# -- what each stage needs at its peak (runtime/preflight.py) ---------------------------------------------------------


def keyframes_11_need(unet: torch.nn.Module, keyframes: int, width: int, height: int) -> preflight.Need:
    return preflight.unet_need("sampling keyframes", "keyframes_1.1", unet, keyframes, "keyframes",
                               height // LATENT_SCALE, width // LATENT_SCALE, _advice(width, height, keyframes,
                                                                                      "keyframes"))


def first_frame_need(unet: torch.nn.Module, width: int, height: int) -> preflight.Need:
    half = LATENT_SCALE // 2  # the first frame is sampled at twice the video's resolution
    return preflight.unet_need("sampling the first frame (at twice the video's resolution)", "first_frame", unet, 1,
                               "frames", height // half, width // half, _advice(width, height, None, ""),
                               pixel_scale=half)


def interpolation_need(unet: torch.nn.Module, shape: torch.Size | tuple[int, ...]) -> preflight.Need:
    count, _, h, w = shape
    advice = (f"interpolate fewer frames at a time ({count} in), lower the resolution ({w * LATENT_SCALE}x"
              f"{h * LATENT_SCALE}), or free device memory.")
    return preflight.unet_need("interpolating frames", "interpolation", unet, count - 1, "frame pairs", h, w, advice)


def encode_need(movq: MoVQ, batch: int, width: int, height: int) -> preflight.Need:
    return preflight.movq_need("encoding images with the MoVQ", "encode", movq, batch, "images", height, width,
                               f"lower the resolution ({width}x{height}) or free device memory.")


def decode_need(movq: MoVQ, shape: torch.Size | tuple[int, ...], clip_frames: int | None,
                tiles: Tiles | None) -> preflight.Need:
    """The largest clip (or tile of it) on the device, and the whole video's frames in host memory. On a GPU the
    decoder falls back to smaller clips and tiles when it runs out of memory, so only the host part is checked
    there; on the CPU running out of memory ends the process, so the clip must fit."""
    count, _, h, w = shape
    valid = isinstance(clip_frames, int) and not isinstance(clip_frames, bool) and clip_frames > 0
    clip = min(count, clip_frames if valid else official_clip_frames(count))
    height, width = h * LATENT_SCALE, w * LATENT_SCALE
    tile_h, tile_w = (height, width) if tiles is None else (min(height, tiles.size * LATENT_SCALE),
                                                            min(width, tiles.size * LATENT_SCALE))
    advice = (f"decode fewer frames per clip ({clip}) or in tiles (tile_size), lower the resolution ({width}x{height}) "
              f"or the number of frames ({count}).")
    need = preflight.movq_need("decoding frames with the MoVQ", "decode", movq, clip, "frames per clip", tile_h,
                               tile_w, advice)
    host = count * movq.config.out_ch * height * width * 4
    on_gpu = need.device.type != "cpu"
    return preflight.Need(need.stage, need.device, 0 if on_gpu else need.unit_bytes, clip, need.unit_name, tile_w,
                          tile_h, host_bytes=host, advice=advice, cpu_factor=need.cpu_factor)

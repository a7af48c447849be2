"""The pack's socket types and the payloads that travel through them.

Everything a user can mix with core nodes uses core types (IMAGE, LATENT, INT, FLOAT); only the models and the
text conditioning (the engine's ``TextCondition``), which no core node understands, have types of their own.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

KeyframeModel = io.Custom("FUSIONFRAMES_KEYFRAME_MODEL")
InterpolationModel = io.Custom("FUSIONFRAMES_INTERPOLATION_MODEL")
MoVQModel = io.Custom("FUSIONFRAMES_MOVQ")
TextEncoderModel = io.Custom("FUSIONFRAMES_TEXT_ENCODER")
Conditioning = io.Custom("FUSIONFRAMES_CONDITIONING")

CATEGORY = "FusionFrames"
LATENT_TAG = "fusionframes"


def make_latent(samples: torch.Tensor, release: str | None, fps: float, passes: int = 0,
                segments: list[int] | None = None, loop: bool = False) -> dict:
    """A core LATENT dict: ``samples`` is (frames, 4, h, w) on the CPU, plus what later FusionFrames nodes need
    (the release that made it, its frame rate, how many interpolation passes it has had; for long videos the
    segment (prompt line) of each frame, -1 for frames from elsewhere; ``loop``: the last frame is a copy of the
    first, which interpolation fills towards and the decoders drop)."""
    info = {"release": release, "fps": float(fps), "interpolation_passes": passes}
    if segments is not None:
        info["segments"] = [int(segment) for segment in segments]
    if loop:
        info["loop"] = True
    return {"samples": samples.float().cpu(), LATENT_TAG: info}


def latent_info(latent: dict) -> dict:
    return latent.get(LATENT_TAG, {})


def latent_frames(latent: dict, what: str) -> torch.Tensor:
    """The (frames, 4, h, w) samples of a FusionFrames LATENT (ours, or a core video latent a core sampler made from
    ours), or a clear error for latents of other models."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{what}: expected a LATENT.")
    samples = latent["samples"]
    if LATENT_TAG not in latent:
        raise ValueError(
            f"{what}: this LATENT does not come from a FusionFrames node (shape {tuple(samples.shape)}); latents of "
            "other model families (SD, SDXL, video models) are not MoVQ latents. Use 'MoVQ Encode' on images, or "
            "the T2V Keyframe Sampler."
        )
    if samples.dim() == 5 and samples.shape[0] == 1 and samples.shape[1] == 4:  # a core video latent [1, 4, T, h, w]
        return samples[0].transpose(0, 1)
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise ValueError(f"{what}: MoVQ latents are (frames, 4, h, w), or [1, 4, frames, h, w] as core video latents; "
                         f"got {tuple(samples.shape)}.")
    return samples


def frame_segments(latent: dict) -> list[int]:
    """The segment of each frame of a FusionFrames LATENT (all 0 when it has none recorded)."""
    segments = latent_info(latent).get("segments")
    count = latent_frames(latent, "segments").shape[0]
    if not isinstance(segments, list) or len(segments) != count:
        return [0] * count
    return segments


def playable_frames(latent: dict, what: str) -> torch.Tensor:
    """The frames of a LATENT as they play: without the copy of the first frame that closes a loop."""
    frames = latent_frames(latent, what)
    return frames[:-1] if latent_info(latent).get("loop") and frames.shape[0] > 1 else frames

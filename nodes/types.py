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


def make_latent(samples: torch.Tensor, release: str | None, fps: float, passes: int = 0) -> dict:
    """A core LATENT dict: ``samples`` is (frames, 4, h, w) on the CPU, plus what later FusionFrames nodes need
    (the release that made it, its frame rate, how many interpolation passes it has had)."""
    info = {"release": release, "fps": float(fps), "interpolation_passes": passes}
    return {"samples": samples.float().cpu(), LATENT_TAG: info}


def latent_info(latent: dict) -> dict:
    return latent.get(LATENT_TAG, {})


def latent_frames(latent: dict, what: str) -> torch.Tensor:
    """The (frames, 4, h, w) samples of a FusionFrames LATENT, or a clear error for latents of other models."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{what}: expected a LATENT.")
    samples = latent["samples"]
    if LATENT_TAG not in latent:
        raise ValueError(
            f"{what}: this LATENT does not come from a FusionFrames node (shape {tuple(samples.shape)}); latents of "
            "other model families (SD, SDXL, video models) are not MoVQ latents. Use 'MoVQ Encode' on images, or "
            "the T2V Keyframe Sampler."
        )
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise ValueError(f"{what}: MoVQ latents are (frames, 4, h, w), got {tuple(samples.shape)}.")
    return samples

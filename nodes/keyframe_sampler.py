"""T2V Keyframe Sampler: the first stage, keyframes that carry the storyline, as a LATENT."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..fusionframes.runtime import stages
from ..fusionframes.sampling.fast import SAMPLERS, make_schedule
from ..fusionframes.sampling.guidance import TextCondition
from ..fusionframes.sampling.noise import SeededNoise
from . import comfy_models as cm
from .types import CATEGORY, Conditioning, KeyframeModel, MoVQModel, TextConditioning, make_latent


def text_condition(conditioning: TextConditioning, model: cm.ManagedModel, what: str) -> TextCondition:
    """The conditioning as the engine takes it, after checking it belongs to the model's release and width."""
    if not isinstance(conditioning, TextConditioning):
        raise ValueError(f"{what}: the conditioning must come from 'FusionFrames Text Encode'.")
    width = model.module.config.context_dim
    if conditioning.context_dim != width:
        raise ValueError(
            f"{what}: the text encoder gives {conditioning.context_dim}-wide contexts but the {model.release} "
            f"{model.kind} model expects {width}: load the projections of the same release as the model."
        )
    if conditioning.release != model.release:
        raise ValueError(f"{what}: conditioning was encoded for release {conditioning.release} but the model is "
                         f"{model.release}; use the projections file of release {model.release}.")
    return TextCondition(conditioning.context, conditioning.mask)


def stage_steps(release: str, stage: str, sampler: str, steps: int | None) -> int:
    """How many model calls a stage makes (for the progress bar); also checks the sampler settings early."""
    return len(make_schedule(release, stage, sampler, steps).timesteps)


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """First image of a ComfyUI IMAGE batch ([B, H, W, C] in 0..1) as an 8-bit RGB picture."""
    pixels = (image[0, ..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))


class KeyframeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesKeyframeSampler",
            display_name="T2V Keyframe Sampler",
            category=CATEGORY,
            description="Samples the keyframes with the official sampler (1.0: 50-step DDPM with dynamic "
                        "thresholding; 1.1: 50-step DDPM, first frame from the model in image mode or from an "
                        "image, three-way guidance).",
            inputs=[
                KeyframeModel.Input("keyframe_model"),
                Conditioning.Input("conditioning"),
                io.Int.Input("width", default=512, min=64, max=2048, step=64, tooltip="Multiple of 64."),
                io.Int.Input("height", default=512, min=64, max=2048, step=64, tooltip="Multiple of 64."),
                io.Int.Input("keyframes", default=0, min=0, max=64,
                             tooltip="Number of keyframes; 0 = the official count (15 for 1.0, 12 for 1.1)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise comes from a seeded CPU generator: the same seed gives the same video "
                                     "on every device."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="0 = the official count (50). Other counts: 1.0's official sampler discretises "
                                     "its schedule into that many bins; 1.1 needs a non-official sampler."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="official",
                               tooltip="official = exactly the official DDPM (default). ddim / dpmpp_2m are faster "
                                       "options with fewer steps; they are NOT the official sampler."),
                io.Float.Input("guidance", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip="1.0: classifier-free guidance. 1.1: weight of the prompt."),
                MoVQModel.Input("movq", optional=True,
                                tooltip="1.1: the image MoVQ (movq.pt), to encode the first frame."),
                io.Image.Input("image", optional=True,
                               tooltip="1.1 image-to-video: the first frame (e.g. from Load Image)."),
                io.Float.Input("image_guidance", default=2.0, min=0.0, max=30.0, step=0.1, optional=True,
                               tooltip="1.1: weight of the first frame."),
                io.Float.Input("first_frame_guidance", default=5.0, min=0.0, max=30.0, step=0.1, optional=True,
                               tooltip="1.1 text-to-video: guidance of the generated first frame."),
                io.Combo.Input("motion", options=list(stages.MOTION_SCORES), default="medium", optional=True,
                               tooltip="1.1: motion score (low 1, medium 10, high 50, extreme 100)."),
                io.Int.Input("noise_augmentation", default=20, min=0, max=999, optional=True,
                             tooltip="1.1: noise level added to the first-frame latent (official 20)."),
            ],
            outputs=[io.Latent.Output(display_name="keyframes")],
        )

    @classmethod
    def execute(cls, keyframe_model, conditioning, width: int, height: int, keyframes: int, seed: int, steps: int,
                sampler: str, guidance: float, movq=None, image=None, image_guidance: float = 2.0,
                first_frame_guidance: float = 5.0, motion: str = "medium",
                noise_augmentation: int = 20) -> io.NodeOutput:
        if width % 64 or height % 64:
            raise ValueError(f"T2V Keyframe Sampler: width and height must be multiples of 64, got {width}x{height}.")
        if keyframe_model.kind != "keyframe":
            raise ValueError("T2V Keyframe Sampler: keyframe_model must come from 'Load FusionFrames Keyframe Model'.")
        text = text_condition(conditioning, keyframe_model, "T2V Keyframe Sampler")
        noise = SeededNoise(seed)
        if keyframe_model.release == "1.0":
            latents = cls._sample_10(keyframe_model, conditioning, text, width, height, keyframes, noise,
                                     steps or 50, sampler, guidance)
        else:
            latents = cls._sample_11(keyframe_model, text, width, height, keyframes, noise, guidance, movq, image,
                                     image_guidance, first_frame_guidance, motion, noise_augmentation,
                                     sampler, steps or None)
        return io.NodeOutput(make_latent(latents, keyframe_model.release, stages.KEYFRAME_FPS))

    @staticmethod
    def _sample_10(model, conditioning, text, width, height, keyframes, noise, steps, sampler,
                   guidance) -> torch.Tensor:
        negative = None
        if conditioning.negative_context is not None:
            negative = TextCondition(conditioning.negative_context, conditioning.negative_mask)
        count = stage_steps("1.0", "keyframes", sampler, steps)
        progress = cm.StepProgress(count)
        unet = model.load()
        with strengths(unet, model.options):
            return stages.sample_keyframes_10(unet, text, height, width, noise, steps=steps, guidance_scale=guidance,
                                              num_frames=keyframes or None, negative=negative,
                                              on_step=progress.stage(count), sampler=sampler)

    @staticmethod
    def _sample_11(model, text, width, height, keyframes, noise, guidance, movq, image, image_guidance,
                   first_frame_guidance, motion, noise_augmentation, sampler, steps) -> torch.Tensor:
        if motion not in stages.MOTION_SCORES:  # ComfyUI 0.3.75 does not check V3 combo values against the list
            raise ValueError(f"T2V Keyframe Sampler: motion must be one of {', '.join(stages.MOTION_SCORES)}, got "
                             f"{motion!r}.")
        if movq is None or movq.kind != "movq":
            raise ValueError("T2V Keyframe Sampler: release 1.1 needs the image MoVQ (movq.pt) on the 'movq' input, "
                             "to encode the first frame.")
        first_steps = 0 if image is not None else stage_steps("1.1", "first_frame", sampler, steps)
        keyframe_steps = stage_steps("1.1", "keyframes", sampler, steps)
        progress = cm.StepProgress(first_steps + keyframe_steps)
        unet = model.load()
        if image is None:
            first = stages.sample_first_frame_11(unet, text, height, width, noise,
                                                 guidance_scale=first_frame_guidance,
                                                 on_step=progress.stage(first_steps), sampler=sampler, steps=steps)
            key_frame = stages.first_frame_to_key_frame(movq.load(), first, width, height)
        else:
            key_frame = stages.encode_image(movq.load(), image_to_pil(image), width, height)
        unet = model.load()
        with strengths(unet, model.options):
            return stages.sample_keyframes_11(unet, text, key_frame, noise, num_frames=keyframes or 12,
                                              guidance_text=guidance, guidance_image=image_guidance,
                                              noise_augmentation=noise_augmentation,
                                              motion_score=stages.MOTION_SCORES[motion],
                                              on_step=progress.stage(keyframe_steps), sampler=sampler, steps=steps)


@contextmanager
def strengths(unet, options: dict) -> Iterator[None]:
    """Applies the Temporal Block Selector's settings (strengths, levels) to the shared model for one run, then
    restores them."""
    saved = (unet.strength.conv, unet.strength.attention, unet.strength.levels)
    unet.strength.conv = options.get("conv_strength", 1.0)
    unet.strength.attention = options.get("attention_strength", 1.0)
    unet.strength.levels = options.get("levels")
    try:
        yield
    finally:
        unet.strength.conv, unet.strength.attention, unet.strength.levels = saved

"""T2V Keyframe Sampler: the first stage, keyframes that carry the storyline, as a LATENT."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..fusionframes.models.temporal.selection import with_strength
from ..fusionframes.models.text.condition import TextCondition
from ..fusionframes.releases import KEYFRAME_FPS, MOTION_SCORES
from ..fusionframes.runtime.sequencer import Sequencer, VideoRequest
from ..fusionframes.sampling.fast import SAMPLERS
from .comfy import models as cm
from .types import CATEGORY, Conditioning, KeyframeModel, MoVQModel, make_latent


def text_condition(conditioning: TextCondition, model: cm.ManagedModel, what: str) -> TextCondition:
    """The conditioning, after checking it belongs to the model's release and width."""
    if not isinstance(conditioning, TextCondition):
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
    return conditioning


def text_conditions(conditioning, model: cm.ManagedModel, what: str) -> list[TextCondition]:
    """The prompts of a conditioning, each checked: one, or one per segment (a list, from 'FusionFrames Text Encode
    (prompt per segment)')."""
    lines = conditioning if isinstance(conditioning, list) else [conditioning]
    if not lines:
        raise ValueError(f"{what}: the conditioning holds no prompt.")
    return [text_condition(line, model, what) for line in lines]


def node_models(**models: cm.ManagedModel | None):
    """The sequencer's model access for a node: each model loaded by ComfyUI's memory manager when its stage
    starts; the keyframe model with the Temporal Block Selector's strengths (a view, the shared model untouched)."""

    @contextmanager
    def access(kind: str):
        model = models.get(kind)
        if model is None:
            raise ValueError(f"no {kind} model connected")
        module = model.load()
        strength = model.options.get("strength")
        with cm.cancellable(model):
            yield with_strength(module, strength) if strength is not None else module

    return access


def node_progress(run: Sequencer, stages) -> cm.StepProgress:
    """One ComfyUI progress bar over the sampling steps of ``stages``; hooks each stage's steps into it."""
    counts = {stage.role: run.steps(stage) for stage in stages}
    progress = cm.StepProgress(sum(counts.values()))
    callbacks = {role: progress.stage(count) for role, count in counts.items()}
    run.report = lambda stage, total: callbacks.get(stage.role)
    return progress


def image_to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """An image of a ComfyUI IMAGE batch ([B, H, W, C] in 0..1; the first by default) as an 8-bit RGB picture."""
    pixels = (image[index, ..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
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
                io.Combo.Input("motion", options=list(MOTION_SCORES), default="medium", optional=True,
                               tooltip="1.1: motion score (low 1, medium 10, high 50, extreme 100)."),
                io.Int.Input("noise_augmentation", default=20, min=0, max=999, optional=True,
                             tooltip="1.1: noise level added to the first-frame latent (official 20)."),
                io.Image.Input("last_image", optional=True,
                               tooltip="1.1: the frame the keyframes end on (fitted to the size as the first image "
                                       "is); the last keyframe is held to it at every step. Not an official "
                                       "feature."),
            ],
            outputs=[io.Latent.Output(display_name="keyframes")],
        )

    @classmethod
    def execute(cls, keyframe_model, conditioning, width: int, height: int, keyframes: int, seed: int, steps: int,
                sampler: str, guidance: float, movq=None, image=None, image_guidance: float = 2.0,
                first_frame_guidance: float = 5.0, motion: str = "medium",
                noise_augmentation: int = 20, last_image=None) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "T2V Keyframe Sampler"
        if keyframe_model.kind != "keyframe":
            raise ValueError(f"{what}: keyframe_model must come from 'Load FusionFrames Keyframe Model'.")
        text = text_conditions(conditioning, keyframe_model, what)[0]  # of a long video: its first segment
        release = keyframe_model.release
        if release == "1.1" and (movq is None or movq.kind != "movq"):
            raise ValueError(f"{what}: release 1.1 needs the image MoVQ (movq.pt) on the 'movq' input, to encode the "
                             "first frame.")
        image_to_video = release == "1.1" and image is not None
        request = VideoRequest(
            width=width, height=height, keyframes=keyframes or None, seed=seed, steps=steps or None, sampler=sampler,
            guidance=guidance, image=image_to_pil(image) if image_to_video else None,
            first_frame_guidance=first_frame_guidance, image_guidance=image_guidance, motion=motion,
            noise_augmentation=noise_augmentation, last_image=None if last_image is None else image_to_pil(last_image))
        run = Sequencer(release, request, node_models(keyframe=keyframe_model, movq=movq))
        node_progress(run, run.plan(passes=0, decode=False))
        latents = run.all_keyframes(text)
        return io.NodeOutput(make_latent(latents, release, KEYFRAME_FPS))

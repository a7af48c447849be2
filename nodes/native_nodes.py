"""Nodes that put the FusionFrames stages into ComfyUI's core sampling: conditioning in the style of the core
image-to-video nodes, the official sampler / sigmas / noise as SAMPLER / SIGMAS / NOISE, and the interleaving of
interpolated frames. With them a graph of core nodes (SamplerCustomAdvanced, CFGGuider, DualCFGGuider, KSampler)
samples each stage; the pack's sampler nodes remain the one-node official path."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..fusionframes.models.text.condition import TextCondition
from ..fusionframes.releases import KEYFRAME_FPS, MOTION_SCORES, OFFICIAL, fps_for, skip_frames
from ..fusionframes.runtime.stages import check_frames, check_size, encode_image, first_frame_to_key_frame, interleave
from ..fusionframes.sampling import native
from .comfy import models as cm
from .comfy import native as cn
from .keyframe_sampler import image_to_pil
from .types import CATEGORY, LATENT_TAG, MoVQModel, latent_frames, latent_info, make_latent

NATIVE = f"{CATEGORY}/core sampling"
STAGES = ("first_frame", "keyframes", "interpolation")


def _video_latent(samples: torch.Tensor, release: str, stage: str, phase: str, fps: float, passes: int = 0) -> dict:
    """A core video LATENT ``[1, 4, T, h, w]`` that says which stage and noise stream it belongs to."""
    info = {"release": release, "fps": float(fps), "interpolation_passes": passes, "stage": stage, "phase": phase}
    return {"samples": samples, LATENT_TAG: info}


def _model(model, kind: str, what: str) -> cn.FusionFramesModel:
    inner = cn.fusionframes_model(model, what)
    if inner.kind != kind:
        loader = "Load FusionFrames Keyframe Model" if kind == "keyframe" else "Load FusionFrames Interpolation Model"
        raise ValueError(f"{what}: this is the {inner.describe()}; connect the MODEL of '{loader}'.")
    return inner


def _check_release(conditioning: list | None, model: cn.FusionFramesModel, what: str) -> None:
    if conditioning is None:
        return
    release = cn.release_of(conditioning)
    if release is None:
        raise ValueError(f"{what}: this CONDITIONING does not come from 'FusionFrames Text Encode' (a core text "
                         f"encoder's, for SD/SDXL/other models?); the {model.describe()} cannot read it.")
    if release != model.release:
        raise ValueError(f"{what}: the conditioning was encoded for release {release} but the model is the "
                         f"{model.describe()}; use the projections of release {model.release}.")


class EmptyFirstFrame(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesEmptyFirstFrame",
            display_name="FusionFrames Empty First Frame (1.1)",
            category=NATIVE,
            description="The latent of the 1.1 first frame, which the keyframe model samples in image mode at twice "
                        "the video's resolution (guide it with CFGGuider: cfg = first-frame guidance + 1, official 6).",
            inputs=[io.Int.Input("width", default=512, min=64, max=2048, step=64, tooltip="Of the video."),
                    io.Int.Input("height", default=512, min=64, max=2048, step=64, tooltip="Of the video.")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, width: int, height: int) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        check_size(width, height)
        samples = torch.zeros(1, 4, 1, height // 4, width // 4)
        return io.NodeOutput(_video_latent(samples, "1.1", "first_frame", "first_frame", KEYFRAME_FPS))


class KeyframeConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesKeyframeConditioning",
            display_name="FusionFrames Keyframe Conditioning",
            category=NATIVE,
            description="What the keyframe stage needs, as core conditionings and an empty video latent. 1.1: guide "
                        "with DualCFGGuider (cond1 = positive, cond2 = image_only, negative; cfg_conds = prompt "
                        "weight 5, cfg_cond2_negative = image weight 2: exactly the official three-way guidance). "
                        "1.0: CFGGuider on positive/negative with cfg = guidance + 1 (official 6).",
            inputs=[
                io.Model.Input("model", tooltip="The keyframe MODEL."),
                io.Conditioning.Input("positive", tooltip="From FusionFrames Text Encode."),
                io.Int.Input("width", default=512, min=64, max=2048, step=64, tooltip="Of the video; multiple of 64."),
                io.Int.Input("height", default=512, min=64, max=2048, step=64, tooltip="Of the video; multiple of 64."),
                io.Int.Input("keyframes", default=0, min=0, max=64, tooltip="0 = official (15 for 1.0, 12 for 1.1)."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="1.0: the negative output of FusionFrames Text Encode (the null context "
                                              "or the negative prompt). 1.1 uses the null context (official)."),
                MoVQModel.Input("movq", optional=True, tooltip="1.1: the image MoVQ, to encode the first frame."),
                io.Latent.Input("first_frame", optional=True,
                                tooltip="1.1 text-to-video: the sampled first frame (decoded, 8-bit, fitted and "
                                        "re-encoded as the official pipeline does)."),
                io.Image.Input("image", optional=True, tooltip="1.1 image-to-video: the first frame."),
                io.Combo.Input("motion", options=list(MOTION_SCORES), default="medium", optional=True,
                               tooltip="1.1: motion score (low 1, medium 10, high 50, extreme 100)."),
                io.Int.Input("noise_augmentation", default=20, min=0, max=999, optional=True,
                             tooltip="1.1: noise level added to the first-frame latent (official 20)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="image_only"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, width: int, height: int, keyframes: int, negative=None, movq=None,
                first_frame=None, image=None, motion: str = "medium", noise_augmentation: int = 20) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "FusionFrames Keyframe Conditioning"
        unet = _model(model, "keyframe", what)
        _check_release(positive, unet, what)
        _check_release(negative, unet, what)
        check_size(width, height)
        release = unet.release
        count = check_frames(keyframes or OFFICIAL[release].keyframes, 2, "the number of keyframes")
        samples = torch.zeros(1, 4, count, height // 8, width // 8)
        latent = _video_latent(samples, release, "keyframes", "keyframes", KEYFRAME_FPS)
        stage = {"stage": "keyframes", "phase": "keyframes"}
        if release == "1.0":
            if negative is None:
                negative = cn.with_options(positive, what, null=True)
            return io.NodeOutput(cn.with_options(positive, what, **stage), cn.with_options(negative, what, **stage),
                                 cn.with_options(negative, what, **stage), latent)
        if movq is None or movq.kind != "movq":
            raise ValueError(f"{what}: release 1.1 needs the image MoVQ (movq.pt) on the 'movq' input.")
        if (first_frame is None) == (image is None):
            raise ValueError(f"{what}: 1.1 needs exactly one first frame: the sampled first_frame LATENT "
                             "(text-to-video) or an IMAGE (image-to-video).")
        module = movq.load()
        with cm.cancellable(movq):
            if image is not None:
                key_frame = encode_image(module, image_to_pil(image), width, height)
            else:
                frames = latent_frames(first_frame, what)
                key_frame = first_frame_to_key_frame(module, frames[:1], width, height)
        key = {**stage, "key_frame": key_frame.float().cpu(), "noise_augmentation": int(noise_augmentation),
               "motion_score": MOTION_SCORES[motion]}
        return io.NodeOutput(cn.with_options(positive, what, **key),
                             cn.with_options(positive, what, null=True, **key),
                             cn.with_options(positive, what, null=True, **{**key, "key_frame": None}), latent)


class InterpolationConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesInterpolationConditioning",
            display_name="FusionFrames Interpolation Conditioning",
            category=NATIVE,
            description="The frames to interpolate as core conditionings (positive: with them; negative: without them "
                        "and with the temporal layers off, as the official unconditional branch) and the latent of "
                        "the 3 new frames per pair. Guide with CFGGuider, cfg = guidance + 1 (official 1.5 for 1.1, "
                        "1.25 for 1.0); then 'FusionFrames Interleave Frames'.",
            inputs=[
                io.Model.Input("model", tooltip="The interpolation MODEL."),
                io.Latent.Input("keyframes", tooltip="The frames to interpolate between."),
                io.Int.Input("pass_number", default=1, min=1, max=2,
                             tooltip="1 = the first pass (official skip 3), 2 = the second (skip 1)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="1.1: the prompt (FusionFrames Text Encode). 1.0 ignores text."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, keyframes: dict, pass_number: int, positive=None) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "FusionFrames Interpolation Conditioning"
        unet = _model(model, "interpolation", what)
        frames = latent_frames(keyframes, what)
        if frames.shape[0] < 2:
            raise ValueError(f"{what}: needs at least 2 frames to interpolate between, got {frames.shape[0]}.")
        release = unet.release
        if release == "1.1":
            if positive is None:
                raise ValueError(f"{what}: the 1.1 interpolation model is text-conditioned: connect positive.")
            _check_release(positive, unet, what)
            base = positive
        else:
            width = unet.inner.config.context_dim
            base = cn.text_conditioning(TextCondition(torch.zeros(1, 2, width), torch.zeros(1, 2, dtype=torch.long),
                                                      release="1.0"))
        phase = f"interpolation{pass_number}"
        options = {"stage": "interpolation", "phase": phase, "skip_frames": skip_frames(pass_number)}
        conditional = cn.with_options(base, what, null=release == "1.0", keyframes=frames[None].float(), **options)
        unconditional = cn.with_options(base, what, null=True, keyframes=None, **options)
        groups = frames.shape[0] - 1
        info = latent_info(keyframes)
        samples = torch.zeros(1, 4, 3 * groups, *frames.shape[-2:])
        latent = _video_latent(samples, release, "interpolation", phase, info.get("fps", KEYFRAME_FPS),
                               info.get("interpolation_passes", 0))
        return io.NodeOutput(conditional, unconditional, latent)


class InterleaveFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesInterleaveFrames",
            display_name="FusionFrames Interleave Frames",
            category=NATIVE,
            description="Keyframes + the sampled in-between frames -> the video (N -> 4N-3 frames, 4x the rate).",
            inputs=[io.Latent.Input("keyframes"), io.Latent.Input("in_between", tooltip="The sampled latent.")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, keyframes: dict, in_between: dict) -> io.NodeOutput:
        what = "FusionFrames Interleave Frames"
        frames = latent_frames(keyframes, what)
        samples = in_between.get("samples") if isinstance(in_between, dict) else None
        if samples is None or samples.dim() != 5 or samples.shape[2] != 3 * (frames.shape[0] - 1):
            shape = None if samples is None else tuple(samples.shape)
            raise ValueError(f"{what}: {frames.shape[0]} keyframes need {3 * (frames.shape[0] - 1)} in-between "
                             f"frames [1, 4, {3 * (frames.shape[0] - 1)}, h, w], got {shape}; connect the latent "
                             "sampled from 'FusionFrames Interpolation Conditioning'.")
        groups = native.video_to_frames(samples.float().cpu(), "interpolation")
        video = interleave(frames.float(), groups)
        info = latent_info(keyframes)
        passes = info.get("interpolation_passes", 0) + 1
        release = info.get("release") or latent_info(in_between).get("release")
        return io.NodeOutput(make_latent(video, release, fps_for(1, info.get("fps", KEYFRAME_FPS)), passes))


class OfficialSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesOfficialSampler",
            display_name="FusionFrames Official Sampler",
            category=NATIVE,
            description="The official DDPM update as a core SAMPLER (1.0: dynamic thresholding at the 0.98 quantile; "
                        "1.1: x0 clamp), its noise from the seeded stream of each stage. With the official sigmas "
                        "and FusionFrames Seeded Noise it reproduces the pack's sampler nodes.",
            inputs=[],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(cn.OfficialSampler())


class OfficialSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesOfficialSigmas",
            display_name="FusionFrames Official Sigmas",
            category=NATIVE,
            description="The official timesteps of a stage as SIGMAS: 1.1 leading 50 (first frame, keyframes), "
                        "trailing 10 (interpolation); 1.0 its cosine in 50 bins.",
            inputs=[io.Model.Input("model"),
                    io.Combo.Input("stage", options=list(STAGES), default="keyframes",
                                   tooltip="The sampling stage whose official timesteps to give."),
                    io.Int.Input("steps", default=0, min=0, max=1000, tooltip="0 = official.")],
            outputs=[io.Sigmas.Output(display_name="sigmas")],
        )

    @classmethod
    def execute(cls, model, stage: str, steps: int) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "FusionFrames Official Sigmas"
        unet = cn.fusionframes_model(model, what)
        if (stage == "interpolation") != (unet.kind == "interpolation"):
            raise ValueError(f"{what}: the {unet.describe()} has no {stage} stage.")
        if unet.release == "1.0" and stage == "first_frame":
            raise ValueError(f"{what}: release 1.0 has no separate first frame.")
        if unet.release == "1.0" and steps == 1:
            raise ValueError(f"{what}: 1.0 needs at least 2 steps.")
        return io.NodeOutput(native.official_sigmas(unet.release, stage, steps or None))


class SeededNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesSeededNoise",
            display_name="FusionFrames Seeded Noise",
            category=NATIVE,
            description="The starting noise of the pack's seeded streams (one per stage, from a CPU generator): the "
                        "same seed gives what the pack's sampler nodes and the command line give.",
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                                 control_after_generate=True,
                                 tooltip="The same seed gives the pack's sampler nodes' video.")],
            outputs=[io.Noise.Output(display_name="noise")],
        )

    @classmethod
    def execute(cls, noise_seed: int) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        return io.NodeOutput(cn.StreamNoise(noise_seed))


NATIVE_NODES: list[type[io.ComfyNode]] = [EmptyFirstFrame, KeyframeConditioning, InterpolationConditioning,
                                          InterleaveFrames, OfficialSampler, OfficialSigmas, SeededNoise]

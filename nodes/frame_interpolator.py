"""Latent Frame Interpolator: 3 new frames between every pair of latent frames (N -> 4N-3), once or twice."""

from __future__ import annotations

from comfy_api.latest import io

from ..fusionframes.runtime import stages
from ..fusionframes.runtime.pipeline import DEFAULT_INTERPOLATION_GUIDANCE
from ..fusionframes.sampling.fast import SAMPLERS
from ..fusionframes.sampling.noise import SeededNoise
from . import comfy_models as cm
from .keyframe_sampler import stage_steps, text_condition
from .types import CATEGORY, Conditioning, InterpolationModel, latent_frames, latent_info, make_latent


class FrameInterpolator(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesFrameInterpolator",
            display_name="Latent Frame Interpolator",
            category=CATEGORY,
            description="Predicts 3 frames between every pair of latent frames (N -> 4N-3 per pass). Works on the "
                        "keyframes of the sampler and on MoVQ-encoded frames of any video.",
            inputs=[
                InterpolationModel.Input("interpolation_model"),
                io.Latent.Input("latent", tooltip="Frames from the keyframe sampler, a previous pass, or MoVQ Encode."),
                io.Int.Input("passes", default=1, min=1, max=2,
                             tooltip="1 = medium fps (official skip 3), 2 = high fps (a second pass with skip 1)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the interpolation noise (a seeded CPU generator)."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="0 = the official count (1.0: 50, 1.1: 10). Other counts on 1.1 need a "
                                     "non-official sampler."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="official",
                               tooltip="official = exactly the official DDPM (default). ddim / dpmpp_2m are faster "
                                       "options; they are NOT the official sampler."),
                io.Float.Input("guidance", default=-1.0, min=-1.0, max=30.0, step=0.05,
                               tooltip="-1 = the official value (0.25 for 1.0, 0.5 for 1.1)."),
                Conditioning.Input("conditioning", optional=True,
                                   tooltip="1.1: the prompt (the 1.1 interpolation model is text-conditioned)."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, interpolation_model, latent: dict, passes: int, seed: int, steps: int, sampler: str,
                guidance: float, conditioning=None) -> io.NodeOutput:
        video = latent_frames(latent, "Latent Frame Interpolator")
        if video.shape[0] < 2:
            raise ValueError(f"Latent Frame Interpolator: needs at least 2 frames to interpolate between, got "
                             f"{video.shape[0]}.")
        release = interpolation_model.release
        text = None
        if release == "1.1":
            if conditioning is None:
                raise ValueError("Latent Frame Interpolator: the 1.1 interpolation model needs the prompt: connect "
                                 "the conditioning input.")
            text = text_condition(conditioning, interpolation_model, "Latent Frame Interpolator")
        weight = DEFAULT_INTERPOLATION_GUIDANCE[release] if guidance < 0 else guidance
        noise = SeededNoise(seed)
        if release == "1.0":
            steps = steps or 50
        per_pass = stage_steps(release, "interpolation", sampler, steps or None)
        progress = cm.StepProgress(per_pass * passes)
        info = latent_info(latent)
        done = info.get("interpolation_passes", 0)
        for number in range(1, passes + 1):
            unet = interpolation_model.load()
            skip = stages.SKIP_FRAMES[min(done + number, 2)]
            phase = f"interpolation{number}"
            if release == "1.0":
                groups = stages.interpolate_10(unet, video, noise, steps=steps, guidance_scale=weight,
                                               skip_frames=skip, phase=phase, on_step=progress.stage(per_pass),
                                               sampler=sampler)
            else:
                groups = stages.interpolate_11(unet, text, video, noise, guidance_scale=weight, skip_frames=skip,
                                               phase=phase, on_step=progress.stage(per_pass), sampler=sampler,
                                               steps=steps or None)
            video = stages.interleave(video.to(groups.device), groups).cpu()
        fps = stages.fps_for(passes, info.get("fps", stages.KEYFRAME_FPS))
        return io.NodeOutput(make_latent(video, release, fps, done + passes))

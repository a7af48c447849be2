"""Latent Frame Interpolator: 3 new frames between every pair of latent frames (N -> 4N-3), once or twice."""

from __future__ import annotations

from comfy_api.latest import io

from ..fusionframes.releases import KEYFRAME_FPS, fps_for
from ..fusionframes.runtime.sequencer import Sequencer, VideoRequest
from ..fusionframes.sampling.fast import SAMPLERS
from .comfy import models as cm
from .keyframe_sampler import node_models, node_progress, text_conditions
from .types import CATEGORY, Conditioning, InterpolationModel, frame_segments, latent_frames, latent_info, make_latent


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
                                   tooltip="1.1: the prompt (the 1.1 interpolation model is text-conditioned); of a "
                                           "long video, its prompts per segment: each pair of frames gets the "
                                           "prompt of the segment it ends in."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, interpolation_model, latent: dict, passes: int, seed: int, steps: int, sampler: str,
                guidance: float, conditioning=None) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "Latent Frame Interpolator"
        video = latent_frames(latent, what)
        if video.shape[0] < 2:
            raise ValueError(f"{what}: needs at least 2 frames to interpolate between, got {video.shape[0]}.")
        release = interpolation_model.release
        texts = []
        if release == "1.1":
            if conditioning is None:
                raise ValueError(f"{what}: the 1.1 interpolation model needs the prompt: connect the conditioning "
                                 "input.")
            texts = text_conditions(conditioning, interpolation_model, what)
        request = VideoRequest(width=None, height=None, seed=seed, steps=steps or None, sampler=sampler,
                               interpolation_guidance=None if guidance < 0 else guidance)
        info = latent_info(latent)
        done = info.get("interpolation_passes", 0)
        run = Sequencer(release, request, node_models(interpolation=interpolation_model))
        node_progress(run, run.plan(keyframes=False, passes=passes, done=done, decode=False))
        video, segments = run.interpolate_segments(texts, video, frame_segments(latent), passes, done)
        fps = fps_for(passes, info.get("fps", KEYFRAME_FPS))
        return io.NodeOutput(make_latent(video, release, fps, done + passes, segments=segments,
                                         loop=bool(info.get("loop"))))

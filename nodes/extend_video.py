"""Long videos on the canvas: Extend Video adds segments of keyframes (a prompt each), Close Loop makes the video
flow back into its first frame. The run order is the engine's (``Sequencer.continue_segments``, ``close_loop``)."""

from __future__ import annotations

from comfy_api.latest import io

from ..fusionframes.releases import KEYFRAME_FPS, LATENT_SCALE, MOTION_SCORES
from ..fusionframes.runtime import stages
from ..fusionframes.runtime.sequencer import Sequencer, VideoRequest, close_loop, segment_stage
from ..fusionframes.sampling.fast import SAMPLERS
from .comfy import models as cm
from .keyframe_sampler import image_to_pil, node_models, node_progress, text_conditions
from .types import (
    CATEGORY,
    Conditioning,
    KeyframeModel,
    MoVQModel,
    frame_segments,
    latent_frames,
    latent_info,
    make_latent,
)

WHAT = "Extend Video"


def _start(latent: dict | None, image, movq, release: str) -> tuple:
    """The frames the new segments follow and their segments: FusionFrames keyframes whole (the interpolator then
    runs over all of them); any other video (interpolated, MoVQ-encoded, IMAGE frames) by its last frame alone."""
    if (latent is None) == (image is None):
        raise ValueError(f"{WHAT}: connect the video to continue either as a LATENT or as IMAGE frames (one of "
                         "the two).")
    if latent is not None:
        frames = latent_frames(latent, WHAT)
        info = latent_info(latent)
        if info.get("loop"):
            raise ValueError(f"{WHAT}: this video is closed into a loop; extend it before 'Close Loop'.")
        if info.get("release") not in (None, release):
            raise ValueError(f"{WHAT}: the latent was made by release {info.get('release')} but the keyframe model "
                             f"is {release}.")
        if info.get("release") == release and info.get("interpolation_passes", 0) == 0:
            return frames, frame_segments(latent)
        return frames[-1:], [-1]
    if movq is None or movq.kind != "movq":
        raise ValueError(f"{WHAT}: continuing IMAGE frames needs the image MoVQ (movq.pt) on the 'movq' input, to "
                         "encode the last frame.")
    height, width = image.shape[1:3]
    stages.check_size(width, height)
    with node_models(movq=movq)("movq") as model:
        return stages.encode_image(model, image_to_pil(image, -1), width, height)[None].cpu(), [-1]


class ExtendVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesExtendVideo",
            display_name="Extend Video (segments)",
            category=CATEGORY,
            description="1.1: continues a video segment after segment, each segment's keyframes conditioned on the "
                        "previous last keyframe (as image-to-video is on its image), with the prompt of its line. "
                        "The shared frame appears once. Keyframes from the T2V Keyframe Sampler (or another Extend) "
                        "are kept and continued; any other video (IMAGE frames, an interpolated or encoded LATENT) is "
                        "continued from its last frame, which then starts the output. Interpolate the result with "
                        "the same prompts so segment borders are filled like every other pair.",
            inputs=[
                KeyframeModel.Input("keyframe_model"),
                Conditioning.Input("conditioning",
                                   tooltip="From 'FusionFrames Text Encode (prompt per segment)': line k for segment "
                                           "k of the whole video (line 1: the keyframes you continue), or one "
                                           "prompt for all."),
                io.Int.Input("segments", default=2, min=1, max=64, tooltip="Segments to add."),
                io.Int.Input("keyframes", default=0, min=0, max=64,
                             tooltip="Keyframes per segment, the shared one included; 0 = the official 12."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Each segment draws from its own stream of this seed: with the keyframe "
                                     "sampler's seed the video equals the command line's long video."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="0 = the official count (50); other counts need a non-official sampler."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="official",
                               tooltip="official = exactly the official DDPM (default); ddim / dpmpp_2m are faster "
                                       "options, NOT the official sampler."),
                io.Float.Input("guidance", default=5.0, min=0.0, max=30.0, step=0.1, tooltip="Weight of the prompt."),
                io.Float.Input("image_guidance", default=2.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Weight of the frame each segment continues from."),
                io.Combo.Input("motion", options=list(MOTION_SCORES), default="medium",
                               tooltip="Motion score (low 1, medium 10, high 50, extreme 100)."),
                io.Int.Input("noise_augmentation", default=20, min=0, max=999,
                             tooltip="Noise level added to the frame each segment continues from (official 20)."),
                io.Latent.Input("latent", optional=True, tooltip="The video to continue, as latent frames."),
                io.Image.Input("image", optional=True,
                               tooltip="The video to continue, as IMAGE frames (its last frame is used; width and "
                                       "height multiples of 64)."),
                MoVQModel.Input("movq", optional=True,
                                tooltip="The image MoVQ (movq.pt): needed for IMAGE frames and a last image."),
                io.Image.Input("last_image", optional=True,
                               tooltip="The frame the last segment ends on (not an official feature)."),
            ],
            outputs=[io.Latent.Output(display_name="keyframes")],
        )

    @classmethod
    def execute(cls, keyframe_model, conditioning, segments: int, keyframes: int, seed: int, steps: int,
                sampler: str, guidance: float, image_guidance: float, motion: str, noise_augmentation: int,
                latent=None, image=None, movq=None, last_image=None) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        if keyframe_model.kind != "keyframe":
            raise ValueError(f"{WHAT}: keyframe_model must come from 'Load FusionFrames Keyframe Model'.")
        release = keyframe_model.release
        if release != "1.1":
            raise ValueError(f"{WHAT}: continuing a video needs the 1.1 keyframe model (t2v.pt): its keyframes "
                             "continue from a given frame; 1.0's generate from text only.")
        if segments < 1:
            raise ValueError(f"{WHAT}: segments must be at least 1, got {segments}.")
        texts = text_conditions(conditioning, keyframe_model, WHAT)
        video, owners = _start(latent, image, movq, release)
        height, width = (LATENT_SCALE * side for side in video.shape[-2:])
        if last_image is not None and (movq is None or movq.kind != "movq"):
            raise ValueError(f"{WHAT}: a last image needs the image MoVQ (movq.pt) on the 'movq' input.")
        request = VideoRequest(width=width, height=height, keyframes=keyframes or None, seed=seed,
                               steps=steps or None, sampler=sampler, guidance=guidance, image_guidance=image_guidance,
                               motion=motion, noise_augmentation=noise_augmentation,
                               last_image=None if last_image is None else image_to_pil(last_image))
        run = Sequencer(release, request, node_models(keyframe=keyframe_model, movq=movq))
        first = max(owners) + 1
        node_progress(run, [segment_stage(segment) for segment in range(first, first + segments)])
        video, owners = run.continue_segments(video, owners, texts, segments, run.last_frame())
        return io.NodeOutput(make_latent(video, release, KEYFRAME_FPS, segments=owners))


class CloseLoop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesCloseLoop",
            display_name="Close Loop",
            category=CATEGORY,
            description="Makes the video a seamless loop: its first keyframe is appended after the last, so the "
                        "Latent Frame Interpolator fills the way back (with the last segment's prompt); the decoders "
                        "drop that copy, so the last frame flows into the first when the video repeats. Put it "
                        "between the keyframes and the interpolator.",
            inputs=[io.Latent.Input("keyframes")],
            outputs=[io.Latent.Output(display_name="keyframes")],
        )

    @classmethod
    def execute(cls, keyframes: dict) -> io.NodeOutput:
        what = "Close Loop"
        video = latent_frames(keyframes, what)
        info = latent_info(keyframes)
        if info.get("loop"):
            raise ValueError(f"{what}: this video is already closed into a loop.")
        if info.get("interpolation_passes", 0):
            raise ValueError(f"{what}: close the loop on keyframes, before the Latent Frame Interpolator (this latent "
                             "has been interpolated: the way back would get fewer in-between frames).")
        video, owners = close_loop(video, frame_segments(keyframes))
        return io.NodeOutput(make_latent(video, info.get("release"), info.get("fps", KEYFRAME_FPS),
                                         segments=owners, loop=True))

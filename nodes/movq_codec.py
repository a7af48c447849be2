"""MoVQ Encode (IMAGE -> LATENT) and Temporal MoVQ Decode (LATENT -> IMAGE + frame rate)."""

from __future__ import annotations

import math

from comfy_api.latest import io, ui

from ..fusionframes.io.video import VideoStream
from ..fusionframes.models.movq.decoding import Tiles, official_clip_frames
from ..fusionframes.releases import KEYFRAME_FPS, LATENT_SCALE
from ..fusionframes.runtime import stages
from .comfy import models as cm
from .comfy.native import core_video
from .types import CATEGORY, MoVQModel, latent_info, make_latent, playable_frames

DECODE_MODES = ["official clips", "one clip per frame", "custom clip length"]


class MoVQDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesMoVQDecode",
            display_name="Temporal MoVQ Decode",
            category=CATEGORY,
            description="Decodes latent frames to images. With video_movq.pt (1.1) frames are decoded together in "
                        "temporal clips as the official code does; with movq.pt frame by frame. Frames are streamed "
                        "to CPU memory clip by clip.",
            inputs=[
                MoVQModel.Input("movq"),
                io.Latent.Input("latent"),
                io.Combo.Input("clips", options=DECODE_MODES, default="official clips",
                               tooltip="official clips: N//4 clips of 4-5 frames (official). one clip per frame: "
                                       "least memory. custom: clip_frames frames per clip."),
                io.Int.Input("clip_frames", default=5, min=1, max=64,
                             tooltip="Frames per clip for 'custom clip length' (more = smoother, more memory)."),
                io.Int.Input("tile_size", default=0, min=0, max=4096, step=32,
                             tooltip="0: whole frames. Otherwise decode in square tiles of this many pixels (at "
                                     "least 64), for frames too large for the GPU; frames that run out of memory are "
                                     "tiled automatically."),
                io.Int.Input("tile_overlap", default=32, min=0, max=512, step=8,
                             tooltip="Pixels shared by neighbouring tiles, cross-faded to hide the seams."),
            ],
            outputs=[io.Image.Output(display_name="images"),
                     io.Float.Output(display_name="fps", tooltip="Playback rate carried by the latent: keyframes 2, "
                                                                 "x4 per interpolation pass (8, 32); for encoded "
                                                                 "videos the source rate x4 per pass."),
                     io.Video.Output(display_name="video",
                                     tooltip="The frames with their frame rate as a core VIDEO (for Save Video).")],
        )

    @classmethod
    def execute(cls, movq, latent: dict, clips: str, clip_frames: int, tile_size: int = 0,
                tile_overlap: int = 32) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        if clips not in DECODE_MODES:
            raise ValueError(f"Temporal MoVQ Decode: clips {clips!r} is not one of {', '.join(DECODE_MODES)}.")
        video = playable_frames(latent, "Temporal MoVQ Decode")
        count = video.shape[0]
        length = {"official clips": official_clip_frames(count), "one clip per frame": 1,
                  "custom clip length": clip_frames}[clips]
        tiles = Tiles.from_pixels(tile_size, tile_overlap, movq.module.downscale)
        progress = cm.StepProgress(count)
        model = movq.load()
        with cm.cancellable(movq):
            frames = stages.decode_frames(model, video, clip_frames=length, tiles=tiles,
                                          progress=lambda done, total: progress.count(done))
        fps = latent_info(latent).get("fps", KEYFRAME_FPS)
        images = frames.permute(0, 2, 3, 1).contiguous()
        return io.NodeOutput(images, fps, core_video(images, fps))


class MoVQEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesMoVQEncode",
            display_name="MoVQ Encode",
            category=CATEGORY,
            description="Encodes images (any IMAGE batch, e.g. the frames of a video) to MoVQ latents, for the "
                        "Latent Frame Interpolator. Width and height must be multiples of 8.",
            inputs=[
                MoVQModel.Input("movq"),
                io.Image.Input("images"),
                io.Float.Input("fps", default=24.0, min=0.1, max=240.0, step=0.1,
                               tooltip="Frame rate of the images (connect Get Video Components' fps); carried along "
                                       "so the decoded video plays at the right speed."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, movq, images, fps: float) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"MoVQ Encode: fps must be a positive frame rate, got {fps}.")
        height, width = images.shape[1:3]
        if height % 8 or width % 8:
            raise ValueError(f"MoVQ Encode: image size {width}x{height} is not a multiple of 8; resize first "
                             "(e.g. with Upscale Image to a multiple of 64).")
        pixels = images[..., :3].permute(0, 3, 1, 2) * 2 - 1
        progress = cm.StepProgress(1)
        model = movq.load()
        with cm.cancellable(movq):
            latents = stages.encode_video(model, pixels)
        progress.count(1)
        return io.NodeOutput(make_latent(latents, None, fps))


class SaveVideoStreamed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesSaveVideo",
            display_name="Decode and Save Video (streamed)",
            category=CATEGORY,
            description="Decodes the latent video in the official clips and writes each clip to the video file as "
                        "soon as it is decoded, so memory does not grow with the video's length (a long video "
                        "through MoVQ Decode holds every frame as float32). The file appears complete or not at "
                        "all: a cancel or an error leaves nothing in the output folder.",
            inputs=[
                MoVQModel.Input("movq", tooltip="The video's decoder: video_movq.pt (1.1) or movq.pt (1.0)."),
                io.Latent.Input("latent"),
                io.String.Input("filename_prefix", default="fusionframes/video",
                                tooltip="Where in ComfyUI's output folder, as in Save Video."),
                io.Combo.Input("format", options=["mp4", "webp", "gif"], default="mp4",
                               tooltip="mp4 (H.264) is streamed; webp and gif keep 8-bit frames until the end, as "
                                       "their writer needs them all (still 12x less than float frames)."),
                io.Int.Input("tile_size", default=0, min=0, max=4096, step=32,
                             tooltip="0: whole frames; otherwise square tiles of this many pixels."),
                io.Int.Input("tile_overlap", default=32, min=0, max=512, step=8,
                             tooltip="Pixels shared by neighbouring tiles, cross-faded to hide the seams."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, movq, latent: dict, filename_prefix: str, format: str, tile_size: int = 0,
                tile_overlap: int = 32) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        what = "Decode and Save Video"
        video = playable_frames(latent, what)
        tiles = Tiles.from_pixels(tile_size, tile_overlap, movq.module.downscale)
        height, width = (LATENT_SCALE * side for side in video.shape[-2:])
        path, file, subfolder = cm.output_file(filename_prefix, format, width, height)
        progress = cm.StepProgress(video.shape[0])
        model = movq.load()
        with cm.cancellable(movq), VideoStream(path, latent_info(latent).get("fps", KEYFRAME_FPS)) as stream:
            stages.decode_to_stream(model, video, stream, tiles=tiles,
                                    progress=lambda done, total: progress.count(done))
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))

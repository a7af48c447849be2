"""Long videos in a real ComfyUI with the demo models: Extend Video from IMAGE frames, the errors of bad long-video
graphs, and a cancelled streamed save that leaves no file. (The shipped long-video and loop workflows are run by
test_comfy_nodes and compared with the command line by test_node_equals_engine.)"""

from __future__ import annotations

import time

import pytest

from fusionframes.tools.comfy_host import execution_error, output_items
from tests.e2e.test_comfy_cancel import _encoded
from tests.e2e.test_comfy_nodes import (
    KEYFRAMES,
    SIZE,
    _assert_server_still_works,
    _failure,
    _interrupt_after,
    _node,
    api_workflow,
    shrink,
)

pytestmark = pytest.mark.slow

LONG = "fusionframes_1_1_long_video_prompt_per_segment"


def _long() -> dict:
    return shrink(api_workflow(LONG))


def _key(graph: dict, class_type: str) -> str:
    return next(key for key, node in graph.items() if node["class_type"] == class_type)


def _from_image(graph: dict, width: int = SIZE, height: int = SIZE) -> dict:
    """The long-video graph continuing IMAGE frames (a picture scaled to ``width`` x ``height``) instead of the
    sampler's keyframes."""
    extend = _node(graph, "FusionFramesExtendVideo")["inputs"]
    graph["90"] = {"class_type": "LoadImage", "inputs": {"image": "fusionframes_first_frame.png"}}
    graph["91"] = {"class_type": "ImageScale", "inputs": {"image": ["90", 0], "upscale_method": "bicubic",
                                                           "width": width, "height": height, "crop": "center"}}
    del extend["latent"]
    extend["image"] = ["91", 0]
    del graph[_key(graph, "FusionFramesKeyframeSampler")]
    return graph


def test_extend_continues_image_frames_from_their_last_frame(demo_server):
    graph = _from_image(_long())
    decode = _key(graph, "FusionFramesSaveVideo")
    graph[decode] = {"class_type": "FusionFramesMoVQDecode",
                     "inputs": {**{k: graph[decode]["inputs"][k] for k in ("movq", "latent", "tile_size",
                                                                           "tile_overlap")},
                                "clips": "official clips", "clip_frames": 5}}
    graph["92"] = {"class_type": "PreviewImage", "inputs": {"images": [decode, 0]}}
    prompts = _node(graph, "FusionFramesTextEncodeSegments")["inputs"]
    prompts["prompts"] = "a red car\na blue boat"  # the given frames are no segment: lines for the 2 new ones
    entry = demo_server.run(graph, timeout=900)
    frames = output_items(entry, "92")
    keyframes = 1 + 2 * (KEYFRAMES - 1)  # the frame continued from, then each segment without its shared frame
    assert len(frames) == 4 * keyframes - 3


@pytest.mark.parametrize("change,message", [
    (lambda g: _node(g, "FusionFramesExtendVideo")["inputs"].update(image=["91", 0]) or _with_image(g),
     "either as a LATENT or as IMAGE frames"),
    (lambda g: _from_image(g, 96, 80), "multiples of 64, got 96x80"),
    (lambda g: _node(g, "FusionFramesTextEncodeSegments")["inputs"].update(prompts="a\nb"),
     "2 prompts for a video of 3 segments"),
    (lambda g: _node(g, "FusionFramesTextEncodeSegments")["inputs"].update(prompts="a\nb\nc\nd"),
     "4 prompts for a video of 3 segments"),
    (lambda g: _node(g, "FusionFramesTextEncodeSegments")["inputs"].update(prompts="\n  \n"),
     "write at least one prompt"),
    (lambda g: _node(g, "FusionFramesExtendVideo")["inputs"].update(
        keyframe_model=["80", 0]) or g.update({"80": {"class_type": "FusionFramesLoadKeyframeModel", "inputs": {
            "ckpt_name": "kandinsky_video_1_0/kandinsky_video.pt", "weight_dtype": "auto"}}}),
     "needs the 1.1 keyframe model"),
])
def test_bad_long_video_graphs_fail_with_a_clear_message(demo_server, change, message):
    graph = _long()
    change(graph)
    error = _failure(demo_server, graph)
    assert message in error["exception_message"], error["exception_message"]


def _with_image(graph: dict) -> None:
    graph["90"] = {"class_type": "LoadImage", "inputs": {"image": "fusionframes_first_frame.png"}}
    graph["91"] = {"class_type": "ImageScale", "inputs": {"image": ["90", 0], "upscale_method": "bicubic",
                                                           "width": SIZE, "height": SIZE, "crop": "center"}}


def test_close_loop_refuses_a_closed_or_interpolated_video(demo_server):
    graph = shrink(api_workflow("fusionframes_1_1_seamless_loop"))
    close = _key(graph, "FusionFramesCloseLoop")
    graph["95"] = {"class_type": "FusionFramesCloseLoop", "inputs": {"keyframes": [close, 0]}}
    _node(graph, "FusionFramesFrameInterpolator")["inputs"]["latent"] = ["95", 0]
    assert "already closed into a loop" in _failure(demo_server, graph)["exception_message"]
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    interpolator = _key(graph, "FusionFramesFrameInterpolator")
    graph["95"] = {"class_type": "FusionFramesCloseLoop", "inputs": {"keyframes": [interpolator, 0]}}
    _node(graph, "FusionFramesMoVQDecode")["inputs"]["latent"] = ["95", 0]
    assert "before the Latent Frame Interpolator" in _failure(demo_server, graph)["exception_message"]


def test_a_cancelled_streamed_save_leaves_no_file(demo_server):
    graph = _encoded(512, 64)  # 64 frames at 512x512: decoding takes well over 10 s here
    del graph["9"]
    graph["6"] = {"class_type": "FusionFramesSaveVideo",
                  "inputs": {"movq": ["2", 0], "latent": ["3", 0], "filename_prefix": "fusionframes/cancelled",
                             "format": "mp4", "tile_size": 0, "tile_overlap": 32}}
    warm = {key: graph[key] for key in ("1", "2", "3")}
    warm["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "fusionframes/c"}}
    assert demo_server.run(warm, timeout=600)["status"]["status_str"] == "success"  # the latents, cached
    folder = demo_server.base / "output" / "fusionframes"
    entry, stopped_after = _interrupt_after(demo_server, graph, seconds=4)
    assert "execution_interrupted" in [m[0] for m in entry["status"].get("messages", [])], entry["status"]
    time.sleep(0.5)
    left = [path.name for path in folder.iterdir() if path.name.startswith((".cancelled", "cancelled"))]
    assert left == [], left  # neither the video nor its partial file
    assert stopped_after < 2, f"took {stopped_after:.1f} s to stop"
    _assert_server_still_works(demo_server)


def test_a_streamed_save_writes_the_whole_video(demo_server):
    entry = demo_server.run(_long(), timeout=900)
    assert execution_error(entry) is None
    (item,) = output_items(entry)
    assert item["filename"].endswith(".mp4") and demo_server.output_path(item).stat().st_size > 0
    partials = [p.name for p in demo_server.output_path(item).parent.iterdir() if ".partial" in p.name]
    assert partials == []

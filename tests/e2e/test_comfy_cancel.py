"""Cancel on large inputs in a real ComfyUI: each long node stops within seconds of Interrupt, and the server's
resident memory goes back to where it was before the run (ComfyUI's cache holds the same outputs before and after:
the node's inputs come from a run made first, and a cancelled node caches nothing)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.comfy_fixtures import resident_mb
from tests.e2e.test_comfy_nodes import _assert_server_still_works, _interrupt_after, _node, api_workflow, shrink

pytestmark = pytest.mark.slow


def _encoded(size: int, frames: int, shrink_to: int = 0) -> dict:
    """Black frames encoded by the 1.0 MoVQ (saved, so the graph has an output). With ``shrink_to`` the frames are
    scaled down before encoding: a quick run that leaves the full-size frames in ComfyUI's cache."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": frames,
                                                      "color": 0}},
        "2": {"class_type": "FusionFramesLoadMoVQ",
              "inputs": {"ckpt_name": "kandinsky_video_1_0/movq.pt", "weight_dtype": "fp32"}},
        "3": {"class_type": "FusionFramesMoVQEncode", "inputs": {"movq": ["2", 0], "images": ["1", 0], "fps": 8.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "fusionframes/cancel"}},
    }
    if shrink_to:
        graph["8"] = {"class_type": "ImageScale",
                      "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "width": shrink_to,
                                 "height": shrink_to, "crop": "disabled"}}
        graph["3"]["inputs"]["images"] = ["8", 0]
    return graph


def _interpolating(size: int, frames: int) -> dict:
    graph = _encoded(size, frames)
    graph["4"] = {"class_type": "FusionFramesLoadInterpolationModel",
                  "inputs": {"ckpt_name": "kandinsky_video_1_0/kandinsky_video_interpolation.pt",
                             "weight_dtype": "auto"}}
    graph["5"] = {"class_type": "FusionFramesFrameInterpolator",
                  "inputs": {"interpolation_model": ["4", 0], "latent": ["3", 0], "passes": 2, "seed": 1,
                             "steps": 0, "sampler": "official", "guidance": -1.0}}
    graph["10"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "fusionframes/x"}}
    return graph


def _decoding(size: int, frames: int) -> dict:
    graph = _encoded(size, frames)
    graph["6"] = {"class_type": "FusionFramesMoVQDecode",
                  "inputs": {"movq": ["2", 0], "latent": ["3", 0], "clips": "official clips", "clip_frames": 5,
                             "tile_size": 0, "tile_overlap": 32}}
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    return graph


def _sampling(size: int, keyframes: int) -> dict:
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(width=size, height=size, keyframes=keyframes,
                                                                 steps=50, seed=5)
    return graph


CASES = {
    # node: (graph that makes the inputs and loads the models, graph of the long run)
    "FusionFramesKeyframeSampler": (lambda: _sampling(64, 2), lambda: _sampling(512, 16)),  # about 2 s a step
    "FusionFramesFrameInterpolator": (lambda: _encoded(256, 24), lambda: _interpolating(256, 24)),  # 23 pairs, 91
    "FusionFramesMoVQDecode": (lambda: _encoded(512, 64), lambda: _decoding(512, 64)),  # 64 frames at 512x512
    # 16 batches of 4 at 512x512: long enough to outlast the 4 s before Cancel on a machine many times faster than ours
    "FusionFramesMoVQEncode": (lambda: _encoded(512, 64, shrink_to=64), lambda: _encoded(512, 64)),
}


@pytest.mark.parametrize("node", list(CASES))
def test_cancel_stops_a_long_node_within_seconds_and_frees_its_memory(demo_server, node):
    first, long = CASES[node]
    entry = demo_server.wait(demo_server.queue(first()), timeout=600)  # the inputs, cached; the models loaded
    assert entry["status"]["status_str"] == "success", entry["status"]
    graph = long()
    before = resident_mb(demo_server.pid)
    entry, stopped_after = _interrupt_after(demo_server, graph, seconds=4)
    messages = [m[0] for m in entry["status"].get("messages", [])]
    assert "execution_interrupted" in messages, entry["status"]
    interrupted = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted")
    assert interrupted["node_type"] == node
    time.sleep(1.0)
    after = resident_mb(demo_server.pid)
    print(f"\n{node}: stopped {stopped_after:.1f} s after Cancel; server RSS {before:.0f} MB before the run, "
          f"{after:.0f} MB after ({100 * (after - before) / before:+.1f} %)")
    assert stopped_after < 2, f"took {stopped_after:.1f} s to stop"
    assert after <= 1.10 * before, f"RSS {before:.0f} MB -> {after:.0f} MB"
    _assert_server_still_works(demo_server)

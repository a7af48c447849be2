"""The node pack in a real ComfyUI 0.3.75 server, driven over HTTP as a user's client would.

The server gets the project's tiny demo models in its model folders; every shipped workflow is queued through
``POST /prompt`` (shrunk to tiny sizes) and its video checked; bad input must fail with a clear message and leave
the server able to run the next prompt.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest

from fusionframes.io.video import read_video
from fusionframes.tools.comfy_host import execution_error, output_items, pack_nodes
from tests.e2e.comfy_fixtures import saved_frames

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
PACK_NODES = {
    "FusionFramesLoadKeyframeModel", "FusionFramesLoadInterpolationModel", "FusionFramesLoadMoVQ",
    "FusionFramesLoadTextEncoder", "FusionFramesTextEncode", "FusionFramesKeyframeSampler",
    "FusionFramesFrameInterpolator", "FusionFramesMoVQDecode", "FusionFramesMoVQEncode",
    "FusionFramesTemporalBlockSelector", "FusionFramesTextEncodeSegments", "FusionFramesExtendVideo",
    "FusionFramesCloseLoop", "FusionFramesSaveVideo", "FusionFramesEmptyFirstFrame",
    "FusionFramesKeyframeConditioning", "FusionFramesInterpolationConditioning", "FusionFramesInterleaveFrames",
    "FusionFramesOfficialSampler", "FusionFramesOfficialSigmas", "FusionFramesSeededNoise",
}
SIZE = 64
KEYFRAMES = 3


def api_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def shrink(graph: dict) -> dict:
    """Tiny sizes and few steps so a CPU runs the workflow in seconds; the graph itself is unchanged."""
    graph = copy.deepcopy(graph)
    release_10 = any(str(node["inputs"].get("ckpt_name", "")).startswith("kandinsky_video_1_0/")
                     for node in graph.values())
    steps = {"steps": 3} if release_10 else {}  # 1.1's official sampler has fixed step counts
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "FusionFramesKeyframeSampler":
            inputs.update(width=SIZE, height=SIZE, keyframes=KEYFRAMES, **steps)
        elif node["class_type"] == "FusionFramesExtendVideo":
            inputs.update(keyframes=KEYFRAMES)
        elif node["class_type"] == "FusionFramesFrameInterpolator":
            inputs.update(**steps)
        elif node["class_type"] == "ImageScale":
            inputs.update(width=SIZE, height=SIZE)
        elif node["class_type"] in ("FusionFramesEmptyFirstFrame", "FusionFramesKeyframeConditioning"):
            inputs.update(width=SIZE, height=SIZE, **({"keyframes": KEYFRAMES} if "keyframes" in inputs else {}))
        elif node["class_type"] == "KSampler":
            inputs.update(steps=3)
    return graph


def saved_video(server, entry: dict) -> np.ndarray:
    items = [item for item in output_items(entry) if item["filename"].endswith(".mp4")]
    assert len(items) == 1, entry.get("outputs")
    return read_video(server.output_path(items[0]))


def test_pack_imports_and_lists_every_node_with_its_inputs(demo_server):
    assert not demo_server.import_failed(), demo_server.import_traceback()
    nodes = pack_nodes(demo_server.object_info())
    assert set(nodes) == PACK_NODES
    for name, info in nodes.items():
        assert info["category"].startswith("FusionFrames"), name
        widgets = {k: v for section in info["input"].values() for k, v in section.items()
                   if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "COMBO", "BOOLEAN")}
        for key, spec in widgets.items():
            assert spec[1].get("tooltip"), f"{name}.{key} has no tooltip"
    sampler = nodes["FusionFramesKeyframeSampler"]["input"]
    assert sampler["required"]["width"][1]["step"] == 64
    assert sampler["optional"]["image"][0] == "IMAGE"
    assert nodes["FusionFramesMoVQDecode"]["output"] == ["IMAGE", "FLOAT", "VIDEO"]
    assert nodes["FusionFramesLoadKeyframeModel"]["output"] == ["FUSIONFRAMES_KEYFRAME_MODEL", "MODEL"]
    assert nodes["FusionFramesTextEncode"]["output"] == ["FUSIONFRAMES_CONDITIONING", "CONDITIONING", "CONDITIONING"]


def test_shipped_workflows_are_served_as_templates(demo_server):
    templates = demo_server.get("/workflow_templates")
    shipped = {p.stem for p in WORKFLOWS.glob("*.json")}
    assert set(templates["comfyui-fusionframes"]) == shipped


@pytest.mark.parametrize("name,frames,width", [
    ("fusionframes_1_0_text_to_video_medium_fps", 4 * KEYFRAMES - 3, SIZE),
    ("fusionframes_1_1_text_to_video", 4 * KEYFRAMES - 3, SIZE),
    ("fusionframes_1_1_image_to_video", 4 * KEYFRAMES - 3, SIZE),
    ("fusionframes_video_frame_interpolation", 4 * 4 - 3, SIZE),
    ("fusionframes_temporal_blocks_side_by_side", KEYFRAMES, 2 * SIZE),
    # 3 segments, the shared keyframes once: K + 2 (K - 1) keyframes, then one pass
    ("fusionframes_1_1_long_video_prompt_per_segment", 4 * (3 * KEYFRAMES - 2) - 3, SIZE),
    ("fusionframes_1_1_seamless_loop", 4 * KEYFRAMES, SIZE),  # the way back interpolated, the first frame once
    ("fusionframes_1_1_native_core_sampling", 4 * KEYFRAMES - 3, SIZE),  # core nodes, the decoder's VIDEO saved
    ("fusionframes_1_1_ksampler_image_to_video", 4 * KEYFRAMES - 3, SIZE),
])
def test_shipped_workflow_writes_the_expected_mp4(demo_server, name, frames, width):
    entry = demo_server.run(shrink(api_workflow(name)), timeout=900)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    video = saved_video(demo_server, entry)
    assert video.shape == (frames, SIZE, width, 3)
    assert video.std() > 1  # not a blank video


def _assert_server_still_works(server) -> None:
    entry = server.run(shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps")), timeout=900)
    assert entry["status"]["status_str"] == "success", execution_error(entry)


def _failure(server, graph: dict) -> dict:
    """Queue a graph that must fail while executing; its execution_error."""
    entry = server.wait(server.queue(graph), timeout=300)
    assert entry["status"]["status_str"] == "error"
    error = execution_error(entry)
    assert error is not None, entry["status"]
    return error


def _node(graph: dict, class_type: str) -> dict:
    return next(node for node in graph.values() if node["class_type"] == class_type)


def test_out_of_range_widget_is_rejected_with_the_nodes_error(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"]["width"] = 32
    status, body = demo_server.submit(graph)
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = [e for node in body["node_errors"].values() for e in node["errors"]]
    assert any(e["type"] == "value_smaller_than_min" and e["extra_info"]["input_name"] == "width" for e in errors)
    _assert_server_still_works(demo_server)


def test_movq_file_given_to_the_keyframe_loader_says_what_it_is(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesLoadKeyframeModel")["inputs"]["ckpt_name"] = "kandinsky_video_1_0/movq.pt"
    error = _failure(demo_server, graph)
    assert error["node_type"] == "FusionFramesLoadKeyframeModel"
    assert "is an image MoVQ" in error["exception_message"] and "a keyframe U-Net" in error["exception_message"]
    _assert_server_still_works(demo_server)


def test_corrupted_model_file_gets_a_clear_execution_error(demo_server):
    broken = demo_server.base / "models" / "fusionframes" / "kandinsky_video_1_0" / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    try:
        graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
        _node(graph, "FusionFramesLoadKeyframeModel")["inputs"]["ckpt_name"] = "kandinsky_video_1_0/broken.pt"
        error = _failure(demo_server, graph)
        assert "is not a PyTorch checkpoint: it starts with 'not a checkpoint'" in error["exception_message"]
    finally:
        broken.unlink()
    _assert_server_still_works(demo_server)


def test_latent_of_a_single_frame_cannot_be_interpolated(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"]["keyframes"] = 1
    error = _failure(demo_server, graph)
    assert error["node_type"] == "FusionFramesFrameInterpolator"
    assert "at least 2 frames" in error["exception_message"]


def test_faster_sampler_is_an_option_with_fewer_steps(demo_server):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(sampler="dpmpp_2m", steps=6)
    _node(graph, "FusionFramesFrameInterpolator")["inputs"].update(sampler="ddim", steps=4)
    entry = demo_server.run(graph, timeout=900)
    assert saved_video(demo_server, entry).shape == (4 * KEYFRAMES - 3, SIZE, SIZE, 3)


def test_fp8_text_encoder_and_tiled_decoding_run_the_11_workflow(demo_server):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    _node(graph, "FusionFramesLoadTextEncoder")["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    decode = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesMoVQDecode")
    graph["frames"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "tiles"}}
    whole = saved_frames(demo_server, demo_server.run(graph, timeout=900), "frames")
    assert whole.shape == (4 * KEYFRAMES - 3, SIZE, SIZE, 3)
    _node(graph, "FusionFramesMoVQDecode")["inputs"].update(tile_size=SIZE, tile_overlap=32)  # one tile: same frames
    assert np.array_equal(saved_frames(demo_server, demo_server.run(graph, timeout=900), "frames"), whole)
    _node(graph, "FusionFramesMoVQDecode")["inputs"].update(tile_size=32)
    assert "at least 64 pixels" in _failure(demo_server, graph)["exception_message"]


def _write_trained_variant(folder: Path, variant: str) -> str:
    """A keyframe checkpoint of ``variant`` with non-zero temporal weights beside ``folder``'s t2v.pt (where the toy
    models keep theirs); its model-folder name."""
    import shutil

    import torch

    from fusionframes.io.checkpoints import load_model
    from fusionframes.models.temporal.selection import fresh_variant, temporal_parameters, trained_variant_name
    from fusionframes.tools.training import save_checkpoint

    target = Path(trained_variant_name(str(folder / "t2v.pt"), variant))
    if not target.is_file():
        model = fresh_variant(load_model(folder / "t2v.pt", dtype=torch.float32).model, variant)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for _, parameter in temporal_parameters(model):
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
        save_checkpoint(model, {}, target, torch.float16)
        shutil.copyfile(folder / "configs.json", target.parent / "configs.json")
    return trained_variant_name(f"{folder.name}/t2v.pt", variant)


def test_selector_switches_to_the_trained_variant_beside_the_checkpoint(demo_server):
    """Choosing a variant the loaded checkpoint lacks loads its trained sibling (variants/<variant>/t2v.pt): the
    frames are those of loading that file directly, not those of the released blocks."""
    name = _write_trained_variant(demo_server.base / "models" / "fusionframes" / "kandinsky_video_1_1",
                                  "Conv1dAttn3dBlocks")
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    decode = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesMoVQDecode")
    graph["frames"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "variant"}}
    loader = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesLoadKeyframeModel")
    sampler = _node(graph, "FusionFramesKeyframeSampler")
    released = saved_frames(demo_server, demo_server.run(graph, timeout=900), "frames")
    graph["selector"] = {"class_type": "FusionFramesTemporalBlockSelector",
                         "inputs": {"keyframe_model": [loader, 0], "variant": "Conv1dAttn3dBlocks",
                                    "conv_strength": 1.0, "attention_strength": 1.0}}
    sampler["inputs"]["keyframe_model"] = ["selector", 0]
    selected = saved_frames(demo_server, demo_server.run(graph, timeout=900), "frames")
    del graph["selector"]
    sampler["inputs"]["keyframe_model"] = [loader, 0]
    graph[loader]["inputs"]["ckpt_name"] = name
    direct = saved_frames(demo_server, demo_server.run(graph, timeout=900), "frames")
    assert np.array_equal(selected, direct)
    assert np.abs(selected.astype(int) - released.astype(int)).max() > 0
    graph[loader]["inputs"]["ckpt_name"] = "kandinsky_video_1_1/t2v.pt"  # no trained sibling of this variant
    graph["selector"] = {"class_type": "FusionFramesTemporalBlockSelector",
                         "inputs": {"keyframe_model": [loader, 0], "variant": "Conv3dAttn1dBlocks",
                                    "conv_strength": 1.0, "attention_strength": 1.0}}
    sampler["inputs"]["keyframe_model"] = ["selector", 0]
    assert "variants/Conv3dAttn1dBlocks/" in _failure(demo_server, graph)["exception_message"]


def test_official_11_sampler_refuses_other_step_counts(demo_server):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(steps=20)
    error = _failure(demo_server, graph)
    assert "always takes 50 steps" in error["exception_message"]


def _interrupt_after(server, graph: dict, seconds: float) -> tuple[dict, float]:
    """Queue ``graph``, press Cancel ``seconds`` after it starts running; its history entry and how long the node
    took to stop."""
    prompt_id = server.queue(graph)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it is running
        running = server.get("/queue")["queue_running"]
        if running and running[0][1] == prompt_id:
            break
        time.sleep(0.2)
    time.sleep(seconds)
    pressed = time.time()
    server.interrupt()
    entry = server.wait(prompt_id, timeout=120)
    waited = time.time() - pressed
    # when the node stopped: the server's own time stamp of its execution_interrupted message (the history
    # entry appears later, after ComfyUI's clean-up and our polling)
    stamps = [m[1]["timestamp"] / 1000 for m in entry["status"].get("messages", [])
              if m[0] == "execution_interrupted" and "timestamp" in m[1]]
    return entry, (stamps[0] - pressed) if stamps else waited


def test_interrupt_stops_sampling_within_a_step(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(steps=1000, seed=123)
    entry, stopped_after = _interrupt_after(demo_server, graph, seconds=3)
    assert entry["status"]["status_str"] == "error"
    messages = [m[0] for m in entry["status"].get("messages", [])]
    assert "execution_interrupted" in messages
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    _assert_server_still_works(demo_server)


def test_latent_of_another_model_family_is_refused_by_name(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    interpolator = next(k for k, v in graph.items() if v["class_type"] == "FusionFramesFrameInterpolator")
    graph["99"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}}
    graph[interpolator]["inputs"]["latent"] = ["99", 0]
    error = _failure(demo_server, graph)
    assert error["node_type"] == "FusionFramesFrameInterpolator"
    assert "does not come from a FusionFrames node" in error["exception_message"]


def test_text_encoder_of_another_release_is_refused_with_the_widths(demo_server):
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesLoadTextEncoder")["inputs"]["projections"] = "kandinsky_video_1_1/t5_projections.pt"
    error = _failure(demo_server, graph)
    assert error["node_type"] == "FusionFramesKeyframeSampler"
    assert "64-wide contexts" in error["exception_message"] and "expects 4096" in error["exception_message"]
    _assert_server_still_works(demo_server)


@pytest.mark.parametrize("name", ["kandinsky_video_1_0/not_there.pt", "../../../../etc/passwd"])
def test_missing_or_outside_model_file_gets_an_error_saying_what_to_do(demo_server, name):
    """ComfyUI 0.3.75 does not check V3 combo values against the list: the loader resolves names only inside the
    model folders (a path that climbs out is read as a name inside them) and says where to put the file."""
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesLoadKeyframeModel")["inputs"]["ckpt_name"] = name
    error = _failure(demo_server, graph)
    assert error["node_type"] == "FusionFramesLoadKeyframeModel"
    assert "not found in" in error["exception_message"] and "models/fusionframes" in error["exception_message"]
    assert "Put the official checkpoint" in error["exception_message"]
    assert "root:" not in error["exception_message"]  # nothing of /etc/passwd was read


@pytest.mark.parametrize("widget,value,message", [
    ("sampler", {"__value__": ["ddim"]}, "sampler must be one of its choices, got ['ddim'] (list)"),
    ("motion", "normal", "motion 'normal' is not one of its choices (low, medium, high, extreme)"),
])
def test_widget_values_that_slip_past_validation_get_our_message(demo_server, widget, value, message):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"][widget] = value
    error = _failure(demo_server, graph)  # ComfyUI 0.3.75 lets both through to the node
    assert error["node_type"] == "FusionFramesKeyframeSampler"
    assert message in error["exception_message"]
    _assert_server_still_works(demo_server)


def test_interrupt_stops_encoding_a_huge_image_within_a_block(demo_server):
    """One 2048x2048 image is one MoVQ call (about 20 s on one CPU core here); Cancel stops it between blocks."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 2048, "height": 2048, "batch_size": 1, "color": 0}},
        "2": {"class_type": "FusionFramesLoadMoVQ",
              "inputs": {"ckpt_name": "kandinsky_video_1_0/movq.pt", "weight_dtype": "fp32"}},
        "3": {"class_type": "FusionFramesMoVQEncode", "inputs": {"movq": ["2", 0], "images": ["1", 0], "fps": 8.0}},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "fusionframes/huge"}},
    }
    entry, stopped_after = _interrupt_after(demo_server, graph, seconds=3)
    messages = [m[0] for m in entry["status"].get("messages", [])]
    assert "execution_interrupted" in messages, entry["status"]
    print(f"\nMoVQ Encode of 2048x2048 stopped {stopped_after:.1f} s after Cancel")
    # one 2048x2048 convolution takes up to 3.5 s here (more on a slower CPU); before the cancel points: over 120 s
    assert stopped_after < 15, f"took {stopped_after:.1f} s to stop"
    _assert_server_still_works(demo_server)


def test_a_request_too_big_for_the_machine_is_refused_before_it_starts(demo_server):
    """1.1 at 2048x2048 with 64 keyframes ran 88 s and died with a raw allocator message; now the sampler refuses it
    before the first frame, saying what fits (the server plans with at most DEMO_MEMORY_LIMIT)."""
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(width=2048, height=2048, keyframes=64)
    started = time.monotonic()
    error = _failure(demo_server, graph)
    assert time.monotonic() - started < 30
    assert error["node_type"] == "FusionFramesKeyframeSampler"
    message = error["exception_message"]
    assert "sampling keyframes would need about" in message and "(64 keyframes at 2048x2048)" in message
    assert "is available" in message and "keyframes fit at 2048x2048" in message  # 12 GB or less, by the machine
    assert "FUSIONFRAMES_SKIP_PREFLIGHT=1" in message
    _assert_server_still_works(demo_server)

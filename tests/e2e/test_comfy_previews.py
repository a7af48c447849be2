"""Live previews of the video while it samples, as the canvas receives them: a websocket client of a real ComfyUI
server started with ``--preview-method latent2rgb`` counts the preview images that arrive during a run of the pack's
T2V Keyframe Sampler and during a run of the core-sampling workflow (SamplerCustomAdvanced on our MODEL), and checks
that each is a picture of all frames (a sheet) announced with its layout, coloured by the map fitted to the loaded
MoVQ or decoded by it every N steps; headless Chromium checks that the pack's web extension plays the frames on the
sampling node."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from PIL import Image

from fusionframes.tools.comfy_host import HOST_DIR, REPO, ensure_browser, execution_error
from tests.e2e.comfy_fixtures import install_demo_models, make_comfy_server_fixture
from tests.e2e.test_comfy_nodes import api_workflow, shrink

pytestmark = pytest.mark.slow

preview_server = make_comfy_server_fixture(prepare=install_demo_models, base=HOST_DIR / "base_previews",
                                           extra_args=["--preview-method", "latent2rgb"])
PREVIEW_IMAGE, PREVIEW_WITH_METADATA = 1, 4


def _preview_picture(event: int, payload: bytes) -> Image.Image:
    if event == PREVIEW_WITH_METADATA:
        length = int.from_bytes(payload[:4], "big")
        payload = payload[4 + length:]
    return Image.open(io.BytesIO(payload[4:]))  # 4 bytes of image type (1 = JPEG), then the picture


def run_collecting_previews(server, graph: dict) -> tuple[dict, list[tuple[str | None, Image.Image]], list[dict]]:
    """Queue ``graph``; the history entry, every preview picture with the node that was running, and every layout
    announcement (the ``fusionframes.preview`` events)."""
    previews, layouts = [], []
    with server.messages(timeout=600) as socket:
        prompt_id = server.queue(graph)
        running = None
        while True:
            message = socket.receive()
            if isinstance(message, tuple):
                if message[0] in (PREVIEW_IMAGE, PREVIEW_WITH_METADATA):
                    previews.append((running, _preview_picture(*message)))
                continue
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "fusionframes.preview":
                layouts.append(data)
            if message["type"] == "executing":
                running = data.get("node")
                if running is None:
                    break
            if message["type"] in ("execution_error", "execution_interrupted"):
                break
    return server.wait(prompt_id, timeout=60), previews, layouts


def test_previews_of_all_frames_arrive_while_the_pack_sampler_runs(preview_server):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    entry, previews, layouts = run_collecting_previews(preview_server, graph)
    assert execution_error(entry) is None, execution_error(entry)
    sampler = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesKeyframeSampler")
    pictures = [picture for node, picture in previews if node == sampler]
    sizes = sorted({picture.size for picture in pictures})
    print(json.dumps({"previews": len(pictures), "sizes": sizes}))
    # 50 first-frame steps (one 16x16 latent at twice the size) and 50 keyframe steps (3 frames of 8x8 on a sheet)
    assert len(pictures) == 100
    assert all(width == height for width, height in sizes)  # ComfyUI scales them; both latents' sheets are square
    assert max(max(picture.convert("L").getextrema()) for picture in pictures) > 0
    # each picture announced with its layout for the canvas player: 1 frame, then 3 frames on 2 x 2
    ours = [layout for layout in layouts if layout["node"] == sampler]
    assert [(x["frames"], x["columns"], x["rows"]) for x in ours] == [(1, 1, 1)] * 50 + [(3, 2, 2)] * 50
    assert {x["source"] for x in ours} == {"colours"}


def test_previews_arrive_from_the_core_sampler_on_our_model(preview_server):
    graph = shrink(api_workflow("fusionframes_1_1_native_core_sampling"))
    entry, previews, layouts = run_collecting_previews(preview_server, graph)
    assert execution_error(entry) is None, execution_error(entry)
    by_node: dict[str, int] = {}
    for node, _ in previews:
        by_node[node] = by_node.get(node, 0) + 1
    print(json.dumps(by_node))
    def sampling(conditioning: str) -> str:  # the SamplerCustomAdvanced whose latent comes from that node
        return next(key for key, node in graph.items() if node["class_type"] == "SamplerCustomAdvanced"
                    and graph[node["inputs"]["latent_image"][0]]["class_type"] == conditioning)

    keyframes, interpolation = sampling("FusionFramesKeyframeConditioning"), \
        sampling("FusionFramesInterpolationConditioning")
    assert by_node.get(keyframes) == 50 and by_node.get(interpolation) == 10
    sheets = {picture.size for node, picture in previews if node == interpolation}
    # 6 new frames of 8x8 on a sheet of 2 columns and 3 rows (ComfyUI scales previews to --preview-size, keeping the
    # shape)
    assert sheets and all(abs(3 * width - 2 * height) <= 3 for width, height in sheets), sheets
    assert [(x["frames"], x["columns"], x["rows"]) for x in layouts if x["node"] == interpolation] == [(6, 2, 3)] * 10


def _with_decoded_previews(graph: dict, every: int) -> dict:
    """Decoded previews set on the image MoVQ's loader (the temporal MoVQ's refuses them)."""
    for node in graph.values():
        if node["class_type"] == "FusionFramesLoadMoVQ" and "video_movq" not in node["inputs"]["ckpt_name"]:
            node["inputs"]["decoded_preview_every"] = every
    return graph


def test_decoded_previews_every_n_steps_from_the_movq_loader(preview_server):
    graph = _with_decoded_previews(shrink(api_workflow("fusionframes_1_1_text_to_video")), 10)
    entry, previews, layouts = run_collecting_previews(preview_server, graph)
    assert execution_error(entry) is None, execution_error(entry)
    sampler = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesKeyframeSampler")
    sources = [layout["source"] for layout in layouts if layout["node"] == sampler]
    print(json.dumps({"sources": {source: sources.count(source) for source in set(sources)}}))
    # 50 first-frame and 50 keyframe previews: decoded at the first and every 10th of each, repeated in between
    stage = ["decoded"] + ["decoded before"] * 9
    assert sources == stage * 10
    pictures = [picture for node, picture in previews if node == sampler]
    assert len(pictures) == 100
    # the next run without decoding (the loader set back to 0) shows colours again
    graph = _with_decoded_previews(graph, 0)
    entry, _, layouts = run_collecting_previews(preview_server, graph)
    assert execution_error(entry) is None, execution_error(entry)
    assert {layout["source"] for layout in layouts} == {"colours"}


def test_the_canvas_plays_the_previewed_frames_on_the_sampling_node(preview_server, tmp_path):
    """The page (frontend + the pack's web extension) receives the previews of a queued graph and plays the frames
    of each sheet on the sampler node, instead of showing the still sheet; playing goes on after the run."""
    ensure_browser()
    subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh"), "--playwright"], check=True,
                   capture_output=True, text=True)
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    sampler = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesKeyframeSampler")
    graph[sampler]["inputs"]["seed"] += 1  # not the graph the other tests ran (ComfyUI would serve it from its cache)
    source = tmp_path / "graph.json"
    source.write_text(json.dumps(graph))
    shot = REPO / "out" / "browser" / "previews_playing.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["node", str(REPO / "scripts" / "check_previews_in_browser.js"), preview_server.url + "/",
                          str(source), sampler, str(shot)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    assert result["ended"] == "execution_success", result
    assert result["pageErrors"] == []
    last = result["last"]
    assert last is not None and last["widgetOnNode"], result
    assert last["pictures"] >= 50  # the pictures of the keyframe stage at least (the first-frame ones before them)
    assert (last["layout"]["frames"], last["layout"]["columns"], last["layout"]["rows"]) == (3, 2, 2)
    assert last["shown"] > last["pictures"]  # frames drawn between pictures: it plays
    assert result["distinctAfter"] >= 2  # still playing the last picture's 3 frames after the run
    assert result["nativePreview"] is None  # the still sheet did not also go to the page's own preview

"""Live previews of the video while it samples, as the canvas receives them: a websocket client of a real ComfyUI
server started with ``--preview-method latent2rgb`` counts the preview images that arrive during a run of the pack's
T2V Keyframe Sampler and during a run of the core-sampling workflow (SamplerCustomAdvanced on our MODEL), and checks
that each is a picture of all frames (a sheet), coloured by the map fitted to the loaded MoVQ."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from fusionframes.tools.comfy_host import HOST_DIR, execution_error
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


def run_collecting_previews(server, graph: dict) -> tuple[dict, list[tuple[str | None, Image.Image]]]:
    """Queue ``graph``; the history entry and every preview picture with the node that was running."""
    previews = []
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
            if message["type"] == "executing":
                running = data.get("node")
                if running is None:
                    break
            if message["type"] in ("execution_error", "execution_interrupted"):
                break
    return server.wait(prompt_id, timeout=60), previews


def test_previews_of_all_frames_arrive_while_the_pack_sampler_runs(preview_server):
    graph = shrink(api_workflow("fusionframes_1_1_text_to_video"))
    entry, previews = run_collecting_previews(preview_server, graph)
    assert execution_error(entry) is None, execution_error(entry)
    sampler = next(key for key, node in graph.items() if node["class_type"] == "FusionFramesKeyframeSampler")
    pictures = [picture for node, picture in previews if node == sampler]
    sizes = sorted({picture.size for picture in pictures})
    print(json.dumps({"previews": len(pictures), "sizes": sizes}))
    # 50 first-frame steps (one 16x16 latent at twice the size) and 50 keyframe steps (3 frames of 8x8 on a sheet)
    assert len(pictures) == 100
    assert all(width == height for width, height in sizes)  # ComfyUI scales them; both latents' sheets are square
    assert max(max(picture.convert("L").getextrema()) for picture in pictures) > 0


def test_previews_arrive_from_the_core_sampler_on_our_model(preview_server):
    graph = shrink(api_workflow("fusionframes_1_1_native_core_sampling"))
    entry, previews = run_collecting_previews(preview_server, graph)
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

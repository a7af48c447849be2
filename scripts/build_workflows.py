"""Writes the shared workflows: each graph is defined once here in API format and written as
``workflows/NAME.json`` (UI format, what ComfyUI lists as the pack's templates) and ``workflows/api/NAME.json``
(what ``POST /prompt`` takes).

The UI format needs each node's widget order, which comes from a running server's ``/object_info`` saved to a file:
    python scripts/build_workflows.py OBJECT_INFO.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K10 = "kandinsky_video_1_0"
K11 = "kandinsky_video_1_1"
TEXT_ENCODER = "flan-ul2"
#: a prompt of the toy grammar: it means something to the official weights and to the toy models alike
PROMPT = "a red circle moving right"


def link(node: str, slot: int = 0) -> list:
    return [node, slot]


def _text(release_dir: str, projections: str, prompt: str = PROMPT, negative: str = "") -> dict:
    return {
        "text_encoder": {"class_type": "FusionFramesLoadTextEncoder",
                         "inputs": {"text_encoder": TEXT_ENCODER, "projections": f"{release_dir}/{projections}",
                                    "weight_dtype": "auto"}},
        "encode": {"class_type": "FusionFramesTextEncode",
                   "inputs": {"text_encoder": link("text_encoder"), "prompt": prompt, "negative_prompt": negative}},
    }


def _loader(node_type: str, path: str, dtype: str = "auto") -> dict:
    inputs = {"ckpt_name": path, "weight_dtype": dtype}
    if node_type == "FusionFramesLoadMoVQ":
        inputs["decoded_preview_every"] = 0  # cheap colour previews; N decodes every N-th (image MoVQ only)
    return {"class_type": node_type, "inputs": inputs}


def _save(images: list, fps: list | float, prefix: str) -> dict:
    return {
        "create_video": {"class_type": "CreateVideo", "inputs": {"images": images, "fps": fps}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": link("create_video"), "filename_prefix": prefix,
                                                         "format": "mp4", "codec": "h264"}},
    }


def _sampler(release: str, **extra) -> dict:
    inputs = {"keyframe_model": link("keyframe_model"), "conditioning": link("encode"), "width": 512,
              "height": 512, "keyframes": 0, "seed": 42, "steps": 0, "sampler": "official", "guidance": 5.0,
              "image_guidance": 2.0, "first_frame_guidance": 5.0, "motion": "medium", "noise_augmentation": 20}
    if release == "1.1":
        inputs["movq"] = link("movq")
    inputs.update(extra)
    return {"class_type": "FusionFramesKeyframeSampler", "inputs": inputs}


def _interpolator(latent: list, passes: int, conditioning: bool) -> dict:
    inputs = {"interpolation_model": link("interpolation_model"), "latent": latent, "passes": passes, "seed": 42,
              "steps": 0, "sampler": "official", "guidance": -1.0}
    if conditioning:
        inputs["conditioning"] = link("encode")
    return {"class_type": "FusionFramesFrameInterpolator", "inputs": inputs}


def _decode(movq: str, latent: list) -> dict:
    return {"class_type": "FusionFramesMoVQDecode",
            "inputs": {"movq": link(movq), "latent": latent, "clips": "official clips", "clip_frames": 5,
                       "tile_size": 0, "tile_overlap": 32}}


def t2v_10() -> dict:
    return {
        "keyframe_model": _loader("FusionFramesLoadKeyframeModel", f"{K10}/kandinsky_video.pt"),
        **_text(K10, "kandinsky_video.pt", negative="blurry, low quality"),
        "sampler": _sampler("1.0"),
        "interpolation_model": _loader("FusionFramesLoadInterpolationModel", f"{K10}/kandinsky_video_interpolation.pt"),
        "interpolator": _interpolator(link("sampler"), 1, conditioning=False),
        "movq": _loader("FusionFramesLoadMoVQ", f"{K10}/movq.pt", "fp32"),
        "decode": _decode("movq", link("interpolator")),
        **_save(link("decode"), link("decode", 1), "fusionframes/t2v_1_0"),
    }


def _k11_models() -> dict:
    return {
        "keyframe_model": _loader("FusionFramesLoadKeyframeModel", f"{K11}/t2v.pt"),
        **_text(K11, "t5_projections.pt"),
        "movq": _loader("FusionFramesLoadMoVQ", f"{K11}/movq.pt", "fp32"),
        "video_movq": _loader("FusionFramesLoadMoVQ", f"{K11}/video_movq.pt", "fp32"),
        "interpolation_model": _loader("FusionFramesLoadInterpolationModel", f"{K11}/interpolation.pt"),
    }


def t2v_11() -> dict:
    return {
        **_k11_models(),
        "sampler": _sampler("1.1"),
        "interpolator": _interpolator(link("sampler"), 1, conditioning=True),
        "decode": _decode("video_movq", link("interpolator")),
        **_save(link("decode"), link("decode", 1), "fusionframes/t2v_1_1"),
    }


def i2v_11() -> dict:
    return {
        **_k11_models(),
        "image": {"class_type": "LoadImage", "inputs": {"image": "fusionframes_first_frame.png"}},
        "sampler": _sampler("1.1", image=link("image")),
        "interpolator": _interpolator(link("sampler"), 1, conditioning=True),
        "decode": _decode("video_movq", link("interpolator")),
        **_save(link("decode"), link("decode", 1), "fusionframes/i2v_1_1"),
    }


def video_interpolation() -> dict:
    """Frame interpolation of an existing video: 4x the frame count through the 1.0 interpolation model."""
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": "fusionframes_clip.mp4"}},
        "components": {"class_type": "GetVideoComponents", "inputs": {"video": link("video")}},
        "scale": {"class_type": "ImageScale", "inputs": {"image": link("components"), "upscale_method": "bicubic",
                                                         "width": 512, "height": 512, "crop": "center"}},
        "movq": _loader("FusionFramesLoadMoVQ", f"{K10}/movq.pt", "fp32"),
        "encode_frames": {"class_type": "FusionFramesMoVQEncode",
                          "inputs": {"movq": link("movq"), "images": link("scale"), "fps": link("components", 2)}},
        "interpolation_model": _loader("FusionFramesLoadInterpolationModel", f"{K10}/kandinsky_video_interpolation.pt"),
        "interpolator": _interpolator(link("encode_frames"), 1, conditioning=False),
        "decode": _decode("movq", link("interpolator")),
        **_save(link("decode"), link("decode", 1), "fusionframes/interpolated"),
    }


def temporal_blocks_side_by_side() -> dict:
    """The same seed with the trained temporal blocks (left) and with them switched off (right)."""
    graph = {
        **_k11_models(),
        "trained": {"class_type": "FusionFramesTemporalBlockSelector",
                    "inputs": {"keyframe_model": link("keyframe_model"), "variant": "auto", "conv_strength": 1.0,
                               "attention_strength": 1.0, "levels": "all", "fresh_blocks": False}},
        "off": {"class_type": "FusionFramesTemporalBlockSelector",
                "inputs": {"keyframe_model": link("keyframe_model"), "variant": "auto", "conv_strength": 0.0,
                           "attention_strength": 0.0, "levels": "all", "fresh_blocks": False}},
        "sampler_trained": _sampler("1.1", keyframe_model=link("trained")),
        "sampler_off": _sampler("1.1", keyframe_model=link("off")),
        "decode_trained": _decode("video_movq", link("sampler_trained")),
        "decode_off": _decode("video_movq", link("sampler_off")),
        "stitch": {"class_type": "ImageStitch",
                   "inputs": {"image1": link("decode_trained"), "image2": link("decode_off"), "direction": "right",
                              "match_image_size": True, "spacing_width": 0, "spacing_color": "white"}},
        **_save(link("stitch"), link("decode_trained", 1), "fusionframes/temporal_blocks"),
    }
    del graph["interpolation_model"]
    return graph


#: one line per segment, of the toy grammar as PROMPT: the path turns right, then down, then left
SEGMENT_PROMPTS = "a red circle moving right\na red circle moving down\na red circle moving left"


def _save_streamed(movq: str, latent: list, prefix: str) -> dict:
    return {"class_type": "FusionFramesSaveVideo",
            "inputs": {"movq": link(movq), "latent": latent, "filename_prefix": prefix, "format": "mp4",
                       "tile_size": 0, "tile_overlap": 32}}


def long_video_11() -> dict:
    """Three segments, a prompt each: the keyframe sampler makes the first (line 1), Extend Video the next two, each
    from the last keyframe before it; one interpolation over the whole video; decoded into the file clip by clip."""
    graph = _k11_models()
    graph["encode"] = {"class_type": "FusionFramesTextEncodeSegments",
                       "inputs": {"text_encoder": link("text_encoder"), "prompts": SEGMENT_PROMPTS}}
    graph.update({
        "sampler": _sampler("1.1"),
        "extend": {"class_type": "FusionFramesExtendVideo",
                   "inputs": {"keyframe_model": link("keyframe_model"), "conditioning": link("encode"),
                              "segments": 2, "keyframes": 0, "seed": 42, "steps": 0, "sampler": "official",
                              "guidance": 5.0, "image_guidance": 2.0, "motion": "medium", "noise_augmentation": 20,
                              "latent": link("sampler"), "movq": link("movq")}},
        "interpolator": _interpolator(link("extend"), 1, conditioning=True),
        "save": _save_streamed("video_movq", link("interpolator"), "fusionframes/long_video_1_1"),
    })
    return graph


def seamless_loop_11() -> dict:
    """Keyframes closed into a loop: the interpolator fills the way from the last keyframe back to the first, and
    the decoder drops the copy, so the video repeats without a jump."""
    return {
        **_k11_models(),
        "sampler": _sampler("1.1"),
        "close_loop": {"class_type": "FusionFramesCloseLoop", "inputs": {"keyframes": link("sampler")}},
        "interpolator": _interpolator(link("close_loop"), 1, conditioning=True),
        "save": _save_streamed("video_movq", link("interpolator"), "fusionframes/loop_1_1"),
    }


def _official_pass(model: str, guider: dict, stage: str, latent: list) -> dict:
    """One stage sampled by SamplerCustomAdvanced with the official pieces (names prefixed by ``stage``)."""
    return {
        f"{stage}_guider": guider,
        f"{stage}_sigmas": {"class_type": "FusionFramesOfficialSigmas",
                            "inputs": {"model": link(model, 1), "stage": stage, "steps": 0}},
        f"{stage}_sample": {"class_type": "SamplerCustomAdvanced",
                            "inputs": {"noise": link("noise"), "guider": link(f"{stage}_guider"),
                                       "sampler": link("official_sampler"), "sigmas": link(f"{stage}_sigmas"),
                                       "latent_image": latent}},
    }


def native_t2v_11() -> dict:
    """1.1 text-to-video from core sampling nodes: each stage is SamplerCustomAdvanced with the official sampler,
    sigmas and seeded noise; the guiders are the core CFGGuider and DualCFGGuider (the official three-way
    guidance); the decoder's VIDEO goes straight into the core Save Video."""
    return {
        **_k11_models(),
        "noise": {"class_type": "FusionFramesSeededNoise", "inputs": {"noise_seed": 42}},
        "official_sampler": {"class_type": "FusionFramesOfficialSampler", "inputs": {}},
        "empty_first_frame": {"class_type": "FusionFramesEmptyFirstFrame", "inputs": {"width": 512, "height": 512}},
        **_official_pass("keyframe_model", {"class_type": "CFGGuider",
                                            "inputs": {"model": link("keyframe_model", 1),
                                                       "positive": link("encode", 1), "negative": link("encode", 2),
                                                       "cfg": 6.0}},
                         "first_frame", link("empty_first_frame")),
        "keyframe_conditioning": {"class_type": "FusionFramesKeyframeConditioning",
                                  "inputs": {"model": link("keyframe_model", 1), "positive": link("encode", 1),
                                             "width": 512, "height": 512, "keyframes": 0, "movq": link("movq"),
                                             "first_frame": link("first_frame_sample"), "motion": "medium",
                                             "noise_augmentation": 20}},
        **_official_pass("keyframe_model", {"class_type": "DualCFGGuider",
                                            "inputs": {"model": link("keyframe_model", 1),
                                                       "cond1": link("keyframe_conditioning", 0),
                                                       "cond2": link("keyframe_conditioning", 1),
                                                       "negative": link("keyframe_conditioning", 2),
                                                       "cfg_conds": 5.0, "cfg_cond2_negative": 2.0,
                                                       "style": "regular"}},
                         "keyframes", link("keyframe_conditioning", 3)),
        "interpolation_conditioning": {"class_type": "FusionFramesInterpolationConditioning",
                                       "inputs": {"model": link("interpolation_model", 1),
                                                  "keyframes": link("keyframes_sample"), "pass_number": 1,
                                                  "positive": link("encode", 1)}},
        **_official_pass("interpolation_model", {"class_type": "CFGGuider",
                                                 "inputs": {"model": link("interpolation_model", 1),
                                                            "positive": link("interpolation_conditioning", 0),
                                                            "negative": link("interpolation_conditioning", 1),
                                                            "cfg": 1.5}},
                         "interpolation", link("interpolation_conditioning", 2)),
        "interleave": {"class_type": "FusionFramesInterleaveFrames",
                       "inputs": {"keyframes": link("keyframes_sample"), "in_between": link("interpolation_sample")}},
        "decode": _decode("video_movq", link("interleave")),
        "save": {"class_type": "SaveVideo", "inputs": {"video": link("decode", 2),
                                                       "filename_prefix": "fusionframes/native_t2v_1_1",
                                                       "format": "mp4", "codec": "h264"}},
    }


def ksampler_i2v_11() -> dict:
    """1.1 image-to-video with the core KSampler and a core sampler/scheduler (not the official sampler: fewer steps,
    two-way guidance between prompt + image and neither)."""
    graph = native_t2v_11()
    for name in list(graph):
        if name.startswith(("first_frame", "keyframes_", "interpolation_guider", "interpolation_sigmas",
                            "interpolation_sample")) or name in ("noise", "official_sampler", "empty_first_frame"):
            del graph[name]
    graph["image"] = {"class_type": "LoadImage", "inputs": {"image": "fusionframes_first_frame.png"}}
    inputs = graph["keyframe_conditioning"]["inputs"]
    del inputs["first_frame"]
    inputs["image"] = link("image")
    graph["keyframes_sample"] = {"class_type": "KSampler",
                                 "inputs": {"model": link("keyframe_model", 1), "seed": 42, "steps": 20, "cfg": 5.0,
                                            "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                            "positive": link("keyframe_conditioning", 0),
                                            "negative": link("keyframe_conditioning", 2),
                                            "latent_image": link("keyframe_conditioning", 3), "denoise": 1.0}}
    graph["interpolation_sample"] = {"class_type": "KSampler",
                                     "inputs": {"model": link("interpolation_model", 1), "seed": 42, "steps": 10,
                                                "cfg": 1.5, "sampler_name": "euler", "scheduler": "normal",
                                                "positive": link("interpolation_conditioning", 0),
                                                "negative": link("interpolation_conditioning", 1),
                                                "latent_image": link("interpolation_conditioning", 2),
                                                "denoise": 1.0}}
    graph["save"]["inputs"]["filename_prefix"] = "fusionframes/ksampler_i2v_1_1"
    return graph


WORKFLOWS = {
    "fusionframes_1_0_text_to_video_medium_fps": t2v_10,
    "fusionframes_1_1_text_to_video": t2v_11,
    "fusionframes_1_1_image_to_video": i2v_11,
    "fusionframes_video_frame_interpolation": video_interpolation,
    "fusionframes_temporal_blocks_side_by_side": temporal_blocks_side_by_side,
    "fusionframes_1_1_long_video_prompt_per_segment": long_video_11,
    "fusionframes_1_1_seamless_loop": seamless_loop_11,
    "fusionframes_1_1_native_core_sampling": native_t2v_11,
    "fusionframes_1_1_ksampler_image_to_video": ksampler_i2v_11,
}


def api_graph(named: dict) -> dict:
    """Readable node names -> numbered ids, as ComfyUI writes API graphs."""
    ids = {name: str(index) for index, name in enumerate(named, start=1)}

    def resolve(value):
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in ids:
            return [ids[value[0]], value[1]]
        return value

    return {ids[name]: {"class_type": node["class_type"], "_meta": {"title": name.replace("_", " ")},
                        "inputs": {k: resolve(v) for k, v in node["inputs"].items()}}
            for name, node in named.items()}


def _input_specs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order", {})
    specs = []
    for section in ("required", "optional"):
        entries = info.get("input", {}).get(section, {})
        for name in order.get(section, list(entries)):
            specs.append((name, entries[name]))
    return specs


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _depths(graph: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            parents = [v[0] for v in graph[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[node_id]

    for node_id in graph:
        visit(node_id)
    return depth


def ui_graph(graph: dict, object_info: dict) -> dict:
    """The UI (litegraph) form of an API graph: nodes with widget values in schema order, links, layout."""
    links, nodes = [], {}
    depth = _depths(graph)
    column_heights: dict[int, int] = {}
    for node_id, node in graph.items():
        info = object_info[node["class_type"]]
        column = depth[node_id]
        height = 60 + 26 * (len(_input_specs(info)) + len(info["output"]))
        top = column_heights.get(column, 40)
        column_heights[column] = top + height + 50
        nodes[node_id] = {
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 420 * column, top],
            "size": [380, height], "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": [],
            "title": node["_meta"]["title"],
        }
        for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"])):
            nodes[node_id]["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
    for node_id, node in graph.items():
        target = nodes[node_id]
        for name, spec in _input_specs(object_info[node["class_type"]]):
            value = node["inputs"].get(name)
            widget = _is_widget(spec)
            if isinstance(value, list):
                link_id = len(links) + 1
                source, slot = value
                kind = nodes[source]["outputs"][slot]["type"]
                links.append([link_id, int(source), slot, int(node_id), len(target["inputs"]), kind])
                nodes[source]["outputs"][slot]["links"].append(link_id)
                entry = {"name": name, "type": kind, "link": link_id}
                if widget:
                    entry["widget"] = {"name": name}
                target["inputs"].append(entry)
                value = spec[1].get("default") if len(spec) > 1 else None
            elif not widget:
                target["inputs"].append({"name": name, "type": spec[0], "link": None})
                continue
            if widget:
                options = spec[1] if len(spec) > 1 else {}
                target["widgets_values"].append(options.get("default") if value is None else value)
                if options.get("control_after_generate"):
                    target["widgets_values"].append("fixed")
    for order, node_id in enumerate(sorted(graph, key=lambda n: depth[n])):
        nodes[node_id]["order"] = order
    return {"last_node_id": max(int(n) for n in graph), "last_link_id": len(links),
            "nodes": list(nodes.values()), "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main(object_info_path: str) -> None:
    object_info = json.loads(Path(object_info_path).read_text())
    (ROOT / "workflows" / "api").mkdir(parents=True, exist_ok=True)
    for name, build in WORKFLOWS.items():
        graph = api_graph(build())
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(graph, indent=1) + "\n")
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui_graph(graph, object_info), indent=1) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1])

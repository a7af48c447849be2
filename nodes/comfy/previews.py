"""Live previews of FusionFrames videos on the canvas while they sample (written against ComfyUI 0.3.75: the preview
method of ``comfy.cli_args``, the ``("JPEG", image, size)`` tuples of ``latent_preview``, the executing context of
``comfy_execution.utils``, the server's ``send_sync``).

What a preview shows. Every frame of the video being sampled, as one picture (a sheet of the frames in a grid).
Colours come from a latent -> RGB map fitted to the loaded image MoVQ (``models.movq.preview``), cached next to its
weights as ``<file>.preview.json`` (or only in memory where that folder is read-only). With 'decoded previews every
N steps' set on the image MoVQ's loader, every N-th preview of a run (and the first) is decoded by that MoVQ
instead, and the previews in between repeat the last decoded one. The pack's sampler nodes and the core samplers on
our MODEL (through ``VideoLatentFormat``) share all of this; the preview method "none" switches both off.

Animation. Before each sheet the server sends the JSON event :data:`EVENT` with the sheet's layout (node, frames,
columns, rows, frame rate, source: colours / decoded / decoded before); the pack's web extension
(``web/fusionframes_previews.js``) plays the frames of the sheet on the node. Clients without the extension (API
users) get the sheet and can cut it with the same layout.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...fusionframes.models.movq.decoding import decode_video
from ...fusionframes.models.movq.preview import LatentColours, engine_frames, fit_latent_colours, frames_sheet
from ...fusionframes.runtime import preflight

__all__ = ["EVENT", "decoded_previews", "latent_colours", "preview", "remember", "video_sheet"]

CACHE_SUFFIX = ".preview.json"
#: the websocket event announcing the layout of the next preview sheet
EVENT = "fusionframes.preview"
#: the frame rate at which the web extension plays the previewed frames
PREVIEW_FPS = 8
#: decoded frames are scaled down to at most this side before they go on the sheet
DECODED_FRAME_SIDE = 256
_colours: LatentColours | None = None


@dataclass
class _Decoder:
    movq: Any  # the loader's ManagedModel
    every: int


_decoder: _Decoder | None = None
#: per running node: (previews made, the last decoded frames)
_runs: dict[tuple[str, str, tuple[int, ...]], tuple[int, torch.Tensor | None]] = {}


def _cache_key(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def remember(movq: torch.nn.Module, checkpoint: str) -> LatentColours:
    """The preview colours of the image MoVQ in ``checkpoint``: from its cache file if that is current, else fitted
    (and cached); they become the colours of every FusionFrames preview."""
    global _colours
    cache = checkpoint + CACHE_SUFFIX
    key = _cache_key(checkpoint)
    colours = None
    try:
        with open(cache) as handle:
            data = json.load(handle)
        if data.get("key") == key:
            colours = LatentColours.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        colours = None
    if colours is None:
        colours = fit_latent_colours(movq)
        try:
            partial = cache + ".partial"
            with open(partial, "w") as handle:
                json.dump({"key": key, **colours.to_dict()}, handle)
            os.replace(partial, cache)
        except OSError as error:  # a read-only model folder: keep them in memory
            logging.info("FusionFrames: preview colours not cached (%s)", error)
    _colours = colours
    return colours


def decoded_previews(movq: Any, every: int) -> None:
    """From now on, decode every ``every``-th preview with ``movq`` (an image MoVQ loader's ManagedModel). 0 switches
    decoding off if it was this file's (a loader of another image MoVQ file, left at 0, keeps it)."""
    global _decoder
    if every > 0:
        _decoder = _Decoder(movq, int(every))
    elif _decoder is not None and _decoder.movq.name == movq.name:
        _decoder = None
    _runs.clear()


def latent_colours() -> LatentColours | None:
    return _colours


def previews_enabled() -> bool:
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def can_preview() -> bool:
    """Whether a preview can be made now: previews are on and a MoVQ gave colours or decodes them."""
    return previews_enabled() and (_colours is not None or _decoder is not None)


def _running() -> tuple[str, str]:
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    return ("", "") if context is None else (str(context.prompt_id), str(context.node_id))


def _decode(latents: torch.Tensor) -> torch.Tensor | None:
    """(T, 4, h, w) -> (T, 3, H, W) in [-1, 1] by the preview MoVQ, or None where it does not fit in free memory
    now (loading it would push the sampling model off the device)."""
    import comfy.model_management as mm

    assert _decoder is not None
    managed = _decoder.movq
    movq = managed.module
    device = mm.get_torch_device()
    clip = latents.shape[0] if getattr(movq, "decodes_clips", False) else 1
    need = preflight.movq_need("a decoded preview", "decode", movq, clip, "frames", latents.shape[-2] * 8,
                               latents.shape[-1] * 8, "")
    resident = any(loaded.model is managed.patcher for loaded in mm.current_loaded_models)
    weights = 0 if resident else managed.patcher.model_size()
    if mm.get_free_memory(device) < weights + need.device_bytes:
        logging.info("FusionFrames: no room for a decoded preview now; showing latent colours")
        return None
    mm.load_models_gpu([managed.patcher])
    decoded = decode_video(movq, latents, clip_frames=clip)
    side = max(decoded.shape[-2:])
    if side > DECODED_FRAME_SIDE:
        scale = DECODED_FRAME_SIDE / side
        size = (max(1, round(decoded.shape[-2] * scale)), max(1, round(decoded.shape[-1] * scale)))
        decoded = torch.nn.functional.interpolate(decoded, size=size, mode="area")
    return decoded.clamp(-1, 1)


def _frames_rgb(video: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """A video latent ``[B, 4, T, h, w]`` -> the frames to show, (T, 3, H, W) in [-1, 1], and where they come from:
    "colours", "decoded" (decoded for this preview) or "decoded before"."""
    latents = video[0].detach().float().cpu().transpose(0, 1)
    key = (*_running(), tuple(latents.shape))
    count, decoded = _runs.get(key, (0, None))
    source = "decoded before"
    if _decoder is not None and count % _decoder.every == 0:
        fresh = _decode(latents) if latents.shape[1] == 4 else None
        decoded, source = (fresh, "decoded") if fresh is not None else (decoded, source)
    if len(_runs) > 16 and key not in _runs:
        _runs.clear()
    _runs[key] = (count + 1, decoded)
    if decoded is not None:
        return decoded, source
    return None if _colours is None else (_colours.apply(latents), "colours")


def _announce(layout: dict[str, Any]) -> None:
    """Tell the canvas (and API clients) how to play the next preview picture of the running node."""
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI's modules without its server (scripts, tests in-process)
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    prompt_id, node_id = _running()
    display = getattr(server, "last_node_id", None)  # the node the page shows the preview on
    server.send_sync(EVENT, {"node": str(node_id if display is None else display), "prompt_id": prompt_id, **layout},
                     getattr(server, "client_id", None))


def video_sheet(video: torch.Tensor) -> torch.Tensor | None:
    """A video latent ``[B, 4, T, h, w]`` -> its preview sheet ``[1, 3, 1, H, W]`` in [-1, 1], announced to the canvas
    (None when no preview can be made). The core previewer's latent -> RGB step (``VideoLatentFormat``) calls it."""
    shown = _frames_rgb(video)
    if shown is None:
        return None
    frames, source = shown
    sheet = frames_sheet(frames.transpose(0, 1)[None])
    count = frames.shape[0]
    columns = sheet.shape[-1] // frames.shape[-1]
    _announce({"frames": count, "columns": columns, "rows": math.ceil(count / columns), "fps": PREVIEW_FPS,
               "source": source})
    return sheet


def preview(state: torch.Tensor) -> tuple[str, Image.Image, int] | None:
    """The preview of a sampler state in the engine's layout (all frames on one sheet), or None when previews are
    off or no MoVQ has been loaded yet."""
    if not can_preview():
        return None
    import latent_preview

    sheet = video_sheet(engine_frames(state))
    if sheet is None:
        return None
    pixels = ((sheet[0, :, 0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return "JPEG", Image.fromarray(np.ascontiguousarray(pixels)), latent_preview.MAX_PREVIEW_RESOLUTION

"""Live previews of FusionFrames videos on the canvas while they sample (written against ComfyUI 0.3.75: the preview
method of ``comfy.cli_args``, the ``("JPEG", image, size)`` tuples of ``latent_preview``, the progress bar's preview
hook).

Colours come from a latent -> RGB map fitted to the loaded image MoVQ (``models.movq.preview``), cached next to its
weights as ``<file>.preview.json`` (or only in memory where that folder is read-only). Every frame is shown: the
preview is a sheet of all frames of the video being sampled. The pack's sampler nodes and the core samplers on our
MODEL (through ``VideoLatentFormat``) use the same map; the preview method "none" switches both off.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...fusionframes.models.movq.preview import LatentColours, engine_frames, fit_latent_colours, frames_sheet

__all__ = ["frames_sheet", "latent_colours", "preview", "remember"]

CACHE_SUFFIX = ".preview.json"
_colours: LatentColours | None = None


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


def latent_colours() -> LatentColours | None:
    return _colours


def previews_enabled() -> bool:
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def preview(state: torch.Tensor) -> tuple[str, Image.Image, int] | None:
    """The preview of a sampler state in the engine's layout (all frames on one sheet), or None when previews are
    off or no MoVQ has been loaded yet."""
    colours = latent_colours()
    if colours is None or not previews_enabled():
        return None
    import latent_preview

    sheet = frames_sheet(engine_frames(state.detach().float().cpu()))
    latents = sheet[:, :, 0] if sheet.dim() == 5 else sheet
    rgb = colours.apply(latents[:1])[0]
    pixels = ((rgb + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return "JPEG", Image.fromarray(np.ascontiguousarray(pixels)), latent_preview.MAX_PREVIEW_RESOLUTION

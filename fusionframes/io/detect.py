"""What a checkpoint holds, told from its state-dict keys alone: release and model kind (``detect``), a keyframe
model's temporal variant (``detect_variant``), where a file keeps a text projection (``projection_prefix``).

Only key names are read here, never tensor values, and nothing is imported from the models, so the loaders
(``io.checkpoints``), the Temporal Block Selector (``models.temporal.selection``), the text stack and the nodes all
ask this one module.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds."""

    path: Path
    release: str
    kind: str
    weights: dict[str, torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)


def unet_kind(keys: Collection[str]) -> tuple[str, str] | None:
    """(release, "keyframe" | "interpolation") of a video U-Net's keys; None for a U-Net without temporal layers."""
    if "perturbation_to_time_embed.1.weight" in keys:
        nested = any(".temporal_projection_new." in k for k in keys)
        return ("1.1" if nested else "1.0"), "interpolation"
    if "to_temporal_embed.1.weight" in keys:
        return ("1.1" if "image_in_layer.weight" in keys else "1.0"), "keyframe"
    return None


def movq_kind(keys: Collection[str]) -> tuple[str, str] | None:
    """(release, "movq" | "video_movq") of a MoVQ's keys (the temporal decoder is 1.1's); None for other keys."""
    if "encoder.conv_in.weight" not in keys or "decoder.conv_in.weight" not in keys:
        return None
    temporal = any(k.startswith("decoder.") and ".temporal_" in k for k in keys)
    return ("1.1", "video_movq") if temporal else ("1.0", "movq")


def detect(content: Mapping[str, Any], path: Path) -> CheckpointInfo:
    """Tell release and model kind of a checkpoint's content (as ``files.read_checkpoint`` gives it)."""
    if "projection_base" in content:
        weights = {f"{group}.{k}": v for group in ("projection_base", "projection_interpolation")
                   for k, v in content.get(group, {}).items()}
        return CheckpointInfo(path, "1.1", "text_projections", weights)
    if isinstance(content.get("unet"), Mapping):
        weights = dict(content["unet"])
        found = unet_kind(set(weights))
        if found is None:
            raise CheckpointError(
                f"{path}: holds a U-Net without temporal layers (a Kandinsky 3 text-to-image model?); "
                "expected a Kandinsky Video keyframe or interpolation checkpoint."
            )
        extras = {k: v for k, v in content.items() if k != "unet"}
        if "null_embedding" not in extras:
            raise CheckpointError(f"{path}: the U-Net checkpoint has no 'null_embedding'; the file is incomplete.")
        return CheckpointInfo(path, found[0], found[1], weights, extras)
    keys = set(content)
    found = movq_kind(keys)
    if found is not None:
        return CheckpointInfo(path, found[0], found[1], dict(content))
    raise CheckpointError(
        f"{path}: not a Kandinsky Video checkpoint (no U-Net under 'unet', no MoVQ encoder/decoder keys, no T5 "
        f"projections). First keys: {', '.join(sorted(keys)[:5])}."
    )


def projections_release(info: CheckpointInfo) -> str | None:
    """The release whose text projections a checkpoint holds: 1.1's ``t5_projections.pt``, or 1.0's keyframe file
    (``kandinsky_video.pt`` keeps them under ``projections``); None for any other file."""
    if info.kind == "text_projections":
        return info.release
    if info.kind == "keyframe" and info.release == "1.0" and "projections" in info.extras:
        return "1.0"
    return None


#: the keys of one text projection (``Linear`` + ``LayerNorm``) in the official files
PROJECTION_KEYS = ("0.weight", "1.weight", "1.bias")


def projection_prefix(keys: Collection[str], prefixes: Sequence[str]) -> str | None:
    """The first of ``prefixes`` under which the flat ``keys`` hold a whole text projection, or None."""
    for prefix in prefixes:
        if all(f"{prefix}{k}" in keys for k in PROJECTION_KEYS):
            return prefix
    return None


#: key patterns that tell the temporal variants apart, most specific first (the 3D-attention and 3D-conv layouts
#: also hold ``temporal_resnet_blocks`` keys); layouts in ``docs/temporal_variants.md``
_VARIANT_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.temporal_layer\."), "Conv1dAttn1dLayers"),
    (re.compile(r"temporal_attention_block\.attention_window$"), "Conv1dAttn3dBlocks"),
    (re.compile(r"\.down_projection\.weight$"), "Conv3dAttn1dBlocks"),
    (re.compile(r"\.temporal_resnet_blocks\."), "Conv1dAttn1dBlocks"),
)


def detect_variant(keys: Iterable[str]) -> str | None:
    """The temporal variant (a ``models.temporal.selection.VARIANTS`` name) whose layers a keyframe model's state-dict
    keys hold, or None when they hold none."""
    keys = list(keys)
    for pattern, variant in _VARIANT_MARKERS:
        if any(pattern.search(key) for key in keys):
            return variant
    return None

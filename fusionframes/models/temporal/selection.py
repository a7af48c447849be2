"""The Temporal Block Selector's engine: which of the paper's four temporal variants a keyframe model holds, fresh
blocks of another variant over the same spatial weights, and how strongly (and where) the temporal layers act.

A checkpoint's variant is told from its state-dict keys alone (``io.detect.detect_variant``); layouts in
``docs/temporal_variants.md``. Only ``Conv1dAttn1dBlocks`` has released weights: another variant is either loaded
from a checkpoint that holds it (e.g. one written by ``fusionframes.tools.training``, or a trained sibling in
``variants/<variant>/`` beside the checkpoint, as the toy models have) or started fresh for training.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from ...errors import CheckpointError, InputError
from ...io.detect import detect_variant
from ..unet.keyframe import KeyframeUNet10, KeyframeUNet11, TemporalStrength
from .designs import (
    Conv1dAttn1dBlocks,
    Conv1dAttn1dLayers,
    Conv1dAttn3dBlocks,
    Conv3dAttn1dBlocks,
    TemporalDesign,
)
from .layers import TemporalLayer

AUTO = "auto"
DESIGNS: dict[str, type[TemporalDesign]] = {
    "Conv1dAttn1dBlocks": Conv1dAttn1dBlocks,
    "Conv1dAttn3dBlocks": Conv1dAttn3dBlocks,
    "Conv3dAttn1dBlocks": Conv3dAttn1dBlocks,
    "Conv1dAttn1dLayers": Conv1dAttn1dLayers,
}
VARIANTS = tuple(DESIGNS)
#: what the selector offers: the four variants and "auto" (what the checkpoint holds)
CHOICES = (AUTO, *VARIANTS)
STRENGTH_RANGE = (0.0, 2.0)

KeyframeUNet = KeyframeUNet10 | KeyframeUNet11


def trained_variant_name(checkpoint: str, variant: str) -> str:
    """Where the sibling of keyframe ``checkpoint`` trained with ``variant`` blocks lives: ``<its folder>/variants/
    <variant>/<its file name>`` (a path, or a model-folder name with "/")."""
    path = PurePosixPath(checkpoint)
    return str(path.parent / "variants" / variant / path.name)


def check_variant(variant: str) -> str:
    if variant not in CHOICES:
        raise InputError(f"unknown temporal variant {variant!r}; choose one of: {', '.join(CHOICES)}.")
    return variant


def make_design(variant: str, release: str) -> TemporalDesign:
    """The keyframe design of ``variant`` for ``release`` (the releases differ in the attention norms)."""
    if check_variant(variant) == AUTO:
        raise InputError("'auto' names no design: resolve it from a model or checkpoint first.")
    return DESIGNS[variant](release)


def design_for_keys(release: str, keys: Iterable[str]) -> TemporalDesign | None:
    """The design that builds a keyframe checkpoint with these keys (None: no known temporal layout)."""
    variant = detect_variant(keys)
    return None if variant is None else make_design(variant, release)


def _check_keyframe(model: nn.Module) -> KeyframeUNet:
    if not isinstance(model, (KeyframeUNet10, KeyframeUNet11)):
        raise InputError(f"the Temporal Block Selector works on keyframe models, not on a {type(model).__name__}.")
    return model


def variant_of(model: nn.Module) -> str:
    """The variant a loaded keyframe model holds, told from its state-dict keys as for a checkpoint."""
    variant = detect_variant(_check_keyframe(model).state_dict().keys())
    if variant is None:
        raise CheckpointError("this keyframe model holds no temporal blocks of any known variant.")
    return variant


def temporal_layers(model: nn.Module) -> list[tuple[str, TemporalLayer]]:
    """Every temporal block or layer of a keyframe model, with its module name."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, TemporalLayer)]


def _is_temporal(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def fresh_variant(model: nn.Module, variant: str, device: torch.device | str | None = None) -> KeyframeUNet:
    """A keyframe model of ``variant`` with ``model``'s spatial weights (copied) and fresh temporal blocks whose
    outputs are zero, so it computes what the image U-Net computes until it is trained.

    Built on ``meta`` and materialised on ``device`` (default: the model's) in the model's dtype, so the spatial
    weights exist once more, never in float32 first.
    """
    model = _check_keyframe(model)
    with torch.device("meta"):
        fresh = type(model)(model.config, design=make_design(variant, model.release))
    fresh = fresh.to(dtype=model.dtype).to_empty(device=device or model.device)
    old_prefixes = tuple(f"{name}." for name, _ in temporal_layers(model))
    new_prefixes = tuple(f"{name}." for name, _ in temporal_layers(fresh))
    spatial = {k: v for k, v in model.state_dict().items() if not _is_temporal(k, old_prefixes)}
    missing, unexpected = fresh.load_state_dict(spatial, strict=False)
    untouched = [k for k in missing if not _is_temporal(k, new_prefixes)]
    if unexpected or untouched:
        raise CheckpointError(f"cannot move the spatial weights into a {variant} model: "
                              f"unmatched keys {(unexpected + untouched)[:5]}.")
    for _, layer in temporal_layers(fresh):
        layer.reset_parameters()
    null = getattr(model, "null_embedding", None)
    if null is not None:
        fresh.register_buffer("null_embedding", null.to(fresh.device), persistent=False)
    return fresh.train(model.training).requires_grad_(False)


def resolve_variant(
    model: nn.Module, variant: str = AUTO, *, fresh: bool = False, device: torch.device | str | None = None
) -> KeyframeUNet:
    """``model`` itself when it holds ``variant`` ("auto": whatever it holds); a fresh model of ``variant`` on
    ``device`` when ``fresh`` (spatial weights copied, new zero-output temporal blocks, e.g. for training);
    otherwise an error that says the checkpoint lacks the variant's weights."""
    model = _check_keyframe(model)
    check_variant(variant)
    held = variant_of(model)
    wanted = held if variant == AUTO else variant
    if fresh:
        return fresh_variant(model, wanted, device)
    if wanted != held:
        raise CheckpointError(
            f"the checkpoint holds {held} temporal blocks, not {wanted}: no trained {wanted} weights exist in it. "
            f"Choose 'auto' (or {held}), load a checkpoint trained with {wanted} blocks (or put one beside this one "
            f"as {trained_variant_name('<folder>/<file>', wanted)}), or start fresh (untrained) {wanted} blocks for "
            "training."
        )
    return model


def trained_sibling(checkpoint: str | Path, model: nn.Module, variant: str) -> Path | None:
    """The file to load in place of keyframe ``checkpoint`` for ``variant``: its trained sibling (see
    ``trained_variant_name``) when ``model``, loaded from it, holds another variant and the sibling exists."""
    if variant == AUTO or variant_of(model) == variant:
        return None
    sibling = Path(trained_variant_name(Path(checkpoint).as_posix(), variant))
    return sibling if sibling.is_file() else None


def check_strength(value: float, what: str) -> float:
    low, high = STRENGTH_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{what} must be a number in [{low:g}, {high:g}], got {value!r}.")
    if not low <= value <= high:
        raise InputError(f"{what} must be in [{low:g}, {high:g}] (0 off, 1 as trained), got {value:g}.")
    return float(value)


def _level_numbers(levels: str | Iterable[int]) -> list[int]:
    if isinstance(levels, str):
        parts = [part for part in re.split(r"[,\s]+", levels.strip()) if part]
        numbers = []
        for part in parts:
            if not re.fullmatch(r"[+-]?\d+", part):
                raise InputError(f"levels: {part!r} is not a level number; write 'all', 'none' or numbers such as "
                                 "'1,2,3'.")
            numbers.append(int(part))
        return numbers
    numbers = list(levels)
    if any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
        raise InputError(f"levels must be whole numbers, got {numbers!r}.")
    return numbers


def parse_levels(levels: str | Iterable[int] | None, num_levels: int) -> frozenset[int] | None:
    """U-Net levels for the temporal layers: None / "all" / "" = every level (returned as None), "none" = no level,
    or level numbers ("1,2,3" or [1, 2, 3]); 0 is the full-resolution level, ``num_levels - 1`` the deepest."""
    if levels is None or (isinstance(levels, str) and levels.strip().lower() in ("", AUTO, "all")):
        return None
    if isinstance(levels, str) and levels.strip().lower() == "none":
        return frozenset()
    numbers = _level_numbers(levels)
    wrong = sorted({n for n in numbers if not 0 <= n < num_levels})
    if wrong:
        raise InputError(f"level {', '.join(map(str, wrong))} does not exist: this model has levels 0-{num_levels - 1} "
                         "(0 = full resolution).")
    chosen = frozenset(numbers)
    return None if chosen == frozenset(range(num_levels)) else chosen


def temporal_strength(
    model: nn.Module,
    conv_strength: float = 1.0,
    attention_strength: float = 1.0,
    levels: str | Iterable[int] | None = None,
) -> TemporalStrength:
    """Checked selector settings for ``model``: strengths in [0, 2], levels the model has."""
    model = _check_keyframe(model)
    return TemporalStrength(
        check_strength(conv_strength, "conv strength"),
        check_strength(attention_strength, "attention strength"),
        parse_levels(levels, len(model.config.dim_mult)),
    )


def with_strength(model: KeyframeUNet, strength: TemporalStrength) -> KeyframeUNet:
    """A view of ``model`` sharing every weight, with its own strengths (the input model is left as it was)."""
    view = copy.copy(model)
    view.strength = strength
    return view


def select_temporal_blocks(
    model: nn.Module,
    variant: str = AUTO,
    *,
    fresh: bool = False,
    conv_strength: float = 1.0,
    attention_strength: float = 1.0,
    levels: str | Iterable[int] | None = None,
) -> KeyframeUNet:
    """The Temporal Block Selector: ``model`` with the chosen variant (see ``resolve_variant``), strengths per kind
    of temporal layer (0 off, 1 as trained, up to 2) and the U-Net levels they act on (see ``parse_levels``).

    Settings are checked before anything is built. Without ``fresh`` the result shares its weights with ``model``.
    """
    check_variant(variant)
    strength = temporal_strength(model, conv_strength, attention_strength, levels)
    return with_strength(resolve_variant(model, variant, fresh=fresh), strength)


def temporal_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """What training the temporal layers updates: every parameter of the temporal blocks/layers and the temporal
    embeddings (frame positions; 1.1 noise augmentation and motion score); the spatial U-Net stays frozen."""
    prefixes = tuple(f"{name}." for name, _ in temporal_layers(model))
    embeddings = ("to_temporal_embed.", "temporal_noise_aug_time_encoding.", "temporal_motion_score_encoding.")
    return [(name, p) for name, p in model.named_parameters() if name.startswith(prefixes + embeddings)]

"""Official checkpoint files: loading them into models, conversion to safetensors.

Files are read by ``files`` (``.pt`` only with ``torch.load(weights_only=True)``: no arbitrary objects are ever
unpickled) and told apart by ``detect`` (release and kind from the keys alone). ``.safetensors`` files written by
``convert`` hold the same tensors with the nesting flattened into key prefixes.
Models are built on the ``meta`` device and the checked tensors assigned into them, so a failed load leaves
nothing half-built and a 16 GB checkpoint is not copied twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError
from ..models.configs import MODEL_KINDS, MoVQConfig, UNetConfig, official_config, release_config_for
from ..models.movq.model import MoVQ
from ..models.temporal.designs import TemporalDesign
from ..models.temporal.selection import design_for_keys
from ..models.unet.interpolation import InterpolationUNet10, InterpolationUNet11
from ..models.unet.keyframe import KeyframeUNet10, KeyframeUNet11
from .detect import CheckpointInfo, detect
from .files import flatten, read_checkpoint, read_safetensors

MODEL_CLASSES: dict[tuple[str, str], type[nn.Module]] = {
    ("1.0", "keyframe"): KeyframeUNet10,
    ("1.1", "keyframe"): KeyframeUNet11,
    ("1.0", "interpolation"): InterpolationUNet10,
    ("1.1", "interpolation"): InterpolationUNet11,
    ("1.0", "movq"): MoVQ,
    ("1.1", "movq"): MoVQ,
    ("1.1", "video_movq"): MoVQ,
}

KIND_LABELS = {
    "keyframe": "a keyframe U-Net (kandinsky_video.pt / t2v.pt)",
    "interpolation": "an interpolation U-Net (kandinsky_video_interpolation.pt / interpolation.pt)",
    "movq": "an image MoVQ (movq.pt)",
    "video_movq": "a temporal MoVQ (video_movq.pt)",
    "text_projections": "the T5 projections (t5_projections.pt)",
}


def inspect(path: str | Path) -> CheckpointInfo:
    path = Path(path)
    return detect(read_checkpoint(path), path)


def build_model(
    release: str, kind: str, config: UNetConfig | MoVQConfig, design: TemporalDesign | None = None
) -> nn.Module:
    """The model class for (release, kind) built from ``config`` on the current default device; ``design``: a
    keyframe model's temporal variant (default: the released one)."""
    try:
        cls = MODEL_CLASSES[(release, kind)]
    except KeyError:
        raise CheckpointError(f"release {release} has no {kind} model.") from None
    return cls(config) if design is None else cls(config, design=design)


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise with the first missing / unexpected / mis-shaped keys unless ``weights`` fit ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong:
        parts.append(f"shape mismatches (file vs config): {_describe(wrong, 3)}")
    raise CheckpointError(
        f"{path}: the weights do not match the model configuration; " + "; ".join(parts) + ". "
        "If this is a non-standard size, pass the configs.json that describes it."
    )


@dataclass
class LoadedModel:
    model: nn.Module
    release: str
    kind: str
    config: UNetConfig | MoVQConfig
    extras: dict[str, Any]
    path: Path


def load_model(
    path: str | Path,
    *,
    expected_kind: str | None = None,
    config_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load a keyframe/interpolation U-Net or a MoVQ from an official file (or its safetensors conversion).

    ``expected_kind`` (one of ``MODEL_KINDS``) turns a file of another kind into a clear error. The U-Net's
    ``null_embedding`` becomes a non-persistent buffer of the model. ``dtype`` None keeps float32.
    """
    info = inspect(path)
    if expected_kind is not None and info.kind != expected_kind:
        raise CheckpointError(
            f"{info.path.name} is {KIND_LABELS[info.kind]}, but {KIND_LABELS[expected_kind]} was expected here: "
            "choose the right file."
        )
    if info.kind not in MODEL_KINDS:
        raise CheckpointError(f"{info.path.name} is {KIND_LABELS[info.kind]}, not a model this loader builds.")
    config = release_config_for(info.path, info.release, config_path).for_kind(info.kind)
    design = design_for_keys(info.release, info.weights) if info.kind == "keyframe" else None
    with torch.device("meta"):
        model = build_model(info.release, info.kind, config, design)
    check_state_dict(model, info.weights, info.path)
    target = dtype or torch.float32
    weights = {k: v.to(device=device, dtype=target) if v.is_floating_point() else v.to(device)
               for k, v in info.weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    null = info.extras.get("null_embedding")
    if null is not None:
        model.register_buffer("null_embedding", null.to(device=device, dtype=torch.float32), persistent=False)
    return LoadedModel(model.eval().requires_grad_(False), info.release, info.kind, config, info.extras, info.path)


def convert(source: str | Path, destination: str | Path) -> int:
    """Write any official checkpoint as safetensors and verify the copy tensor by tensor; returns the count."""
    source, destination = Path(source), Path(destination)
    content = read_checkpoint(source)
    info = detect(content, source)
    flat = flatten(content)
    metadata = {"format": "pt", "fusionframes_release": info.release, "fusionframes_kind": info.kind}
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    save_file(flat, str(partial), metadata=metadata)
    verify_copy(flat, partial)
    partial.replace(destination)
    return len(flat)


def verify_copy(expected: Mapping[str, torch.Tensor], path: Path) -> None:
    copy = read_safetensors(path)
    if set(copy) != set(expected):
        raise CheckpointError(f"{path}: the converted file's keys differ from the source's.")
    for key, tensor in expected.items():
        other = copy[key]
        if other.dtype != tensor.dtype or other.shape != tensor.shape or not torch.equal(other, tensor):
            raise CheckpointError(f"{path}: tensor {key!r} differs from the source after conversion.")


def official_manifest(release: str, kind: str) -> list[str]:
    """Key/shape lines of a model built with the official configuration (on ``meta``: no memory needed)."""
    from .manifest import manifest_lines

    config = official_config(release).for_kind(kind)
    with torch.device("meta"):
        model = build_model(release, kind, config)
    return manifest_lines(model)


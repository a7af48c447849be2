"""Official checkpoint files: safe reading, detection of release and model kind, loading, conversion.

``.pt`` files are read only with ``torch.load(weights_only=True)`` (no arbitrary objects are ever unpickled);
``.safetensors`` files written by ``convert`` hold the same tensors with the nesting flattened into key prefixes.
Models are built on the ``meta`` device and the checked tensors assigned into them, so a failed load leaves
nothing half-built and a 16 GB checkpoint is not copied twice.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..models.configs import MODEL_KINDS, MoVQConfig, ReleaseConfig, UNetConfig, load_release_config, official_config
from ..models.movq.model import MoVQ
from ..models.temporal.designs import TemporalDesign
from ..models.temporal.selection import design_for_keys
from ..models.unet.interpolation import InterpolationUNet10, InterpolationUNet11
from ..models.unet.keyframe import KeyframeUNet10, KeyframeUNet11

#: nested groups of the official files, flattened to ``GROUP.key`` in safetensors
NESTED_GROUPS = ("unet", "projections", "projection_base", "projection_interpolation")

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


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds."""

    path: Path
    release: str
    kind: str
    weights: dict[str, torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)


def _read_pt(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        if blocked:
            raise CheckpointError(
                f"{path}: refused to load: the file contains a Python object ({blocked.group(1)}), not only "
                "tensors; loading it could run code. Official Kandinsky Video checkpoints hold only tensors: "
                "download the official file."
            ) from None
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint. The file is probably truncated or corrupted: "
            "download it again."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({str(error).splitlines()[0]}). "
            "The file is probably truncated or corrupted: download it again."
        ) from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot be read as safetensors ({error}). The file is probably truncated or corrupted."
        ) from None
    return unflatten(flat)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint: a dict of tensors and (for the U-Nets) nested dicts, as the .pt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Check the file name and folder.")
    content = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(content).__name__}.")
    return dict(content)


def flatten(content: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Nested checkpoint dict -> flat ``GROUP.key`` tensors (contiguous, as safetensors requires)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in content.items():
        if isinstance(value, Mapping):
            if key not in NESTED_GROUPS:
                raise CheckpointError(f"unexpected nested group {key!r} in checkpoint")
            for inner, tensor in value.items():
                flat[f"{key}.{inner}"] = tensor.contiguous()
        elif isinstance(value, torch.Tensor):
            flat[key] = value.contiguous()
        else:
            raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
    return flat


def unflatten(flat: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for key, tensor in flat.items():
        group, _, rest = key.partition(".")
        if group in NESTED_GROUPS and rest:
            content.setdefault(group, {})[rest] = tensor
        else:
            content[key] = tensor
    return content


def _unet_kind(keys: set[str]) -> tuple[str, str] | None:
    if "perturbation_to_time_embed.1.weight" in keys:
        nested = any(".temporal_projection_new." in k for k in keys)
        return ("1.1" if nested else "1.0"), "interpolation"
    if "to_temporal_embed.1.weight" in keys:
        return ("1.1" if "image_in_layer.weight" in keys else "1.0"), "keyframe"
    return None


def detect(content: Mapping[str, Any], path: Path) -> CheckpointInfo:
    """Tell release and model kind from the keys alone."""
    if "projection_base" in content:
        weights = {f"{group}.{k}": v for group in ("projection_base", "projection_interpolation")
                   for k, v in content.get(group, {}).items()}
        return CheckpointInfo(path, "1.1", "text_projections", weights)
    if isinstance(content.get("unet"), Mapping):
        weights = dict(content["unet"])
        found = _unet_kind(set(weights))
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
    if "encoder.conv_in.weight" in keys and "decoder.conv_in.weight" in keys:
        temporal = any(k.startswith("decoder.") and ".temporal_" in k for k in keys)
        return CheckpointInfo(path, "1.1" if temporal else "1.0", "video_movq" if temporal else "movq",
                              dict(content))
    raise CheckpointError(
        f"{path}: not a Kandinsky Video checkpoint (no U-Net under 'unet', no MoVQ encoder/decoder keys, no T5 "
        f"projections). First keys: {', '.join(sorted(keys)[:5])}."
    )


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


def resolve_config(release: str, config_path: str | Path | None, checkpoint_path: Path) -> ReleaseConfig:
    """configs.json given, or found beside the checkpoint, else the official defaults."""
    if config_path is None:
        beside = checkpoint_path.parent / "configs.json"
        config_path = beside if beside.is_file() else None
    return load_release_config(config_path, release) if config_path else official_config(release)


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
    config = resolve_config(info.release, config_path, info.path).for_kind(info.kind)
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
    copy = load_file(str(path))
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


"""The benchmark's models: configurations per size, built with random weights in each mode's dtypes.

The models are built on ``meta``, then allocated once on the target device (``to_empty``) and filled by
:func:`fusionframes.tools.random_weights.randomize_parameters`. A forward pass costs the same whatever the weights,
so the official sizes can be timed without their checkpoints, and the memory estimator builds the same models as
shapes only. :func:`mode_dtypes` is where the dtypes of ``reference`` and ``fast`` are defined.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...io.checkpoints import build_model
from ...models.configs import (
    MoVQConfig,
    ReleaseConfig,
    UNetConfig,
    movq_config_from_dict,
    official_config,
    unet_config_from_dict,
)
from ...models.text.projections import TextProjection
from ...models.text.t5_files import FLAN_UL2_CONFIG
from ...runtime.layout import use_channels_last
from ..random_weights import randomize_parameters
from .settings import SIZES

#: synthetic T5 encoders for the small sizes (the projection maps their width to the U-Nets' context width)
SMALL_T5 = {
    "small": {"vocab_size": 256, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
    "mid": {"vocab_size": 1024, "d_model": 256, "d_kv": 32, "d_ff": 512, "num_layers": 4, "num_heads": 8},
}

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def dtype_name(dtype: torch.dtype) -> str:
    """``fp32`` / ``fp16`` / ``bf16`` (else torch's own name), as the reports print dtypes."""
    return _DTYPE_NAMES.get(dtype, str(dtype))


def _small_unet(base: UNetConfig) -> UNetConfig:
    return replace(base, model_channels=64, init_channels=32, time_embed_dim=256, groups=16, head_dim=32,
                   dim_mult=(1, 2, 4), num_blocks=(2, 2, 2), add_cross_attention=(False, True, True),
                   add_self_attention=(False, True, True))


def _small_movq(base: MoVQConfig) -> MoVQConfig:
    return replace(base, ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=1)


def release_config(release: str, size: str) -> ReleaseConfig:
    """The model configurations the benchmark builds for (release, size)."""
    if size == "official":
        return official_config(release)
    if size == "small":
        from ..demo_models import demo_configs

        sections = demo_configs(release)
        config = official_config(release)
        updates: dict[str, Any] = {
            "keyframe": unet_config_from_dict(sections["t2v"]["configs"], "demo t2v"),
            "interpolation": unet_config_from_dict(sections["interpolation"]["configs"], "demo interpolation"),
            "movq": movq_config_from_dict(sections["image_movq"]["configs"], "demo image_movq"),
        }
        if "video_movq" in sections:
            updates["video_movq"] = movq_config_from_dict(sections["video_movq"]["configs"], "demo video_movq")
        return replace(config, **updates)
    if size == "mid":
        config = official_config(release)
        context = 4096 if release == "1.0" else 512
        return replace(
            config,
            keyframe=replace(_small_unet(config.keyframe), context_dim=context),
            interpolation=replace(_small_unet(config.interpolation), context_dim=context),
            movq=_small_movq(config.movq),
            video_movq=_small_movq(config.video_movq) if config.video_movq is not None else None,
        )
    raise InputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")


def t5_config(size: str, attention: str = "eager"):
    from transformers import T5Config

    if size == "official":
        values = {k: v for k, v in FLAN_UL2_CONFIG.items() if k != "model_type"}
    else:
        values = {**SMALL_T5[size], "feed_forward_proj": "gated-silu", "pad_token_id": 0, "eos_token_id": 1,
                  "decoder_start_token_id": 0}
    config = T5Config(**values, is_encoder_decoder=False, use_cache=False)
    config._attn_implementation = attention
    return config


def materialise(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """meta-built model -> ``dtype`` on ``device`` (allocated there once), randomly initialised there, frozen."""
    model = model.to(dtype=dtype)
    if device.type != "meta":
        model = model.to_empty(device=device)
        randomize_parameters(model, seed)
    return model.eval().requires_grad_(False)


@dataclass
class ModelSet:
    """The models of one release in one mode, and the dtypes they were built with."""

    unets: dict[str, nn.Module]
    movqs: dict[str, nn.Module]
    t5: nn.Module | None
    projection: nn.Module | None
    dtypes: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    weight_bytes: dict[str, int] = field(default_factory=dict)

    def all(self) -> dict[str, nn.Module]:
        models = {**self.unets, **self.movqs}
        if self.t5 is not None:
            models["t5"] = self.t5
        return models


def mode_dtypes(release: str, mode: str, device: torch.device, fast_movq_dtype: str = "fp32") -> dict[str, torch.dtype]:
    """Weight dtypes per model group for a mode (everything fp32 off CUDA)."""
    if device.type != "cuda":
        return {"unet": torch.float32, "t5": torch.float32, "movq": torch.float32}
    if mode == "reference":
        return {"unet": torch.float16, "t5": torch.float32 if release == "1.1" else torch.float16,
                "movq": torch.float32 if release == "1.1" else torch.float16}
    movq = torch.bfloat16 if fast_movq_dtype == "bf16" else torch.float32
    return {"unet": torch.bfloat16, "t5": torch.bfloat16, "movq": movq}


def build_models(release: str, size: str, device: torch.device | str, mode: str = "reference", *,
                 with_text: bool = True, fast_movq_dtype: str = "fp32", seed: int = 0,
                 dtypes_for: torch.device | str | None = None) -> ModelSet:
    """Every model of a release at ``size`` on ``device`` (``meta``: shapes only) with random weights.

    ``dtypes_for``: the device whose mode dtypes to use (default ``device``); ``"cuda"`` on ``meta`` builds the
    GPU's fp16/bf16 models as shapes only (the memory estimator does)."""
    device = torch.device(device)
    config = release_config(release, size)
    dtypes = mode_dtypes(release, mode, torch.device(dtypes_for) if dtypes_for is not None else device,
                         fast_movq_dtype)
    unets: dict[str, nn.Module] = {}
    movqs: dict[str, nn.Module] = {}
    number = 0
    for kind in ("keyframe", "interpolation", "movq", "video_movq"):
        kind_config = getattr(config, kind)
        if kind_config is None:
            continue
        with torch.device("meta"):
            model = build_model(release, kind, kind_config)
        group = "unet" if kind in ("keyframe", "interpolation") else "movq"
        model = materialise(model, device, dtypes[group], seed + number)
        number += 1
        if group == "unet":
            null = torch.randn(kind_config.context_dim, device="cpu").to(device)
            model.register_buffer("null_embedding", null, persistent=False)
            unets[kind] = model
        else:
            movqs[kind] = model
    t5 = projection = None
    if with_text:
        from transformers import T5EncoderModel

        attention = "eager" if mode == "reference" else "sdpa"
        with torch.device("meta"):
            t5 = T5EncoderModel(t5_config(size, attention))
        t5 = materialise(t5, device, dtypes["t5"], seed + number)
        t5.set_input_embeddings(t5.shared)
        with torch.device("meta"):
            projection = TextProjection(t5.config.d_model, config.keyframe.context_dim)
        projection = materialise(projection, device, torch.float32, seed + number + 1)
    if mode == "fast":
        for model in (*unets.values(), *movqs.values()):
            use_channels_last(model)
    models = ModelSet(unets, movqs, t5, projection)
    for name, model in models.all().items():
        params = list(model.parameters())
        models.parameters[name] = sum(p.numel() for p in params)
        models.weight_bytes[name] = sum(p.numel() * p.element_size() for p in params)
        models.dtypes[name] = dtype_name(params[0].dtype)
    return models

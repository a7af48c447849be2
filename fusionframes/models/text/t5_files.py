"""The FLAN-UL2 T5 encoder from its files: a Hugging Face folder (possibly sharded) or one weights file, its config
(``config.json`` beside it, given, or the built-in ``FLAN_UL2_CONFIG``), and the weights' storage: 1.0 rounds every
weight through fp16 [OB-5], ``fp8_weights`` keeps the linear weights in float8. ``load_t5_encoder`` builds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import CheckpointError
from ...io.files import open_safetensors, read_checkpoint
from ..fp8_weights import store_linear_weights_in_fp8

#: The encoder configuration of google/flan-ul2 (its public config.json). Used for a single weights file that comes
#: without a config only when every tensor shape matches it.
FLAN_UL2_CONFIG: dict[str, Any] = {
    "model_type": "t5",
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 256,
    "d_ff": 16384,
    "num_layers": 32,
    "num_decoder_layers": 32,
    "num_heads": 16,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-silu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "tie_word_embeddings": False,
}

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _read_t5_config(source: Any) -> Any:
    from transformers import T5Config

    if isinstance(source, T5Config):
        return source
    if isinstance(source, Mapping):
        values = dict(source)
        if values.get("model_type", "t5") != "t5":
            raise CheckpointError(f"text encoder config has model_type {values.get('model_type')!r}; a T5 config "
                                  "(model_type 't5', e.g. google/flan-ul2's config.json) is needed.")
        values.pop("model_type", None)
        return T5Config(**values)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"text encoder config not found: {path}. Give the config.json of the T5 model "
                              "(google/flan-ul2's) or the directory holding it.")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path} as a JSON config: {error}") from None
    if not isinstance(values, dict) or values.get("model_type") != "t5":
        raise CheckpointError(f"{path} is not a T5 config (model_type {values.get('model_type')!r} instead of 't5')."
                              if isinstance(values, dict) else f"{path} is not a T5 config (not a JSON object).")
    return _read_t5_config(values)


class _LazyTensor:
    """One tensor of a weights file: its shape without reading it, the tensor when asked."""

    def __init__(self, shape: tuple[int, ...], load: Any) -> None:
        self.shape = shape
        self.load = load


def _iter_weight_file(path: Path) -> Iterator[tuple[str, _LazyTensor]]:
    """The tensors of a safetensors or torch file, unread until ``load()`` is called."""
    if path.suffix == ".safetensors":
        handle = open_safetensors(path)
        keys = handle.keys()  # a safe_open handle is not iterable
        for key in keys:
            shape = tuple(handle.get_slice(key).get_shape())
            yield key, _LazyTensor(shape, lambda k=key: handle.get_tensor(k))
        return
    data = read_checkpoint(path)
    if isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            yield str(key), _LazyTensor(tuple(value.shape), lambda v=value: v)


def _weight_files(path: Path) -> list[Path]:
    """The weight files of a Hugging Face directory or the one file given."""
    if path.is_file():
        if path.name.endswith(".index.json"):
            return _sharded_files(path)
        if path.suffix not in _WEIGHT_SUFFIXES:
            raise CheckpointError(f"{path} is not a weights file (expected .safetensors, .bin or .pt).")
        return [path]
    for name in _HF_WEIGHT_FILES:
        if (path / name).is_file():
            return _weight_files(path / name)
    raise CheckpointError(f"no T5 weights in {path}: expected {', '.join(_HF_WEIGHT_FILES)}. Download google/flan-ul2 "
                          "(the encoder weights are enough) or point at a single .safetensors file with its config.")


def _sharded_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"cannot read the shard index {index}: {error}") from None
    needed = sorted({name for key, name in weight_map.items() if _encoder_key(key) is not None})
    missing = [name for name in needed if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shard(s) {', '.join(missing)} that are not in {index.parent}; "
                              "download all the shards holding encoder weights.")
    return [index.parent / name for name in needed]


def _encoder_key(key: str) -> str | None:
    """The ``T5EncoderModel`` key of a checkpoint key; None for decoder / LM-head keys. Unknown keys pass through."""
    if key.startswith(("decoder.", "lm_head.")):
        return None
    if key.startswith(("block.", "final_layer_norm.", "embed_tokens.")):  # a bare T5Stack (``t5.encoder``)
        return "encoder." + key
    return key


def _looks_like_flan_ul2(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    layers = {k.split(".")[2] for k in shapes if k.startswith("encoder.block.")}
    embed = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight")
    wi = shapes.get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    return len(layers) == FLAN_UL2_CONFIG["num_layers"] and embed == (32128, 4096) and wi == (16384, 4096)


def load_t5_encoder(
    path: str | Path,
    *,
    config: str | Path | Mapping[str, Any] | Any | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    fp16_weights: bool = False,
    fp8_weights: bool = False,
) -> nn.Module:
    """Build a transformers ``T5EncoderModel`` from a checkpoint, in ``dtype`` on ``device``, frozen, in eval mode.

    ``path`` is a Hugging Face directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, possibly
    sharded with an ``*.index.json``) or a single weights file (``.safetensors``, ``.bin``, ``.pt``) holding a T5
    encoder state dict (``T5EncoderModel`` keys, a bare ``T5Stack``'s, or a full ``T5Model`` /
    ``T5ForConditionalGeneration`` checkpoint: decoder and LM-head weights are skipped unread). The config is
    ``config`` (a config.json, its directory, a dict or a ``T5Config``), else the ``config.json`` beside the weights,
    else the built-in FLAN-UL2 config when the tensor shapes are FLAN-UL2's.

    ``fp16_weights`` rounds every weight through float16 before casting it to ``dtype``: 1.0's ``.half()`` [OB-5],
    which fixes the weights even when the computation runs in fp32. ``fp8_weights`` then stores every linear weight in
    float8 (``fp8_weights.Float8Linear``; ``dtype`` stays the compute dtype), halving bf16's memory. Attention is the
    eager implementation, as in the transformers release the official code ran on.
    """
    from transformers import T5EncoderModel

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"text encoder not found: {path} does not exist. Give the google/flan-ul2 directory "
                              "(Hugging Face layout) or a single .safetensors file of the T5 encoder.")
    files = _weight_files(path)
    loaders: dict[str, _LazyTensor] = {}
    unknown: list[str] = []
    for file in files:
        for key, loader in _iter_weight_file(file):
            name = _encoder_key(key)
            if name is None:
                continue
            if name == "shared.weight" or name.startswith("encoder."):
                loaders[name] = loader
            else:
                unknown.append(key)
    if not loaders:
        raise CheckpointError(f"{path} holds no T5 encoder weights (no 'encoder.*' or 'shared.weight' keys): "
                              "it is not a T5 checkpoint. Give the google/flan-ul2 weights.")
    if unknown:
        raise CheckpointError(f"{path} has keys a T5 checkpoint does not have ({', '.join(unknown[:3])}"
                              f"{', ...' if len(unknown) > 3 else ''}): it is not a T5 encoder state dict.")
    if "shared.weight" not in loaders and "encoder.embed_tokens.weight" in loaders:
        loaders["shared.weight"] = loaders["encoder.embed_tokens.weight"]
    loaders.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight

    if config is None:
        beside = (path if path.is_dir() else path.parent) / "config.json"
        if beside.is_file():
            config = beside
        else:
            if not _looks_like_flan_ul2({name: lazy.shape for name, lazy in loaders.items()}):
                raise CheckpointError(f"no config for {path}: put the model's config.json beside it or pass its "
                                      "path (its shapes are not FLAN-UL2's, whose config is built in).")
            config = FLAN_UL2_CONFIG
    t5_config = _read_t5_config(config)
    t5_config._attn_implementation = "eager"

    with torch.device("meta"):
        model = T5EncoderModel(t5_config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    missing = sorted(set(expected) - set(loaders))
    extra = sorted(set(loaders) - set(expected))
    if missing or extra:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}" if extra else "",
        ) if part)
        raise CheckpointError(f"the T5 weights in {path} do not match the config ({detail}). Use the config.json "
                              "that belongs to these weights.")
    state: dict[str, torch.Tensor] = {}
    for name, lazy in loaders.items():
        if lazy.shape != expected[name]:
            raise CheckpointError(f"the T5 weights in {path} do not match the config: {name} has shape "
                                  f"{lazy.shape}, the config needs {expected[name]}. Use the config.json that "
                                  "belongs to these weights.")
    for name, lazy in loaders.items():
        tensor = lazy.load()
        if fp16_weights:
            tensor = tensor.to(torch.float16)
        state[name] = tensor.to(device=device, dtype=dtype)
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.set_input_embeddings(model.shared)
    if fp8_weights:
        store_linear_weights_in_fp8(model)
    return model.eval().requires_grad_(False)

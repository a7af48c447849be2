"""The text stack of Kandinsky Video 1.0 and 1.1: T5 tokenisation, the FLAN-UL2 T5 encoder, the text projections.

A prompt becomes a context the U-Nets attend to in four steps, exactly as the official code does it
[OB-51]:

1. **Tokenise** (``PromptTokenizer``): sentencepiece ids with ``</s>`` appended and no BOS, truncated to
   ``max_length`` (``text_encoder.tokens_length`` in ``configs.json``; 128 in both releases), right-padded with the pad
   id; the attention mask is 1 on the real tokens. 1.0's negative prompt reuses the positive prompt's length and mask
   (bug OB-3, reproduced by ``PromptTokenizer.tokenize_negative``).
2. **Encode** with the T5 encoder (``load_t5_encoder``; a Hugging Face ``transformers`` ``T5EncoderModel``). 1.0 casts
   the encoder to fp16 (OB-5: its weights always pass through fp16) and replaces every sample holding inf/NaN by zeros,
   whose mask is then zeroed (``zero_nonfinite``). 1.1 runs it in fp32 (OB-33).
3. **Project** (``TextProjection``: ``Linear(d_model, context_dim, bias=False)`` + ``LayerNorm``) in fp32. 1.1 ships a
   base and an interpolation projection; its pipelines use only the base one (OB-9).
4. **Mask and trim**: projected vectors at masked positions are set to zero, and the context is cut to
   ``max(mask.sum(-1)) + 1`` positions (one zero padding position kept, OB-20).

``TextEncoder`` bundles the four; ``TextEncoder.load`` builds it from files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import CheckpointError, InputError
from ..configs import RELEASES
from ..dtypes import text_dtype
from ..fp8_weights import store_linear_weights_in_fp8
from .condition import TextCondition

PROJECTION_BASE = "base"
PROJECTION_INTERPOLATION = "interpolation"
PROJECTION_NAMES = (PROJECTION_BASE, PROJECTION_INTERPOLATION)

#: Token count the official pipelines of both releases use (``tokens_length``).
OFFICIAL_MAX_LENGTH = 128

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


def _check_release(release: str) -> str:
    if release not in RELEASES:
        raise InputError(f"unknown release {release!r}; expected one of {', '.join(RELEASES)}.")
    return release


# --------------------------------------------------------------------------------------------------------------------
# Tokeniser
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TokenizedPrompts:
    """Token ids and attention masks of a batch of prompts, both ``(B, max_length)`` int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        """Real token count (including ``</s>``) of each prompt."""
        return [int(n) for n in self.attention_mask.sum(-1)]


class PromptTokenizer:
    """The T5 tokeniser the official code used: transformers 4.35's slow sentencepiece ``T5Tokenizer`` (legacy=True).

    With a sentencepiece model (``spiece.model``) the slow tokeniser's rules are reproduced here, independent of the
    installed transformers (whose 5.x ``T5Tokenizer`` is a ``tokenizers`` Unigram model only): special-token strings
    written in the prompt (``</s>``, ``<pad>``, ``<unk>``, ``<extra_id_N>``) are matched first and the text between
    them goes through sentencepiece; ``</s>`` is appended unless the ids already end with it; truncation keeps
    ``max_length - 1`` ids. Without ``spiece.model``, ``tokenizer.json`` is used through ``tokenizers``: it gives the
    same ids for ordinary text and differs only when a prompt spells out special tokens.
    """

    def __init__(
        self,
        *,
        sp_model: Any | None = None,
        fast_tokenizer: Any | None = None,
        extra_ids: int = 100,
        pad_token: str = "<pad>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        source: str = "",
    ) -> None:
        if (sp_model is None) == (fast_tokenizer is None):
            raise ValueError("give exactly one of sp_model and fast_tokenizer")
        self._sp = sp_model
        self._fast = fast_tokenizer
        self.source = source
        self.pad_token, self.eos_token, self.unk_token = pad_token, eos_token, unk_token
        self.pad_token_id = self._require_id(pad_token)
        self.eos_token_id = self._require_id(eos_token)
        self.unk_token_id = self._require_id(unk_token)
        self._specials: dict[str, tuple[int, bool]] = {}  # text -> (id, strips neighbouring whitespace)
        self._pattern: re.Pattern[str] | None = None
        if sp_model is not None:
            size = sp_model.get_piece_size()
            for token in (pad_token, eos_token, unk_token):
                self._specials[token] = (self._require_id(token), False)
            for i in range(extra_ids):  # the slow tokeniser's sentinels, numbered down from the top of the vocab
                self._specials[f"<extra_id_{i}>"] = (size - 1 + extra_ids - i, True)
            alternatives = sorted(self._specials, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(token) for token in alternatives))

    def _require_id(self, token: str) -> int:
        if self._sp is not None:
            index = self._sp.piece_to_id(token)
            found = 0 <= index < self._sp.get_piece_size() and self._sp.id_to_piece(index) == token
        else:
            index = self._fast.token_to_id(token)
            found = index is not None
        if not found:
            raise CheckpointError(f"tokenizer {self.source or ''} has no {token!r} token: it is not a T5 tokenizer. "
                                  "Use the tokenizer files (spiece.model or tokenizer.json) of google/flan-ul2.")
        return int(index)

    @classmethod
    def from_path(cls, path: str | Path) -> PromptTokenizer:
        """Load from a directory (``spiece.model`` preferred, else ``tokenizer.json``) or from one of those files."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"tokenizer not found: {path} does not exist. Give the text encoder directory "
                                  "(google/flan-ul2 layout) or its spiece.model / tokenizer.json file.")
        settings: dict[str, Any] = {}
        if path.is_dir():
            config_file = path / "tokenizer_config.json"
            if config_file.is_file():
                try:
                    settings = json.loads(config_file.read_text())
                except (OSError, ValueError) as error:
                    raise CheckpointError(f"cannot read {config_file}: {error}") from None
            if (path / "spiece.model").is_file():
                path = path / "spiece.model"
            elif (path / "tokenizer.json").is_file():
                path = path / "tokenizer.json"
            else:
                raise CheckpointError(f"no tokenizer in {path}: expected spiece.model (sentencepiece) or "
                                      "tokenizer.json. Copy them from the google/flan-ul2 repository into this "
                                      "directory, or pass the tokenizer location separately.")
        tokens = {name: _token_text(settings.get(name), default) for name, default in
                  (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
        if path.suffix == ".json":
            try:
                from tokenizers import Tokenizer

                fast = Tokenizer.from_file(str(path))
            except Exception as error:  # the library raises plain Exceptions
                raise CheckpointError(f"cannot read {path} as a tokenizers tokenizer.json: {error}") from None
            return cls(fast_tokenizer=fast, source=str(path), **tokens)
        try:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor()
            sp.Load(str(path))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"cannot read {path} as a sentencepiece model: {error}. Give spiece.model of "
                                  "google/flan-ul2 (or a directory holding it).") from None
        extra_ids = settings.get("extra_ids")
        if not isinstance(extra_ids, int):
            listed = [t for t in settings.get("additional_special_tokens") or [] if "<extra_id_" in _token_text(t, "")]
            extra_ids = len(listed) if listed else 100
        return cls(sp_model=sp, extra_ids=extra_ids, source=str(path), **tokens)

    def _text_ids(self, text: str) -> list[int]:
        """Ids of a prompt without ``</s>``, special-token strings in it included."""
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        pieces: list[str] = []
        position = 0
        for match in self._pattern.finditer(text):
            pieces += [text[position:match.start()], match.group()]
            position = match.end()
        pieces.append(text[position:])
        for i in range(1, len(pieces), 2):  # sentinels eat the whitespace around them (slow tokeniser rule)
            if self._specials[pieces[i]][1]:
                pieces[i - 1] = pieces[i - 1].rstrip()
                pieces[i + 1] = pieces[i + 1].lstrip()
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(self._specials[piece][0])
            elif piece:
                ids += self._sp.encode(piece)
        return ids

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of one prompt as ``tokenizer(text, max_length=max_length, truncation=True)['input_ids']``: no padding."""
        if not isinstance(text, str):
            raise InputError(f"a prompt must be a string, got {type(text).__name__}.")
        if max_length < 2:
            raise InputError(f"max_length must be at least 2 (one token and </s>), got {max_length}.")
        ids = self._text_ids(text)[: max_length - 1]
        if not ids or ids[-1] != self.eos_token_id:
            ids.append(self.eos_token_id)
        return ids

    def _pad(self, ids: list[int], length: int, max_length: int) -> tuple[list[int], list[int]]:
        pad = max_length - len(ids)
        return ids + [self.pad_token_id] * pad, [1] * length + [0] * (max_length - length)

    def tokenize(self, prompts: str | Sequence[str], max_length: int = OFFICIAL_MAX_LENGTH) -> TokenizedPrompts:
        """Ids and masks ``(B, max_length)`` of one prompt or a list of them, right-padded as the official processor."""
        prompts = _as_prompt_list(prompts, "prompts")
        rows = [self._pad(ids, len(ids), max_length) for ids in (self.encode(p, max_length) for p in prompts)]
        return _stack(rows)

    def tokenize_negative(
        self, negative_prompts: str | Sequence[str], positive: TokenizedPrompts, max_length: int | None = None
    ) -> TokenizedPrompts:
        """1.0's negative prompt rule (OB-3), row by row against the positive prompts' tokens.

        The negative ids are cut to the positive prompt's token count, the last kept id is forced to ``</s>``, the rest
        is padding; the mask is the positive prompt's (so a shorter negative prompt attends to pad tokens and a longer
        one is truncated). One negative prompt is used for every positive row.
        """
        batch, width = positive.input_ids.shape
        max_length = width if max_length is None else max_length
        if max_length != width:
            raise InputError(f"max_length {max_length} differs from the positive prompts' token length {width}.")
        negatives = _as_prompt_list(negative_prompts, "negative prompts")
        if len(negatives) == 1:
            negatives = negatives * batch
        if len(negatives) != batch:
            raise InputError(f"got {len(negatives)} negative prompts for {batch} prompts; give one, or one per prompt.")
        rows = []
        for negative, length in zip(negatives, positive.lengths):
            ids = self.encode(negative, max_length)[:length]
            ids[-1] = self.eos_token_id
            rows.append(self._pad(ids, length, max_length))
        return _stack(rows)


def _token_text(value: Any, default: str) -> str:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict with ``content``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return default


def _as_prompt_list(prompts: str | Sequence[str], what: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InputError(f"no {what} given: pass a string or a non-empty list of strings.")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise InputError(f"{what} must be strings, got {type(prompt).__name__}.")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate: sentencepiece would fail deep inside its C++ code
            raise InputError(f"the {what} holds {error.object[error.start:error.end]!r} at character {error.start}, "
                             "which is not valid Unicode text; remove it.") from None
    return prompts


def _stack(rows: list[tuple[list[int], list[int]]]) -> TokenizedPrompts:
    return TokenizedPrompts(
        input_ids=torch.tensor([ids for ids, _ in rows], dtype=torch.long),
        attention_mask=torch.tensor([mask for _, mask in rows], dtype=torch.long),
    )


# --------------------------------------------------------------------------------------------------------------------
# T5 encoder
# --------------------------------------------------------------------------------------------------------------------


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


def _open_torch_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip archive (mmap needs one) or not a checkpoint: retry plainly
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many kinds
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint of tensors: {error}") from None


class _LazyTensor:
    """One tensor of a weights file: its shape without reading it, the tensor when asked."""

    def __init__(self, shape: tuple[int, ...], load: Any) -> None:
        self.shape = shape
        self.load = load


def _iter_weight_file(path: Path) -> Iterator[tuple[str, _LazyTensor]]:
    """The tensors of a safetensors or torch file, unread until ``load()`` is called."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
            keys = list(handle.keys())
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} as safetensors: {error}") from None
        for key in keys:
            shape = tuple(handle.get_slice(key).get_shape())
            yield key, _LazyTensor(shape, lambda k=key: handle.get_tensor(k))
        return
    data = _open_torch_file(path)
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict of the T5 encoder.")
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

    ``fp16_weights`` rounds every weight through float16 before casting it to ``dtype``: 1.0's ``.half()`` (OB-5),
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


@torch.no_grad()
def run_t5(
    t5: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, zero_nonfinite: bool = False
) -> torch.Tensor:
    """T5 ``last_hidden_state`` as float32 ``(B, L, d_model)``; with ``zero_nonfinite`` (1.0) every sample holding
    inf/NaN becomes all zeros (the caller's masking rule then zeroes its mask)."""
    device = next(t5.parameters()).device
    hidden = t5(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
    if zero_nonfinite:
        bad = ~torch.isfinite(hidden).flatten(1).all(-1)
        hidden = torch.where(bad[:, None, None], torch.zeros_like(hidden), hidden)
    return hidden.float()


# --------------------------------------------------------------------------------------------------------------------
# Projections
# --------------------------------------------------------------------------------------------------------------------


class TextProjection(nn.Sequential):
    """``Linear(d_model, context_dim, bias=False)`` + ``LayerNorm(context_dim)``: keys ``0.weight``, ``1.weight``,
    ``1.bias`` as in the official checkpoints."""

    def __init__(self, d_model: int, context_dim: int) -> None:
        super().__init__(nn.Linear(d_model, context_dim, bias=False), nn.LayerNorm(context_dim))

    @property
    def d_model(self) -> int:
        return self[0].in_features

    @property
    def context_dim(self) -> int:
        return self[0].out_features

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], where: str = "projection") -> TextProjection:
        keys = ("0.weight", "1.weight", "1.bias")
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{where}: missing {', '.join(missing)} (a text projection has {', '.join(keys)}).")
        weight = state["0.weight"]
        if weight.ndim != 2 or tuple(state["1.weight"].shape) != (weight.shape[0],) or \
                tuple(state["1.bias"].shape) != (weight.shape[0],):
            raise CheckpointError(f"{where}: inconsistent shapes {tuple(weight.shape)}, "
                                  f"{tuple(state['1.weight'].shape)}, {tuple(state['1.bias'].shape)}; "
                                  "expected (context_dim, d_model), (context_dim,), (context_dim,).")
        projection = cls(int(weight.shape[1]), int(weight.shape[0]))
        projection.load_state_dict({k: state[k].detach().to(torch.float32).clone() for k in keys})
        return projection.eval().requires_grad_(False)


def _flatten(data: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, torch.Tensor):
        flat[prefix[:-1]] = data
    return flat


def _read_flat(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"projection file not found: {path}. Give kandinsky_video.pt (1.0) or "
                              "t5_projections.pt (1.1).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} as safetensors: {error}") from None
    return _flatten(_open_torch_file(path))


def _pick(flat: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> tuple[str, dict[str, torch.Tensor]] | None:
    for prefix in prefixes:
        keys = {k: f"{prefix}{k}" for k in ("0.weight", "1.weight", "1.bias")}
        if all(v in flat for v in keys.values()):
            return prefix, {k: flat[v] for k, v in keys.items()}
    return None


def load_projections(path: str | Path, release: str) -> dict[str, TextProjection]:
    """The text projections of a release, by name (``"base"``, and ``"interpolation"`` for 1.1), in float32.

    1.0: ``kandinsky_video.pt`` (its ``['projections']`` dict, keys ``t5.0.weight`` ...) or that dict saved alone.
    1.1: ``t5_projections.pt`` (``{'projection_base': ..., 'projection_interpolation': ...}``). Flat ``.safetensors``
    files with the same key paths (``projections.t5.0.weight``, ``projection_base.0.weight``, ...) work too.
    """
    _check_release(release)
    path = Path(path)
    flat = _read_flat(path)
    if release == "1.0":
        found = {PROJECTION_BASE: _pick(flat, ("projections.t5.", "t5.", ""))}
        expected = "kandinsky_video.pt (the 1.0 keyframe checkpoint, which holds 'projections')"
    else:
        found = {PROJECTION_BASE: _pick(flat, ("projection_base.",)),
                 PROJECTION_INTERPOLATION: _pick(flat, ("projection_interpolation.",))}
        expected = "t5_projections.pt (1.1, with 'projection_base' and 'projection_interpolation')"
    if any(value is None for value in found.values()):
        hint = ""
        if release == "1.1" and _pick(flat, ("projections.t5.", "t5.")) is not None:
            hint = " It holds 1.0 projections: load it with release 1.0."
        elif release == "1.0" and _pick(flat, ("projection_base.",)) is not None:
            hint = " It holds 1.1 projections: load it with release 1.1."
        raise CheckpointError(f"{path} holds no {release} text projections; expected {expected}.{hint}")
    return {name: TextProjection.from_state_dict(state, f"{path} [{prefix}]")
            for name, (prefix, state) in ((n, v) for n, v in found.items() if v is not None)}


# --------------------------------------------------------------------------------------------------------------------
# Masking, trimming, and the bundle
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_prompt(
    t5: nn.Module,
    projection: TextProjection,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    zero_nonfinite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids -> ``(context (B, L, D) float32, mask (B, L) int64)`` on the T5's device, as the official encoders.

    T5 -> (1.0, ``zero_nonfinite``: non-finite samples zeroed, and all-zero samples get an all-zero mask) ->
    projection in fp32 -> ``context[mask == 0] = 0`` -> trim to ``max(mask.sum(-1)) + 1`` positions.
    """
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise InputError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         "must both be (batch, tokens).")
    hidden = run_t5(t5, input_ids, attention_mask, zero_nonfinite=zero_nonfinite)
    mask = attention_mask.to(device=hidden.device, dtype=torch.long)
    if zero_nonfinite:
        mask = torch.where((hidden == 0).flatten(1).all(-1)[:, None], torch.zeros_like(mask), mask)
    projection = projection.to(hidden.device)
    context = projection(hidden)
    context = torch.where(mask[..., None] == 0, torch.zeros_like(context), context)
    length = int(mask.sum(-1).max()) + 1
    return context[:, :length].contiguous(), mask[:, :length].contiguous()


class TextEncoder:
    """Tokeniser + T5 encoder + projection(s) of one release; turns prompt strings into U-Net contexts.

    ``encode`` is all a pipeline or a node needs. ``to(device)`` moves the T5 and the projections (e.g. back to the
    CPU once the prompts are encoded); the returned contexts stay where they were computed.
    """

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        t5: nn.Module,
        projections: Mapping[str, TextProjection],
        *,
        release: str,
        max_length: int = OFFICIAL_MAX_LENGTH,
        zero_nonfinite: bool | None = None,
    ) -> None:
        self.release = _check_release(release)
        if PROJECTION_BASE not in projections:
            raise CheckpointError("the text encoder needs the base projection; load the release's projection file.")
        d_model = int(t5.config.d_model)
        for name, projection in projections.items():
            if projection.d_model != d_model:
                raise CheckpointError(
                    f"the {name} text projection takes {projection.d_model}-wide T5 states but the T5 encoder gives "
                    f"{d_model}: the projections and the text encoder do not belong together. Use google/flan-ul2 "
                    "(d_model 4096) with the official projection file of the same release.")
        if max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}.")
        self.tokenizer = tokenizer
        self.t5 = t5
        self.projections = dict(projections)
        self.max_length = int(max_length)
        self.zero_nonfinite = (release == "1.0") if zero_nonfinite is None else bool(zero_nonfinite)

    @classmethod
    def load(
        cls,
        release: str,
        encoder_path: str | Path,
        projections_path: str | Path,
        *,
        tokenizer_path: str | Path | None = None,
        config: str | Path | Mapping[str, Any] | None = None,
        max_length: int = OFFICIAL_MAX_LENGTH,
        context_dim: int | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        fp8_weights: bool = False,
    ) -> TextEncoder:
        """Load everything for ``release`` ("1.0" or "1.1").

        ``encoder_path``: the google/flan-ul2 directory or one weights file (see ``load_t5_encoder``; ``config`` is its
        config when it has none beside it). ``tokenizer_path``: defaults to ``encoder_path`` (or its directory).
        ``projections_path``: 1.0's ``kandinsky_video.pt`` or 1.1's ``t5_projections.pt``. ``max_length`` and
        ``context_dim`` come from the release config (``load_release_config(...).text``: ``tokens_length``,
        ``context_dim``); ``context_dim`` is checked against the projections when given. ``dtype``: the T5's compute
        dtype, default the dtype policy's ``auto`` for ``device`` (never fp16); 1.0's weights always pass through fp16
        as officially.
        ``fp8_weights``: keep the T5's linear weights in float8 (half of bf16's memory; not the official numerics).
        """
        _check_release(release)
        dtype = text_dtype("auto", device)[0] if dtype is None else dtype
        encoder_path = Path(encoder_path)
        if not encoder_path.exists():
            raise CheckpointError(f"text encoder not found: {encoder_path} does not exist. Give the google/flan-ul2 "
                                  "directory (Hugging Face layout) or a single .safetensors file of the T5 encoder.")
        if tokenizer_path is None:
            tokenizer_path = encoder_path if encoder_path.is_dir() else encoder_path.parent
            if not any((tokenizer_path / name).is_file() for name in ("spiece.model", "tokenizer.json")):
                raise CheckpointError(f"no tokenizer beside {encoder_path}: put spiece.model (or tokenizer.json) of "
                                      "google/flan-ul2 there, or give the tokenizer location.")
        tokenizer = PromptTokenizer.from_path(tokenizer_path)
        projections = load_projections(projections_path, release)
        if context_dim is not None:
            for name, projection in projections.items():
                if projection.context_dim != context_dim:
                    raise CheckpointError(f"the {name} projection in {projections_path} gives {projection.context_dim}"
                                          f"-wide contexts but the model config expects {context_dim}; use the "
                                          "projection file that belongs to these models.")
        t5 = load_t5_encoder(encoder_path, config=config, dtype=dtype, device=device, fp16_weights=release == "1.0",
                             fp8_weights=fp8_weights)
        encoder = cls(tokenizer, t5, projections, release=release, max_length=max_length)
        return encoder.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.t5.parameters()).device

    @property
    def d_model(self) -> int:
        return int(self.t5.config.d_model)

    @property
    def context_dim(self) -> int:
        return self.projections[PROJECTION_BASE].context_dim

    def to(self, device: str | torch.device) -> TextEncoder:
        """Move the T5 and the projections to ``device`` (dtypes unchanged); returns self."""
        self.t5.to(device)
        for projection in self.projections.values():
            projection.to(device)
        return self

    def tokenize(self, prompts: str | Sequence[str]) -> TokenizedPrompts:
        return self.tokenizer.tokenize(prompts, self.max_length)

    def tokenize_negative(self, negative_prompts: str | Sequence[str], positive: TokenizedPrompts) -> TokenizedPrompts:
        return self.tokenizer.tokenize_negative(negative_prompts, positive, self.max_length)

    def encode_tokens(
        self, tokens: TokenizedPrompts, projection: str = PROJECTION_BASE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and mask of already tokenised prompts (``encode_prompt`` with this encoder's parts)."""
        if projection not in self.projections:
            raise InputError(f"no {projection!r} projection in this {self.release} text encoder; available: "
                             f"{', '.join(self.projections)}.")
        return encode_prompt(self.t5, self.projections[projection], tokens.input_ids, tokens.attention_mask,
                             zero_nonfinite=self.zero_nonfinite)

    def encode(
        self,
        prompts: str | Sequence[str],
        negative_prompts: str | Sequence[str] | None = None,
        *,
        projection: str = PROJECTION_BASE,
    ) -> TextCondition:
        """Contexts of the prompts (and of the negative prompts, by 1.0's rule OB-3, trimmed on their own).

        ``projection``: ``"base"`` (what every official pipeline uses, OB-9) or, for 1.1, ``"interpolation"``.
        """
        tokens = self.tokenize(prompts)
        result = TextCondition(*self._finite(self.encode_tokens(tokens, projection)), release=self.release)
        if negative_prompts is not None:
            negative = self.tokenize_negative(negative_prompts, tokens)
            result.negative = TextCondition(*self._finite(self.encode_tokens(negative, projection)),
                                            release=self.release)
        return result

    def _finite(self, encoded: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """1.1 has no official guard against overflow [OB-46]: a non-finite context is an error, not a NaN video."""
        if not self.zero_nonfinite and not torch.isfinite(encoded[0]).all():
            dtype = next(self.t5.parameters()).dtype
            raise InputError(f"the text encoder produced non-finite values computing in {str(dtype)[6:]}: load it in "
                             "bf16 or fp32 (FLAN-UL2 overflows in fp16).")
        return encoded

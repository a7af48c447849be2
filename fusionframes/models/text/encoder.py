"""A prompt becomes the context the U-Nets attend to, exactly as the official code does it [OB-51]:

1. **Tokenise** (``tokenizer.PromptTokenizer``; 1.0's negative prompt by [OB-3]).
2. **Encode** with the T5 encoder (``t5_files.load_t5_encoder``). 1.0 casts the encoder to fp16 ([OB-5]: its weights
   always pass through fp16) and replaces every sample holding inf/NaN by zeros, whose mask is then zeroed
   (``zero_nonfinite``). 1.1 runs it in fp32 [OB-33].
3. **Project** (``projections.TextProjection``) in fp32; the official pipelines use the base projection [OB-9].
4. **Mask and trim**: projected vectors at masked positions are set to zero, and the context is cut to
   ``max(mask.sum(-1)) + 1`` positions (one zero padding position kept [OB-20]).

``encode_prompt`` does steps 2-4; ``TextEncoder`` bundles the parts of one release and ``TextEncoder.load`` builds it
from files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import CheckpointError, InputError
from ...releases import TOKENS_LENGTH
from ...releases import release as official_release
from ..dtypes import text_dtype
from ..interrupt import interruption_point
from .condition import TextCondition
from .projections import PROJECTION_BASE, TextProjection, load_projections
from .t5_files import load_t5_encoder
from .tokenizer import PromptTokenizer, TokenizedPrompts


@torch.no_grad()
def run_t5(
    t5: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, zero_nonfinite: bool = False
) -> torch.Tensor:
    """T5 ``last_hidden_state`` as float32 ``(B, L, d_model)``; with ``zero_nonfinite`` (1.0) every sample holding
    inf/NaN becomes all zeros (the caller's masking rule then zeroes its mask)."""
    device = next(t5.parameters()).device
    # a cancel point before every T5 block: FLAN-UL2's 32 blocks take many seconds on a CPU
    blocks = getattr(getattr(t5, "encoder", None), "block", None) or []
    handles = [block.register_forward_pre_hook(lambda *_: interruption_point()) for block in blocks]
    try:
        hidden = t5(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    if zero_nonfinite:
        bad = ~torch.isfinite(hidden).flatten(1).all(-1)
        hidden = torch.where(bad[:, None, None], torch.zeros_like(hidden), hidden)
    return hidden.float()


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
    return project_states(projection.to(hidden.device), hidden, mask)


def project_states(projection: TextProjection, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """T5 states ``(B, L, d_model)`` and their mask -> the context: projected, zero where the mask is 0, trimmed to
    ``max(mask.sum(-1)) + 1`` positions (differentiable: training the projections uses it too)."""
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
        max_length: int = TOKENS_LENGTH,
        zero_nonfinite: bool | None = None,
    ) -> None:
        self.release = official_release(release).name
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
        max_length: int = TOKENS_LENGTH,
        context_dim: int | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        fp8_weights: bool = False,
    ) -> TextEncoder:
        """Load everything for ``release`` ("1.0" or "1.1").

        ``encoder_path``: the google/flan-ul2 directory or one weights file (see ``load_t5_encoder``; ``config`` is its
        config when it has none beside it). ``tokenizer_path``: defaults to ``encoder_path`` (or its directory).
        ``projections_path``: 1.0's ``kandinsky_video.pt`` or 1.1's ``t5_projections.pt``. ``max_length`` and
        ``context_dim`` come from the release config (``release_config_for(...).text``: ``tokens_length``,
        ``context_dim``); ``context_dim`` is checked against the projections when given. ``dtype``: the T5's compute
        dtype, default the dtype policy's ``auto`` for ``device`` (never fp16); 1.0's weights always pass through fp16
        as officially.
        ``fp8_weights``: keep the T5's linear weights in float8 (half of bf16's memory; not the official numerics).
        """
        official_release(release)
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
        """Contexts of the prompts (and of the negative prompts, by 1.0's rule [OB-3], trimmed on their own).

        ``projection``: ``"base"`` (what every official pipeline uses [OB-9]) or, for 1.1, ``"interpolation"``.
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

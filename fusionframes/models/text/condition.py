"""The one text-conditioning type: what the text encoder gives and every sampler (and node socket) takes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class TextCondition:
    """A projected text context ``(B, L, D)`` and its 0/1 mask ``(B, L)``; for 1.0, optionally the negative prompt's
    (which replaces the null context [OB-42]); ``release`` says whose projections made it (None: unknown)."""

    context: torch.Tensor
    mask: torch.Tensor
    negative: TextCondition | None = None
    release: str | None = None

    @property
    def context_dim(self) -> int:
        return int(self.context.shape[-1])

    def repeat(self, count: int) -> TextCondition:
        return TextCondition(self.context.expand(count, -1, -1), self.mask.expand(count, -1), release=self.release)

    @staticmethod
    def stack(conditions: list[TextCondition]) -> TextCondition:
        """One condition per sample (B = len(conditions)), each (1, L_i, D), zero-padded with mask 0 to the longest:
        per-sample prompts, e.g. one per segment of a long video."""
        length = max(c.context.shape[1] for c in conditions)
        contexts = [torch.nn.functional.pad(c.context, (0, 0, 0, length - c.context.shape[1])) for c in conditions]
        masks = [torch.nn.functional.pad(c.mask, (0, length - c.mask.shape[1])) for c in conditions]
        return TextCondition(torch.cat(contexts), torch.cat(masks), release=conditions[0].release)

    def null(self, null_embedding: torch.Tensor) -> TextCondition:
        """The unconditional context: zeros with the null embedding at position 0, same length (official rule)."""
        context = torch.zeros_like(self.context)
        mask = torch.zeros_like(self.mask)
        context[:, 0] = null_embedding.to(context.dtype)
        mask[:, 0] = 1
        return TextCondition(context, mask, release=self.release)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextCondition:
        """On ``device`` (contexts in ``dtype`` when given), the negative prompt's too."""
        negative = None if self.negative is None else self.negative.to(device, dtype)
        return replace(self, context=self.context.to(device=device, dtype=dtype or self.context.dtype),
                       mask=self.mask.to(device), negative=negative)

"""State-dict manifests: every key with its shape, in the format of ``golden/official_keys/*.txt``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def manifest_lines(state: nn.Module | Mapping[str, torch.Tensor]) -> list[str]:
    """``name<TAB>(shape)`` for each entry, in state-dict order (a module may live on the ``meta`` device)."""
    items: Iterable[tuple[str, torch.Tensor]] = (
        state.state_dict().items() if isinstance(state, nn.Module) else state.items()
    )
    return [f"{name}\t{tuple(tensor.shape)}" for name, tensor in items]

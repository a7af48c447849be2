"""channels_last weights: the layout GPU convolution kernels (cuDNN on tensor cores) run fastest in.

Every 2-D convolution's weight is stored NHWC; activations follow the weights' layout through the convolutions, so
the U-Nets and MoVQs run channels-last end to end without any change to their code. Only a layout: the values, and
so the outputs up to the kernels' summation order, are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def use_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D parameter channels-last, in place; returns ``model``.

    ``Module.to(memory_format=...)`` would refuse the 5-D weights of the temporal convolutions, which keep theirs.
    """
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model


def prefers_channels_last(device: torch.device | str) -> bool:
    """Channels-last is the fast path on CUDA; on the CPU it does not pay for itself reliably."""
    return torch.device(device).type == "cuda"

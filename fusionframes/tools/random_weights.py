"""One random initialisation for every tool that builds models without their checkpoints.

The demo models (:mod:`.demo_models`) store these draws in files that must come back identical from the same seed;
the benchmark and the memory estimator (:mod:`.bench`) only need weights that keep activations tame, because a
forward pass costs the same whatever the values. Both call :func:`randomize_parameters`, so there is one rule for
random weights. The official modules zero-initialise their output layers and merge factors, which would turn
untrained models into exact identities, so here every parameter is drawn instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "BIAS_STD",
    "EMBEDDING_STD",
    "MERGE_RANGE",
    "SPATIAL_NORM_GAIN",
    "WEIGHT_GAIN",
    "normal",
    "randomize_parameters",
]

# Fan-in scaled weights (activations stay O(1)), small biases, unit norm scales, merge factors in [0.2, 0.4].
WEIGHT_GAIN = 1.0
SPATIAL_NORM_GAIN = 0.2
BIAS_STD = 0.02
EMBEDDING_STD = 0.5
MERGE_RANGE = (0.2, 0.4)


def normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    """fp32 normal draws of standard deviation ``std``, made on the generator's device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device) * std


def _is_norm(module: nn.Module) -> bool:
    """torch's affine norms, and other norm layers by name (T5's ``T5LayerNorm``, an RMS norm with a scale only)."""
    return isinstance(module, (nn.GroupNorm, nn.LayerNorm)) or type(module).__name__.endswith("Norm")


@torch.no_grad()
def randomize_parameters(model: nn.Module, generator: torch.Generator | int = 0) -> nn.Module:
    """Draw every parameter of ``model`` from ``generator``, in registration order, and return the model.

    ``generator`` is a ``torch.Generator`` (the demo models pass one per file), or an integer seed for a new
    generator on the device of the model's parameters. Values are drawn in fp32 on the generator's device and
    copied into each parameter in its own dtype, so a generator on the model's device never makes a round trip
    through the host. The same generator state gives the same values. A model on ``meta`` has no values and is
    returned as it is.

    The rules: merge factors uniform in :data:`MERGE_RANGE`; norm scales 1; norm biases, other biases and 1-D
    parameters normal(0, :data:`BIAS_STD`); embeddings normal(0, :data:`EMBEDDING_STD`); weight matrices and
    convolution kernels normal(0, gain / sqrt(fan_in)). The MoVQ's latent-modulated norms compute
    ``GN(f) * conv_y(zq) + conv_b(zq)`` with no ``+1``, so their convolutions get the small
    :data:`SPATIAL_NORM_GAIN` and ``conv_y``'s bias is 1 + normal(0, :data:`BIAS_STD`): they stay close to a plain
    GroupNorm.
    """
    parameters = list(model.named_parameters())
    if not parameters or parameters[0][1].device.type == "meta":
        return model
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator(device=parameters[0][1].device).manual_seed(int(generator))
    owners: dict[str, nn.Module] = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owners[f"{module_name}.{param_name}" if module_name else param_name] = module
    for name, param in parameters:
        owner, leaf, shape = owners[name], name.rsplit(".", 1)[-1], tuple(param.shape)
        if "merge" in leaf:
            low, high = MERGE_RANGE
            value = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float32,
                                                    device=generator.device)
        elif _is_norm(owner):
            value = None if leaf == "weight" else normal(shape, BIAS_STD, generator)
        elif isinstance(owner, nn.Embedding):
            value = normal(shape, EMBEDDING_STD, generator)
        elif leaf == "weight" and param.dim() >= 2:
            gain = SPATIAL_NORM_GAIN if name.endswith(("conv_y.weight", "conv_b.weight")) else WEIGHT_GAIN
            value = normal(shape, gain / math.sqrt(math.prod(shape[1:])), generator)
        elif name.endswith("conv_y.bias"):
            value = 1.0 + normal(shape, BIAS_STD, generator)
        else:
            value = normal(shape, BIAS_STD, generator)
        if value is None:
            param.fill_(1.0)
        else:
            param.copy_(value)
    return model

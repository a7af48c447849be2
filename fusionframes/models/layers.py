"""Building blocks shared by every Kandinsky-3-derived U-Net: embeddings, conditional norms, attention.

Attention runs on ``scaled_dot_product_attention``, so fused kernels are used where the device has them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``. On the CPU in float32 through oneDNN: for the temporal convolutions' shapes (up to about 64
    channels) PyTorch picks its im2col kernel, 3-5x slower (84 % of a temporal MoVQ decode, 16-30 % of a U-Net
    step); the two agree to float rounding. Differentiable, so training takes the same kernel. Under
    ``torch.compile`` the plain convolution, which the compiler lowers itself."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available() and \
            not torch.compiler.is_compiling():
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), conv.weight, conv.bias, conv.padding, conv.stride,
                                                 conv.dilation, conv.groups)
    return conv(x)


class SinusoidalPosEmb(nn.Module):
    """[sin | cos] features of a scalar per sample; frequencies exp(-j ln(10000) / (half - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -scale)
        angles = x.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class EmbeddingMLP(nn.Sequential):
    """Scalar -> sinusoidal features -> MLP; the official layout (keys ``.1.*`` and ``.3.*``).

    The sinusoid is computed in float32 and then cast to the weights' dtype, so fp16/bf16 models need no autocast.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(SinusoidalPosEmb(in_dim), nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self[0](x).to(self[1].weight.dtype)
        return self[3](self[2](self[1](h)))


class Skip(nn.Module):
    """A parameter-free placeholder that keeps the official module indices where a layer is absent."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return x


class ConditionalGroupNorm(nn.Module):
    """GroupNorm without affine weights, scaled and shifted by an MLP of a per-sample conditioning vector."""

    def __init__(self, groups: int, channels: int, context_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.context_mlp = nn.Sequential(nn.SiLU(), nn.Linear(context_dim, 2 * channels))
        nn.init.zeros_(self.context_mlp[1].weight)
        nn.init.zeros_(self.context_mlp[1].bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        params = self.context_mlp(condition)
        params = params.view(*params.shape, *([1] * (x.dim() - 2)))
        scale, shift = params.chunk(2, dim=1)
        return self.norm(x) * (scale + 1.0) + shift


def attention_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, M) keep-mask -> SDPA boolean mask (B, 1, 1, M).

    A row with nothing to attend to gets every position: the official code fills masked scores with the dtype's
    lowest value, which for a fully masked row gives the same uniform weights as attending everywhere (and the
    official code only produces such rows for contexts that are zero everywhere).
    """
    if mask is None:
        return None
    keep = mask.bool()
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention with bias-free projections (``to_query``, ``to_key``, ``to_value``, ``output_layer``)."""

    def __init__(self, in_channels: int, out_channels: int, context_dim: int, head_dim: int = 64) -> None:
        super().__init__()
        if out_channels % head_dim:
            raise ValueError(f"attention width {out_channels} is not a multiple of head_dim {head_dim}")
        self.num_heads = out_channels // head_dim
        self.to_query = nn.Linear(in_channels, out_channels, bias=False)
        self.to_key = nn.Linear(context_dim, out_channels, bias=False)
        self.to_value = nn.Linear(context_dim, out_channels, bias=False)
        self.output_layer = nn.Linear(out_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        heads = self.num_heads
        q = rearrange(self.to_query(x), "b n (h d) -> b h n d", h=heads)
        k = rearrange(self.to_key(context), "b n (h d) -> b h n d", h=heads)
        v = rearrange(self.to_value(context), "b n (h d) -> b h n d", h=heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(mask))
        return self.output_layer(rearrange(out, "b h n d -> b n (h d)"))


class TemporalAttention(nn.Module):
    """Attention along the frame axis, independently at every spatial position (the keyframe U-Nets)."""

    def __init__(self, channels: int, head_dim: int = 64) -> None:
        super().__init__()
        self.num_heads = channels // head_dim
        self.to_query = nn.Linear(channels, channels, bias=False)
        self.to_key = nn.Linear(channels, channels, bias=False)
        self.to_value = nn.Linear(channels, channels, bias=False)
        self.output_layer = nn.Linear(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (clips, frames, positions, channels). Attention runs on 4-D (clips * positions, heads, frames, d)
        tensors: torch.compile's CPU attention kernel gives wrong results for 5-D inputs (torch 2.14)."""
        heads, clips = self.num_heads, x.shape[0]
        q = rearrange(self.to_query(x), "b t n (h d) -> (b n) h t d", h=heads)
        k = rearrange(self.to_key(x), "b t n (h d) -> (b n) h t d", h=heads)
        v = rearrange(self.to_value(x), "b t n (h d) -> (b n) h t d", h=heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.output_layer(rearrange(out, "(b n) h t d -> b t n (h d)", b=clips))


def feed_forward(channels: int, expansion_ratio: int) -> nn.Sequential:
    """Pointwise MLP as two bias-free 1x1 convolutions (keys ``.0.weight``, ``.2.weight``)."""
    hidden = expansion_ratio * channels
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1, bias=False), nn.SiLU(), nn.Conv2d(hidden, channels, 1, bias=False)
    )

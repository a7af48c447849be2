"""MoVQ, the latent autoencoder of Kandinsky Video: encoder, image decoder and 1.1's temporal ("video") decoder.

Attribute names, and so the state-dict keys and their order, are those of the official ``movq.py`` of both releases,
so the official ``movq.pt`` / ``video_movq.pt`` load strictly.

Latents are the continuous ``quant_conv`` output: there is no vector quantiser and no scale factor. The decoder
conditions its normalisations on the latent itself ("spatial norm", called ``zq`` officially). A temporal decoder
decodes a whole batch as one clip of consecutive frames: its ResNet blocks mix neighbouring frames with 3-D convolutions
and it attends along time at the lowest resolution.

Decoding (and encoding) whole videos -- clips of the official length, spatial tiles, shrinking on out-of-memory -- is
in :mod:`.decoding`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, InputError
from ..configs import MoVQConfig
from ..interrupt import interruption_point
from ..layers import conv3d

NORM_GROUPS = 32  # hard-coded by the official ``Normalize``
NORM_EPS = 1e-6


class SpatialNorm(nn.Module):
    """GroupNorm, optionally modulated by the latent: ``GN(f) * conv_y(zq) + conv_b(zq)`` (no ``+1`` on the scale).

    ``zq`` is resized (nearest) to ``f``'s size. Built without ``zq_channels`` (the encoder) it is a plain GroupNorm;
    called without ``zq`` (the temporal attention blocks [OB-17]) the modulation convolutions stay unused.
    """

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(NORM_GROUPS, channels, eps=NORM_EPS, affine=True)
        self.conditioned = zq_channels is not None
        if zq_channels is not None:
            self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
            self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.norm_layer(f)
        if zq is None or not self.conditioned:
            return normed
        # A 1x1 convolution commutes with nearest resizing, so it runs at the small latent size.
        scale, shift = self.conv_y(zq), self.conv_b(zq)
        factors = _pixel_blocks(zq.shape[-2:], f.shape[-2:])
        if factors is None or torch.is_grad_enabled():
            size = f.shape[-2:]
            return normed * F.interpolate(scale, size=size, mode="nearest") + F.interpolate(shift, size=size,
                                                                                             mode="nearest")
        # Inference: nearest resizing by an integer factor repeats each latent pixel over a block of pixels, so the
        # latent-sized scale and shift broadcast over those blocks in place. Same arithmetic, and no full-size
        # temporaries (at 512x512 each would be as large as the activations themselves).
        (h, rows), (w, cols) = factors
        blocks = normed.unflatten(3, (w, cols)).unflatten(2, (h, rows))
        blocks.mul_(scale[:, :, :, None, :, None]).add_(shift[:, :, :, None, :, None])
        return normed


def _pixel_blocks(small: Sequence[int], large: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((h, rows), (w, cols)) when ``large`` is ``small`` scaled by powers of two (nearest resizing then copies
    each small pixel to a rows x cols block exactly); None otherwise."""
    factors = []
    for n, size in zip(small, large):
        factor = size // n
        if factor * n != size or factor & (factor - 1):
            return None
        factors.append((n, factor))
    return factors[0], factors[1]


class Upsample(nn.Module):
    """Nearest x2 followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after zero padding on the right and bottom only (the official asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _clips(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(b t) c h w -> b c t h w`` for clips of ``num_frames`` consecutive frames."""
    bt, c, h, w = x.shape
    return x.reshape(bt // num_frames, num_frames, c, h, w).transpose(1, 2)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """``b c t h w -> (b t) c h w``, the inverse of :func:`_clips`."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


class ResnetBlock(nn.Module):
    """Pre-norm residual block ``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> dropout -> conv2``.

    A temporal block (1.1's video decoder) follows each convolution with a 3-D convolution over the clip, blended in as
    ``(1 - a) * h + a * conv3d(h)`` with a learned scalar ``a``; both start at zero, so an untrained temporal decoder
    computes what the image decoder does.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, zq_channels: int | None = None,
                 temporal_kernel: Sequence[int] | None = None, temporal_padding: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.temporal = temporal_kernel is not None
        if self.temporal:
            self.temporal_merge1 = nn.Parameter(torch.zeros(1))
            self.temporal_merge2 = nn.Parameter(torch.zeros(1))
        self.norm1 = SpatialNorm(in_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = SpatialNorm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        if temporal_kernel is not None:
            kernel, padding = tuple(temporal_kernel), tuple(temporal_padding)
            self.temporal_projection1 = nn.Conv3d(out_channels, out_channels, kernel, padding=padding)
            self.temporal_projection2 = nn.Conv3d(out_channels, out_channels, kernel, padding=padding)
            for conv in (self.temporal_projection1, self.temporal_projection2):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    @staticmethod
    def _blend_time(h: torch.Tensor, conv: nn.Conv3d, merge: torch.Tensor, num_frames: int) -> torch.Tensor:
        mixed = _frames(conv3d(conv, _clips(h, num_frames)))
        if torch.is_grad_enabled():
            return (1 - merge) * h + merge * mixed
        return h.mul_(1 - merge).add_(mixed.mul_(merge))  # the same products and sum, in the fresh tensors

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, num_frames: int | None = None) -> torch.Tensor:
        # Without autograd, every temporary the block creates itself is reused in place (SiLU, the blends, the
        # residual sum): the full-resolution blocks of the decoder set the peak memory of decoding.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x, zq), inplace=inplace))
        interruption_point()  # one full-resolution convolution of a huge image takes seconds
        if self.temporal:
            h = self._blend_time(h, self.temporal_projection1, self.temporal_merge1, num_frames or x.shape[0])
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq), inplace=inplace)))
        interruption_point()
        if self.temporal:
            h = self._blend_time(h, self.temporal_projection2, self.temporal_merge2, num_frames or x.shape[0])
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(shortcut) if inplace else shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``h*w`` positions of each frame (1x1-conv projections), residual."""

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm = SpatialNorm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x, zq)
        # (b, 1 head, h*w tokens, c); SDPA's default scale c^-0.5 is the official one. Contiguous, or SDPA falls back
        # to its math kernel and materialises the (h*w)^2 score matrix (2.8x the memory at 96x96 latents on the CPU).
        q, k, v = (proj(normed).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
                   for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class TemporalAttnBlock(AttnBlock):
    """Single-head attention along time, separately at every pixel of a clip of ``num_frames`` frames (1.1).

    Its norm is built with latent modulation but the official decoder never passes the latent [OB-17]: it is a plain
    affine GroupNorm and ``norm.conv_y`` / ``norm.conv_b`` are loaded but unused.
    """

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:  # type: ignore[override]
        bt, c, h, w = x.shape
        t = num_frames or bt
        normed = self.norm(x)

        def tokens(y: torch.Tensor) -> torch.Tensor:  # (b t) c h w -> (b h w), 1 head, t, c
            return y.reshape(bt // t, t, c, h, w).permute(0, 3, 4, 1, 2).reshape(-1, 1, t, c)

        out = F.scaled_dot_product_attention(tokens(self.q(normed)), tokens(self.k(normed)), tokens(self.v(normed)))
        out = out.reshape(bt // t, h, w, t, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return x + self.proj_out(out)


class MidBlock(nn.Module):
    """``block_1 -> attn_1 [-> temporal_attn_1] -> block_2`` at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, zq_channels: int | None = None,
                 temporal_kernel: Sequence[int] | None = None, temporal_padding: Sequence[int] = (1, 1, 1),
                 temporal_attention: bool = False) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, zq_channels, temporal_kernel, temporal_padding)
        self.attn_1 = AttnBlock(channels, zq_channels)
        self.temporal_attn_1 = TemporalAttnBlock(channels, zq_channels) if temporal_attention else None
        self.block_2 = ResnetBlock(channels, channels, dropout, zq_channels, temporal_kernel, temporal_padding)

    def forward(self, h: torch.Tensor, zq: torch.Tensor | None = None, attention_zq: torch.Tensor | None = None,
                num_frames: int | None = None) -> torch.Tensor:
        h = self.block_1(h, zq, num_frames)
        h = self.attn_1(h, attention_zq)
        if self.temporal_attn_1 is not None:
            h = self.temporal_attn_1(h, num_frames)
        return self.block_2(h, zq, num_frames)


class EncoderLevel(nn.Module):
    """One encoder resolution: ResNet ``block``s, an ``attn`` after each at attention resolutions, ``downsample``."""

    def __init__(self, blocks: list[ResnetBlock], attentions: list[AttnBlock], downsample: Downsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attentions)
        self.downsample = downsample

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            interruption_point()
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h if self.downsample is None else self.downsample(h)


class DecoderLevel(nn.Module):
    """One decoder resolution: ResNet ``block``s, then per block ``attn`` and ``temporal_attn`` where present."""

    def __init__(self, blocks: list[ResnetBlock], attentions: list[AttnBlock],
                 temporal_attentions: list[TemporalAttnBlock], upsample: Upsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attentions)
        self.temporal_attn = nn.ModuleList(temporal_attentions)
        self.upsample = upsample

    def forward(self, h: torch.Tensor, zq: torch.Tensor, attention_zq: torch.Tensor,
                num_frames: int | None = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            interruption_point()
            h = block(h, zq, num_frames)
            if len(self.attn):
                h = self.attn[i](h, attention_zq)
                if len(self.temporal_attn):
                    h = self.temporal_attn[i](h, num_frames)
        return h if self.upsample is None else self.upsample(h)


def _widths(config: MoVQConfig) -> list[int]:
    return [config.ch * m for m in config.ch_mult]


class Encoder(nn.Module):
    """Images -> pre-``quant_conv`` latents, ``downscale`` times smaller.

    Attention sits at the levels whose *nominal* size (``resolution`` halved per level) is in ``attn_resolutions``,
    whatever the real input size [OB-38].
    """

    def __init__(self, config: MoVQConfig) -> None:
        super().__init__()
        widths = _widths(config)
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, kernel_size=3, padding=1)
        levels, channels, nominal = [], config.ch, config.resolution
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(channels, width, config.dropout))
                channels = width
            attentions = [AttnBlock(width) for _ in blocks] if nominal in config.attn_resolutions else []
            last = i == len(widths) - 1
            levels.append(EncoderLevel(blocks, attentions, None if last else Downsample(width)))
            if not last:
                nominal //= 2
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(channels, config.dropout)
        self.norm_out = SpatialNorm(channels)
        out_channels = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents -> images, every norm but the temporal attention ones modulated by the latent (``zq``).

    ``up[i]`` is resolution level ``i`` (as in the official state dict); they run from the lowest resolution up.
    With ``config.temporal`` every ResNet block mixes frames with 3-D convolutions, and with
    ``config.temporal_attention_block`` each spatial attention is followed by a temporal one.
    """

    def __init__(self, config: MoVQConfig) -> None:
        super().__init__()
        widths, levels_count = _widths(config), len(config.ch_mult)
        z = config.z_channels
        kernel = config.temporal_kernel_size if config.temporal else None
        padding = config.temporal_conv_padding
        self.conv_in = nn.Conv2d(z, widths[-1], kernel_size=3, padding=1)
        self.mid = MidBlock(widths[-1], config.dropout, z, kernel, padding, config.temporal_attention_block)
        lowest = config.resolution // 2 ** (levels_count - 1)
        levels = []
        for i, width in enumerate(widths):
            channels = widths[min(i + 1, levels_count - 1)]
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(channels, width, config.dropout, z, kernel, padding))
                channels = width
            attentive = lowest * 2 ** (levels_count - 1 - i) in config.attn_resolutions
            attentions = [AttnBlock(width, z) for _ in blocks] if attentive else []
            temporal = [TemporalAttnBlock(width, z) for _ in attentions] if config.temporal_attention_block else []
            levels.append(DecoderLevel(blocks, attentions, temporal, Upsample(width) if i else None))
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm(widths[0], z)
        self.conv_out = nn.Conv2d(widths[0], config.out_ch, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, zq: torch.Tensor, num_frames: int | None = None,
                attention_zq: torch.Tensor | None = None) -> torch.Tensor:
        """``z``: the ``post_quant_conv`` output; ``zq``: the latent the norms are modulated by; ``num_frames``: clip
        length of a temporal decoder (the batch is whole clips); ``attention_zq``: the latent for the spatial attention
        norms (default ``zq``; see :attr:`MoVQ.attention_norm_from_first_frame`)."""
        attention_zq = zq if attention_zq is None else attention_zq
        h = self.mid(self.conv_in(z), zq, attention_zq, num_frames)
        for level in reversed(self.up):
            h = level(h, zq, attention_zq, num_frames)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


def _check_config(config: MoVQConfig) -> None:
    if config.double_z:
        raise ConfigError("MoVQ config: double_z=True is not supported (the official MoVQ has no posterior to split; "
                          "its quant_conv would not accept the doubled channels). Use double_z=false.")
    if not config.ch_mult or config.num_res_blocks < 1:
        raise ConfigError("MoVQ config: ch_mult needs at least one level and num_res_blocks must be >= 1.")
    for width in _widths(config):
        if width % NORM_GROUPS:
            raise ConfigError(f"MoVQ config: width {width} (ch x ch_mult) is not divisible by the {NORM_GROUPS} "
                              "normalisation groups the MoVQ uses; pick ch a multiple of 32.")
    if config.temporal and (len(config.temporal_kernel_size) != 3 or len(config.temporal_conv_padding) != 3):
        raise ConfigError("MoVQ config: temporal_kernel_size and temporal_conv_padding need 3 values (t, h, w).")


def _check_batch(x: object, name: str, channels: int, multiple: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name}: expected a tensor of shape (N, {channels}, H, W), got {shape}.")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected floating-point values, got {x.dtype}.")
    n, c, h, w = x.shape
    if n < 1:
        raise InputError(f"{name}: the batch is empty.")
    if c != channels:
        raise InputError(f"{name}: expected {channels} channels, got {c} (shape {tuple(x.shape)}).")
    if h < multiple or w < multiple or h % multiple or w % multiple:
        raise InputError(f"{name}: height and width must be positive multiples of {multiple}, got {h}x{w}; "
                         f"resize or crop the frames to multiples of {multiple}.")
    return x


def _first_frame_of_each_clip(zq: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``zq`` with every frame replaced by the first frame of its clip."""
    clips = zq.reshape(zq.shape[0] // num_frames, num_frames, *zq.shape[1:])
    return clips[:, :1].expand_as(clips).reshape(zq.shape)


class MoVQ(nn.Module):
    """The MoVQ autoencoder: ``encode`` images in [-1, 1] to latents, ``decode`` latents back to images.

    A temporal configuration (``config.temporal`` or ``config.temporal_attention_block``) makes :meth:`decode` treat
    the whole batch as ONE clip of consecutive frames, as the official 1.1 code does; :func:`.decoding.decode_video`
    splits a long video into clips.
    """

    def __init__(self, config: MoVQConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, kernel_size=1)
        self.decoder = Decoder(config)
        self.decodes_clips: bool = config.temporal or config.temporal_attention_block
        # Official 1.1 quirk [OB-14]: AttnBlock hands the whole clip's latent to a per-sample SpatialNorm, which then
        # reads only index 0, so the spatial attention norms of EVERY frame of a clip are modulated by the clip's first
        # latent frame (the ResNet and output norms use each frame's own latent). The released video decoder was used
        # this way, so a temporal decoder reproduces it; the image decoder is batched correctly, as 1.0 is (1.1 only
        # ever decodes single images with it). Set this attribute to change the behaviour.
        self.attention_norm_from_first_frame: bool = self.decodes_clips

    @property
    def downscale(self) -> int:
        return self.config.downscale

    def _param(self) -> torch.Tensor:
        return self.quant_conv.weight

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) images in [-1, 1] -> (B, z_channels, H/8, W/8) continuous latents (no quantiser).

        The input is moved to the module's device and dtype."""
        _check_batch(images, "images", self.config.in_channels, self.downscale)
        weight = self._param()
        return self.quant_conv(self.encoder(images.to(device=weight.device, dtype=weight.dtype)))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, z_channels, h, w) latents -> (B, out_ch, 8h, 8w) images, nominally in [-1, 1] (not clipped).

        A temporal decoder takes the batch as one clip of B consecutive frames. The input is moved to the module's
        device and dtype."""
        _check_batch(latents, "latents", self.config.z_channels)
        weight = self._param()
        zq = latents.to(device=weight.device, dtype=weight.dtype)
        num_frames = zq.shape[0] if self.decodes_clips else None
        attention_zq = _first_frame_of_each_clip(zq, zq.shape[0]) if self.attention_norm_from_first_frame else zq
        return self.decoder(self.post_quant_conv(zq), zq, num_frames, attention_zq)

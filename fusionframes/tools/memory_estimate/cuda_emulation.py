"""Making the ``meta`` device behave as a CUDA GPU: fp16 autocast and the attention kernel choice.

On ``meta``, torch would neither autocast nor pick CUDA's attention kernels (it always takes the math path), and
both decide how much memory a stage allocates. So:

* :class:`AutocastEmulation` applies CUDA autocast's op lists (matrix products and convolutions in fp16;
  normalisations, upsampling, softmax and friends in fp32) at the dispatch level;
* :class:`CudaAttention` replaces torch's backend choice with CUDA's (flash attention, else memory-efficient
  attention, else the math path that materialises the score matrices) and honours
  ``torch.nn.attention.sdpa_kernel``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_LOWER_PRECISION = {  # CUDA autocast's lower-precision list, as the ops reach the dispatcher
    aten.convolution, aten._convolution, aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.addbmm, aten.mv,
    aten.addmv, aten.addr, aten._prelu_kernel, aten._scaled_dot_product_flash_attention,
}
_LOWER_PRECISION_FUNCTIONS = {  # the same list where it is called from Python
    torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
    torch.conv_transpose3d, F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.baddbmm, torch.addmm,
    torch.addbmm, torch.einsum, F.prelu,
}
_FP32 = {  # its fp32 list (and the fp32-accumulating reductions)
    aten.acos, aten.asin, aten.cosh, aten.erfinv, aten.exp, aten.expm1, aten.log, aten.log10, aten.log2, aten.log1p,
    aten.reciprocal, aten.rsqrt, aten.sinh, aten.tan, aten.pow, aten.softplus, aten.native_layer_norm,
    aten.native_group_norm, aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_nearest3d,
    aten._upsample_nearest_exact1d, aten._upsample_nearest_exact2d, aten._upsample_nearest_exact3d,
    aten.upsample_linear1d, aten.upsample_bilinear2d, aten.upsample_trilinear3d, aten.upsample_bicubic2d,
    aten.logsumexp, aten.cdist, aten.dist, aten.renorm,
}
_FP32_OUTPUT = {aten.sum, aten.cumsum, aten.prod, aten.linalg_vector_norm}  # fp32 via their dtype argument
_SOFTMAX = {aten._softmax, aten._log_softmax}  # softmax(x, dtype=float): half_to_float, no copy on CUDA
_LOW_FLOATS = (torch.float16, torch.bfloat16)


class AutocastEmulation(TorchDispatchMode):
    """CUDA ``torch.autocast(dtype=fp16)`` for tensors of ``device_type`` (``meta`` has no autocast of its own).

    Casts happen at the dispatch level, so composite operations are cast at their parts (``linear`` at its
    ``addmm``): the same tensors in the same dtypes, the casts' copies included. ``suspended`` turns it off (inside
    scaled-dot-product attention, which CUDA autocast casts once at its entry)."""

    def __init__(self, device_type: str = "meta", dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.device_type = device_type
        self.dtype = dtype
        self.suspended = False

    def _cast(self, value: object, dtype: torch.dtype, sources: tuple[torch.dtype, ...]) -> object:
        if isinstance(value, torch.Tensor) and value.device.type == self.device_type and value.dtype in sources:
            return value.to(dtype)
        return value

    def cast_lower(self, value: object) -> object:
        return self._cast(value, self.dtype, tuple(d for d in (torch.float32, *_LOW_FLOATS) if d != self.dtype))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.suspended:
            packet = func.overloadpacket
            if packet in _LOWER_PRECISION:
                args, kwargs = _map_tensors(self.cast_lower, args, kwargs)
            elif packet in _FP32:
                args, kwargs = _map_tensors(lambda v: self._cast(v, torch.float32, _LOW_FLOATS), args, kwargs)
            elif packet in _FP32_OUTPUT and kwargs.get("dtype") is None and _first_dtype(args) in _LOW_FLOATS:
                kwargs = {**kwargs, "dtype": torch.float32}
            elif packet in _SOFTMAX and _first_dtype(args) in _LOW_FLOATS and len(args) >= 3 and not args[2]:
                args = (args[0], args[1], True, *args[3:])
        return func(*args, **kwargs)


def _first_dtype(args: tuple) -> torch.dtype | None:
    return args[0].dtype if args and isinstance(args[0], torch.Tensor) else None


def _map_tensors(fn: Callable[[object], object], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def convert(value: object) -> object:
        if isinstance(value, list | tuple):
            return type(value)(convert(v) for v in value)
        return fn(value)

    return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}


def _sdpa_backends() -> tuple[bool, bool, bool]:
    cuda = torch.backends.cuda
    return cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled()


def cuda_attention_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                           enable_gqa: bool = False) -> str:
    """The kernel CUDA's ``scaled_dot_product_attention`` picks on an sm80+ GPU (flash, else memory-efficient,
    else math) under the current ``sdpa_kernel`` settings: ``"flash"``, ``"efficient"`` or ``"math"``."""
    flash, efficient, math_ok = _sdpa_backends()
    # the fused kernels need a unit stride in the last dimension (sdp_utils' check_last_dim_stride_equals_1): a
    # transposed q/k/v falls back to the math kernel, which materialises the scores
    four_d = q.dim() == k.dim() == v.dim() == 4 and all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in (q, k, v))
    head = q.shape[-1]
    low = q.dtype in _LOW_FLOATS and k.dtype == q.dtype and v.dtype == q.dtype
    if (flash and four_d and low and attn_mask is None and not enable_gqa and head <= 256 and head % 8 == 0
            and k.shape[-1] == head and v.shape[-1] == head):
        return "flash"
    align = 8 if q.dtype in _LOW_FLOATS else 4
    if (efficient and four_d and not enable_gqa and q.dtype in (*_LOW_FLOATS, torch.float32)
            and k.dtype == q.dtype and v.dtype == q.dtype
            and head % align == 0 and k.shape[-1] == head and v.shape[-1] % align == 0):
        return "efficient"
    if not math_ok:
        raise RuntimeError("No viable backend for scaled_dot_product_attention was found (emulated CUDA choice).")
    return "math"


class CudaAttention(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` on ``device_type`` tensors through the kernel CUDA would choose
    (:func:`cuda_attention_backend`), with ATen's own mask handling; other devices are left alone. ``autocast``: the
    active :class:`AutocastEmulation`: its casting applies once at the attention call (CUDA autocast lists
    ``scaled_dot_product_attention``) and is suspended inside; convolutions and matrix products are cast here, at
    the Python call, as CUDA autocast does (``conv2d`` checks its dtypes before reaching the dispatcher).
    ``choices`` counts the attention kernels chosen."""

    def __init__(self, device_type: str = "meta", autocast: AutocastEmulation | None = None) -> None:
        super().__init__()
        self.device_type = device_type
        self.autocast = autocast
        self.choices: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and isinstance(args[0], torch.Tensor) \
                and args[0].device.type == self.device_type:
            return self._attention(*args, **kwargs)
        if func in _LOWER_PRECISION_FUNCTIONS and self.autocast is not None and not self.autocast.suspended:
            # CUDA autocast casts these at the top (conv2d checks its dtypes before reaching the dispatcher)
            args, kwargs = _map_tensors(self.autocast.cast_lower, args, kwargs)
        return func(*args, **kwargs)

    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        autocast = self.autocast if self.autocast is not None and not self.autocast.suspended else None
        if autocast is not None:
            q, k, v = (autocast.cast_lower(t) for t in (q, k, v))
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = autocast.cast_lower(attn_mask)
        with self._suspend_autocast():
            backend = "math" if is_causal else cuda_attention_backend(q, k, v, attn_mask, enable_gqa)
            self.choices[backend] = self.choices.get(backend, 0) + 1
            if attn_mask is not None and attn_mask.dtype == torch.bool:  # ATen's convert_boolean_attn_mask
                zero = torch.zeros((), dtype=q.dtype, device=attn_mask.device)
                attn_mask = torch.where(attn_mask.logical_not(), -math.inf, zero)
            if backend == "flash":
                return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False,
                                                                scale=scale)[0]
            if backend == "efficient":
                if attn_mask is not None:  # ATen's preprocess_mask: last dim padded to 16, expanded
                    length = attn_mask.shape[-1]
                    padded = -(-length // 16) * 16
                    if padded != length:
                        attn_mask = F.pad(attn_mask, (0, padded - length))[..., :length]
                    attn_mask = attn_mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
                return aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, False, dropout_p, is_causal,
                                                                    scale=scale)[0]
            return aten._scaled_dot_product_attention_math(q, k, v, attn_mask, dropout_p, is_causal, None,
                                                           scale=scale, enable_gqa=enable_gqa)[0]

    @contextlib.contextmanager
    def _suspend_autocast(self) -> Iterator[None]:
        if self.autocast is None:
            yield
            return
        before = self.autocast.suspended
        self.autocast.suspended = True
        try:
            yield
        finally:
            self.autocast.suspended = before

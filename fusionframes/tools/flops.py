"""Counting the dense FLOPs of a model call, and model FLOP utilisation (MFU).

:func:`count_flops` runs a callable under ``torch.utils.flop_counter.FlopCounterMode``, which reads the shapes of every
convolution, matrix product and fused attention kernel that runs (on any device, ``meta`` included, where it costs no
arithmetic). Only multiply-accumulates are counted, two FLOPs each; norms, activations, softmax and elementwise
arithmetic are not (they are a few per cent of the total and bound by memory, not compute). That is the convention of
``docs/performance.md`` and of MFU figures in general.

The hand formulas (:func:`conv_flops`, :func:`linear_flops`, :func:`attention_flops`) let tests check the counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = [
    "FlopCount",
    "PEAK_TFLOPS",
    "attention_flops",
    "conv_flops",
    "count_flops",
    "linear_flops",
    "mfu",
    "peak_tflops",
]

#: dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity); first match in the device name wins
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
    ("L4", 121.0),
)

_CATEGORIES = {
    "convolution": "conv",
    "_convolution": "conv",
    "cudnn_convolution": "conv",
    "convolution_overrideable": "conv",
    "_slow_conv2d_forward": "conv",
    "mkldnn_convolution": "conv",
    "mm": "matmul",
    "addmm": "matmul",
    "_scaled_mm": "matmul",
    "bmm": "attention",
    "baddbmm": "attention",
}


@dataclass
class FlopCount:
    """FLOPs of one call: the total and the split per aten operator."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def by_category(self) -> dict[str, int]:
        """conv / matmul (linear layers) / attention (batched products and fused attention kernels)."""
        out: dict[str, int] = {}
        for op, flops in self.by_op.items():
            name = op.split(".")[-1]
            category = _CATEGORIES.get(name, "attention" if "attention" in name else "other")
            out[category] = out.get(category, 0) + flops
        return out

    def __add__(self, other: FlopCount) -> FlopCount:
        ops = dict(self.by_op)
        for op, flops in other.by_op.items():
            ops[op] = ops.get(op, 0) + flops
        return FlopCount(self.total + other.total, ops)

    def scaled(self, factor: int) -> FlopCount:
        return FlopCount(self.total * factor, {op: flops * factor for op, flops in self.by_op.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_category": self.by_category, "by_op": dict(self.by_op)}


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu`` (not in torch's table): Q K^T and P V."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mkldnn_convolution_flops(input_shape, weight_shape, bias_shape, padding, stride, dilation, groups, *args,
                              out_shape=None, **kwargs) -> int:
    """``aten.mkldnn_convolution`` (the CPU temporal convolutions call it directly; not in torch's table)."""
    return conv_flops(input_shape, weight_shape, stride, padding, dilation)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    for name, count in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_attention_flops),
                        ("mkldnn_convolution", _mkldnn_convolution_flops)):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = count
    return mapping


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, FlopCount]:
    """Run ``fn(*args, **kwargs)`` under a FLOP counter; returns its result and the :class:`FlopCount`."""
    with FlopCounterMode(display=False, depth=None, custom_mapping=_custom_mapping()) as counter:
        result = fn(*args, **kwargs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items() if n}
    return result, FlopCount(int(counter.get_total_flops()), by_op)


# ----------------------------------------------------------------------------------------------------------------------
# Hand formulas
# ----------------------------------------------------------------------------------------------------------------------


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (int(value),) * n


def conv_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    transposed: bool = False,
) -> int:
    """``2 * N * C_out * prod(out spatial) * (C_in / groups) * prod(kernel)`` for a convolution.

    ``weight_shape`` is the module's (``(C_out, C_in/groups, *k)``, or ``(C_in, C_out/groups, *k)`` transposed).
    A transposed convolution does that work per *input* position: ``2 * N * prod(in spatial) * C_in *
    (C_out / groups) * prod(kernel)``.
    """
    n, spatial = int(input_shape[0]), [int(s) for s in input_shape[2:]]
    dims = len(spatial)
    kernel = [int(k) for k in weight_shape[2:]]
    if transposed:
        return 2 * n * math.prod(spatial) * int(weight_shape[0]) * int(weight_shape[1]) * math.prod(kernel)
    stride_, padding_, dilation_ = _tuple(stride, dims), _tuple(padding, dims), _tuple(dilation, dims)
    out = [(s + 2 * p - d * (k - 1) - 1) // st + 1
           for s, k, st, p, d in zip(spatial, kernel, stride_, padding_, dilation_)]
    return 2 * n * int(weight_shape[0]) * math.prod(out) * int(weight_shape[1]) * math.prod(kernel)


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """``2 * tokens * in * out`` (bias not counted)."""
    return 2 * int(tokens) * int(in_features) * int(out_features)


def attention_flops(batch_heads: int, query_len: int, key_len: int, head_dim: int, value_dim: int | None = None) -> int:
    """Scores ``Q K^T`` plus ``P V``: ``2 * BH * Lq * Lk * (d + d_v)``."""
    value_dim = head_dim if value_dim is None else value_dim
    return 2 * int(batch_heads) * int(query_len) * int(key_len) * (int(head_dim) + int(value_dim))


# ----------------------------------------------------------------------------------------------------------------------
# Utilisation
# ----------------------------------------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU (by name), else None."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOP utilisation ``flops / (seconds * peak)``, ``peak`` in TFLOP/s; None without a peak or a time."""
    if not peak or seconds <= 0:
        return None
    return flops / (seconds * peak * 1e12)

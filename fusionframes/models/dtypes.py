"""The one dtype policy for every model, used by the command line, the library and the nodes [OB-46].

U-Nets: ``auto`` is fp32 on the CPU (the reference path parity is checked on) and bf16 on GPUs that support it, else
fp16. MoVQs default to fp32, as the official code runs them. FLAN-UL2 never computes in fp16 (its activations overflow
there): ``auto`` is bf16 on GPUs that support it and fp32 elsewhere; ``fp8`` keeps its linear weights in float8 and
computes in bf16 (or fp32 without bf16).
"""

from __future__ import annotations

import torch

from ..errors import InputError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: choices for the U-Nets and MoVQs
MODEL_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: choices for the T5 text encoder: no fp16
TEXT_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp8")


def supports_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes in bf16 at full speed (CUDA: the GPU's own answer; the CPU: never chosen)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def model_dtype(choice: str, device: str | torch.device, *, bf16: bool | None = None) -> torch.dtype:
    """Weight dtype of a U-Net or MoVQ. ``bf16``: the host's judgement of bf16 support (None: ask torch)."""
    if choice != "auto":
        if choice not in DTYPES:
            raise InputError(f"dtype {choice!r} is not one of {', '.join(MODEL_DTYPE_CHOICES)}.")
        return DTYPES[choice]
    if torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16 if (supports_bf16(device) if bf16 is None else bf16) else torch.float16


def text_dtype(choice: str, device: str | torch.device, *, bf16: bool | None = None) -> tuple[torch.dtype, bool]:
    """(compute dtype, fp8 weight storage) of FLAN-UL2; never fp16."""
    if choice == "fp16":
        raise InputError("FLAN-UL2 overflows in fp16 (its activations exceed 65504 and the video turns to noise): "
                         "choose bf16, fp32 or fp8 for the text encoder (auto picks bf16 where the GPU supports it).")
    if choice not in TEXT_DTYPE_CHOICES:
        raise InputError(f"text encoder dtype {choice!r} is not one of {', '.join(TEXT_DTYPE_CHOICES)}.")
    if choice in ("fp32", "bf16"):
        return DTYPES[choice], False
    gpu = torch.device(device).type != "cpu"
    has_bf16 = gpu and (supports_bf16(device) if bf16 is None else bf16)
    return (torch.bfloat16 if has_bf16 else torch.float32), choice == "fp8"

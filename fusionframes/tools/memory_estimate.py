"""Peak GPU memory of every pipeline stage, estimated on the CPU without allocating anything.

Every stage runs its real code (the benchmark's stage functions, :mod:`fusionframes.tools.bench`) at any model size,
resolution and frame count on the ``meta`` device: tensors have shapes, dtypes and storages but no data, so no
arithmetic happens and nothing is allocated. A dispatch mode (:class:`DeviceMemoryTracker`) sees every tensor
operation, adds the bytes of each new output storage (deduplicated by storage, rounded up to the CUDA caching
allocator's 512-byte blocks) and subtracts them when Python frees the storage; the running maximum is what
``torch.cuda.max_memory_allocated`` would report for the stage, less the allocator's fragmentation and what kernels
allocate inside (cuDNN/cuBLAS workspaces). Weights are not counted by the tracker: they are added per scenario,
so one run gives the activation peak of a stage and any set of resident models.

What runs on ``meta`` is made to behave as it does on a CUDA GPU:

* dtypes: the benchmark's CUDA dtypes (``reference``: fp16 U-Nets, fp32/fp16 T5 and MoVQs; ``fast``: bf16);
* attention: :class:`CudaAttention` replaces torch's backend choice (on ``meta`` it would always take the math
  path) by the CUDA one -- flash attention, else memory-efficient attention, else the math path that materialises
  the score matrices -- honouring ``torch.nn.attention.sdpa_kernel``, so ``reference`` (math only) materialises the
  scores as the official einsum attention does and ``fast`` does not;
* fp16 autocast of the ``reference`` mode: :class:`AutocastEmulation` applies CUDA autocast's op lists (matrix
  products and convolutions in fp16, normalisations, upsampling, softmax and friends in fp32) at the dispatch level;
* ``aten._safe_softmax`` (the math path's softmax) allocates three more score-sized tensors inside its C++ body,
  which no dispatch mode sees: they are added as a transient (``INTERNAL_BYTES``).

``python -m fusionframes.tools.memory_estimate`` prints the per-workflow tables and the scaling table (``--out`` writes
JSON); :func:`add_arguments` / :func:`run` are the command-line entry points.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import InputError
from ..models.fp8_weights import store_linear_weights_in_fp8
from ..models.movq.model import official_clip_frames
from ..releases import FPS_PASSES, LATENT_SCALE
from ..runtime import stages
from .bench import (
    DEFAULT_RESOLUTION,
    BenchSettings,
    ModelSet,
    StagePipeline,
    build_models,
    materialise,
    mode_context,
    release_config,
    run_limited,
    stage_autocast,
    t5_config,
)

#: the CUDA caching allocator rounds every block up to this many bytes (c10/cuda/CUDACachingAllocator.cpp)
CUDA_BLOCK = 512
GIB = 1 << 30
SCHEMA = "fusionframes-memory-estimate/1"
MODES = ("reference", "fast")
aten = torch.ops.aten


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def round_allocation(nbytes: int, granularity: int = CUDA_BLOCK) -> int:
    """Bytes a storage of ``nbytes`` occupies in the allocator (nothing for an empty one)."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // granularity) * granularity


# ----------------------------------------------------------------------------------------------------------------------
# Tracking live storages
# ----------------------------------------------------------------------------------------------------------------------


def _safe_softmax_internals(args: tuple, kwargs: dict, granularity: int) -> int:
    """``aten._safe_softmax`` (ATen's attention.cpp): ``softmax`` output, ``self == -inf`` (bool) and its row-wise
    ``all`` stay alive next to the returned ``where`` (output-sized) until the function returns."""
    x, dim = args[0], args[1]
    dtype = args[2] if len(args) > 2 and args[2] is not None else kwargs.get("dtype") or x.dtype
    element = torch.empty((), dtype=dtype).element_size()
    rows = x.numel() // max(1, x.shape[dim])
    return (round_allocation(x.numel() * element, granularity) + round_allocation(x.numel(), granularity)
            + round_allocation(rows, granularity))


#: ops whose kernels allocate, next to their outputs, tensors no dispatch mode sees: op -> f(args, kwargs, g) bytes
INTERNAL_BYTES: dict[Any, Callable[[tuple, dict, int], int]] = {
    aten._safe_softmax.default: _safe_softmax_internals,
}


class DeviceMemoryTracker(TorchDispatchMode):
    """Bytes of the live tensor storages on one device type, as the CUDA allocator's ``memory_allocated`` counts them.

    Every operation's output storages are added when first seen (rounded up to ``granularity``), and subtracted when
    Python frees them (a weak reference to the storage; torch keeps one Python object per storage alive as long as
    the storage is). Storages given to ``exclude`` (the weights) are never counted; a tensor that existed before the
    tracker (a stage's input) is counted from :meth:`add` or from the first operation that reads it. ``peak`` is the
    running maximum, including the internal temporaries of :data:`INTERNAL_BYTES`; ``peak_op`` / ``peak_module``
    say where it happened (the module when :class:`ModuleNames` is active)."""

    def __init__(self, device_type: str = "meta", *, granularity: int = CUDA_BLOCK,
                 exclude: Iterable[torch.Tensor] = (), where: ModuleNames | None = None) -> None:
        super().__init__()
        self.device_type = device_type
        self.granularity = granularity
        self.where = where
        self._excluded: dict[int, weakref.ref] = {}
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0
        self.peak_op = ""
        self.peak_module = ""
        self.inputs = 0  # bytes of tensors that existed before (added or first read), still counted in current
        self.allocations = 0
        self.largest = 0
        self.largest_op = ""
        self.exclude(exclude)

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def _on_device(self, value: object) -> bool:
        return isinstance(value, torch.Tensor) and value.device.type == self.device_type

    def exclude(self, tensors: Iterable[torch.Tensor]) -> None:
        """Never count these tensors' storages (weights: they are added per scenario)."""
        for tensor in tensors:
            if self._on_device(tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                self._excluded[key] = weakref.ref(storage, partial(self._forget_excluded, key))

    def _forget_excluded(self, key: int, _ref: weakref.ref) -> None:
        self._excluded.pop(key, None)

    def add(self, tensors: Iterable[object]) -> None:
        """Count tensors that exist already (a stage's inputs on the device) from now on."""
        for tensor in tensors:
            self._track(tensor, "input", is_input=True)
        self._update_peak("inputs", 0)

    def _track(self, tensor: object, op: str, is_input: bool = False) -> None:
        if not self._on_device(tensor):
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live or key in self._excluded:
            return
        nbytes = round_allocation(storage.nbytes(), self.granularity)
        self._live[key] = (weakref.ref(storage, partial(self._release, key)), nbytes)
        self.current += nbytes
        if is_input:
            self.inputs += nbytes
        else:
            self.allocations += 1
            if nbytes > self.largest:
                self.largest, self.largest_op = nbytes, op

    def _release(self, key: int, _ref: weakref.ref) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current -= entry[1]

    def _update_peak(self, op: str, transient: int) -> None:
        total = self.current + transient
        if total > self.peak:
            self.peak = total
            self.peak_op = op
            self.peak_module = self.where.current() if self.where is not None else ""

    def reset_peak(self) -> None:
        self.peak = self.current
        self.peak_op = self.peak_module = ""

    # -- the dispatch hook -------------------------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tree_leaves((args, kwargs)):
            self._track(value, "input", is_input=True)
        internal = INTERNAL_BYTES.get(func)
        transient = internal(args, kwargs, self.granularity) if internal is not None else 0
        out = func(*args, **kwargs)
        name = str(func.overloadpacket.__name__)
        for value in tree_leaves(out):
            self._track(value, name)
        self._update_peak(name, transient)
        return out


class ModuleNames:
    """The innermost running module's qualified name (global forward hooks), for saying where a peak happened."""

    def __init__(self, roots: dict[str, nn.Module]) -> None:
        self.names = {id(module): name for root_name, root in roots.items()
                      for name, module in root.named_modules(prefix=root_name)}
        self.stack: list[str] = []
        self._handles: list[Any] = []

    def current(self) -> str:
        return self.stack[-1] if self.stack else ""

    def _pre(self, module: nn.Module, _args: Any) -> None:
        self.stack.append(self.names.get(id(module), type(module).__name__))

    def _post(self, module: nn.Module, _args: Any, _out: Any) -> None:
        if self.stack:
            self.stack.pop()

    def __enter__(self) -> ModuleNames:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.stack.clear()
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.stack.clear()


# ----------------------------------------------------------------------------------------------------------------------
# Making the meta device behave as CUDA: autocast and the attention kernel choice
# ----------------------------------------------------------------------------------------------------------------------

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
    four_d = q.dim() == k.dim() == v.dim() == 4
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


@dataclass
class Measurement:
    """One measured run: bytes at the peak (inputs included, weights excluded) and where it happened."""

    peak: int
    inputs: int
    peak_op: str
    peak_module: str
    largest_allocation: int
    largest_op: str
    allocations: int
    attention: dict[str, int]
    seconds: float


def measure(fn: Callable[[], Any], *, device_type: str = "meta", exclude: Iterable[torch.Tensor] = (),
            inputs: Iterable[object] = (), autocast: bool = False, granularity: int = CUDA_BLOCK,
            modules: dict[str, nn.Module] | None = None, cuda_attention: bool = True) -> Measurement:
    """Run ``fn()`` under no_grad and track the device memory it allocates.

    ``exclude``: tensors never counted (weights); ``inputs``: tensors alive at the start, counted; ``autocast``:
    emulate CUDA fp16 autocast; ``cuda_attention``: choose attention kernels as CUDA does (only acts on
    ``device_type`` tensors: leave it on for ``meta``); ``modules``: named roots for :attr:`Measurement.peak_module`.
    """
    where = ModuleNames(modules or {})
    tracker = DeviceMemoryTracker(device_type, granularity=granularity, exclude=exclude, where=where)
    emulation = AutocastEmulation(device_type) if autocast else None
    attention = CudaAttention(device_type, emulation) if cuda_attention else None
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(where)
        if attention is not None:
            stack.enter_context(attention)
        stack.enter_context(tracker)
        tracker.add(tree_leaves(list(inputs)))
        if emulation is not None:
            stack.enter_context(emulation)  # outermost: its casts are tracked
        result = fn()
        del result
    return Measurement(tracker.peak, tracker.inputs, tracker.peak_op, tracker.peak_module, tracker.largest,
                       tracker.largest_op, tracker.allocations, dict(attention.choices) if attention else {},
                       time.perf_counter() - started)


# ----------------------------------------------------------------------------------------------------------------------
# The stages at any size on meta
# ----------------------------------------------------------------------------------------------------------------------

META = torch.device("meta")

#: the models each stage runs (bench stage names; ``image`` = image-to-video's key-frame encoding)
STAGE_MODELS_11 = {"text": ["t5"], "first_frame": ["keyframe"], "key_frame": ["movq"], "image": ["movq"],
                   "keyframes": ["keyframe"], "interpolation": ["interpolation"], "decode": ["video_movq"]}
STAGE_MODELS_10 = {"text": ["t5"], "keyframes": ["keyframe"], "interpolation": ["interpolation"],
                   "decode": ["movq"]}
SCENARIOS = ("all_resident", "default", "offload")
SCENARIO_TITLES = {
    "all_resident": "every model resident (the official code, bench)",
    "default": "engine default: U-Nets + MoVQs resident, text encoder on the GPU only to encode",
    "offload": "--offload: only the running stage's models on the GPU",
}


def stage_models(release: str, stage: str) -> list[str]:
    table = STAGE_MODELS_11 if release == "1.1" else STAGE_MODELS_10
    return table["interpolation" if stage.startswith("interpolation") else stage]


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def weight_bytes(module: nn.Module, granularity: int = CUDA_BLOCK) -> int:
    """Device bytes of a module's parameters and buffers: one allocation per storage, as loading makes them."""
    seen: dict[int, int] = {}
    for tensor in _tensors(module):
        storage = tensor.untyped_storage()
        seen[storage._cdata] = round_allocation(storage.nbytes(), granularity)
    return sum(seen.values())


@dataclass
class StageMemory:
    """Activation peak of one stage (bytes of every non-weight device tensor at the stage's peak, its inputs
    included) and where it happened."""

    release: str
    mode: str
    stage: str
    width: int
    height: int
    frames: int  # keyframes (sampling stages), input frames (interpolation), clip length (decode)
    models: list[str]
    activation_bytes: int
    input_bytes: int
    peak_op: str
    peak_module: str
    largest_allocation_bytes: int
    attention: dict[str, int]
    seconds: float
    note: str = ""


@dataclass
class ModeModels:
    """The models of one release in one mode on ``meta`` with the GPU dtypes, and their weight bytes."""

    release: str
    mode: str
    models: ModelSet
    weights: dict[str, int]
    dtypes: dict[str, str]
    t5_fp8: nn.Module | None = None
    exclude: list[torch.Tensor] = field(default_factory=list)
    roots: dict[str, nn.Module] = field(default_factory=dict)


def build_mode_models(release: str, mode: str, size: str = "official", *, fast_movq_dtype: str = "fp32",
                      fp8_text: bool = True, granularity: int = CUDA_BLOCK) -> ModeModels:
    """Every model of ``release`` on ``meta`` in ``mode``'s CUDA dtypes (bench's builders); in ``fast`` mode also a
    T5 whose linear weights are stored in float8 (:mod:`fusionframes.models.fp8_weights`, computing in bf16)."""
    models = build_models(release, size, META, mode, fast_movq_dtype=fast_movq_dtype, dtypes_for="cuda")
    roots: dict[str, nn.Module] = {**models.unets, **models.movqs}
    weights = {name: weight_bytes(model, granularity) for name, model in roots.items()}
    weights["t5"] = weight_bytes(models.t5, granularity) + weight_bytes(models.projection, granularity)
    roots["t5"] = models.t5
    roots["projection"] = models.projection
    dtypes = dict(models.dtypes)
    t5_fp8 = None
    if fp8_text and mode == "fast":
        with torch.device("meta"):
            # eager attention, as the engine's text encoder (text_encoder.load_t5_encoder) runs it
            t5_fp8 = materialise(type(models.t5)(t5_config(size, "eager")), META, torch.bfloat16, 0)
        t5_fp8.set_input_embeddings(t5_fp8.shared)
        store_linear_weights_in_fp8(t5_fp8)
        weights["t5_fp8"] = weight_bytes(t5_fp8, granularity) + weight_bytes(models.projection, granularity)
        roots["t5_fp8"] = t5_fp8
        dtypes["t5_fp8"] = "fp8 weights, bf16 compute"
    exclude = [t for model in roots.values() for t in _tensors(model)]
    return ModeModels(release, mode, models, weights, dtypes, t5_fp8, exclude, roots)


def _measure_stage(mm: ModeModels, stage: str, fn: Callable[[], Any], inputs: Iterable[object],
                   granularity: int) -> Measurement:
    autocast = mm.mode == "reference" and stage_autocast(mm.release, "decode" if stage == "image" else stage)
    with mode_context(mm.mode, META, autocast):  # reference: sdpa_kernel(MATH); CUDA autocast is emulated here
        return measure(fn, exclude=mm.exclude, inputs=inputs, autocast=autocast, granularity=granularity,
                       modules=mm.roots)


def _device_values(values: dict[str, Any]) -> list[torch.Tensor]:
    found = []
    for value in values.values():
        for leaf in tree_leaves(value if isinstance(value, torch.Tensor) else vars(value)):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "meta":
                found.append(leaf)
    return found


class StageEstimator:
    """Measures stages of one release and mode, caching every (stage, shape) it has measured."""

    def __init__(self, mm: ModeModels, granularity: int = CUDA_BLOCK, size: str = "official",
                 log: Callable[[str], None] | None = None) -> None:
        self.mm = mm
        self.granularity = granularity
        self.size = size
        self.log = log
        self.cache: dict[tuple, StageMemory] = {}
        self._decoders: dict[tuple[str, torch.dtype], nn.Module] = {}

    def _record(self, key: tuple, stage: str, width: int, height: int, frames: int, models: list[str],
                m: Measurement, note: str = "") -> StageMemory:
        result = StageMemory(self.mm.release, self.mm.mode, stage, width, height, frames, models, m.peak, m.inputs,
                             m.peak_op, m.peak_module, m.largest_allocation, m.attention, m.seconds, note)
        self.cache[key] = result
        if self.log is not None:
            self.log(f"[{self.mm.release} {self.mm.mode}] {stage} {width}x{height} frames {frames}: "
                     f"{result.activation_bytes / GIB:.2f} GiB ({m.seconds:.1f} s)")
        return result

    def _pipeline(self, width: int, height: int, keyframes: int, passes: int, models: ModelSet) -> StagePipeline:
        fps = next(name for name, count in FPS_PASSES.items() if count == passes)
        settings = BenchSettings(release=self.mm.release, size=self.size, device="meta", fps=fps, width=width,
                                 height=height, keyframes=keyframes, skip_text=True,
                                 modes=(self.mm.mode,)).resolved()
        return StagePipeline(settings, models, META)

    def text(self, fp8: bool = False) -> StageMemory:
        key = ("text", fp8)
        if key in self.cache:
            return self.cache[key]
        models = self.mm.models if not fp8 else replace(self.mm.models, t5=self.mm.t5_fp8)
        side = DEFAULT_RESOLUTION[self.size]
        stage = self._pipeline(side, side, 2, 0, models)._text_stage()
        m = _measure_stage(self.mm, "text", lambda: run_limited(stage, None, META), [], self.granularity)
        return self._record(key, "text" if not fp8 else "text (fp8 T5)", 0, 0, 0,
                            ["t5_fp8" if fp8 else "t5"], m)

    def pipeline_stages(self, width: int, height: int, keyframes: int, passes: int) -> dict[str, StageMemory]:
        """Every sampling stage (and the 1.1 key-frame round trip) of a T2V run with ``passes`` interpolation
        passes; one sampling step each (every step allocates the same)."""
        pipeline = self._pipeline(width, height, keyframes, passes, self.mm.models)
        pipeline.text()  # the encoded prompt: a stage input on the device
        out: dict[str, StageMemory] = {}
        count = keyframes
        for stage in pipeline.stage_list():
            if stage.name == "decode":
                continue
            frames = count if stage.name.startswith("interpolation") else keyframes
            if stage.name in ("first_frame", "key_frame"):
                frames = 1  # one image, whatever the keyframe count
            key = (stage.name, width, height, frames)
            if key not in self.cache:
                inputs = _device_values(pipeline.values)
                m = _measure_stage(self.mm, stage.name, lambda stage=stage: run_limited(stage, 1, META), inputs,
                                   self.granularity)
                self._record(key, stage.name, width, height, frames, stage_models(self.mm.release, stage.name), m)
            out[stage.name] = self.cache[key]
            if stage.name.startswith("interpolation"):
                count = 4 * count - 3
        return out

    def image(self, width: int, height: int) -> StageMemory:
        """Image-to-video's key frame: the image MoVQ encodes the (fitted) image."""
        key = ("image", width, height, 1)
        if key not in self.cache:
            movq = self.mm.models.movqs["movq"]
            m = _measure_stage(self.mm, "image", lambda: movq.encode(torch.zeros(1, 3, height, width, device=META)),
                               [], self.granularity)
            self._record(key, "image", width, height, 1, ["movq"], m)
        return self.cache[key]

    def decode(self, width: int, height: int, frames: int, *, clip: int | None = None, tile: int | None = None,
               dtype: torch.dtype | None = None) -> StageMemory:
        """The decode of a ``frames``-frame video: its largest clip (default: the official chunking; one clip is on
        the device at a time, decode_video moves each decoded clip to the CPU), with the whole latent video as an
        input. ``tile``: decode in tiles of ``tile`` latent pixels (``movq.decode_tiles``: one tile on the device at
        a time); ``dtype``: the decoder's weights in this dtype instead of the mode's."""
        clip = min(frames, clip or official_clip_frames(frames))
        key = ("decode", width, height, clip, tile, dtype)
        if key not in self.cache:
            kind = "video_movq" if self.mm.release == "1.1" else "movq"
            decoder, exclude = self._decoder(kind, dtype)
            h, w = height // LATENT_SCALE, width // LATENT_SCALE
            latents = torch.zeros(frames, 4, h, w, device=META)
            part = latents[:clip] if tile is None else latents[:clip, :, :min(tile, h), :min(tile, w)]
            mode_autocast = self.mm.mode == "reference" and stage_autocast(self.mm.release, "decode")
            with mode_context(self.mm.mode, META, mode_autocast):
                m = measure(lambda: decoder.decode(part), exclude=[*self.mm.exclude, *exclude], inputs=[latents],
                            autocast=mode_autocast, granularity=self.granularity, modules={kind: decoder})
            note = f"clips of {clip} frames" + (f", tiles of {tile * LATENT_SCALE} px" if tile else "")
            if dtype is not None:
                note += f", {dtype_name(dtype)} decoder"
            self._record(key, "decode", width, height, clip, [kind], m, note=note)
        return self.cache[key]

    def _decoder(self, kind: str, dtype: torch.dtype | None) -> tuple[nn.Module, list[torch.Tensor]]:
        model = self.mm.models.movqs[kind]
        if dtype is None or dtype == next(model.parameters()).dtype:
            return model, []
        if (kind, dtype) not in self._decoders:
            from ..io.checkpoints import build_model

            with torch.device("meta"):
                other = build_model(self.mm.release, kind, getattr(release_config(self.mm.release, self.size), kind))
            self._decoders[(kind, dtype)] = materialise(other, META, dtype, 0)
        other = self._decoders[(kind, dtype)]
        return other, _tensors(other)


# ----------------------------------------------------------------------------------------------------------------------
# Workflows and scenarios
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workflow:
    name: str
    release: str
    passes: int
    image_to_video: bool = False

    def frames(self, keyframes: int) -> int:
        count = keyframes
        for _ in range(self.passes):
            count = 4 * count - 3
        return count


WORKFLOWS = (
    Workflow("1.1 T2V low", "1.1", 0), Workflow("1.1 T2V medium", "1.1", 1), Workflow("1.1 T2V high", "1.1", 2),
    Workflow("1.1 I2V medium", "1.1", 1, image_to_video=True),
    Workflow("1.0 low", "1.0", 0), Workflow("1.0 medium", "1.0", 1), Workflow("1.0 high", "1.0", 2),
)
DEFAULT_KEYFRAMES = {"1.1": 12, "1.0": 15}


def workflow_stages(estimator: StageEstimator, workflow: Workflow, width: int, height: int, keyframes: int,
                    fp8_text: bool = False) -> list[StageMemory]:
    """The stages of a workflow in order, each measured (or taken from the cache)."""
    out = [estimator.text(fp8=fp8_text)]
    sampled = estimator.pipeline_stages(width, height, keyframes, workflow.passes)
    for name, result in sampled.items():
        if workflow.image_to_video and name in ("first_frame", "key_frame"):
            continue
        if workflow.image_to_video and name == "keyframes":
            out.append(estimator.image(width, height))
        out.append(result)
    out.append(estimator.decode(width, height, workflow.frames(keyframes)))
    return out


def scenario_weights(mm: ModeModels, stage: StageMemory, scenario: str) -> int:
    """Weight bytes resident during ``stage``: every model, the engine default or offloading."""
    text = stage.models[0] if stage.stage.startswith("text") else "t5"
    others = [name for name in ("keyframe", "interpolation", "movq", "video_movq") if name in mm.weights]
    if scenario == "all_resident":
        return mm.weights[text] + sum(mm.weights[name] for name in others)
    if scenario == "default":
        extra = mm.weights[text] if stage.stage.startswith("text") else 0
        return extra + sum(mm.weights[name] for name in others)
    if scenario == "offload":
        return sum(mm.weights[name] for name in stage.models)
    raise InputError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}.")


def workflow_report(mm: ModeModels, workflow: Workflow, rows: list[StageMemory], width: int, height: int,
                    keyframes: int, fp8_text: bool = False) -> dict[str, Any]:
    stages_out = []
    peaks = dict.fromkeys(SCENARIOS, 0)
    where = dict.fromkeys(SCENARIOS, "")
    for row in rows:
        entry = {**asdict(row), "scenarios": {}}
        for scenario in SCENARIOS:
            weights = scenario_weights(mm, row, scenario)
            total = weights + row.activation_bytes
            entry["scenarios"][scenario] = {"weight_bytes": weights, "total_bytes": total}
            if total > peaks[scenario]:
                peaks[scenario], where[scenario] = total, row.stage
        stages_out.append(entry)
    no_text = {s: max(e["scenarios"][s]["total_bytes"] for e in stages_out if not e["stage"].startswith("text"))
               for s in SCENARIOS}
    return {"workflow": workflow.name, "release": workflow.release, "mode": mm.mode + (" + fp8 T5" if fp8_text else ""),
            "width": width, "height": height, "keyframes": keyframes, "frames": workflow.frames(keyframes),
            "stages": stages_out, "peak_bytes": peaks, "peak_stage": where, "peak_bytes_text_on_cpu": no_text}


def scaling_rows(estimators: dict[str, StageEstimator], *, keyframes=(8, 12, 16), resolutions=(384, 512, 640, 768),
                 passes=(0, 1, 2), base: tuple[int, int, int] = (512, 12, 1)) -> list[dict[str, Any]]:
    """1.1 text-to-video peaks as one setting varies from ``base`` = (side, keyframes, passes)."""
    side0, frames0, passes0 = base
    settings = [("keyframes", side0, k, passes0) for k in keyframes]
    settings += [("resolution", s, frames0, passes0) for s in resolutions]
    settings += [("passes", side0, frames0, p) for p in passes]
    rows = []
    for mode, estimator in estimators.items():
        for varied, side, frames, count in settings:
            workflow = Workflow(f"1.1 T2V {count} passes", "1.1", count)
            stage_rows = workflow_stages(estimator, workflow, side, side, frames)
            report = workflow_report(estimator.mm, workflow, stage_rows, side, side, frames)
            rows.append({"mode": mode, "varied": varied, "side": side, "keyframes": frames, "passes": count,
                         "frames": workflow.frames(frames),
                         "activation_bytes": {r.stage: r.activation_bytes for r in stage_rows},
                         "decode_clip": stage_rows[-1].frames,
                         "peak_bytes": report["peak_bytes"], "peak_stage": report["peak_stage"],
                         "peak_bytes_text_on_cpu": report["peak_bytes_text_on_cpu"]})
    return rows


#: (label, clip frames or None = official, tile in latent pixels or None, decoder dtype or None = the mode's)
DECODE_VARIANTS = (
    ("official clips", None, None, None),
    ("bf16 decoder", None, None, torch.bfloat16),
    ("clips of 2 frames", 2, None, None),
    ("clips of 1 frame", 1, None, None),
    ("tiles of 256 px", None, 32, None),
    ("tiles of 128 px", None, 16, None),
    ("bf16, tiles of 256 px", None, 32, torch.bfloat16),
)


def decode_rows(estimator: StageEstimator, width: int, height: int, frames: int) -> list[dict[str, Any]]:
    """The decode stage's activation peak under the decoding options (clip length, tiles, decoder dtype), with the
    decoder's own weights (the offload total)."""
    rows = []
    kind = "video_movq" if estimator.mm.release == "1.1" else "movq"
    for label, clip, tile, dtype in DECODE_VARIANTS:
        result = estimator.decode(width, height, frames, clip=clip, tile=tile, dtype=dtype)
        weights = estimator.mm.weights[kind] if dtype is None else weight_bytes(estimator._decoder(kind, dtype)[0])
        rows.append({"release": estimator.mm.release, "mode": estimator.mm.mode, "variant": label,
                     "clip": result.frames, "tile_px": tile * LATENT_SCALE if tile else None,
                     "dtype": dtype_name(dtype) if dtype else estimator.mm.dtypes.get(kind, ""),
                     "activation_bytes": result.activation_bytes, "weight_bytes": weights,
                     "offload_total_bytes": weights + result.activation_bytes, "peak_module": result.peak_module})
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Running it all and printing
# ----------------------------------------------------------------------------------------------------------------------

MODE_DESCRIPTIONS = {
    "reference": "fp16 U-Nets under fp16 autocast, T5 fp32 (1.1) / fp16 (1.0), MoVQs fp32 (1.1) / fp16 (1.0), "
                 "math attention (materialised scores)",
    "fast": "bf16 U-Nets and T5, MoVQs {movq}, fused attention (flash / memory-efficient; math for 5-D temporal "
            "attention, as CUDA)",
}


def estimate(releases: Iterable[str] = ("1.1", "1.0"), modes: Iterable[str] = MODES, *, size: str = "official",
             width: int = 512, height: int = 512, keyframes: dict[str, int] | None = None, scaling: bool = True,
             fp8_text: bool = True, fast_movq_dtype: str = "fp32", granularity: int = CUDA_BLOCK,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole report: per workflow and mode, each stage's activation peak and the totals per scenario; with
    ``scaling`` the 1.1 scaling rows (their sides are multiples of 64 scaled like ``width`` at small sizes)."""
    started = time.perf_counter()
    stages.check_size(width, height)
    keyframes = {**DEFAULT_KEYFRAMES, **(keyframes or {})}
    modes = tuple(m for m in MODES if m in modes)
    if not modes:
        raise InputError(f"modes must be among {', '.join(MODES)}.")
    workflows, models_info, estimators11 = [], {}, {}
    for release in releases:
        for mode in modes:
            mm = build_mode_models(release, mode, size, fast_movq_dtype=fast_movq_dtype, fp8_text=fp8_text,
                                   granularity=granularity)
            models_info[f"{release} {mode}"] = {"dtypes": mm.dtypes, "weight_bytes": mm.weights}
            estimator = StageEstimator(mm, granularity, size, log)
            for workflow in (w for w in WORKFLOWS if w.release == release):
                rows = workflow_stages(estimator, workflow, width, height, keyframes[release])
                workflows.append(workflow_report(mm, workflow, rows, width, height, keyframes[release]))
                if mm.t5_fp8 is not None:
                    rows = workflow_stages(estimator, workflow, width, height, keyframes[release], fp8_text=True)
                    workflows.append(workflow_report(mm, workflow, rows, width, height, keyframes[release], True))
            if release == "1.1":
                estimators11[mode] = estimator
    decode_out: list[dict[str, Any]] = []
    if "1.1" in releases:
        base = estimators11.get("fast") or estimators11[modes[0]]
        decode_out = decode_rows(base, width, height, Workflow("", "1.1", 1).frames(keyframes["1.1"]))
    scaling_out: list[dict[str, Any]] = []
    if scaling and estimators11:
        # 384 ... 768 at 512: 0.75x to 1.5x the side, in multiples of 64
        sides = sorted({max(64, round(width * f / 64) * 64) for f in (0.75, 1.0, 1.25, 1.5)})
        scaling_out = scaling_rows(estimators11, resolutions=tuple(sides), base=(width, keyframes["1.1"], 1))
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "size": size,
        "granularity": granularity,
        "modes": {m: MODE_DESCRIPTIONS[m].format(movq=fast_movq_dtype) for m in modes},
        "scenarios": SCENARIO_TITLES,
        "models": models_info,
        "workflows": workflows,
        "decode_options": decode_out,
        "scaling": scaling_out,
        "seconds": time.perf_counter() - started,
        "notes": NOTES,
    }


NOTES = [
    "Estimated, not measured: every stage's real code runs on the meta device (no data, no arithmetic); live tensor "
    "storages are summed, each rounded up to 512 bytes (the CUDA caching allocator's block size).",
    "Not modelled: the CUDA context (~0.5 GB, outside torch's counters), allocator fragmentation and reserved-but-"
    "free memory (nvidia-smi shows reserved), cuDNN convolution and cuBLAS workspaces, torch.compile buffers.",
    "Sampling stages: one step is run; every step allocates the same. Decode: the largest official clip.",
    "Attention: the CUDA kernel choice is emulated (flash for fp16/bf16 without a mask, memory-efficient with one "
    "or in fp32, math otherwise and for 5-D inputs); the reference mode's math path materialises the scores in fp32.",
    "The 1.1 key_frame stage decodes the first frame at 2x resolution and re-encodes it; on meta it skips the "
    "8-bit PIL round trip (host memory).",
]


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"Estimated peak GPU memory (GiB = 2^30 bytes), model size {report['size']}, torch {report['torch']}, "
             f"allocations rounded to {report['granularity']} bytes"]
    for mode, text in report["modes"].items():
        lines.append(f"  {mode}: {text}")
    lines.append("  scenarios: " + "; ".join(f"{k} = {v}" for k, v in report["scenarios"].items()))
    lines.append("")
    lines.append("Weights (GiB): " + "; ".join(
        f"{key}: " + ", ".join(f"{name} {_gib(b)}" for name, b in info["weight_bytes"].items())
        for key, info in report["models"].items()))
    for wf in report["workflows"]:
        lines.append("")
        lines.append(f"{wf['workflow']} -- {wf['mode']} -- {wf['width']}x{wf['height']}, {wf['keyframes']} keyframes "
                     f"-> {wf['frames']} frames")
        header = (f"  {'stage':<16}{'activ.':>7} | {'all resident':>13} {'total':>6} | {'default':>8} {'total':>6} | "
                  f"{'offload':>8} {'total':>6} | peak at")
        lines.append(header)
        for st in wf["stages"]:
            sc = st["scenarios"]
            label = st["stage"] + (f" ({st['frames']}f)" if st["stage"] == "decode" else "")
            place = (st["peak_module"] or "-") + f" [{st['peak_op']}]"
            resident, default, offload = sc["all_resident"], sc["default"], sc["offload"]
            lines.append(f"  {label:<16}{_gib(st['activation_bytes']):>7} | "
                         f"{_gib(resident['weight_bytes']):>13} {_gib(resident['total_bytes']):>6} | "
                         f"{_gib(default['weight_bytes']):>8} {_gib(default['total_bytes']):>6} | "
                         f"{_gib(offload['weight_bytes']):>8} {_gib(offload['total_bytes']):>6} | {place}")
        peak = wf["peak_bytes"]
        no_text = wf["peak_bytes_text_on_cpu"]
        lines.append(f"  {'PEAK':<16}{'':>7} | {'':>13} {_gib(peak['all_resident']):>6} | {'':>8} "
                     f"{_gib(peak['default']):>6} | {'':>8} {_gib(peak['offload']):>6} | "
                     f"text encoder on the CPU: {_gib(no_text['default'])} default, {_gib(no_text['offload'])} offload")
    lines.append("")
    lines.append("Summary: workflow peak (GiB) per mode and scenario; in brackets the peak with the text encoder on "
                 "the CPU")
    lines.append(f"  {'workflow':<16}{'mode':<18}{'all resident':>14}{'default':>16}{'offload':>16}")
    for wf in report["workflows"]:
        peak, no_text = wf["peak_bytes"], wf["peak_bytes_text_on_cpu"]
        cells = "".join(f"{_gib(peak[s]) + ' (' + _gib(no_text[s]) + ')':>16}" for s in ("default", "offload"))
        lines.append(f"  {wf['workflow']:<16}{wf['mode']:<18}{_gib(peak['all_resident']):>14}{cells}")
    if report["decode_options"]:
        first = report["decode_options"][0]
        lines.append("")
        lines.append(f"Decode options, {first['release']} ({first['mode']} mode), {report['workflows'][0]['width']}x"
                     f"{report['workflows'][0]['height']}: activation peak, decoder weights and their sum (GiB)")
        lines.append(f"  {'variant':<24}{'clip':>5}{'dtype':>7}{'activ.':>8}{'weights':>9}{'total':>7}  peak at")
        for row in report["decode_options"]:
            lines.append(f"  {row['variant']:<24}{row['clip']:>5}{row['dtype']:>7}{_gib(row['activation_bytes']):>8}"
                         f"{_gib(row['weight_bytes']):>9}{_gib(row['offload_total_bytes']):>7}  {row['peak_module']}")
    if report["scaling"]:
        lines.append("")
        lines.append("Scaling, 1.1 text-to-video: activation peak per stage and workflow peaks (GiB)")
        names = ["first_frame", "key_frame", "keyframes", "interpolation1", "interpolation2", "decode"]
        short = ["first", "keyfr.rt", "keyframes", "interp1", "interp2", "decode"]
        lines.append(f"  {'mode':<10}{'setting':<22}" + "".join(f"{s:>10}" for s in short)
                     + f"{'all res.':>10}{'default':>10}{'offload':>10}{'offl.noT5':>10}")
        for row in report["scaling"]:
            setting = f"{row['side']}x{row['side']} k{row['keyframes']} p{row['passes']} ({row['frames']}f)"
            acts = "".join(f"{_gib(row['activation_bytes'][n]) if n in row['activation_bytes'] else '-':>10}"
                           for n in names)
            peak = row["peak_bytes"]
            lines.append(f"  {row['mode']:<10}{setting:<22}{acts}{_gib(peak['all_resident']):>10}"
                         f"{_gib(peak['default']):>10}{_gib(peak['offload']):>10}"
                         f"{_gib(row['peak_bytes_text_on_cpu']['offload']):>10}")
    lines.append("")
    lines.extend(f"note: {note}" for note in report["notes"])
    lines.append(f"estimated in {report['seconds']:.0f} s on the CPU")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", choices=["1.1", "1.0", "all"], default="all")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: reference,fast")
    parser.add_argument("--size", choices=["official", "mid", "small"], default="official",
                        help="model size (official: the released models)")
    parser.add_argument("--width", type=int, default=None, help="default 512 (official), 128 (mid), 64 (small)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--keyframes", type=int, default=None, help="default 12 (1.1) / 15 (1.0)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--no-fp8-text", action="store_true", help="skip the fp8 text-encoder variant")
    parser.add_argument("--fast-movq-dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--granularity", type=int, default=CUDA_BLOCK, help="allocation rounding in bytes")
    parser.add_argument("--out", default=None, help="write the report as JSON here")


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    side = DEFAULT_RESOLUTION[args.size]
    releases = ["1.1", "1.0"] if args.release == "all" else [args.release]
    keyframes = {r: args.keyframes for r in releases} if args.keyframes else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # nothing is computed: threads only add overhead
    try:
        report = estimate(releases, tuple(m.strip() for m in args.modes.split(",")), size=args.size,
                          width=args.width or side, height=args.height or side, keyframes=keyframes,
                          scaling=not args.no_scaling, fp8_text=not args.no_fp8_text,
                          fast_movq_dtype=args.fast_movq_dtype, granularity=args.granularity,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads)
    print(format_report(report), file=out)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"results: {path}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionframes.tools.memory_estimate",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

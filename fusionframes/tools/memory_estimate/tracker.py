"""Counting the device memory a piece of code allocates, as the CUDA caching allocator would count it.

Nothing here knows about the pipeline: :func:`measure` runs any callable, usually on the ``meta`` device, where
tensors have shapes but no data. A dispatch mode (:class:`DeviceMemoryTracker`) sees every tensor operation. It adds
the bytes of each new output storage (deduplicated by storage, rounded up to the allocator's 512-byte blocks) and
subtracts them when Python frees the storage. The running maximum is what ``torch.cuda.max_memory_allocated`` would
report, less the allocator's fragmentation and what kernels allocate inside (cuDNN/cuBLAS workspaces).
``aten._safe_softmax`` (the math attention's softmax) allocates three more score-sized tensors inside its C++ body,
which no dispatch mode sees, so they are added as a transient (:data:`INTERNAL_BYTES`).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .cuda_emulation import AutocastEmulation, CudaAttention

aten = torch.ops.aten

#: the CUDA caching allocator rounds every block up to this many bytes (c10/cuda/CUDACachingAllocator.cpp)
CUDA_BLOCK = 512


def round_allocation(nbytes: int, granularity: int = CUDA_BLOCK) -> int:
    """Bytes a storage of ``nbytes`` occupies in the allocator (nothing for an empty one)."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // granularity) * granularity


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

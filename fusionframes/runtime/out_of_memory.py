"""What happens when a device runs out of memory: a message that says what to lower, and the cache released."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import OutOfMemory


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def release_host_memory() -> None:
    """Give freed host memory back to the operating system. glibc keeps the blocks of freed tensors below its mmap
    threshold (which grows to 32 MB as large tensors come and go) for reuse, so after a large or cancelled run a
    long-lived process (a ComfyUI server) would otherwise stay gigabytes larger than what it holds."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@contextmanager
def explain_out_of_memory(stage: str, advice: str) -> Iterator[None]:
    """Turn the device's out-of-memory error inside ``stage`` into one that says which settings to lower."""
    try:
        yield
    except torch.OutOfMemoryError:
        release_cached_memory()
        raise OutOfMemory(f"out of device memory while {stage}: {advice}") from None

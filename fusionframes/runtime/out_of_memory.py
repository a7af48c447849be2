"""What happens when a device runs out of memory: a message that says what to lower, and the cache released."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import OutOfMemory


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def explain_out_of_memory(stage: str, advice: str) -> Iterator[None]:
    """Turn the device's out-of-memory error inside ``stage`` into one that says which settings to lower."""
    try:
        yield
    except torch.OutOfMemoryError:
        release_cached_memory()
        raise OutOfMemory(f"out of device memory while {stage}: {advice}") from None

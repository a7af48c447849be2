"""Cancel points inside long forward passes.

A sampling step or the encoding of one huge image can take minutes; a host that lets users cancel (ComfyUI) installs
a check with :func:`interruptible`, and the U-Nets and the MoVQ call :func:`interruption_point` between their blocks,
so a cancel takes effect within one block instead of one whole model call. Without a check installed the points
cost one context-variable lookup; under ``torch.compile`` they are skipped (no graph breaks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("fusionframes_interrupt_check", default=None)


def interruption_point() -> None:
    """Raise the host's cancel exception here if the run was cancelled (the installed check decides)."""
    if torch.compiler.is_compiling():
        return
    check = _CHECK.get()
    if check is not None:
        check()


@contextmanager
def interruptible(check: Callable[[], None]) -> Iterator[None]:
    """Within this context, every interruption point calls ``check`` (which raises to cancel)."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)

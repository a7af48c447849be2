"""Interrupting a generation at any stage: every model goes back where it waits, and nothing of the run stays alive.

A stage is interrupted the way ComfyUI and the command line do it, by raising from the progress callback. Tensors
created during the run are watched through weak references: after the exception is handled, none may be left (on a
GPU those would be memory locked until the process ends).
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusionframes.runtime.pipeline import VideoPipeline, VideoRequest


class Interrupted(Exception):
    pass


class TensorWatch(TorchDispatchMode):
    """Weak references to every tensor an operator returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.refs.append(weakref.ref(item))
        return out

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.refs)


def _watch_moves(pipeline: VideoPipeline) -> dict[str, list[str]]:
    moves: dict[str, list[str]] = {}
    for kind, loaded in pipeline.models.items():
        original = loaded.model.to

        def to(*args, _kind=kind, _original=original, **kwargs):
            moves.setdefault(_kind, []).append(str(args[0] if args else kwargs.get("device")))
            return _original(*args, **kwargs)

        loaded.model.to = to
    return moves


STAGES = {"1.0": ["keyframes", "interpolation1", "decode"],
          "1.1": ["first frame", "keyframes", "interpolation1", "decode"]}


@pytest.mark.parametrize(("release", "stage"), [(r, s) for r, names in STAGES.items() for s in names])
def test_interrupt_at_any_stage_leaves_models_offloaded_and_no_tensor_alive(demo, one_thread, release, stage):
    pipeline = VideoPipeline.from_folder(demo / ("k10" if release == "1.0" else "k11"), demo / "text_encoder",
                                         offload=True)
    moves = _watch_moves(pipeline)

    def progress(name: str, step: int, total: int) -> None:
        if name == stage:
            raise Interrupted(name)

    request = VideoRequest(prompt="a cat", width=64, height=64, fps="medium", keyframes=2, seed=1,
                           sampler="ddim", steps=2)
    watch = TensorWatch()
    with watch, pytest.raises(Interrupted):
        pipeline.generate(request, progress=progress)
    gc.collect()
    assert watch.refs, "no operator ran"
    alive = watch.alive()
    assert alive == 0, f"{alive} tensors of the interrupted run are still alive"
    assert moves, "no stage ran"
    for kind, devices in moves.items():
        assert devices[-1] == "cpu", f"{kind} was left on {devices[-1]} ({devices})"
    # the pipeline is usable again at once
    assert pipeline.generate(request).frames.shape == (5, 3, 64, 64)

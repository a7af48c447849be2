"""Measuring one stage: running it for a limited number of steps, its time, its peak memory and its FLOPs.

These are the benchmark's measuring instruments, kept apart from the stage list and from the report so that the
memory estimator can run a stage the same way (:func:`run_limited`) and :func:`count_stage_flops` can count a whole
release on the ``meta`` device without timing anything.

Peak memory per stage: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process RSS, sampled during the
stage with psutil when installed, else the process-lifetime peak from ``getrusage``.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..flops import FlopCount, count_flops, mfu
from .models import build_models
from .settings import BenchSettings
from .stages import BenchStage, StagePipeline


class _Stop(Exception):
    """Raised from on_step to end a sampling stage early (the stage functions support interruption by raising)."""


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next mode starts from empty."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class MemoryProbe:
    """Peak memory during a block: CUDA max_memory_allocated, or the CPU process RSS (sampled / lifetime peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.before = 0
        self.kind = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = None

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            self.kind = "cuda_max_memory_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import psutil
        except ImportError:
            self.kind = "cpu_rss_process_lifetime_peak (getrusage; psutil not installed)"
            self.before = _rusage_peak()
            return self
        self.kind = "cpu_rss_peak (psutil, sampled every 5 ms)"
        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._process.memory_info().rss)
        else:
            self.peak = _rusage_peak()


def _rusage_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def device_description(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda)
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['cpu_count']} logical cores)"
    return info


def run_limited(stage: BenchStage, limit: int | None, device: torch.device, times: list[float] | None = None):
    """Run a stage, stopping a sampling stage after ``limit`` updates; returns its (possibly partial) output."""
    if stage.official_steps is None:
        output = stage.run(None)
    else:
        state: dict[str, Any] = {"last": time.perf_counter()}

        def on_step(index, total, t, x_before, prediction, x_after):
            sync(device)
            now = time.perf_counter()
            if times is not None:
                times.append(now - state["last"])
            state["last"] = now
            state["x"] = x_after
            if limit is not None and index + 1 >= limit and index + 1 < total:
                raise _Stop

        try:
            output = stage.run(on_step)
        except _Stop:
            output = state["x"]
    if stage.store is not None:
        stage.store(output)
    return output


@dataclass
class StageResult:
    release: str
    mode: str
    stage: str
    seconds: float
    steps_run: int | None = None
    official_steps: int | None = None
    step_seconds: list[float] = field(default_factory=list)
    seconds_per_step: float | None = None
    estimated_seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_before_bytes: int = 0
    memory_kind: str = ""
    flops_per_call: int | None = None
    flops_estimated: int | None = None
    flops_by_category: dict[str, int] = field(default_factory=dict)
    tflops_per_second: float | None = None
    mfu: float | None = None
    batch: list[int] = field(default_factory=list)
    note: str = ""


def stage_result(release: str, mode: str, stage: BenchStage, seconds: float, times: list[float],
                 memory: MemoryProbe, count: FlopCount, peak: float | None) -> StageResult:
    """One timed stage's row: a sampling stage's time is extrapolated to its official step count (setup + mean
    step time x steps), its FLOPs likewise; MFU relates the FLOPs of what ran to the seconds it took."""
    r = StageResult(release, mode, stage.name, seconds, batch=stage.batch, peak_memory_bytes=memory.peak,
                    memory_before_bytes=memory.before, memory_kind=memory.kind, flops_per_call=count.total,
                    flops_by_category=count.by_category)
    if stage.official_steps is None:
        r.estimated_seconds = seconds
        r.flops_estimated = count.total
        measured_flops = count.total
    else:
        r.official_steps = stage.official_steps
        r.steps_run = len(times)
        r.step_seconds = times
        r.seconds_per_step = sum(times) / len(times)
        setup = max(seconds - sum(times), 0.0)
        r.estimated_seconds = setup + r.seconds_per_step * stage.official_steps
        r.flops_estimated = count.total * stage.official_steps
        measured_flops = count.total * len(times)
    if seconds > 0:
        r.tflops_per_second = measured_flops / seconds / 1e12
    r.mfu = mfu(measured_flops, seconds, peak)
    return r


# ----------------------------------------------------------------------------------------------------------------------
# FLOPs of every stage (also usable on its own, on the meta device)
# ----------------------------------------------------------------------------------------------------------------------


def count_stage(stage: BenchStage, device: torch.device) -> FlopCount:
    """FLOPs of one model call of a sampling stage (the stage stopped after its first update), or of the whole
    non-sampling stage."""
    if stage.count is not None:
        return stage.count()
    _, count = count_flops(run_limited, stage, 1, device)
    return count


@torch.no_grad()
def count_stage_flops(release: str = "1.1", size: str = "official", *, fps: str = "medium",
                      width: int | None = None, height: int | None = None, keyframes: int | None = None,
                      skip_text: bool = False, only: tuple[str, ...] | None = None) -> dict[str, FlopCount]:
    """FLOPs per call of every stage, counted on the ``meta`` device (no memory, no arithmetic). ``only`` restricts
    the stages (e.g. ``("keyframes",)``); the official-size keyframe U-Net takes several seconds on a CPU."""
    settings = BenchSettings(release=release, size=size, device="meta", fps=fps, width=width, height=height,
                             keyframes=keyframes, skip_text=skip_text, modes=("reference",)).resolved()
    device = torch.device("meta")
    models = build_models(release, size, device, "reference", with_text=not skip_text)
    pipeline = StagePipeline(settings, models, device)
    result: dict[str, FlopCount] = {}
    for stage in pipeline.stage_list():
        if only is None or stage.name in only:
            result[stage.name] = count_stage(stage, device)
    return result

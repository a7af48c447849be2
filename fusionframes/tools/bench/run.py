"""The benchmark run: each mode builds its models, then times, measures and counts every stage in turn.

This is the only module that ties the parts together (models, stage list, measuring and report). They stay
separate so that the memory estimator and the FLOP counter can reuse the parts without running a benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ...errors import InputError
from ..flops import FlopCount, peak_tflops
from .measure import (
    MemoryProbe,
    StageResult,
    count_stage,
    count_stage_flops,
    device_description,
    free,
    run_limited,
    stage_result,
    sync,
)
from .models import build_models
from .report import format_bytes, make_report
from .settings import BenchSettings
from .stages import StagePipeline, mode_context, stage_autocast


@torch.no_grad()
def run_mode(settings: BenchSettings, mode: str, device: torch.device, flops: dict[str, FlopCount],
             peak: float | None, log: Callable[[str], None]) -> tuple[list[StageResult], dict[str, Any]]:
    """Build the models of one mode and time every stage; ``flops`` is filled with the counts not there yet."""
    started = time.perf_counter()
    models = build_models(settings.release, settings.size, device, mode, with_text=not settings.skip_text,
                          fast_movq_dtype=settings.fast_movq_dtype, seed=settings.seed)
    sync(device)
    info = {"build_seconds": time.perf_counter() - started, "dtypes": models.dtypes, "parameters": models.parameters,
            "weight_bytes": models.weight_bytes, "resident_weight_bytes": sum(models.weight_bytes.values())}
    dtypes = ", ".join(f"{name} {dtype}" for name, dtype in models.dtypes.items())
    log(f"[{settings.release} {mode}] models built in {info['build_seconds']:.1f} s, "
        f"{format_bytes(info['resident_weight_bytes'])} of weights resident ({dtypes})")
    pipeline = StagePipeline(settings, models, device)
    compiled: set[str] = set()
    results = []
    stage_list = pipeline.stage_list()
    for stage in stage_list:
        with mode_context(mode, device, stage_autocast(settings.release, stage.name)):
            if stage.name not in flops:
                flops[stage.name] = count_stage(stage, device)
            if mode == "fast" and settings.compile:
                for name, model in models.all().items():
                    if name != "t5" and name not in compiled:
                        model.compile()
                        compiled.add(name)
            for _ in range(settings.warmup):
                run_limited(stage, 1, device)
            sync(device)
            times: list[float] = []
            with MemoryProbe(device) as memory:
                start = time.perf_counter()
                run_limited(stage, settings.steps, device, times)
                sync(device)
                seconds = time.perf_counter() - start
        results.append(stage_result(settings.release, mode, stage, seconds, times, memory, flops[stage.name], peak))
        r = results[-1]
        log(f"[{settings.release} {mode}] {stage.name}: {r.seconds:.3f} s measured"
            + (f", {r.seconds_per_step:.3f} s/step, ~{r.estimated_seconds:.2f} s at {r.official_steps} steps"
               if r.seconds_per_step is not None else ""))
    del stage_list, stage, pipeline, models  # the stage closures hold the models: drop every reference
    free(device)
    return results, info


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage in every mode; returns the JSON-ready report."""
    settings = settings.resolved()
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but CUDA is not available here; use --device cpu (and --size small).")
    if device.type == "meta":
        raise InputError("the meta device cannot be timed; use --flops-only to count FLOPs there.")
    described = device_description(device)
    peak = settings.peak_tflops or (peak_tflops(described["name"]) if device.type == "cuda" else None)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _benchmark(settings, device, device_description(device), peak, log)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _benchmark(settings: BenchSettings, device: torch.device, described: dict[str, Any], peak: float | None,
               log: Callable[[str], None]) -> dict[str, Any]:
    flops: dict[str, FlopCount] = {}
    if settings.compile and "reference" not in settings.modes:
        # counting runs eagerly in the first mode; with only a compiled fast mode, count on meta instead
        flops = count_stage_flops(settings.release, settings.size, fps=settings.fps, width=settings.width,
                                  height=settings.height, keyframes=settings.keyframes, skip_text=settings.skip_text)
    results: list[StageResult] = []
    mode_info: dict[str, Any] = {}
    for mode in settings.modes:
        mode_results, info = run_mode(settings, mode, device, flops, peak, log)
        results.extend(mode_results)
        mode_info[mode] = info
    return make_report(settings, device, described, peak, flops, results, mode_info)

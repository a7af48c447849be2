"""The benchmark's report: the JSON document (schema ``fusionframes-bench/1``) and its printed tables.

The JSON is what runs on different machines are compared by, so its layout is fixed in one function
(:func:`make_report`), apart from the code that measures. The tables are plain functions of that document, which
means a stored ``bench.json`` prints the same table as the run that wrote it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from typing import Any

import torch

from ...releases import official_steps
from ..flops import FlopCount
from .measure import StageResult
from .settings import BenchSettings

SCHEMA = "fusionframes-bench/1"


def format_bytes(value: int) -> str:
    if value >= 1 << 30:
        return f"{value / (1 << 30):.2f} GiB"
    return f"{value / (1 << 20):.0f} MiB"


def report_notes(settings: BenchSettings, device: torch.device) -> list[str]:
    """What the numbers mean, and what this device and these settings change about them."""
    notes = [
        "Random weights: cost does not depend on them. FLOPs count multiply-adds of convolutions, linear layers and "
        "attention (x2); norms and elementwise ops are not counted.",
        "Sampling stages: estimated_seconds = setup + mean step time x official steps (steps_run steps were timed).",
        "MFU is relative to the dense bf16 peak (peak_tflops), also for fp32 stages (whose own ceiling is lower).",
        "Both modes run the engine's stage functions; 'reference' reproduces the official code's dtypes, autocast and "
        "materialised attention, not its Python code (e.g. the official 1.1 encodes the prompt 12x; we encode once).",
    ]
    if device.type == "cpu":
        notes.append("CPU: denormal floats are flushed to zero during the run (random weights make many; real ones "
                     "rarely do, and x86 CPUs are up to 100x slower on them).")
    if device.type != "cuda":
        notes.append("CPU: both modes compute in fp32; they differ only in the attention kernel (math vs fused) and "
                     "channels_last, so the CPU ratio says little about the GPU speed-up. "
                     "No MFU without --peak-tflops.")
    if settings.compile:
        notes.append("--compile: U-Net and MoVQ forward passes compiled in fast mode (the 1.1 first frame's image "
                     "mode, forward_image, stays eager); compile time is in the warm-up, not in the timings.")
    return notes


def make_report(settings: BenchSettings, device: torch.device, described: dict[str, Any], peak: float | None,
                flops: dict[str, FlopCount], results: list[StageResult], mode_info: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready report of one release's run: every stage row, the totals per mode and the notes."""
    totals = {}
    for mode in settings.modes:
        rows = [r for r in results if r.mode == mode]
        totals[mode] = {
            "measured_seconds": sum(r.seconds for r in rows),
            "estimated_seconds": sum(r.estimated_seconds for r in rows),
            "peak_memory_bytes": max(r.peak_memory_bytes for r in rows),
            "flops_estimated": sum(r.flops_estimated or 0 for r in rows),
        }
    if "reference" in totals and "fast" in totals and totals["fast"]["estimated_seconds"] > 0:
        totals["speedup_estimated"] = totals["reference"]["estimated_seconds"] / totals["fast"]["estimated_seconds"]
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": described,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": asdict(settings),
        "peak_tflops": peak,
        "models": mode_info,
        "flops_per_call": {name: count.to_dict() for name, count in flops.items()},
        "results": [asdict(r) for r in results],
        "totals": totals,
        "notes": report_notes(settings, device),
    }


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'mode':<9} {'stage':<15} {'steps':>5} {'measured s':>10} {'s/step':>8} {'est. s':>9} "
              f"{'peak mem':>10} {'TFLOP est.':>11} {'TFLOP/s':>8} {'MFU':>6}")
    lines = [f"device: {report['device']['name']}   torch {report['torch']}   release {report['settings']['release']}"
             f"   size {report['settings']['size']}   {report['settings']['width']}x{report['settings']['height']}"
             f"   fps {report['settings']['fps']}   keyframes {report['settings']['keyframes']}", header,
             "-" * len(header)]
    for r in report["results"]:
        steps = f"{r['steps_run']}/{r['official_steps']}" if r["official_steps"] else "-"
        per_step = f"{r['seconds_per_step']:.3f}" if r["seconds_per_step"] is not None else "-"
        tflops = f"{r['tflops_per_second']:.3f}" if r["tflops_per_second"] is not None else "-"
        util = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"{r['mode']:<9} {r['stage']:<15} {steps:>5} {r['seconds']:>10.3f} {per_step:>8} "
                     f"{r['estimated_seconds']:>9.2f} {format_bytes(r['peak_memory_bytes']):>10} "
                     f"{(r['flops_estimated'] or 0) / 1e12:>11.4f} {tflops:>8} {util:>6}")
    lines.append("-" * len(header))
    for mode, total in report["totals"].items():
        if mode == "speedup_estimated":
            continue
        lines.append(f"{mode:<9} {'total':<15} {'':>5} {total['measured_seconds']:>10.3f} {'':>8} "
                     f"{total['estimated_seconds']:>9.2f} {format_bytes(total['peak_memory_bytes']):>10} "
                     f"{total['flops_estimated'] / 1e12:>11.4f}")
    if "speedup_estimated" in report["totals"]:
        lines.append(f"estimated speed-up fast vs reference: {report['totals']['speedup_estimated']:.2f}x")
    lines.append(f"memory: {report['results'][0]['memory_kind']}")
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


def format_flops(release: str, size: str, counts: dict[str, FlopCount], fps: str) -> str:
    lines = [f"FLOPs per call on the meta device: release {release}, size {size}, fps {fps}",
             f"{'stage':<15} {'TFLOP/call':>11} {'calls':>6} {'TFLOP':>10}  split (conv / matmul / attention)"]
    total = 0.0
    for name, count in counts.items():
        calls = 1
        if name not in ("text", "key_frame", "decode"):
            calls = official_steps(release, "interpolation" if name.startswith("interpolation") else name)
        tflop = count.total * calls / 1e12
        total += tflop
        cat = count.by_category
        split = " / ".join(f"{100 * cat.get(k, 0) / max(count.total, 1):.1f}%" for k in ("conv", "matmul", "attention"))
        lines.append(f"{name:<15} {count.total / 1e12:>11.3f} {calls:>6} {tflop:>10.1f}  {split}")
    lines.append(f"{'total':<15} {'':>11} {'':>6} {total:>10.1f}")
    return "\n".join(lines)

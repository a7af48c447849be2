"""The memory estimate's report: the JSON document (schema ``fusionframes-memory-estimate/1``) and its tables.

:func:`estimate` measures every workflow in every requested mode and gathers the results into one JSON-ready dict;
:func:`format_report` prints that dict. The printing reads only the dict, so a stored JSON prints the same tables as
the run that wrote it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...errors import InputError
from ...runtime import stages
from ..bench import MODES
from .estimator import GIB, StageEstimator, build_mode_models
from .tracker import CUDA_BLOCK
from .workflows import (
    DEFAULT_KEYFRAMES,
    SCENARIO_TITLES,
    WORKFLOWS,
    Workflow,
    decode_rows,
    scaling_rows,
    workflow_report,
    workflow_stages,
)

SCHEMA = "fusionframes-memory-estimate/1"


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

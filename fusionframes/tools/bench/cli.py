"""``python -m fusionframes bench``: its arguments and what it does with them.

:func:`add_arguments` fills the ``bench`` sub-parser of :mod:`fusionframes.cli` and :func:`run_from_args` runs it
(``--flops-only`` counts on ``meta``; otherwise one benchmark per release, a table each, and ``--out`` JSON). Keeping
the argument names here, beside the code that reads them, means the flags and :class:`.BenchSettings` change
together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ...releases import FPS_PASSES
from .measure import count_stage_flops
from .report import SCHEMA, format_flops, format_table
from .run import run_benchmark
from .settings import MODES, SIZES, BenchSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cuda = torch.cuda.is_available()
    parser.add_argument("--release", choices=["1.0", "1.1", "all"], default="1.1")
    parser.add_argument("--size", choices=SIZES, default="official" if cuda else "small",
                        help="official (full size, random weights; GPU), mid (mid-size, 128x128) or small "
                        "(the demo configs, 64x64)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: reference,fast")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps run per sampling stage (default: the official counts); times are extrapolated")
    parser.add_argument("--fps", choices=list(FPS_PASSES), default="medium", help="interpolation passes: 0 / 1 / 2")
    parser.add_argument("--width", type=int, default=None, help="default 512 official, 128 mid, 64 small")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--keyframes", type=int, default=None, help="default 12 (1.1) / 15 (1.0)")
    parser.add_argument("--skip-text", action="store_true", help="no T5 stage (FLAN-UL2 is 8.6 B parameters)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models in fast mode")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed model calls per stage (default 1 on CUDA, 0 on the CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs' bf16)")
    parser.add_argument("--fast-movq-dtype", choices=["fp32", "bf16"], default="fp32", help="MoVQ weights in fast mode")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device; run nothing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 at --size small on the CPU, else torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def run_from_args(args: argparse.Namespace, out=sys.stdout) -> int:
    releases = ["1.1", "1.0"] if args.release == "all" else [args.release]
    if args.flops_only:
        for release in releases:
            counts = count_stage_flops(release, args.size, fps=args.fps, width=args.width, height=args.height,
                                       keyframes=args.keyframes, skip_text=args.skip_text)
            print(format_flops(release, args.size, counts, args.fps), file=out)
        return 0
    reports = []
    for release in releases:
        settings = BenchSettings(
            release=release, size=args.size, device=args.device, modes=tuple(m.strip() for m in args.modes.split(",")),
            steps=args.steps, fps=args.fps, width=args.width, height=args.height, keyframes=args.keyframes,
            skip_text=args.skip_text, compile=args.compile, warmup=args.warmup, peak_tflops=args.peak_tflops,
            fast_movq_dtype=args.fast_movq_dtype, threads=args.threads, seed=args.seed)
        report = run_benchmark(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(format_table(report), file=out)
        reports.append(report)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = reports[0] if len(reports) == 1 else {"schema": SCHEMA, "runs": reports}
        path.write_text(json.dumps(content, indent=1) + "\n")
        print(f"results: {path}", file=out)
    return 0

"""``python -m fusionframes estimate-memory`` (also ``python -m fusionframes.tools.memory_estimate``).

:func:`add_arguments` fills the sub-parser of :mod:`fusionframes.cli` and :func:`run` prints the tables (and writes
JSON with ``--out``). The estimate runs on one thread, since nothing is computed on ``meta``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..bench import DEFAULT_RESOLUTION, MODES
from .report import estimate, format_report
from .tracker import CUDA_BLOCK

DESCRIPTION = "Peak GPU memory of every pipeline stage, estimated on the CPU without allocating anything."

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", choices=["1.1", "1.0", "all"], default="all")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: reference,fast")
    parser.add_argument("--size", choices=["official", "mid", "small"], default="official",
                        help="model size (official: the released models)")
    parser.add_argument("--width", type=int, default=None, help="default 512 (official), 128 (mid), 64 (small)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--keyframes", type=int, default=None, help="default 12 (1.1) / 15 (1.0)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--no-fp8-text", action="store_true", help="skip the fp8 text-encoder variant")
    parser.add_argument("--fast-movq-dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--granularity", type=int, default=CUDA_BLOCK, help="allocation rounding in bytes")
    parser.add_argument("--out", default=None, help="write the report as JSON here")


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    side = DEFAULT_RESOLUTION[args.size]
    releases = ["1.1", "1.0"] if args.release == "all" else [args.release]
    keyframes = {r: args.keyframes for r in releases} if args.keyframes else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # nothing is computed: threads only add overhead
    try:
        report = estimate(releases, tuple(m.strip() for m in args.modes.split(",")), size=args.size,
                          width=args.width or side, height=args.height or side, keyframes=keyframes,
                          scaling=not args.no_scaling, fp8_text=not args.no_fp8_text,
                          fast_movq_dtype=args.fast_movq_dtype, granularity=args.granularity,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads)
    print(format_report(report), file=out)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"results: {path}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionframes.tools.memory_estimate",
                                     description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))

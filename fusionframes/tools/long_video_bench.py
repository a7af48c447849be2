"""Peak memory and time of long videos: ``python -m fusionframes.tools.long_video_bench``.

Runs ``python -m fusionframes generate`` on the tiny demo models (made on first use) once with one prompt and once
with ``--segments`` prompts, each in its own process, and prints each run's peak resident memory (the kernel's
``ru_maxrss`` of that process), its time and the time per segment. The MP4 is written clip by clip, so the peak should
barely grow with the number of segments: the whole video's frames are never in memory, only its latents.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .demo_models import create_demo_models


def run_once(models: Path, segments: int, size: int, out: Path, extra: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, seconds, the command's last line) of one ``generate`` with ``segments`` prompts."""
    prompts = [arg for index in range(segments) for arg in ("--prompt", f"segment {index + 1}")]
    command = [sys.executable, "-m", "fusionframes", "generate", "--models", str(models / "k11"), "--text-encoder",
               str(models / "text_encoder"), *prompts, "--width", str(size), "--height", str(size), *extra,
               "--out", str(out)]
    log = out.with_suffix(".log")
    started = time.perf_counter()
    with open(log, "w") as output:  # a file, not a pipe: the progress output would fill a pipe and block the run
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    lines = [line for line in log.read_text().replace("\r", "\n").splitlines() if line.strip()]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("generate failed:\n" + "\n".join(lines[-30:]))
    summary = next(line for line in reversed(lines) if " frames " in line and " fps" in line)
    return usage.ru_maxrss / 1024, seconds, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionframes.tools.long_video_bench", description=__doc__)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (multiple of 64)")
    parser.add_argument("--fps", choices=["low", "medium", "high"], default="medium")
    parser.add_argument("--models-dir", default=None, help="demo models folder (default: a temporary one)")
    args = parser.parse_args(argv)
    extra = ["--fps", args.fps, "--sampler", "ddim", "--steps", "2", "--seed", "1"]
    with tempfile.TemporaryDirectory() as scratch:
        models = create_demo_models(Path(args.models_dir or Path(scratch) / "models"))
        rows = []
        for segments in (1, args.segments):
            peak, seconds, summary = run_once(models, segments, args.size, Path(scratch) / f"s{segments}.mp4", extra)
            rows.append((segments, peak, seconds, summary))
            print(f"{segments:3d} segment(s): peak RSS {peak:7.0f} MiB, {seconds:6.1f} s "
                  f"({seconds / segments:5.1f} s per segment); {summary}", flush=True)
    (_, one, *_), (_, many, *_) = rows
    print(f"peak RSS {args.segments} segments / 1 segment: {many / one:.2f}x (target: under 1.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

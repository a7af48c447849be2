"""What one benchmark run is asked to do, checked and completed with its defaults.

The models, the stage list, the timing loop and the memory estimator all read the same :class:`BenchSettings`, so
the defaults that depend on the size and the device (frame size, keyframes, warm-up calls, threads) are resolved
once, here, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...errors import InputError
from ...releases import FPS_PASSES
from ...runtime import stages

SIZES = ("small", "mid", "official")
MODES = ("reference", "fast")
#: default frame size per model size (must be a multiple of 64)
DEFAULT_RESOLUTION = {"small": 64, "mid": 128, "official": 512}


@dataclass
class BenchSettings:
    release: str = "1.1"
    size: str = "small"
    device: str = "cpu"
    modes: tuple[str, ...] = MODES
    steps: int | None = None  # per sampling stage; None = the official counts
    fps: str = "medium"
    width: int | None = None
    height: int | None = None
    keyframes: int | None = None
    skip_text: bool = False
    compile: bool = False
    warmup: int | None = None  # untimed model calls per stage before timing; None: 1 on CUDA, 0 on the CPU
    peak_tflops: float | None = None
    fast_movq_dtype: str = "fp32"
    threads: int | None = None  # CPU threads for torch (None: 1 for the small size on the CPU, else torch's default)
    seed: int = 0

    def resolved(self) -> BenchSettings:
        if self.release not in ("1.0", "1.1"):
            raise InputError(f"release must be 1.0 or 1.1, got {self.release!r}.")
        if self.size not in SIZES:
            raise InputError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}.")
        if self.fps not in FPS_PASSES:
            raise InputError(f"fps must be one of {', '.join(FPS_PASSES)}, got {self.fps!r}.")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise InputError(f"modes must be among {', '.join(MODES)}, got {', '.join(self.modes) or 'none'}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}.")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}.")
        side = DEFAULT_RESOLUTION[self.size]
        width, height = self.width or side, self.height or side
        stages.check_size(width, height)
        keyframes = self.keyframes or (12 if self.release == "1.1" else 15)
        if keyframes < 2:
            raise InputError(f"at least 2 keyframes are needed, got {keyframes}.")
        threads = self.threads
        if threads is None and self.size == "small" and torch.device(self.device).type == "cpu":
            threads = 1  # tiny layers gain nothing from threads, and OpenMP spinning distorts timings on shared cores
        warmup = self.warmup if self.warmup is not None else (1 if torch.device(self.device).type == "cuda" else 0)
        return replace(self, width=width, height=height, keyframes=keyframes, warmup=warmup, threads=threads,
                       modes=tuple(m for m in MODES if m in self.modes))

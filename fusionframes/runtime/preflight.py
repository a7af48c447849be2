"""Refusing a stage before it allocates what its device cannot hold.

A stage that does not fit ends badly: on a GPU an out-of-memory error after minutes of work, on the CPU a raw
allocator message or the whole process killed by the operating system. Each stage therefore estimates its peak
activation memory first and compares it with what its device has free, and refuses with a message that names what
would fit.

The estimates are closed forms fitted to ``python -m fusionframes.tools.memory_estimate``, which runs every stage's
real code on PyTorch's ``meta`` device: a stage's activation peak is linear in frames x pixels, with a cost per
frame-pixel of ``(per_channel * width + fixed) * bytes per element``, where ``width`` is the model's top-level channel
count. :data:`COSTS` holds the fitted numbers; tests/unit/tools/test_preflight_fit.py checks them against the
estimator at several model sizes, resolutions and frame counts (never below it, at most 1.6x above it).

Set ``FUSIONFRAMES_SKIP_PREFLIGHT=1`` (the command line: ``--skip-preflight``) to run anyway, e.g. when the operating
system can swap or another process is about to free memory. Requests above :data:`HARD_LIMIT` are refused even then.
``FUSIONFRAMES_MEMORY_LIMIT`` (bytes, or a number with K/M/G/T) caps what the stages may use on any device, for a
machine shared with other work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..releases import LATENT_SCALE

SKIP_VARIABLE = "FUSIONFRAMES_SKIP_PREFLIGHT"
LIMIT_VARIABLE = "FUSIONFRAMES_MEMORY_LIMIT"
GIB = 1 << 30
#: no machine has this much memory for one stage; refused even with the preflight skipped
HARD_LIMIT = 4 << 40
#: share of the available memory a stage may plan to use (the rest: allocator rounding, fragmentation, the OS)
USABLE_SHARE = 0.9
#: bytes of a stage's device estimate whatever its size (the text context, time embeddings, the sampler's state)
BASE = 16 << 20
#: on the CPU, bytes a stage's process grows by whatever its size (oneDNN's weight copies, thread buffers)
CPU_FIXED = 128 << 20


@dataclass(frozen=True)
class Cost:
    """Activation bytes per frame-pixel of a stage: ``(per_channel * width + fixed) * element bytes``, times
    ``cpu_factor`` on the CPU, where the process grows by more than the live tensors (oneDNN's blocked copies of
    convolution inputs, and freed blocks that the C allocator keeps for reuse)."""

    per_channel: float
    fixed: float = 0.0
    cpu_factor: float = 1.3

    def per_unit(self, width: int, element_bytes: int) -> float:
        return (self.per_channel * width + self.fixed) * element_bytes


#: Fitted to the estimator (fast mode) at the official size (U-Net width 384, MoVQ 256) and the small test size
#: (32, 32). U-Net stages count latent pixels, per keyframe (``keyframes_*``), per 2x-resolution latent pixel
#: (``first_frame``), per group of new frames (``interpolation``); MoVQ stages count image pixels per frame of a
#: decoded clip, or per encoded image.
#: The CPU factors are the largest growth of the process's resident memory over the fitted bytes seen with the test
#: models at 256-1024 px (the interpolation's many frame pairs leave the most freed-but-kept blocks).
COSTS: dict[str, Cost] = {
    "keyframes_1.0": Cost(25, 600, cpu_factor=1.6),
    "keyframes_1.1": Cost(39, cpu_factor=1.6),
    "first_frame": Cost(26, cpu_factor=1.6),
    "interpolation": Cost(26, 160, cpu_factor=2.6),
    "decode": Cost(6),
    "encode": Cost(5.2),
}


#: ``reclaim(device, bytes)``: a host's way to free memory on a device (ComfyUI: unload other models)
Reclaim = Callable[[torch.device, int], None]
_RECLAIM: ContextVar[Reclaim | None] = ContextVar("fusionframes_reclaim", default=None)


@contextmanager
def reclaiming(reclaim: Reclaim) -> Iterator[None]:
    """Within this context a stage that does not fit first asks ``reclaim`` for the memory, then checks again."""
    token = _RECLAIM.set(reclaim)
    try:
        yield
    finally:
        _RECLAIM.reset(token)


def skipped() -> bool:
    return os.environ.get(SKIP_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def parse_bytes(text: str) -> int:
    """``"20G"``, ``"512M"``, ``"1.5T"`` or a plain byte count -> bytes."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if value and value[-1] in "KMGT":
        scale = 1 << (10 * ("KMGT".index(value[-1]) + 1))
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{LIMIT_VARIABLE}={text!r} is not a memory size: use bytes or a number with K, M, G or T "
                         "(e.g. 20G).")
    return int(number * scale)


def _host_available() -> int | None:
    """Memory a new allocation can get on this machine: MemAvailable, within a cgroup v2 limit when one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            import psutil  # not a dependency; ComfyUI installs it

            available = int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 - any failure means "unknown"
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def available_memory(device: torch.device) -> int | None:
    """Bytes a stage on ``device`` can still allocate (None: unknown, nothing is refused)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return _host_available()
    return None


def element_bytes(dtype: torch.dtype) -> int:
    """Bytes per activation element of a model whose weights are ``dtype`` (8-bit weights compute in 16 bits)."""
    return 4 if dtype in (torch.float32, torch.float64) else 2


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


@dataclass(frozen=True)
class Need:
    """What one stage will hold at its peak: ``units`` (frames, groups, clip frames) of ``unit_bytes`` each, at
    ``width`` x ``height`` image pixels; ``host_bytes`` more in host memory (a decoded video's frames)."""

    stage: str
    device: torch.device
    unit_bytes: float
    units: int
    unit_name: str
    width: int
    height: int
    host_bytes: int = 0
    advice: str = ""
    cpu_factor: float = 1.0

    @property
    def _on_cpu(self) -> bool:
        return self.device.type == "cpu"

    @property
    def _per_unit(self) -> float:
        return self.unit_bytes * (self.cpu_factor if self._on_cpu else 1.0)

    @property
    def _fixed(self) -> int:
        if not self.unit_bytes:
            return 0
        return BASE + (self.host_bytes + CPU_FIXED if self._on_cpu else 0)

    @property
    def device_bytes(self) -> int:
        """The estimate on the stage's device (on the CPU the host memory is the device's)."""
        return int(self._per_unit * self.units) + self._fixed

    def what_fits(self, available: int) -> str:
        """The largest unit count at this size, and the largest size (same aspect, multiples of 64) at this count."""
        room = available * USABLE_SHARE - self._fixed
        parts = []
        if self._per_unit > 0 and room >= self._per_unit:
            parts.append(f"At most {int(room // self._per_unit)} {self.unit_name} fit at {self.width}x{self.height}")
        scale = math.sqrt(available * USABLE_SHARE / max(1.0, self.device_bytes))
        width, height = (int(side * scale) // 64 * 64 for side in (self.width, self.height))
        if width >= 64 and height >= 64:
            parts.append(f"{'at most ' if parts else 'At most '}{width}x{height} fits {self.units} {self.unit_name}")
        return "; ".join(parts)


def _available(device: torch.device, cap: int | None) -> int | None:
    available = available_memory(device)
    if cap is not None:
        available = cap if available is None else min(available, cap)
    return available


def check(needs: Sequence[Need]) -> None:
    """Refuse (InputError) when a stage's estimate is beyond :data:`HARD_LIMIT`, or beyond what its device has free
    after the host reclaimed what it could (:func:`reclaiming`), unless :data:`SKIP_VARIABLE` is set."""
    limit = os.environ.get(LIMIT_VARIABLE, "").strip()
    cap = parse_bytes(limit) if limit else None
    for need in needs:
        checks = [(need.device, need.device_bytes)]
        if need.device.type != "cpu" and need.host_bytes:
            checks.append((torch.device("cpu"), need.host_bytes))
        for device, estimate in checks:
            if estimate > HARD_LIMIT:
                raise InputError(
                    f"{need.stage} would need about {_gib(estimate)} on {device} ({need.units} {need.unit_name} at "
                    f"{need.width}x{need.height}); no machine has that much memory: {need.advice}")
            if skipped() or estimate == 0:
                continue
            available = _available(device, cap)
            reclaim = _RECLAIM.get()
            if available is not None and estimate > available * USABLE_SHARE and reclaim is not None:
                reclaim(device, math.ceil(estimate / USABLE_SHARE))
                available = _available(device, cap)
            if available is None or estimate <= available * USABLE_SHARE:
                continue
            fits = need.what_fits(available) if device == need.device else ""
            raise InputError(
                f"{need.stage} would need about {_gib(estimate)} on {device} ({need.units} {need.unit_name} at "
                f"{need.width}x{need.height}), but only {_gib(available)} is available"
                f"{f' ({LIMIT_VARIABLE})' if cap is not None and available == cap else ''}. "
                f"{fits + ': ' if fits else ''}{need.advice} To run it anyway, set {SKIP_VARIABLE}=1 (command line: "
                "--skip-preflight).")


# -- the stages' needs -------------------------------------------------------------------------------------------------


def unet_need(stage: str, cost: str, unet: torch.nn.Module, units: int, unit_name: str, latent_height: int,
              latent_width: int, advice: str, pixel_scale: int = LATENT_SCALE) -> Need:
    """A sampling stage of a U-Net: ``units`` x (latent_height x latent_width) latent pixels at ``cost``."""
    per_pixel = COSTS[cost].per_unit(unet.config.model_channels, element_bytes(unet.dtype))
    per_unit = per_pixel * latent_height * latent_width
    return Need(stage, unet.device, per_unit, units, unit_name, latent_width * pixel_scale,
                latent_height * pixel_scale, advice=advice, cpu_factor=COSTS[cost].cpu_factor)


def movq_need(stage: str, cost: str, movq: torch.nn.Module, units: int, unit_name: str, height: int, width: int,
              advice: str, host_frames: int = 0) -> Need:
    """A MoVQ stage: ``units`` images of ``width`` x ``height`` pixels on the device at a time; ``host_frames``
    decoded float32 RGB frames collected in host memory."""
    weight = next(movq.parameters())
    top_width = movq.config.ch * movq.config.ch_mult[0]
    per_unit = COSTS[cost].per_unit(top_width, element_bytes(weight.dtype)) * height * width
    host = host_frames * movq.config.out_ch * height * width * 4
    return Need(stage, weight.device, per_unit, units, unit_name, width, height, host_bytes=host, advice=advice,
                cpu_factor=COSTS[cost].cpu_factor)

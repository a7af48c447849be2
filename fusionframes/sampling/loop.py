"""One sampling loop for both releases.

:func:`sample` runs any ``schedules.DiffusionSchedule`` (``K10Schedule`` or ``K11Schedule``) with a
caller-supplied ``denoise`` function that returns the *guided* prediction (eps or v after classifier-free guidance).

Time values. The loop iterates ``schedule.timesteps`` -- ``t`` as the sampler counts it (1.0: the step index
``steps-1 .. 0``; 1.1: the scheduler timestep) -- and calls ``denoise(x, schedule.model_time(t))``: the mapping to the
U-Net's time lives in the schedule, and ``denoise`` only ever sees model time (1.0: ``t * (1000 // steps)``;
1.1: ``t``). ``on_step`` and the schedule's ``step`` receive the sampler's ``t``.

Noise numbering (the layout of the golden fixtures, ``noise.PHASE.ROLE``):

* ``init`` -- the starting noise ``x_T``, shape ``shape`` (not drawn when ``x_init`` is given);
* ``step.NNN`` -- the noise of the NNN-th step *that consumes noise*, counted from 000 in the order the steps run.
  1.0 consumes one at every step (also at t = 0, where it is multiplied by zero), so NNN is the step index; 1.1 only
  at steps with t > 0, so NNN counts those (with the official timesteps, t = 0 is only ever the last step, so NNN is
  again the step index of every step that has one).

Random draws happen in this order (what a seeded source sees): ``init``, then per step its ``step.NNN``. The 1.1
keyframe loop draws its uniform ``noise_aug`` between ``init`` and the first step: draw ``init`` with
:func:`initial_noise` yourself, then ``noise_aug``, and pass ``x_init``.

Noise comes from the CPU (``noise.NoiseSource``); it is copied to the device through pinned memory
without blocking, so the loop itself adds no host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .noise import NoiseSource
from .schedules import DiffusionSchedule

__all__ = ["KnownFrames", "initial_noise", "noise_role", "sample", "to_device"]

Denoise = Callable[[torch.Tensor, int], torch.Tensor]
OnStep = Callable[[int, int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class KnownFrames:
    """Frames of the sample whose clean latents are given (inpainting by replacement): after every step the frames
    ``index`` (along dim 0) are set to ``latents`` noised to the level the state has reached, with the fixed
    ``noise``, and to ``latents`` themselves after the last step, so the model shapes the other frames around them."""

    index: int | slice
    latents: torch.Tensor
    noise: torch.Tensor

    def apply(self, schedule: DiffusionSchedule, x: torch.Tensor, t: int | None) -> torch.Tensor:
        """``x`` at the sampler's timestep ``t`` (None: the end) with the known frames put in."""
        latents = to_device(self.latents, x.device, torch.float32)
        target = latents if t is None else schedule.add_noise(latents, to_device(self.noise, x.device), t)
        x[self.index] = target.to(x.dtype)
        return x


def noise_role(index: int) -> str:
    """Role name of the ``index``-th noise-consuming step: ``step.007``."""
    return f"step.{index:03d}"


def to_device(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Move a CPU tensor to ``device`` (CUDA: via pinned memory, non-blocking) and optionally cast it."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor if dtype is None else tensor.to(dtype)


def initial_noise(
    noise: NoiseSource,
    phase: str,
    shape: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``noise.PHASE.init`` (standard normal) on ``device`` in ``dtype``."""
    return to_device(noise.normal(phase, "init", tuple(shape)), device, dtype)


@torch.no_grad()
def sample(
    schedule: DiffusionSchedule,
    denoise: Denoise,
    shape: Sequence[int],
    noise: NoiseSource,
    phase: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_step: OnStep | None = None,
    x_init: torch.Tensor | None = None,
    known: KnownFrames | None = None,
) -> torch.Tensor:
    """Run the whole reverse process and return the final latents (``dtype``, on ``device``).

    ``denoise(x, model_t)`` gets the current state and the model time (an ``int``) and returns the guided prediction
    (any float dtype; the schedule promotes it as the official code does). ``on_step(index, total, t, x_before, pred,
    x_after)`` is called after every update (progress, interruption by raising, trajectory recording).
    ``x_init`` replaces the ``init`` draw. The official loops keep the state in float32 (the default ``dtype``).
    ``known``: frames held to given latents (:class:`KnownFrames`; not an official feature).
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device)
    if x_init is None:
        x = initial_noise(noise, phase, shape, device=device, dtype=dtype)
    else:
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {shape}")
        x = x_init.to(device=device, dtype=dtype)

    timesteps = list(schedule.timesteps)
    total = len(timesteps)
    drawn = 0
    for index, t in enumerate(timesteps):
        z = None
        if schedule.needs_noise(t):
            # drawn before the model call so that the copy to the device overlaps with it; the order of draws is
            # unchanged (denoise draws nothing from the source)
            z = to_device(noise.normal(phase, noise_role(drawn), shape), device)
            drawn += 1
        pred = denoise(x, schedule.model_time(t))
        x_next = schedule.step(x, pred, t, z)
        if known is not None:
            x_next = known.apply(schedule, x_next, timesteps[index + 1] if index + 1 < total else None)
        if on_step is not None:
            on_step(index, total, t, x, pred, x_next)
        x = x_next
    return x

"""The official models and sampler in the terms of k-diffusion style samplers (the ones ComfyUI's core runs).

Those samplers see a model as a denoiser ``D(x, sigma) -> x0`` on a variance-exploding state ``x = x_ddpm *
sqrt(1 + sigma^2)`` with ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. This module says, without ComfyUI:

* **which noise level goes with which model time** (:func:`model_time_table`): the grid of ``fast.noise_levels`` --
  1.1: the 1000-step training table, model time = timestep; 1.0: the continuous cosine with the official 50-step
  run's pairing (model time ``20 i`` at the level of bin ``i``), so 50 official sigmas reach the U-Net as the model
  times the official sampler gives it;
* **the official timestep spacing as sigmas** (:func:`official_sigmas`): leading 50 (1.1 keyframes, first frame),
  trailing 10 (1.1 interpolation), 1.0's 50 cosine bins; ending in 0 as k-diffusion samplers expect;
* **the official DDPM update on that state** (:func:`official_step`): the posterior mean from the guided x0 after the
  release's x0 processing (1.0: 0.98-quantile dynamic thresholding; 1.1: clamp to [-1, 1]) plus the posterior
  standard deviation times the step's noise;
* **the video layout** (:func:`frames_to_video`, :func:`video_to_frames`): core video latents are ``[B, C, T, h, w]``;
  the engine samples keyframes as ``(T, 4, h, w)`` and in-between frames as groups ``(G, 12, h, w)`` (three frames
  of 4 channels between two keyframes), which become ``T = 3 G`` frames here.

Zero terminal SNR (1.1's ``alpha_bar(999) = 0``, where sigma is infinite) is represented, as ComfyUI does, by the
finite sigma of :data:`TERMINAL_ALPHA_BAR`; :func:`prediction_to_x0` treats that sigma as exactly ``alpha_bar = 0``
so a v-prediction there gives the official ``x0 = -v``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..releases import SAMPLING_STAGES
from .fast import OFFICIAL_STEPS, PREDICTIONS, K11NoiseLevels, noise_levels
from .schedules import K10Schedule, dynamic_threshold, k11_timesteps

__all__ = [
    "TERMINAL_ALPHA_BAR",
    "frames_to_video",
    "TimeTable",
    "official_bins",
    "model_table",
    "model_time_table",
    "official_model_times",
    "official_sigmas",
    "official_step",
    "prediction_to_x0",
    "stage_frames",
    "video_to_frames",
]

#: stands in for alpha_bar = 0 (ComfyUI's value for zero-terminal-SNR schedules): sigma ~ 4519 instead of infinity
TERMINAL_ALPHA_BAR = 4.8973451890853435e-08
#: how many latent frames of 4 channels one sample of a stage holds along the engine's channel axis
_FRAMES_PER_SAMPLE = {"first_frame": 1, "keyframes": 1, "interpolation": 3}


def _check_stage(release: str, stage: str) -> None:
    if stage not in SAMPLING_STAGES or (release, stage) not in PREDICTIONS:
        raise InputError(f"release {release} has no {stage!r} stage.")


@dataclass(frozen=True)
class TimeTable:
    """Noise levels by table index; the U-Net is shown model time ``index * time_scale`` at level ``index``."""

    alpha_bars: tuple[float, ...]
    time_scale: int = 1

    def sigmas(self) -> torch.Tensor:
        """sigma of each entry (float32, increasing): what a ComfyUI model sampling table holds."""
        return torch.tensor([_sigma(ab) for ab in self.alpha_bars], dtype=torch.float64).float()


@functools.cache
def model_time_table(release: str, bins: int | None = None) -> TimeTable:
    """Which noise level each model time goes with. 1.1: the training table. 1.0 discretises its cosine into the
    sampler's ``bins`` and shows bin ``i`` as model time ``i * (1000 // bins)``: ``bins`` None = the continuous
    cosine paired as in the official 50-bin run (model time ``1000 s - 20``, as the fast samplers pair it)."""
    levels = noise_levels(release)
    if release == "1.1":
        if bins is not None:
            raise InputError("1.1's noise levels do not depend on the number of steps.")
        return TimeTable(tuple(levels.alpha_bar(m) for m in range(1000)))
    if bins is not None:
        schedule = K10Schedule(bins)
        return TimeTable(tuple(schedule.alphas_cumprod.double().tolist()), schedule.time_scale)
    offset = levels.model_time_offset
    return TimeTable(tuple(levels.alpha_bar(m + offset) for m in range(levels.GRID - offset + 1)))


def model_table(release: str, prediction: str, bins: int | None = None) -> TimeTable:
    """The table a model samples on: :func:`model_time_table`, for 1.1's eps models only up to the first timestep
    of the official eps sampler (980), because at alpha_bar = 0 an eps prediction says nothing about x0 (the fast
    samplers start there too); core schedulers take their largest sigma from here."""
    table = model_time_table(release, bins)
    if release == "1.1" and prediction == "eps":
        return TimeTable(table.alpha_bars[:K11NoiseLevels.EPS_START + 1], table.time_scale)
    return table


def _sigma(alpha_bar: float) -> float:
    alpha_bar = max(alpha_bar, TERMINAL_ALPHA_BAR)
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def official_model_times(release: str, stage: str, steps: int | None = None) -> list[int]:
    """Model times of the official sampler's steps (noisiest first); ``steps`` None = the official count (1.0 re-bins
    its cosine for other counts, 1.1 spaces them by the stage's rule)."""
    _check_stage(release, stage)
    count = OFFICIAL_STEPS[(release, stage)] if steps is None else int(steps)
    if release == "1.0":
        schedule = K10Schedule(count)
        return [schedule.model_time(t) for t in schedule.timesteps]
    return k11_timesteps(count, "trailing" if stage == "interpolation" else "leading")


def official_sigmas(release: str, stage: str, steps: int | None = None) -> torch.Tensor:
    """The official steps as sigmas, ending in 0 (float32). 1.0's are the levels of its ``steps`` bins: sample them
    with the model paired to those bins (:func:`official_bins`)."""
    times = official_model_times(release, stage, steps)
    if release == "1.0":
        table = model_time_table(release, len(times))
        levels = [table.alpha_bars[m // table.time_scale] for m in times]
    else:
        levels = [model_time_table(release).alpha_bars[m] for m in times]
    return torch.tensor([_sigma(ab) for ab in levels] + [0.0], dtype=torch.float64).float()


def official_bins(release: str, stage: str, sigmas: torch.Tensor) -> int | None:
    """1.0: the bin count whose official sigmas these are (all of them, noisiest first), else None."""
    if release != "1.0" or len(sigmas) < 3 or float(sigmas[-1]) != 0.0:
        return None
    count = len(sigmas) - 1
    if count > 1000:
        return None
    expected = official_sigmas(release, stage, count)
    return count if torch.allclose(sigmas.float().cpu(), expected, rtol=1e-5, atol=0) else None


def _alpha_bar_of_sigma(sigma: float, release: str) -> float:
    """alpha_bar of a sigma; the terminal sigma (and anything above it) is exactly 0 for 1.1."""
    if sigma <= 0.0:
        return 1.0
    if release == "1.1" and sigma >= _sigma(TERMINAL_ALPHA_BAR) * (1 - 1e-6):
        return 0.0
    return 1.0 / (1.0 + sigma * sigma)


def prediction_to_x0(prediction: str, x: torch.Tensor, output: torch.Tensor, sigma: torch.Tensor,
                     release: str) -> torch.Tensor:
    """x0 from the network output on the k-diffusion state ``x`` at per-sample ``sigma`` (B,) (eps or v)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    s = sigma.reshape(shape).to(torch.float64)
    if prediction == "eps":
        return (x - output * s.to(x.dtype)).to(output.dtype)
    terminal = s >= _sigma(TERMINAL_ALPHA_BAR) * (1 - 1e-6) if release == "1.1" else torch.zeros_like(s, dtype=bool)
    scale = 1.0 / torch.sqrt(1.0 + s * s)  # x_ddpm = x * scale
    sqrt_ab = torch.where(terminal, torch.zeros_like(s), scale)
    sqrt_one_minus = torch.where(terminal, torch.ones_like(s), s * scale)
    return (sqrt_ab * scale).to(x.dtype) * x - sqrt_one_minus.to(x.dtype) * output


def draws_noise(release: str, model_time: int) -> bool:
    """Whether the official update at ``model_time`` consumes a noise tensor (1.0: always; 1.1: t > 0)."""
    return release == "1.0" or model_time > 0


def official_step(release: str, stage: str, x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float,
                  noise: torch.Tensor | None) -> torch.Tensor:
    """``x_t -> x_{t-1}`` on the k-diffusion video state: the official DDPM posterior step from the guided ``x0``
    (1.0's thresholding per sample of the engine's layout: per keyframe, per interpolation group)."""
    ab, ab_prev = _alpha_bar_of_sigma(sigma, release), _alpha_bar_of_sigma(sigma_next, release)
    x_ddpm = x.float() / math.sqrt(1.0 + sigma * sigma)
    if release == "1.0":
        x0 = frames_to_video(dynamic_threshold(video_to_frames(x0.float(), stage)), x0.shape[0], stage)
    else:
        x0 = torch.clamp(x0.float(), -1.0, 1.0)
    alpha = ab / ab_prev
    beta = 1.0 - alpha
    x0_coeff = math.sqrt(ab_prev) * beta / (1.0 - ab)
    x_coeff = math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab)
    out = x0_coeff * x0 + x_coeff * x_ddpm
    variance = (1.0 - ab_prev) / (1.0 - ab) * beta
    if sigma_next > 0.0 and variance > 0.0:
        if noise is None:
            raise InputError("the official update needs a noise tensor at this step.")
        out = out + math.sqrt(max(variance, 1e-20)) * noise.to(device=x.device, dtype=torch.float32)
    return (out * math.sqrt(1.0 + sigma_next * sigma_next)).to(x.dtype)


def stage_frames(stage: str) -> int:
    return _FRAMES_PER_SAMPLE[stage]


def video_to_frames(video: torch.Tensor, stage: str) -> torch.Tensor:
    """``[B, 4, T, h, w]`` -> the engine's ``(B * T / k, 4 k, h, w)`` (k = 3 frames per interpolation group)."""
    if video.dim() != 5:
        raise InputError(f"expected a video latent [batch, channels, frames, height, width], got {tuple(video.shape)}.")
    b, c, t, h, w = video.shape
    k = _FRAMES_PER_SAMPLE[stage]
    if t % k:
        raise InputError(f"{stage} latents hold groups of {k} frames; got {t} frames.")
    return video.permute(0, 2, 1, 3, 4).reshape(b * t // k, k * c, h, w)


def frames_to_video(frames: torch.Tensor, batch: int, stage: str) -> torch.Tensor:
    """The inverse of :func:`video_to_frames`."""
    n, kc, h, w = frames.shape
    k = _FRAMES_PER_SAMPLE[stage]
    return frames.reshape(batch, n // batch * k, kc // k, h, w).permute(0, 2, 1, 3, 4)


Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def sample_official(release: str, stage: str, denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                    model_time: Callable[[float], int], step_noise: Callable[[int, tuple[int, ...]], torch.Tensor],
                    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The official loop on the k-diffusion state: ``denoise(x, sigma)`` is the guided x0; ``step_noise(k, shape)``
    gives the noise of the k-th noise-consuming step (the engine's ``step.NNN`` numbering)."""
    values = [float(s) for s in sigmas]
    drawn = 0
    for index in range(len(values) - 1):
        sigma, sigma_next = values[index], values[index + 1]
        noise = None
        if draws_noise(release, model_time(sigma)):
            noise = step_noise(drawn, tuple(x.shape))
            drawn += 1
        x0 = denoise(x, sigma)
        x = official_step(release, stage, x, x0, sigma, sigma_next, noise)
        if on_step is not None:
            on_step(index, x0, x)
    return x


@dataclass
class Branches:
    """What each of the B samples of a batched call is conditioned on (ComfyUI batches conditionings, e.g. the
    prompt and the null context, into one call; their order is ComfyUI's).

    ``context`` (B, L, D) and ``mask`` (B, L): projected text (or the null context); 1.1 keyframes: ``key_frame``
    (B, 4, h, w), the noise-augmented first-frame latent, and ``key_frame_mask`` (B,) 1 where a sample sees it;
    interpolation: ``keyframes`` (B, N, 4, h, w), the frames to interpolate (zeros for the unconditional branch),
    and 1.1's ``temporal_gate`` (B,) (0 switches a sample's temporal layers off); the integer settings (noise
    augmentation level, motion score, skip frames, perturbation time) per sample (B,)."""

    context: torch.Tensor
    mask: torch.Tensor
    key_frame: torch.Tensor | None = None
    key_frame_mask: torch.Tensor | None = None
    keyframes: torch.Tensor | None = None
    temporal_gate: torch.Tensor | None = None
    noise_augmentation: torch.Tensor | None = None
    motion_score: torch.Tensor | None = None
    skip_frames: torch.Tensor | None = None
    perturbation_time: torch.Tensor | None = None

    def per_frame(self, name: str, frames: int, device: torch.device) -> torch.Tensor:
        """A per-sample integer setting (B,) repeated for each of a sample's frames, int32."""
        return getattr(self, name).to(device).reshape(-1).int().repeat_interleave(frames)


def unet_forward(unet: torch.nn.Module, release: str, stage: str, x: torch.Tensor, model_time: torch.Tensor,
                 branches: Branches) -> torch.Tensor:
    """The network output for a batch in the engine's layout ``x`` (B * n, 4 k, h, w) at per-sample model times
    (B,), built as the official guided denoisers build their inputs (``sampling.guidance``); float32."""
    from ..runtime.stages import positions_10

    device, dtype = unet.device, unet.dtype
    batch = branches.context.shape[0]
    n = x.shape[0] // batch
    context = branches.context.to(device, dtype).repeat_interleave(n, 0)
    mask = branches.mask.to(device).bool().repeat_interleave(n, 0)
    times = model_time.to(device).float().repeat_interleave(n)
    sample = x.to(device, dtype)
    if stage == "first_frame":
        zeros = torch.zeros(sample.shape[0], unet.config.num_channels - sample.shape[1], *sample.shape[2:],
                            device=device, dtype=dtype)
        return unet.forward_image(torch.cat([sample, zeros], 1), times, context, mask).float()
    if stage == "keyframes" and release == "1.0":
        positions = positions_10(n).to(device).repeat(batch)
        return unet(sample, times, context, mask, positions, n).float()
    if stage == "keyframes":
        h, w = sample.shape[-2:]
        condition = torch.zeros(batch, n, 4, h, w, device=device, dtype=dtype)
        frame_mask = torch.zeros(batch, n, 1, h, w, device=device, dtype=dtype)
        condition[:, 0] = branches.key_frame.to(device, dtype)
        frame_mask[:, 0] = branches.key_frame_mask.to(device, dtype).reshape(batch, 1, 1, 1)
        large = torch.cat([sample, condition.flatten(0, 1), frame_mask.flatten(0, 1)], 1)
        positions = torch.arange(n, device=device).repeat(batch).float()
        aug = branches.per_frame("noise_augmentation", n, device)
        motion = branches.per_frame("motion_score", n, device)
        return unet(large, times, context, mask, positions, n, aug, motion).float()
    keyframes = branches.keyframes.to(device, dtype)
    if keyframes.shape[1] != n + 1:
        raise InputError(f"{n} groups of in-between frames need {n + 1} keyframes, got {keyframes.shape[1]}.")
    large = torch.cat([keyframes[:, :-1].flatten(0, 1), sample, keyframes[:, 1:].flatten(0, 1)], 1)
    skips = branches.per_frame("skip_frames", n, device)
    if release == "1.0":
        return unet(large, times, context, mask, skips.long(), n).float()
    perturbation = branches.per_frame("perturbation_time", n, device)
    gate = branches.temporal_gate.to(device).float().repeat_interleave(n)
    return unet(large, times, context, mask, skips, n, perturbation, gate).float()

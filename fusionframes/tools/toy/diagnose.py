"""How the interpolation U-Net's x0 goes wrong, timestep by timestep, on the toy world's own frames.

At each asked timestep the world's in-between latents are noised (the 1000-step zero-terminal-SNR table of the 1.1
interpolation sampler) and the U-Net predicts v from them and the true keyframes, laid out as the sampler lays them
out (8 keyframes: 7 pairs in one temporal sequence). Reported per timestep:

* ``x0_mse``: the mean square error of the x0 that v gives (the sampler's own formula), against the true latents;
  ``blend_mse``: the same for the keyframes' linear blend (about what a perfect model reaches in this world);
* ``gain_x_t`` / ``gain_blend``: the least-squares fit of the predicted v as ``a x_t + b blend + c``, beside the
  gains a perfect model has (``v = (sqrt(ab) x_t - x0) / sqrt(1 - ab)``, with x0 the blend): a fitted gain below the
  ideal one is a v shrunk towards zero; ``residual_variance``: what the fit leaves (v that is neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...sampling.schedules import K11Schedule
from . import train

TIMESTEPS = (999, 699, 499, 299, 99)


@torch.no_grad()
def interpolation_fit(unet: nn.Module, batch: train.InterpolationBatch, context: torch.Tensor, mask: torch.Tensor,
                      timesteps: tuple[int, ...] = TIMESTEPS, seed: int = 0) -> list[dict[str, float]]:
    """The figures of the module docstring for ``unet`` on ``batch`` (its keyframes all kept, text ``context``)."""
    schedule = K11Schedule(10, spacing="trailing", prediction="v_prediction")
    generator = torch.Generator().manual_seed(seed)
    blend = batch.blend()
    keep = torch.ones(len(batch.scenes))
    rows = []
    for t in timesteps:
        steps = torch.full((batch.x0.shape[0],), t)
        noise = torch.randn(batch.x0.shape, generator=generator)
        x_t = train._noised(schedule, batch.x0, noise, steps)
        v = train.interpolation_prediction(unet, batch, x_t, steps, context, mask, keep).float()
        ab = schedule.alphas_cumprod.float()[t]
        x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * v
        design = torch.stack([x_t.flatten(), blend.flatten(), torch.ones(x_t.numel())], 1)
        fit = torch.linalg.lstsq(design, v.flatten()[:, None]).solution.flatten()
        rows.append({
            "t": t, "alpha_bar": float(ab),
            "x0_mse": float(F.mse_loss(x0, batch.x0)), "blend_mse": float(F.mse_loss(blend, batch.x0)),
            "gain_x_t": float(fit[0]), "ideal_gain_x_t": float(ab.sqrt() / (1 - ab).sqrt()),
            "gain_blend": float(fit[1]), "ideal_gain_blend": float(-1 / (1 - ab).sqrt()),
            "residual_variance": float((v.flatten() - design @ fit).var()),
        })
    return rows


def run_fit(models: Path, scenes: int = 6, seed: int = 123) -> list[dict[str, Any]]:
    """``interpolation_fit`` of the interpolation U-Net in ``models`` (a toy models folder: k11/, text_encoder/)
    on ``scenes`` fresh scenes of world ``seed``, with their captions as the text."""
    movq = train._load(models, "movq").eval()
    unet = train._load(models, "interpolation").eval()
    projection = train._projections(models)["base"].eval()
    captions = train.Captions(models)
    batch = train.interpolation_batch(movq, torch.Generator().manual_seed(seed), scenes, train.KEYFRAMES - 1)
    with torch.no_grad():
        context, mask = captions.contexts(projection, [s.caption for s in batch.scenes], unet.null_embedding,
                                          torch.zeros(scenes, dtype=torch.bool))
    return interpolation_fit(unet, batch, context, mask, seed=seed)

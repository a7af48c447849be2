"""Diffusion math of both releases: noise schedules, one denoising update, and the guidance combinations.

Two schedules share one small interface so that a single sampling loop (``loop.sample``) serves
both releases:

* ``timesteps`` -- the timesteps in the order the loop visits them, each as that sampler counts it;
* ``model_time(t)`` -- the time value the U-Net is given at timestep ``t``;
* ``needs_noise(t)`` -- whether the update at ``t`` consumes a fresh standard-normal tensor;
* ``step(x, model_output, t, noise)`` -- ``x_t -> x_{t-1}`` from the (guided) model prediction;
* ``add_noise(x, noise, t)`` -- the forward process ``q(x_t | x_0)``.

**Kandinsky Video 1.0** (:class:`K10Schedule`, official ``video_kandinsky3/model/diffusion.py``): a cosine schedule
discretised directly into ``steps`` bins (so ``steps`` *is* the schedule [OB-23]), every bin visited, ``t`` is the step
index ``steps-1 .. 0`` and the model sees ``t * (1000 // steps)``. Ancestral DDPM update with the 0.98-quantile
dynamic thresholding of ``x0``; a noise tensor is consumed at every step, also at ``t = 0`` where it is multiplied by
zero [OB-36].

**Kandinsky Video 1.1** (:class:`K11Schedule`, official ``kandinsky_video/model/diffusion.py``): the semantics of
diffusers' ``DDPMScheduler`` as configured there (1000 training steps, ``squaredcos_cap_v2`` betas, zero-terminal-SNR
rescale, ``fixed_small_log`` variance, thresholding that degenerates to ``clamp(x0, -1, 1)`` [OB-25]), reimplemented
without diffusers. ``t`` is the scheduler timestep, which is also the model time; noise is consumed only when ``t > 0``.

Numerics. Tables and per-step coefficients are built in float32 on the CPU in the official order of operations, so
fp32 updates agree with the official ones to within a few ulp. One thing the official code does not pin down: torch
evaluates float32 ``sqrt``/``log``/``exp`` on the CPU through MKL's vector math library, whose last bit depends on the
code path MKL dispatches to (measured with torch 2.13: about 0.6 % of float32 square roots are not correctly rounded
on the AVX-512 path, about 19 % on the SSE4.2 path that MKL takes e.g. on AMD CPUs). Here those three functions are
evaluated correctly rounded (in double precision, then rounded to float32), so results are the same on every machine.
Where a last-bit difference is amplified -- ``1 - alpha_bar`` near 1 at the smallest 1.1 timesteps (catastrophic
cancellation: 2 ulp of ``alpha_bar[0]`` move ``sqrt(1 - alpha_bar[0])`` by 0.15 %) -- the 1.1 schedule uses the
official ``alphas_cumprod`` table frozen as the reference code computes it on the SSE4.2 path (the environment the
golden fixtures were generated in); see ``K11_ALPHAS_CUMPROD_FILE``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..releases import DYNAMIC_PERCENTILE

__all__ = [
    "DiffusionSchedule",
    "K10Schedule",
    "K11Schedule",
    "cfg",
    "cfg3",
    "cosine_alpha_bar",
    "cosine_betas",
    "dynamic_threshold",
    "k11_alphas_cumprod",
    "k11_timesteps",
]

_FULL_PRECISION = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------------------------------
# Correctly rounded float32 arithmetic on Python floats / CPU tensors (machine independent)
# ----------------------------------------------------------------------------------------------------------------------
# For float32 operands, +, -, *, / and sqrt evaluated in double and rounded once to float32 give exactly the IEEE
# float32 result (double has more than 2*24+2 bits), so these helpers reproduce float32 arithmetic bit for bit.


def _f32(value: float) -> float:
    """Round a Python float to the nearest float32 (returned as a Python float, exactly representable)."""
    return float(np.float32(value))


def _sqrt_f32(value: float) -> float:
    return _f32(math.sqrt(value))


def _log_f32(value: float) -> float:
    return _f32(math.log(value))


def _exp_f32(value: float) -> float:
    return _f32(math.exp(value))


def _tensor_sqrt(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 sqrt of a CPU float32 tensor (torch's own goes through MKL VML, CPU dependent)."""
    return torch.from_numpy(np.sqrt(t.double().numpy()).astype(np.float32))


def _tensor_map(t: torch.Tensor, fn) -> torch.Tensor:
    return torch.tensor([_f32(fn(v)) for v in t.double().tolist()], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Guidance
# ----------------------------------------------------------------------------------------------------------------------


def cfg(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance as both releases write it: ``(w + 1) * cond - w * uncond``.

    Used for the 1.0 keyframes and interpolation, the 1.1 first frame and the 1.1 interpolation (there ``cond`` and
    ``uncond`` are v-predictions). The operation order is the official one.
    """
    weight = float(weight)
    return (weight + 1.0) * cond - weight * uncond


def cfg3(
    text_image: torch.Tensor, image: torch.Tensor, none: torch.Tensor, weight_text: float, weight_image: float
) -> torch.Tensor:
    """The 1.1 keyframe guidance over three branches (text+image, image only, neither):

    ``(1 - wI) * e_none + (wI - wT) * e_img + wT * e_text_img``, which equals
    ``e_none + wI * (e_img - e_none) + wT * (e_text_img - e_img)``; evaluated in the official order
    (``kandinsky_video/model/diffusion.py``, ``p_sample_loop``). ``weight_text`` is ``guidance_weight_prompt``,
    ``weight_image`` is ``guidance_weight_image``.
    """
    wt, wi = float(weight_text), float(weight_image)
    return (1 - wi) * none + (wi - wt) * image + wt * text_image


# ----------------------------------------------------------------------------------------------------------------------
# Beta schedules
# ----------------------------------------------------------------------------------------------------------------------


def cosine_alpha_bar(s: float) -> float:
    """The cosine schedule's continuous ``alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)``, ``s`` in [0, 1]."""
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """``beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)`` in double precision, stored as float32.

    This is both 1.0's ``get_named_beta_schedule('cosine', T)`` and diffusers' ``betas_for_alpha_bar`` (1.1).
    """
    betas = []
    for i in range(num_steps):
        t1, t2 = i / num_steps, (i + 1) / num_steps
        betas.append(min(1 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float32)


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift ``sqrt(alpha_bar)`` so the last is 0 and rescale to keep the first."""
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sqrt_bar = _tensor_sqrt(alphas_cumprod)
    first = sqrt_bar[0].clone()
    last = sqrt_bar[-1].clone()
    sqrt_bar -= last
    sqrt_bar *= first / (first - last)
    alpha_bar = sqrt_bar**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


# ----------------------------------------------------------------------------------------------------------------------
# x0 processing
# ----------------------------------------------------------------------------------------------------------------------


def dynamic_threshold(x0: torch.Tensor, percentile: float = DYNAMIC_PERCENTILE) -> torch.Tensor:
    """1.0's dynamic thresholding [OB-25], official ``process_x_start``: per batch element ``q = max(quantile(|x0|, p),
    1)``, ``clip(x0, -q, q) / q`` (the quantile runs over all of the element's channels and pixels)."""
    b = x0.shape[0]
    quantile = torch.quantile(x0.reshape(b, -1).abs(), percentile, dim=-1)
    quantile = torch.clip(quantile, min=1.0).reshape(b, *((1,) * (x0.ndim - 1)))
    return torch.clip(x0, -quantile, quantile) / quantile


# ----------------------------------------------------------------------------------------------------------------------
# Common interface
# ----------------------------------------------------------------------------------------------------------------------


class DiffusionSchedule:
    """What the sampling loop needs from a schedule. See the module docstring."""

    timesteps: list[int]

    def __len__(self) -> int:
        return len(self.timesteps)

    def model_time(self, t: int) -> int:
        raise NotImplementedError

    def needs_noise(self, t: int) -> bool:
        raise NotImplementedError

    def step(self, x: torch.Tensor, model_output: torch.Tensor, t: int, noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError


def _as_int(t) -> int:
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            flat = t.reshape(-1)
            if not bool((flat == flat[0]).all()):
                raise InputError("all batch elements must be at the same timestep")
            t = flat[0]
        return int(t.item())
    return int(t)


# ----------------------------------------------------------------------------------------------------------------------
# Kandinsky Video 1.0
# ----------------------------------------------------------------------------------------------------------------------

_K10_PREDICTIONS = {"eps": "eps", "epsilon": "eps", "v": "v", "v_prediction": "v"}
_UNSET = object()


class K10Schedule(DiffusionSchedule):
    """The 1.0 ancestral sampler (official ``BaseDiffusion``) with ``steps`` bins of a cosine schedule.

    ``t`` is the step index, visited ``steps-1, ..., 0``; the model time is ``t * time_scale`` with
    ``time_scale = 1000 // steps`` (non-divisors of 1000 truncate [OB-23]). ``prediction`` is ``"eps"`` (keyframes)
    or ``"v"`` (interpolation); ``percentile`` is the dynamic-thresholding quantile (0.98 by default and in the
    pipeline) or ``None`` for a plain clip of ``x0`` to [-1, 1]. Both can also be overridden per :meth:`step` call.

    Arithmetic is float32 whatever the dtypes of ``x`` and ``model_output`` (as the official code, whose fp32 state
    promotes an fp16 model output); the result has the dtype of ``x``.
    """

    def __init__(self, steps: int = 50, *, prediction: str = "eps",
                 percentile: float | None = DYNAMIC_PERCENTILE) -> None:
        steps = int(steps)
        if not 2 <= steps <= 1000:
            raise InputError(f"steps must be between 2 and 1000 for Kandinsky Video 1.0, got {steps}.")
        if prediction not in _K10_PREDICTIONS:
            raise InputError(f"prediction must be 'eps' or 'v', got {prediction!r}.")
        if percentile is not None and not 0.0 < float(percentile) <= 1.0:
            raise InputError(f"percentile must be in (0, 1] or None, got {percentile}.")
        betas = cosine_betas(steps)

        self.num_steps = steps
        self.prediction = _K10_PREDICTIONS[prediction]
        self.percentile = None if percentile is None else float(percentile)
        self.time_scale = 1000 // steps
        self.timesteps = list(range(steps - 1, -1, -1))

        # Tables in float32 on the CPU, in the official order of operations.
        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=betas.dtype), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = _tensor_sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = _tensor_sqrt(1.0 - self.alphas_cumprod)
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_mean_coef1 = _tensor_sqrt(self.alphas_cumprod_prev) * betas / one_minus
        self.posterior_mean_coef2 = _tensor_sqrt(alphas) * (1.0 - self.alphas_cumprod_prev) / one_minus
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        # index 0 (variance 0) replaced by index 1; masked at t = 0 anyway [OB-36]
        self.posterior_log_variance = _tensor_map(
            torch.cat([self.posterior_variance[1].unsqueeze(0), self.posterior_variance[1:]]), math.log
        )
        # exp(0.5 * log variance): the standard deviation of the step noise
        self.posterior_std = _tensor_map(0.5 * self.posterior_log_variance, math.exp)
        self._device_tables: dict[torch.device, torch.Tensor] = {}

    # -- interface -----------------------------------------------------------------------------------------------------

    def model_time(self, t: int) -> int:
        return int(t) * self.time_scale

    def needs_noise(self, t: int) -> bool:
        """Always: 1.0 draws ``randn_like(x)`` at every step, also at t = 0 (where it is multiplied by zero)."""
        return True

    def _tables(self, device: torch.device) -> torch.Tensor:
        """Rows: sqrt(ab), sqrt(1-ab), coef1, coef2, std -- moved to each device once."""
        device = torch.device(device)
        table = self._device_tables.get(device)
        if table is None:
            table = torch.stack(
                [
                    self.sqrt_alphas_cumprod,
                    self.sqrt_one_minus_alphas_cumprod,
                    self.posterior_mean_coef1,
                    self.posterior_mean_coef2,
                    self.posterior_std,
                ]
            ).to(device)
            self._device_tables[device] = table
        return table

    def _check_t(self, t) -> int:
        t = _as_int(t)
        if not 0 <= t < self.num_steps:
            raise InputError(f"timestep {t} is outside this {self.num_steps}-step schedule.")
        return t

    def threshold(self, x0: torch.Tensor, percentile: float | None) -> torch.Tensor:
        """:func:`dynamic_threshold` at ``percentile``; ``percentile=None`` clips to [-1, 1]."""
        if percentile is None:
            return torch.clip(x0, -1.0, 1.0)
        return dynamic_threshold(x0, percentile)

    def predict_x0(self, x: torch.Tensor, model_output: torch.Tensor, t: int, prediction: str | None = None):
        """``x0`` before thresholding, in float32."""
        t = self._check_t(t)
        pred = self.prediction if prediction is None else _K10_PREDICTIONS[prediction]
        table = self._tables(x.device)
        shape = (1,) * x.ndim
        sqrt_ab = table[0, t].reshape(shape)
        sqrt_1m_ab = table[1, t].reshape(shape)
        xf = x.float()
        out = model_output.to(device=x.device, dtype=torch.float32)
        if pred == "v":
            return sqrt_ab * xf - sqrt_1m_ab * out
        return (xf - sqrt_1m_ab * out) / sqrt_ab

    def step(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        t: int,
        noise: torch.Tensor | None,
        prediction: str | None = None,
        percentile=_UNSET,
    ) -> torch.Tensor:
        """One official ``p_sample`` update from the guided prediction: ``mean + 1[t != 0] * exp(logvar/2) * noise``.

        ``noise`` is required for ``t > 0``; at ``t = 0`` it may be ``None`` (the official code draws it anyway).
        """
        t = self._check_t(t)
        if prediction is not None and prediction not in _K10_PREDICTIONS:
            raise InputError(f"prediction must be 'eps' or 'v', got {prediction!r}.")
        percentile = self.percentile if percentile is _UNSET else percentile
        x0 = self.threshold(self.predict_x0(x, model_output, t, prediction), percentile)
        table = self._tables(x.device)
        shape = (1,) * x.ndim
        xf = x.float()
        out = table[2, t].reshape(shape) * x0 + table[3, t].reshape(shape) * xf
        if t != 0:
            if noise is None:
                raise InputError(f"step at t={t} needs a noise tensor.")
            out = out + table[4, t].reshape(shape) * noise.to(device=x.device, dtype=torch.float32)
        return out.to(x.dtype)

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Official ``q_sample``: ``sqrt(ab_t) * x + sqrt(1 - ab_t) * noise`` (float32, returned in x's dtype)."""
        t = self._check_t(t)
        table = self._tables(x.device)
        shape = (1,) * x.ndim
        out = table[0, t].reshape(shape) * x.float() + table[1, t].reshape(shape) * noise.to(x.device, torch.float32)
        return out.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Kandinsky Video 1.1
# ----------------------------------------------------------------------------------------------------------------------

_K11_PREDICTIONS = {"epsilon": "epsilon", "eps": "epsilon", "v_prediction": "v_prediction", "v": "v_prediction"}
_SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class _K11Coefficients:
    """Per-timestep scalars of one DDPM update, exact float32 values held as Python floats."""

    prev_t: int
    sqrt_alpha_prod: float  # sqrt(ab_t)
    sqrt_beta_prod: float  # sqrt(1 - ab_t)
    x0_coeff: float  # sqrt(ab_prev) * beta_t / (1 - ab_t)
    sample_coeff: float  # sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t)
    std: float  # exp(0.5 * log(max(variance, 1e-20)))


#: The official 1.1 ``alphas_cumprod`` (1000 steps, squaredcos_cap_v2, zero-terminal-SNR rescale), float32 little
#: endian: diffusers' formula evaluated by torch with MKL on its SSE4.2 code path, the environment the golden fixtures
#: come from. It differs from the correctly rounded evaluation (:func:`k11_alphas_cumprod`) by a few ulp per entry,
#: which matters only near t = 0 (see the module docstring).
K11_ALPHAS_CUMPROD_FILE = Path(__file__).with_name("data") / "k11_alphas_cumprod.f32"


def k11_alphas_cumprod(num_train_timesteps: int = 1000, rescale_zero_snr: bool = True) -> torch.Tensor:
    """diffusers' ``alphas_cumprod`` for ``squaredcos_cap_v2`` (+ zero-terminal-SNR rescale), correctly rounded."""
    betas = cosine_betas(num_train_timesteps)
    if rescale_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return torch.cumprod(1.0 - betas, dim=0)


@functools.cache
def _frozen_k11_table() -> bytes:
    raw = K11_ALPHAS_CUMPROD_FILE.read_bytes()
    if len(raw) != 4000:
        raise RuntimeError(f"{K11_ALPHAS_CUMPROD_FILE} is damaged ({len(raw)} bytes, expected 4000): reinstall the "
                           "package.")
    return raw


def _official_k11_alphas_cumprod() -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(_frozen_k11_table(), dtype="<f4").astype(np.float32))


def k11_timesteps(num_inference_steps: int, spacing: str = "leading", num_train_timesteps: int = 1000) -> list[int]:
    """diffusers ``DDPMScheduler.set_timesteps`` (``steps_offset = 0``): leading ``[980, 960, ..., 0]`` for 50,
    trailing ``[999, 899, ..., 99]`` for 10, or linspace."""
    n, total = int(num_inference_steps), int(num_train_timesteps)
    if not 1 <= n <= total:
        raise InputError(f"number of steps must be between 1 and {total}, got {n}.")
    if spacing == "leading":
        steps = (np.arange(0, n) * (total // n)).round()[::-1].astype(np.int64)
    elif spacing == "trailing":
        steps = np.round(np.arange(total, 0, -total / n)).astype(np.int64) - 1
    elif spacing == "linspace":
        steps = np.linspace(0, total - 1, n).round()[::-1].astype(np.int64)
    else:
        raise InputError(f"timestep spacing must be one of {', '.join(_SPACINGS)}, got {spacing!r}.")
    return [int(s) for s in steps]


class K11Schedule(DiffusionSchedule):
    """The 1.1 sampler: diffusers ``DDPMScheduler`` semantics as configured by the official ``get_sampler``.

    Keyframes and first frame: ``K11Schedule(50, "leading", "epsilon")``; interpolation:
    ``K11Schedule(10, "trailing", "v_prediction")``. ``t`` is the scheduler timestep and also the model time.

    dtype semantics follow diffusers: the coefficient products with ``model_output`` happen in the model output's dtype
    (fp16 under the official autocast), everything touching the fp32 sample is float32, the noise is used in the model
    output's dtype [OB-26], and the result keeps the sample's dtype.
    """

    def __init__(
        self,
        num_inference_steps: int = 50,
        spacing: str = "leading",
        prediction: str = "epsilon",
        *,
        num_train_timesteps: int = 1000,
        rescale_zero_snr: bool = True,
    ) -> None:
        if prediction not in _K11_PREDICTIONS:
            raise InputError(f"prediction must be 'epsilon' or 'v_prediction', got {prediction!r}.")
        self.num_train_timesteps = int(num_train_timesteps)
        self.spacing = spacing
        self.prediction = _K11_PREDICTIONS[prediction]
        self.timesteps = k11_timesteps(num_inference_steps, spacing, self.num_train_timesteps)
        self.num_steps = len(self.timesteps)

        if self.num_train_timesteps == 1000 and rescale_zero_snr:
            self.alphas_cumprod = _official_k11_alphas_cumprod()
        else:
            self.alphas_cumprod = k11_alphas_cumprod(self.num_train_timesteps, rescale_zero_snr)

        # Per-timestep scalars in float32, in the order of DDPMScheduler.step / _get_variance.
        self._coefficients: dict[int, _K11Coefficients] = {}
        table = self.alphas_cumprod.tolist()
        for index, t in enumerate(self.timesteps):
            prev_t = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else -1
            ab_t = table[t]
            ab_prev = table[prev_t] if prev_t >= 0 else 1.0
            beta_prod = _f32(1 - ab_t)
            beta_prod_prev = _f32(1 - ab_prev)
            alpha_t = _f32(ab_t / ab_prev)
            beta_t = _f32(1 - alpha_t)
            variance = _f32(_f32(_f32(1 - ab_prev) / _f32(1 - ab_t)) * beta_t)
            variance = max(variance, _f32(1e-20))
            self._coefficients[t] = _K11Coefficients(
                prev_t=prev_t,
                sqrt_alpha_prod=_sqrt_f32(ab_t),
                sqrt_beta_prod=_sqrt_f32(beta_prod),
                x0_coeff=_f32(_f32(_sqrt_f32(ab_prev) * beta_t) / beta_prod),
                sample_coeff=_f32(_f32(_sqrt_f32(alpha_t) * beta_prod_prev) / beta_prod),
                std=_exp_f32(_f32(0.5 * _log_f32(variance))),
            )

    # -- interface -----------------------------------------------------------------------------------------------------

    def model_time(self, t: int) -> int:
        return int(t)

    def needs_noise(self, t: int) -> bool:
        """Only steps with ``t > 0`` draw noise (diffusers ``DDPMScheduler.step``)."""
        return int(t) > 0

    def _coef(self, t) -> _K11Coefficients:
        t = _as_int(t)
        coef = self._coefficients.get(t)
        if coef is None:
            raise InputError(f"timestep {t} is not one of this schedule's timesteps.")
        return coef

    def predict_x0(self, x: torch.Tensor, model_output: torch.Tensor, t: int) -> torch.Tensor:
        """``x0`` before the clamp (float32 for a float32 sample)."""
        c = self._coef(t)
        xf = x if x.dtype in _FULL_PRECISION else x.float()
        model_output = model_output.to(x.device)
        if self.prediction == "epsilon":
            return (xf - c.sqrt_beta_prod * model_output) / c.sqrt_alpha_prod
        return c.sqrt_alpha_prod * xf - c.sqrt_beta_prod * model_output

    def step(
        self, x: torch.Tensor, model_output: torch.Tensor, t: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``DDPMScheduler.step(model_output, t, x).prev_sample``; ``noise`` is needed only when ``t > 0``."""
        t = _as_int(t)
        c = self._coef(t)
        xf = x if x.dtype in _FULL_PRECISION else x.float()
        x0 = self.predict_x0(xf, model_output, t)
        # thresholding=True with sample_max_value=1: s = clamp(quantile, 1, 1) = 1, i.e. a plain clamp [OB-25],
        # evaluated in at least float32 like diffusers' _threshold_sample
        x0 = torch.clamp(x0 if x0.dtype in _FULL_PRECISION else x0.float(), -1.0, 1.0).to(x0.dtype)
        out = c.x0_coeff * x0 + c.sample_coeff * xf
        if t > 0:
            if noise is None:
                raise InputError(f"step at t={t} needs a noise tensor.")
            out = out + c.std * noise.to(device=x.device, dtype=model_output.dtype)
        return out.to(x.dtype)

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """diffusers ``add_noise``: ``sqrt(ab_t) * x + sqrt(1 - ab_t) * noise`` with the table cast to x's dtype.

        The 1.1 keyframe conditioning uses it at ``t = noise_augmentation`` (20) with UNIFORM noise [OB-6].
        """
        t = _as_int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise InputError(f"noise level must be between 0 and {self.num_train_timesteps - 1}, got {t}.")
        ab = _round_to(float(self.alphas_cumprod[t]), x.dtype)
        sqrt_ab = _round_to(math.sqrt(ab), x.dtype)
        sqrt_1m_ab = _round_to(math.sqrt(_round_to(1 - ab, x.dtype)), x.dtype)
        return sqrt_ab * x + sqrt_1m_ab * noise.to(device=x.device, dtype=x.dtype)


def _round_to(value: float, dtype: torch.dtype) -> float:
    """Round a Python float to the nearest value of a floating dtype (float64 leaves it alone)."""
    if dtype == torch.float64:
        return value
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))

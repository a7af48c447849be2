"""Faster samplers (DDIM, DPM-Solver++(2M)) as OPTIONS next to the official ones -- never the default.

The official samplers (``schedules.K10Schedule``, ``schedules.K11Schedule``) are
ancestral DDPM loops with 50 (1.0: every stage; 1.1: first frame and keyframes) or 10 (1.1 interpolation) model calls
per stage. The schedules here implement the same small interface (``timesteps``, ``model_time(t)``,
``needs_noise(t)``, ``step(x, model_output, t, noise)``, ``add_noise``), so ``loop.sample`` and
the guided denoisers run them unchanged, with any number of steps. Their outputs are NOT those of the official code
(no parity is claimed or tested); pick them through :func:`make_schedule` with ``sampler="ddim"`` or
``"dpmpp_2m"``; ``"official"`` returns exactly the schedule the stages build.

Noise levels. Both fast samplers work on a grid of 1000 integer timesteps per release (:class:`NoiseLevels`):

* **1.1** (:class:`K11NoiseLevels`): the training schedule of the 1.1 models -- 1000 steps, ``squaredcos_cap_v2``,
  zero-terminal-SNR rescale -- as the official sampler tabulates it (``K11Schedule.alphas_cumprod``); ``t`` in
  0..999 is also the model time. v-prediction models start at ``t = 999`` (alpha_bar = 0: pure noise, where a v
  prediction still determines x0); eps models start at ``t = 980``, the first timestep of the official eps sampler,
  because at alpha_bar = 0 an eps prediction says nothing about x0. Timesteps are evenly spaced from there
  ("trailing" spacing, diffusers' convention): 10 v steps are ``999, 899, ..., 99``.
* **1.0** (:class:`K10NoiseLevels`): the continuous cosine schedule ``alpha_bar(s) / alpha_bar(0)`` with
  ``s = t / 1000``, ``t`` in 1..1000, floored at the official 50-step schedule's terminal level (9.71e-7, from its
  ``beta <= 0.999`` clip). Model time: 1.0 discretises the cosine into ``steps`` bins and shows the U-Net
  ``t_index * 1000 // steps``, so in the official 50-step run the U-Net sees model time ``1000 s - 20`` at noise level
  ``s``. We keep that relation (``model_time = t - 20``, floored at 0) for every step count: the U-Net sees model
  times on its 0..1000 scale and, at the noise levels the official sampler visits, exactly the model times it sees
  there -- 50 DDIM steps visit the official sampler's 50 (alpha_bar, model time) pairs. (A 1000-bin training
  discretisation would instead pair model time ``m`` with ``s = (m + 1) / 1000``; the offset is a parameter.)

Every sampler's last step goes to alpha_bar = 1 and returns the (thresholded) x0 prediction, as the official
samplers' last steps do. ``threshold``: the release's own x0 processing by default ("official": 1.0's per-sample
0.98-quantile dynamic thresholding, 1.1's clamp to [-1, 1]), or ``"clip"``, ``"dynamic"`` or ``None``.

Arithmetic: coefficients in float64, tensor updates in float32, results in the sample's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..releases import OFFICIAL
from .schedules import DiffusionSchedule, K10Schedule, K11Schedule, cosine_alpha_bar, dynamic_threshold

__all__ = [
    "DDIMSchedule",
    "DPMSolverPP2MSchedule",
    "K10NoiseLevels",
    "K11NoiseLevels",
    "NoiseLevels",
    "OFFICIAL_STEPS",
    "PREDICTIONS",
    "SAMPLERS",
    "make_schedule",
    "noise_levels",
]

#: model calls per stage of the official samplers, (release, stage) -> count (from ``releases.py``)
OFFICIAL_STEPS = {(r.name, stage): count for r in OFFICIAL.values() for stage, count in r.steps.items()}
#: what each stage's model predicts, (release, stage) -> "eps" / "v"
PREDICTIONS = {(r.name, stage): kind for r in OFFICIAL.values() for stage, kind in r.predictions.items()}
_PREDICTION_NAMES = {"eps": "eps", "epsilon": "eps", "v": "v", "v_prediction": "v"}
_THRESHOLDS = ("official", "clip", "dynamic", None)


# ----------------------------------------------------------------------------------------------------------------------
# Noise levels of each release
# ----------------------------------------------------------------------------------------------------------------------


class NoiseLevels:
    """A release's noise levels on an integer timestep grid and what its U-Net is told at each.

    ``alpha_bar(t)`` (float64), ``model_time(t)`` (int), ``timesteps(steps, prediction)`` (the grid a fast sampler
    visits, noisiest first), ``add_noise``; ``official_threshold`` is the release's x0 processing.
    """

    release: str
    official_threshold: str

    def alpha_bar(self, t: int) -> float:
        raise NotImplementedError

    def model_time(self, t: int) -> int:
        raise NotImplementedError

    def timesteps(self, steps: int, prediction: str) -> list[int]:
        raise NotImplementedError

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """``sqrt(ab_t) x + sqrt(1 - ab_t) noise`` in float32, returned in x's dtype."""
        ab = self.alpha_bar(t)
        out = math.sqrt(ab) * x.float() + math.sqrt(1.0 - ab) * noise.to(device=x.device, dtype=torch.float32)
        return out.to(x.dtype)


def _evenly_spaced(first: int, last_gap_end: int, steps: int) -> list[int]:
    """``steps`` integers from ``first`` down, evenly spaced over (last_gap_end, first] (trailing spacing)."""
    span = first - last_gap_end
    if not 1 <= steps <= span:
        raise InputError(f"number of steps must be between 1 and {span}, got {steps}.")
    return [int(np.round(last_gap_end + span * (steps - k) / steps)) for k in range(steps)]


class K11NoiseLevels(NoiseLevels):
    """1.1: the 1000-step training schedule (``squaredcos_cap_v2`` + zero-terminal-SNR rescale) as the official
    sampler tabulates it; the model time is the timestep."""

    release = "1.1"
    official_threshold = "clip"
    #: first timestep for eps models (alpha_bar(999) = 0 leaves x0 undetermined by an eps prediction)
    EPS_START = 980
    V_START = 999

    def __init__(self) -> None:
        self._official = K11Schedule(1, "trailing", "v_prediction")
        self._table = self._official.alphas_cumprod.double().tolist()

    def alpha_bar(self, t: int) -> float:
        t = int(t)
        if not 0 <= t < len(self._table):
            raise InputError(f"1.1 timestep must be between 0 and {len(self._table) - 1}, got {t}.")
        return self._table[t]

    def model_time(self, t: int) -> int:
        return int(t)

    def timesteps(self, steps: int, prediction: str) -> list[int]:
        start = self.V_START if _PREDICTION_NAMES[prediction] == "v" else self.EPS_START
        # trailing spacing: start+1 .. 0 in `steps` equal parts, each step at the upper end minus one
        return [t - 1 for t in _evenly_spaced(start + 1, 0, int(steps))]

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Exactly the official ``add_noise`` (1.1's keyframe noise augmentation uses it)."""
        return self._official.add_noise(x, noise, t)


class K10NoiseLevels(NoiseLevels):
    """1.0: the continuous cosine schedule on ``s = t / 1000`` (``t`` in 1..1000), model time ``t - offset``."""

    release = "1.0"
    official_threshold = "dynamic"
    GRID = 1000

    def __init__(self, model_time_offset: int = 20) -> None:
        if not 0 <= int(model_time_offset) < self.GRID:
            raise InputError(f"model time offset must be in [0, {self.GRID}), got {model_time_offset}.")
        self.model_time_offset = int(model_time_offset)
        # the official 50-step schedule's terminal level: its last beta is clipped at 0.999
        self.floor = float(K10Schedule(50).alphas_cumprod[-1])
        self._zero = cosine_alpha_bar(0.0)

    def alpha_bar(self, t: int) -> float:
        t = int(t)
        if not 1 <= t <= self.GRID:
            raise InputError(f"1.0 timestep must be between 1 and {self.GRID}, got {t}.")
        return max(cosine_alpha_bar(t / self.GRID) / self._zero, self.floor)

    def model_time(self, t: int) -> int:
        return max(int(t) - self.model_time_offset, 0)

    def timesteps(self, steps: int, prediction: str) -> list[int]:
        return _evenly_spaced(self.GRID, 0, int(steps))


def noise_levels(release: str) -> NoiseLevels:
    if release == "1.0":
        return K10NoiseLevels()
    if release == "1.1":
        return K11NoiseLevels()
    raise InputError(f"release must be '1.0' or '1.1', got {release!r}.")


# ----------------------------------------------------------------------------------------------------------------------
# x0 processing
# ----------------------------------------------------------------------------------------------------------------------


def _threshold_function(kind: str | None, levels: NoiseLevels) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if kind not in _THRESHOLDS:
        raise InputError(f"threshold must be one of 'official', 'clip', 'dynamic' or None, got {kind!r}.")
    if kind == "official":
        kind = levels.official_threshold
    if kind == "clip":
        return lambda x0: torch.clamp(x0, -1.0, 1.0)
    if kind == "dynamic":
        return dynamic_threshold
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Transition:
    t: int
    prev: int | None  # next timestep visited, None for the last step (to alpha_bar = 1)
    alpha_bar: float
    alpha_bar_prev: float


class _FastSchedule(DiffusionSchedule):
    """Shared by the fast samplers: timestep grid, x0 prediction and processing, interface plumbing."""

    name = "fast"

    def __init__(self, levels: NoiseLevels, steps: int, prediction: str = "eps", *,
                 threshold: str | None = "official") -> None:
        if prediction not in _PREDICTION_NAMES:
            raise InputError(f"prediction must be 'eps' or 'v', got {prediction!r}.")
        self.levels = levels
        self.prediction = _PREDICTION_NAMES[prediction]
        self.threshold = threshold
        self._process = _threshold_function(threshold, levels)
        self.timesteps = levels.timesteps(int(steps), self.prediction)
        self.num_steps = len(self.timesteps)
        self._transitions: dict[int, _Transition] = {}
        for index, t in enumerate(self.timesteps):
            prev = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else None
            ab = levels.alpha_bar(t)
            if self.prediction == "eps" and ab <= 0.0:
                raise InputError(f"an eps-prediction sampler cannot start at timestep {t} (alpha_bar = 0).")
            self._transitions[t] = _Transition(t, prev, ab, 1.0 if prev is None else levels.alpha_bar(prev))

    # -- interface -----------------------------------------------------------------------------------------------------

    def model_time(self, t: int) -> int:
        return self.levels.model_time(t)

    def needs_noise(self, t: int) -> bool:
        return False

    def alpha_bar(self, t: int) -> float:
        return self._transition(t).alpha_bar

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        return self.levels.add_noise(x, noise, t)

    def _transition(self, t) -> _Transition:
        t = int(t.item()) if isinstance(t, torch.Tensor) else int(t)
        found = self._transitions.get(t)
        if found is None:
            raise InputError(f"timestep {t} is not one of this schedule's timesteps.")
        return found

    def predict_x0(self, x: torch.Tensor, model_output: torch.Tensor, t: int) -> torch.Tensor:
        """Raw x0 prediction (float32)."""
        ab = self._transition(t).alpha_bar
        xf = x.float()
        out = model_output.to(device=x.device, dtype=torch.float32)
        if self.prediction == "v":
            return math.sqrt(ab) * xf - math.sqrt(1.0 - ab) * out
        return (xf - math.sqrt(1.0 - ab) * out) / math.sqrt(ab)

    def _data_prediction(self, x: torch.Tensor, model_output: torch.Tensor, t: int) -> torch.Tensor:
        x0 = self.predict_x0(x, model_output, t)
        return x0 if self._process is None else self._process(x0)


class DDIMSchedule(_FastSchedule):
    """DDIM (Song et al. 2021): ``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z`` with
    ``sigma = eta sqrt((1 - ab_prev) / (1 - ab) (1 - ab / ab_prev))``; eps is recomputed from the processed x0.

    ``eta = 0`` (default) is deterministic: no noise is ever drawn. NOT the official sampler.
    """

    name = "ddim"

    def __init__(self, levels: NoiseLevels, steps: int, prediction: str = "eps", *, eta: float = 0.0,
                 threshold: str | None = "official") -> None:
        super().__init__(levels, steps, prediction, threshold=threshold)
        self.eta = float(eta)
        if not 0.0 <= self.eta <= 1.0 or math.isnan(self.eta):
            raise InputError(f"DDIM eta must be between 0 and 1, got {eta}.")
        self._sigma = {}
        for t, tr in self._transitions.items():
            a, a_prev = tr.alpha_bar, tr.alpha_bar_prev
            variance = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev) if a_prev > 0 else 0.0
            self._sigma[t] = self.eta * math.sqrt(max(variance, 0.0))

    def needs_noise(self, t: int) -> bool:
        return self._sigma[self._transition(t).t] > 0.0

    def step(self, x: torch.Tensor, model_output: torch.Tensor, t: int,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        tr = self._transition(t)
        xf = x.float()
        x0 = self._data_prediction(x, model_output, tr.t)
        a, a_prev, sigma = tr.alpha_bar, tr.alpha_bar_prev, self._sigma[tr.t]
        eps = (xf - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        out = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma * sigma, 0.0)) * eps
        if sigma > 0.0:
            if noise is None:
                raise InputError(f"DDIM step at t={tr.t} with eta > 0 needs a noise tensor.")
            out = out + sigma * noise.to(device=x.device, dtype=torch.float32)
        return out.to(x.dtype)


def _log_snr(alpha_bar: float) -> float:
    """``lambda = log(alpha / sigma)``; -inf at alpha_bar = 0, +inf at alpha_bar = 1."""
    if alpha_bar <= 0.0:
        return -math.inf
    if alpha_bar >= 1.0:
        return math.inf
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


class DPMSolverPP2MSchedule(_FastSchedule):
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, multistep, deterministic. NOT the official sampler.

    ``x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) D`` with ``h = lambda_s - lambda_t`` and
    ``D = x0_t + (x0_t - x0_prev) / (2 r)``, ``r = h_prev / h`` (first order on the first step, and wherever the
    previous step is missing or infinitely long, e.g. after a zero-SNR start); the last step returns x0.
    The schedule keeps the previous x0 between calls; it resets when the first timestep comes round again.
    """

    name = "dpmpp_2m"

    def __init__(self, levels: NoiseLevels, steps: int, prediction: str = "eps", *,
                 threshold: str | None = "official") -> None:
        super().__init__(levels, steps, prediction, threshold=threshold)
        self._lambda = {t: _log_snr(tr.alpha_bar) for t, tr in self._transitions.items()}
        self._order = {t: i for i, t in enumerate(self.timesteps)}
        self._history: tuple[int, torch.Tensor] | None = None

    def step(self, x: torch.Tensor, model_output: torch.Tensor, t: int,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        tr = self._transition(t)
        index = self._order[tr.t]
        if index == 0:
            self._history = None
        x0 = self._data_prediction(x, model_output, tr.t)
        previous, self._history = self._history, (tr.t, x0)
        if tr.prev is None:
            return x0.to(x.dtype)
        a_t, a_s = tr.alpha_bar, tr.alpha_bar_prev
        lam_t, lam_s = self._lambda[tr.t], _log_snr(a_s)
        h = lam_s - lam_t
        data = x0
        if previous is not None and index > 0 and previous[0] == self.timesteps[index - 1]:
            h_prev = lam_t - self._lambda[previous[0]]
            if math.isfinite(h_prev) and h_prev > 0.0 and math.isfinite(h):
                data = x0 + (0.5 * h / h_prev) * (x0 - previous[1])
        phi = -math.expm1(-h)  # 1 - e^{-h}
        out = math.sqrt((1.0 - a_s) / (1.0 - a_t)) * x.float() + math.sqrt(a_s) * phi * data
        return out.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------------------------------


def _stage_key(release: str, stage: str) -> tuple[str, str]:
    key = (release, stage)
    if key not in OFFICIAL_STEPS:
        stages = ", ".join(s for r, s in OFFICIAL_STEPS if r == release) or "none (unknown release)"
        raise InputError(f"release {release!r} has no sampling stage {stage!r}; its stages: {stages}.")
    return key


def _official(release: str, stage: str, steps: int | None, **options) -> DiffusionSchedule:
    """Exactly the schedule :mod:`fusionframes.runtime.stages` builds for the stage."""
    if options.get("eta", 0.0) or options.get("threshold", "official") != "official":
        raise InputError("the official sampler has no eta or threshold option; use 'ddim' or 'dpmpp_2m'.")
    key = _stage_key(release, stage)
    prediction = PREDICTIONS[key]
    if release == "1.0":
        return K10Schedule(OFFICIAL_STEPS[key] if steps is None else int(steps), prediction=prediction)
    if steps is not None and int(steps) != OFFICIAL_STEPS[key]:
        raise InputError(f"1.1's official {stage} sampler always takes {OFFICIAL_STEPS[key]} steps; use the 'ddim' "
                         "or 'dpmpp_2m' sampler for another number of steps.")
    if stage == "interpolation":
        return K11Schedule(OFFICIAL_STEPS[key], spacing="trailing", prediction="v_prediction")
    return K11Schedule(OFFICIAL_STEPS[key], spacing="leading", prediction="epsilon")


def _fast(cls):
    def build(release: str, stage: str, steps: int | None, **options) -> DiffusionSchedule:
        key = _stage_key(release, stage)
        steps = OFFICIAL_STEPS[key] if steps is None else int(steps)
        return cls(noise_levels(release), steps, PREDICTIONS[key], **options)

    return build


def _ddim(release: str, stage: str, steps: int | None, *, eta: float = 0.0,
          threshold: str | None = "official") -> DiffusionSchedule:
    return _fast(DDIMSchedule)(release, stage, steps, eta=eta, threshold=threshold)


def _dpmpp_2m(release: str, stage: str, steps: int | None, *, eta: float = 0.0,
              threshold: str | None = "official") -> DiffusionSchedule:
    if eta:
        raise InputError("DPM-Solver++(2M) is deterministic and has no eta; use 'ddim' for a stochastic sampler.")
    return _fast(DPMSolverPP2MSchedule)(release, stage, steps, threshold=threshold)


#: sampler name -> builder(release, stage, steps, **options); "official" is the default everywhere
SAMPLERS: dict[str, Callable[..., DiffusionSchedule]] = {
    "official": _official,
    "ddim": _ddim,
    "dpmpp_2m": _dpmpp_2m,
}


def make_schedule(release: str, stage: str, sampler: str = "official", steps: int | None = None, *,
                  eta: float = 0.0, threshold: str | None = "official") -> DiffusionSchedule:
    """The schedule for one sampling stage (``"first_frame"`` (1.1), ``"keyframes"``, ``"interpolation"``).

    ``sampler="official"`` returns the very schedule ``runtime.stages`` uses (``steps`` None = the official
    count; 1.0 takes any count, 1.1's is fixed). ``"ddim"`` / ``"dpmpp_2m"`` take any ``steps`` (None = the official
    count), ``eta`` (DDIM only) and ``threshold`` ("official" = the release's x0 processing, "clip", "dynamic", None).
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}.")
    if steps is not None and int(steps) < 1:
        raise InputError(f"number of steps must be at least 1, got {steps}.")
    return SAMPLERS[sampler](release, stage, steps, eta=eta, threshold=threshold)

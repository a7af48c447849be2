"""DDIM and DPM-Solver++(2M) as optional samplers: accuracy on analytic denoisers, determinism, and an untouched
official path."""

from __future__ import annotations

import math

import pytest
import torch

from fusionframes.errors import InputError
from fusionframes.sampling.fast import (
    OFFICIAL_STEPS,
    PREDICTIONS,
    SAMPLERS,
    DDIMSchedule,
    DPMSolverPP2MSchedule,
    K10NoiseLevels,
    K11NoiseLevels,
    make_schedule,
)
from fusionframes.sampling.loop import sample
from fusionframes.sampling.noise import SeededNoise
from fusionframes.sampling.schedules import K10Schedule, K11Schedule
from tests.recording_noise import RecordingNoise

MU, STD = 0.3, 0.5  # the data distribution N(MU, STD^2), per element
SHAPE = (1, 4, 64, 64)
STAGES = [("1.1", "keyframes"), ("1.1", "interpolation"), ("1.0", "keyframes"), ("1.0", "interpolation")]
FAST = ["ddim", "dpmpp_2m"]


def CountingNoise(seed: int = 0) -> RecordingNoise:
    """Seeded noise that records which roles were drawn."""
    return RecordingNoise(SeededNoise(seed))


def _alpha_bars(schedule) -> dict[int, float]:
    """model time -> alpha_bar for the schedule's timesteps (what a denoiser can know)."""
    table = {schedule.model_time(t): schedule.alpha_bar(t) for t in schedule.timesteps}
    assert len(table) == len(schedule.timesteps)
    return table


def gaussian_denoiser(schedule, prediction: str):
    """The exact E[eps | x_t] (or E[v | x_t]) for data ~ N(MU, STD^2): the ideal model of that distribution."""
    table = _alpha_bars(schedule)

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        ab = table[model_time]
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        x0 = MU + a * STD**2 / (ab * STD**2 + s * s) * (x - a * MU)
        eps = (x - a * x0) / s
        return eps if prediction == "eps" else a * eps - s * x0

    return denoise


def constant_denoiser(schedule, prediction: str, target: torch.Tensor):
    """A model certain that x0 = target."""
    table = _alpha_bars(schedule)

    def denoise(x: torch.Tensor, model_time: int) -> torch.Tensor:
        ab = table[model_time]
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        eps = (x.double() - a * target.double()) / s
        return (eps if prediction == "eps" else a * eps - s * target.double()).float()

    return denoise


def _run(schedule, denoise, x_init=None, noise=None):
    return sample(schedule, denoise, SHAPE, noise or SeededNoise(0), "test", x_init=x_init)


@pytest.mark.parametrize("sampler", FAST)
@pytest.mark.parametrize("release,stage", STAGES)
def test_lands_on_the_gaussian_data_distribution(release, stage, sampler):
    prediction = PREDICTIONS[(release, stage)]
    schedule = make_schedule(release, stage, sampler, 25, threshold=None)
    out = _run(schedule, gaussian_denoiser(schedule, prediction))
    assert abs(out.mean().item() - MU) < 0.02
    assert abs(out.std().item() - STD) < 0.05


@pytest.mark.parametrize("release,stage", STAGES)
def test_follows_the_exact_probability_flow(release, stage):
    """For Gaussian data the ODE maps the start noise z to MU + STD z; DPM++ (2nd order) gets there with fewer steps
    than DDIM (1st order)."""
    prediction = PREDICTIONS[(release, stage)]
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    errors = {}
    for sampler in FAST:
        for steps in (10, 25):
            schedule = make_schedule(release, stage, sampler, steps, threshold=None)
            out = _run(schedule, gaussian_denoiser(schedule, prediction), x_init=z)
            errors[sampler, steps] = (out - (MU + STD * z)).abs().mean().item()
    assert errors["dpmpp_2m", 25] < 0.01
    assert errors["ddim", 25] < 0.04
    assert errors["dpmpp_2m", 10] < 0.5 * errors["ddim", 10]
    assert errors["ddim", 25] < errors["ddim", 10]


def test_ddim_with_noise_samples_the_distribution():
    noise = CountingNoise()
    schedule = make_schedule("1.1", "interpolation", "ddim", 20, eta=1.0, threshold=None)
    out = _run(schedule, gaussian_denoiser(schedule, "v"), noise=noise)
    assert abs(out.mean().item() - MU) < 0.02
    assert abs(out.std().item() - STD) < 0.1
    # every step but the last (to alpha_bar = 1, where sigma = 0) draws noise
    assert noise.roles == ["init"] + [f"step.{i:03d}" for i in range(19)]


@pytest.mark.parametrize("sampler", FAST)
@pytest.mark.parametrize("release,stage", STAGES)
def test_constant_x0_oracle_is_recovered(release, stage, sampler):
    prediction = PREDICTIONS[(release, stage)]
    target = torch.rand(SHAPE, generator=torch.Generator().manual_seed(2)) * 1.8 - 0.9
    for steps in (1, 7):
        schedule = make_schedule(release, stage, sampler, steps)  # official thresholding leaves [-0.9, 0.9] alone
        out = _run(schedule, constant_denoiser(schedule, prediction, target))
        # one step from 1.0's first level (sqrt(alpha_bar) = 1e-3) divides a float32 eps by 1e-3
        assert (out - target).abs().max().item() < (1e-3 if steps == 1 else 1e-4)
    schedule = make_schedule(release, stage, sampler, 5, threshold=None)
    out = _run(schedule, constant_denoiser(schedule, prediction, 3 * target))
    assert (out - 3 * target).abs().max().item() < 1e-4


@pytest.mark.parametrize("sampler", FAST)
def test_deterministic_samplers_draw_no_noise(sampler):
    runs = []
    for _ in range(2):
        noise = CountingNoise(seed=5)
        schedule = make_schedule("1.1", "keyframes", sampler, 12)
        assert not any(schedule.needs_noise(t) for t in schedule.timesteps)
        runs.append(_run(schedule, gaussian_denoiser(schedule, "eps"), noise=noise))
        assert noise.roles == ["init"]
    assert torch.equal(runs[0], runs[1])


def test_ddim_step_ignores_missing_noise_at_eta_zero():
    schedule = make_schedule("1.0", "keyframes", "ddim", 4)
    x = torch.randn(SHAPE)
    t = schedule.timesteps[1]
    assert torch.equal(schedule.step(x, torch.zeros(SHAPE), t, None), schedule.step(x, torch.zeros(SHAPE), t, None))


def test_dpmpp_first_step_is_ddim_and_state_resets():
    ddim = make_schedule("1.1", "interpolation", "ddim", 8, threshold=None)
    dpm = make_schedule("1.1", "interpolation", "dpmpp_2m", 8, threshold=None)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    v = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    first = ddim.timesteps[0]
    assert torch.allclose(ddim.step(x, v, first), dpm.step(x, v, first), atol=1e-6)
    denoise = gaussian_denoiser(dpm, "v")
    a = _run(dpm, denoise, x_init=x)
    b = _run(dpm, denoise, x_init=x)  # the multistep history starts over
    assert torch.equal(a, b)


def test_timestep_grids():
    assert make_schedule("1.1", "interpolation", "ddim", 10).timesteps == list(range(999, 0, -100))
    assert make_schedule("1.1", "interpolation", "ddim", 10).timesteps == K11Schedule(10, "trailing").timesteps
    eps = make_schedule("1.1", "keyframes", "dpmpp_2m", 10)
    assert eps.timesteps[0] == K11Schedule(50).timesteps[0] == 980  # alpha_bar(999) = 0 says nothing to eps models
    assert all(a > b for a, b in zip(eps.timesteps, eps.timesteps[1:])) and eps.timesteps[-1] >= 0
    for steps in (1, 3, 17, 50, 981):
        grid = make_schedule("1.1", "keyframes", "ddim", steps).timesteps
        assert len(grid) == len(set(grid)) == steps and grid[0] == 980
    assert make_schedule("1.0", "keyframes", "ddim", 4).timesteps == [1000, 750, 500, 250]


def test_k10_levels_reproduce_the_official_50_step_pairs():
    """50 fast steps on 1.0 visit exactly the official sampler's (alpha_bar, model time) pairs."""
    official = K10Schedule(50)
    fast = make_schedule("1.0", "keyframes", "ddim", 50)
    for t_fast, t_official in zip(fast.timesteps, official.timesteps):
        assert fast.model_time(t_fast) == official.model_time(t_official)
        assert fast.alpha_bar(t_fast) == pytest.approx(float(official.alphas_cumprod[t_official]), rel=1e-5)
    levels = K10NoiseLevels()
    assert levels.model_time(10) == 0 and levels.model_time(1000) == 980


def test_k11_levels_are_the_official_table():
    levels = K11NoiseLevels()
    table = K11Schedule(50).alphas_cumprod
    for t in (0, 20, 500, 980, 999):
        assert levels.alpha_bar(t) == float(table[t])
    x, n = torch.randn(4, 8, 8), torch.rand(4, 8, 8)
    assert torch.equal(levels.add_noise(x, n, 20), K11Schedule(50).add_noise(x, n, 20))


def test_thresholding_options():
    x = torch.full(SHAPE, 3.0)
    ddim11 = make_schedule("1.1", "interpolation", "ddim", 1)  # last step returns x0 = sqrt(ab) x - ... at t = 999
    assert ddim11.step(x, -x, 999).max().item() == 1.0  # v = -x at alpha_bar 0 -> x0 = 3 -> clamped to 1
    assert make_schedule("1.1", "interpolation", "ddim", 1, threshold=None).step(x, -x, 999).max().item() == 3.0
    dynamic = make_schedule("1.1", "interpolation", "ddim", 1, threshold="dynamic").step(x, -x, 999)
    assert torch.allclose(dynamic, torch.ones(SHAPE))  # quantile 3 -> clip to 3, divide by 3
    assert make_schedule("1.0", "keyframes", "ddim", 3).threshold == "official"
    with pytest.raises(InputError):
        make_schedule("1.1", "keyframes", "ddim", 3, threshold="percentile")


def test_official_sampler_is_the_stage_schedule():
    """make_schedule(..., "official") is exactly what runtime.stages builds; the stages themselves never see a
    fast sampler (their default path is unchanged)."""
    assert make_schedule.__defaults__[0] == "official"
    pairs = [
        (make_schedule("1.0", "keyframes"), K10Schedule(50, prediction="eps")),
        (make_schedule("1.0", "interpolation", steps=30), K10Schedule(30, prediction="v")),
        (make_schedule("1.1", "first_frame"), K11Schedule(50, "leading", "epsilon")),
        (make_schedule("1.1", "keyframes"), K11Schedule(50, "leading", "epsilon")),
        (make_schedule("1.1", "interpolation"), K11Schedule(10, "trailing", "v_prediction")),
    ]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    out = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    for made, direct in pairs:
        assert type(made) is type(direct)
        assert made.timesteps == direct.timesteps
        assert made.prediction == direct.prediction
        assert torch.equal(made.alphas_cumprod, direct.alphas_cumprod)
        for t in (made.timesteps[0], made.timesteps[len(made.timesteps) // 2], made.timesteps[-1]):
            assert made.model_time(t) == direct.model_time(t)
            assert made.needs_noise(t) == direct.needs_noise(t)
            assert torch.equal(made.step(x, out, t, z), direct.step(x, out, t, z))
    assert OFFICIAL_STEPS[("1.1", "interpolation")] == 10
    assert OFFICIAL_STEPS[("1.1", "keyframes")] == OFFICIAL_STEPS[("1.1", "first_frame")] == 50


def test_factory_errors():
    assert set(SAMPLERS) == {"official", "ddim", "dpmpp_2m"}
    with pytest.raises(InputError, match="sampler must be one of"):
        make_schedule("1.1", "keyframes", "euler")
    with pytest.raises(InputError, match="always takes 50"):
        make_schedule("1.1", "keyframes", "official", 25)
    with pytest.raises(InputError, match="no sampling stage"):
        make_schedule("1.0", "first_frame", "ddim", 10)
    with pytest.raises(InputError, match="no eta"):
        make_schedule("1.1", "keyframes", "dpmpp_2m", 10, eta=0.5)
    with pytest.raises(InputError, match="eta must be between"):
        make_schedule("1.1", "keyframes", "ddim", 10, eta=2.0)
    with pytest.raises(InputError):
        make_schedule("1.1", "keyframes", "official", eta=0.5)
    with pytest.raises(InputError):
        make_schedule("1.1", "keyframes", "ddim", 0)
    with pytest.raises(InputError):
        make_schedule("1.1", "interpolation", "ddim", 1001)
    schedule = make_schedule("1.1", "keyframes", "ddim", 5)
    with pytest.raises(InputError, match="not one of this schedule's timesteps"):
        schedule.step(torch.zeros(SHAPE), torch.zeros(SHAPE), 981)
    assert isinstance(make_schedule("1.0", "keyframes", "ddim", 5), DDIMSchedule)
    assert isinstance(make_schedule("1.0", "keyframes", "dpmpp_2m", 5), DPMSolverPP2MSchedule)

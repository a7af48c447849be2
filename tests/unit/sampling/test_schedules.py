"""Diffusion math of both releases against the golden fixtures (every recorded step) and the spec's numbers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusionframes.errors import InputError
from fusionframes.sampling.loop import noise_role, sample
from fusionframes.sampling.noise import RecordedNoise, SeededNoise
from fusionframes.sampling.schedules import (
    K10Schedule,
    K11Schedule,
    _official_k11_alphas_cumprod,
    cfg,
    cfg3,
    dynamic_threshold,
    k11_alphas_cumprod,
)
from fusionframes.tools.parity.fixtures import Case, Comparison, load_case
from tests.recording_noise import RecordingNoise

REPO = Path(__file__).resolve().parents[3]

SAMPLING_CASES = [
    "k10_sampling",
    "k11_sampling",
    "k10_pipeline_medium",
    "k10_pipeline_high",
    "k11_pipeline_t2v_medium",
    "k11_pipeline_i2v_high",
]
EXPECTED_PHASES = {
    "k10_sampling": {"keyframes", "interpolation"},
    "k11_sampling": {"first_frame", "keyframes", "interpolation"},
    "k10_pipeline_medium": {"keyframes", "interpolation1"},
    "k10_pipeline_high": {"keyframes", "interpolation1", "interpolation2"},
    "k11_pipeline_t2v_medium": {"first_frame", "keyframes", "interpolation1"},
    "k11_pipeline_i2v_high": {"keyframes", "interpolation1", "interpolation2"},
}


@pytest.fixture(scope="module")
def cases(golden):
    """Fixtures loaded once per module, on first use."""
    loaded: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in loaded:
            loaded[name] = load_case(golden, name)
        return loaded[name]

    return get


def _phases(case: Case) -> list[str]:
    return sorted({key.split(".")[1] for key in case.tensors if key.startswith("traj.")})


def _schedule_for(case: Case, phase: str):
    """The schedule the official pipeline uses for a phase of a fixture."""
    interpolation = phase.startswith("interpolation")
    if case.name.startswith("k10"):
        return K10Schedule(case.meta["steps"], prediction="v" if interpolation else "eps", percentile=0.98)
    if interpolation:
        return K11Schedule(10, "trailing", "v_prediction")
    return K11Schedule(50, "leading", "epsilon")


def _step_t(tensor: torch.Tensor) -> int:
    """The fixture's t: a per-sample vector (1.0) or a scalar (1.1); all samples share it."""
    flat = tensor.reshape(-1)
    assert bool((flat == flat[0]).all()), "samples at different timesteps"
    return int(flat[0])


PHASE_PARAMS = [
    pytest.param(name, phase, id=f"{name}-{phase}")
    for name in SAMPLING_CASES
    for phase in sorted(EXPECTED_PHASES[name])
]


def test_fixture_phases_are_the_expected_ones(cases):
    for name in SAMPLING_CASES:
        assert set(_phases(cases(name))) == EXPECTED_PHASES[name], name


# ----------------------------------------------------------------------------------------------------------------------
# Every recorded step
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, phase", PHASE_PARAMS)
def test_every_step_matches_fixture(cases, name: str, phase: str):
    case = cases(name)
    tensors = case.tensors
    schedule = _schedule_for(case, phase)
    steps = case.steps(phase)
    assert [_step_t(tensors[f"{s}.t"]) for s in steps] == schedule.timesteps
    assert len(steps) == len(schedule)

    tol = case.tolerance
    comparison = Comparison(f"{name}/{phase}")
    drawn = 0
    for index, prefix in enumerate(steps):
        t = _step_t(tensors[f"{prefix}.t"])
        noise = None
        if schedule.needs_noise(t):
            noise = tensors[f"noise.{phase}.{noise_role(drawn)}"]
            drawn += 1
        ours = schedule.step(tensors[f"{prefix}.x"], tensors[f"{prefix}.model_output"], t, noise)
        assert ours.dtype == torch.float32
        comparison.add(f"step {index:03d} (t={t})", ours, tensors[f"{prefix}.out"], tol["rtol"], tol["atol"])
    assert comparison.ok, comparison.failures
    # headroom: the updates agree to a few ulp (measured worst: 1.2 % of the allowance); a schedule table off by a
    # couple of ulp near t = 0 would use most of it (measured: 72 %) while still passing the check above
    assert comparison.max_error <= 0.05 * comparison.allowed, (comparison.worst, comparison.max_error)

    # every recorded step noise was consumed, and by the right count (1.0: all steps; 1.1: steps with t > 0)
    recorded = sorted(k for k in tensors if k.startswith(f"noise.{phase}.step."))
    assert len(recorded) == drawn
    expected_draws = len(steps) if name.startswith("k10") else sum(1 for t in schedule.timesteps if t > 0)
    assert drawn == expected_draws


# ----------------------------------------------------------------------------------------------------------------------
# The loop, end to end, with recorded model outputs and recorded noise
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, phase",
    [
        ("k10_sampling", "keyframes"),
        ("k10_sampling", "interpolation"),
        ("k11_sampling", "interpolation"),
        ("k11_sampling", "first_frame"),
    ],
)
def test_sample_loop_replays_trajectory(cases, name: str, phase: str):
    case = cases(name)
    tensors = case.tensors
    schedule = _schedule_for(case, phase)
    steps = case.steps(phase)
    model_times = [schedule.model_time(t) for t in schedule.timesteps]
    calls: list[int] = []

    def denoise(x: torch.Tensor, model_t: int) -> torch.Tensor:
        index = len(calls)
        calls.append(model_t)
        assert model_t == model_times[index]
        return tensors[f"{steps[index]}.model_output"]

    records = []

    def on_step(index, total, t, x_before, pred, x_after):
        records.append((index, total, t, x_after))

    noise = RecordingNoise(RecordedNoise(tensors))
    shape = tensors[f"noise.{phase}.init"].shape
    final = sample(schedule, denoise, shape, noise, phase, device="cpu", on_step=on_step)

    assert len(calls) == len(steps)
    if name.startswith("k10"):
        assert calls == [t * (1000 // case.meta["steps"]) for t in range(case.meta["steps"] - 1, -1, -1)]
    draws = [r for r in noise.roles if r != "init"]
    assert noise.roles[0] == "init" and draws == [noise_role(i) for i in range(len(draws))]
    assert [r[:3] for r in records] == [(i, len(steps), t) for i, t in enumerate(schedule.timesteps)]

    tol = case.tolerance
    comparison = Comparison(f"{name}/{phase} loop")
    for (index, _, _, x_after), prefix in zip(records, steps, strict=True):
        comparison.add(f"step {index:03d}", x_after, tensors[f"{prefix}.out"], tol["rtol"], tol["atol"])
    assert comparison.ok, comparison.failures
    free = case.meta["free_run"][phase]
    if free.get("required"):
        final_tol = free["tolerance"]
        last = Comparison("final")
        last.add("final", final, tensors[f"{steps[-1]}.out"], final_tol["rtol"], final_tol["atol"])
        assert last.ok, last.failures


def test_sample_with_x_init_draws_no_init():
    noise = RecordingNoise(SeededNoise(3))
    schedule = K11Schedule(10, "trailing", "v_prediction")
    x0 = torch.zeros(2, 4, 4, 4)
    sample(schedule, lambda x, t: torch.zeros_like(x), x0.shape, noise, "p", x_init=x0)
    assert noise.roles == [noise_role(i) for i in range(10)]


def test_noise_draw_counts_per_release():
    k10 = RecordingNoise(SeededNoise(0))
    sample(K10Schedule(8), lambda x, t: torch.zeros_like(x), (1, 4, 2, 2), k10, "keyframes")
    assert k10.roles == ["init"] + [noise_role(i) for i in range(8)]  # also at t = 0
    k11 = RecordingNoise(SeededNoise(0))
    sample(K11Schedule(50), lambda x, t: torch.zeros_like(x), (1, 4, 2, 2), k11, "keyframes")
    assert k11.roles == ["init"] + [noise_role(i) for i in range(49)]  # not at t = 0


@pytest.mark.parametrize("schedule", [K10Schedule(8), K11Schedule(50), K11Schedule(10, "trailing", "v_prediction")])
def test_seeded_noise_is_reproducible(schedule):
    def run(seed):
        return sample(schedule, lambda x, t: 0.3 * x + 0.001 * t, (2, 4, 6, 6), SeededNoise(seed), "keyframes")

    a, b, c = run(1234), run(1234), run(1235)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


# ----------------------------------------------------------------------------------------------------------------------
# Schedule numbers from the spec
# ----------------------------------------------------------------------------------------------------------------------


def test_k10_schedule_numbers():
    s = K10Schedule(50)
    assert s.timesteps == list(range(49, -1, -1))
    assert s.time_scale == 20 and s.model_time(49) == 980 and s.model_time(0) == 0
    assert s.betas[0].item() == pytest.approx(0.001748, abs=5e-7)
    assert s.betas[1].item() == pytest.approx(0.003689, abs=5e-7)
    assert s.betas[48].item() == pytest.approx(0.749757, abs=5e-7)
    assert s.betas[49].item() == pytest.approx(0.999, abs=1e-7)
    assert s.alphas_cumprod[0].item() == pytest.approx(0.998253, abs=5e-7)
    assert s.alphas_cumprod[24].item() == pytest.approx(0.493844, abs=5e-7)
    assert s.alphas_cumprod[48].item() == pytest.approx(9.712e-4, rel=1e-3)
    assert s.alphas_cumprod[49].item() == pytest.approx(9.712e-7, rel=1e-3)
    # log variance at index 0 is index 1's
    assert s.posterior_log_variance[0].item() == s.posterior_log_variance[1].item()
    # non-divisors truncate the time scale [OB-23]
    assert K10Schedule(30).time_scale == 33 and K10Schedule(30).model_time(29) == 957
    assert all(s.needs_noise(t) for t in s.timesteps)


def test_k11_schedule_numbers():
    leading = K11Schedule(50, "leading", "epsilon")
    assert leading.timesteps == list(range(980, -1, -20))
    trailing = K11Schedule(10, "trailing", "v_prediction")
    assert trailing.timesteps == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    ac = leading.alphas_cumprod
    assert ac[999].item() == 0.0
    assert ac[0].item() == pytest.approx(0.999959, abs=5e-7)
    assert ac[20].item() == pytest.approx(0.998114, abs=5e-7)
    assert ac[500].item() == pytest.approx(0.492265, abs=5e-7)
    assert ac[980].item() == pytest.approx(8.737e-4, rel=1e-3)
    assert leading._coef(980).prev_t == 960 and leading._coef(0).prev_t == -1
    assert trailing._coef(999).prev_t == 899 and trailing._coef(99).prev_t == -1
    assert leading.model_time(980) == 980
    assert not leading.needs_noise(0) and leading.needs_noise(20) and trailing.needs_noise(99)
    # the key-frame noise augmentation at t = 20: 0.999057 * kf + 0.043425 * n [OB-6]
    one = torch.ones(1, 4, 2, 2)
    assert leading.add_noise(one, torch.zeros_like(one), 20)[0, 0, 0, 0].item() == pytest.approx(0.999057, abs=1e-6)
    assert leading.add_noise(torch.zeros_like(one), one, 20)[0, 0, 0, 0].item() == pytest.approx(0.043425, abs=1e-6)


def test_k11_frozen_table_is_the_formula_up_to_rounding():
    frozen = _official_k11_alphas_cumprod()
    formula = k11_alphas_cumprod()
    assert frozen.shape == (1000,) and frozen.dtype == torch.float32
    assert torch.allclose(frozen, formula, rtol=2e-6, atol=0)
    assert bool((frozen[1:] < frozen[:-1]).all())
    # other training lengths / no rescale are computed, not frozen
    assert K11Schedule(10, num_train_timesteps=500).alphas_cumprod.shape == (500,)
    assert K11Schedule(50, rescale_zero_snr=False).alphas_cumprod[999].item() > 0


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available(),
    reason="provenance of the frozen table needs torch's MKL on x86-64",
)
def test_k11_frozen_table_is_what_torch_computes_on_mkl_sse42():
    """The packaged table is diffusers' formula evaluated by plain torch (MKL asked for its SSE4.2 path): equal up to
    the last bits MKL's vector functions leave open (exactly equal on the Intel SSE4.2 path the fixtures came from;
    other CPUs dispatch elsewhere and differ by a few ulp)."""
    code = (
        "import torch, sys\n"
        "from fusionframes.sampling.schedules import cosine_betas, _official_k11_alphas_cumprod\n"
        "b = cosine_betas(1000); a = 1.0 - b; s = torch.cumprod(a, 0).sqrt(); s0 = s[0].clone(); sT = s[-1].clone()\n"
        "s -= sT; s *= s0 / (s0 - sT); ab = s ** 2\n"
        "al = torch.cat([ab[0:1], ab[1:] / ab[:-1]]); ac = torch.cumprod(1.0 - (1 - al), 0)\n"
        "ulps = (ac.view(torch.int32).long() - _official_k11_alphas_cumprod().view(torch.int32).long()).abs()\n"
        "print(int(ulps.max()))\n"
    )
    env = dict(os.environ, MKL_ENABLE_INSTRUCTIONS="SSE4_2", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert int(result.stdout.decode().split()[-1]) <= 8


# ----------------------------------------------------------------------------------------------------------------------
# Update details
# ----------------------------------------------------------------------------------------------------------------------


def test_k10_thresholding():
    s = K10Schedule(50)
    x0 = torch.zeros(2, 4, 8, 8)
    x0[0] = 3.0  # quantile 3 > 1: rescaled to 1
    x0[1] = 0.5  # quantile 0.5 < 1: untouched
    x0[1, 0, 0, 0] = 7.0  # a single outlier does not move the 0.98 quantile; clipped to 1
    out = s.threshold(x0, 0.98)
    assert torch.equal(out, dynamic_threshold(x0))  # the one implementation, also the fast samplers' "dynamic"
    assert torch.allclose(out[0], torch.ones(4, 8, 8))
    assert out[1, 0, 0, 0].item() == 1.0 and out[1, 1, 0, 0].item() == 0.5
    assert s.threshold(x0, None).max().item() == 1.0 and s.threshold(x0, None)[1, 1, 0, 0].item() == 0.5


def test_k10_last_step_ignores_noise_and_needs_it_elsewhere():
    s = K10Schedule(8)
    x, eps = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    z = torch.randn(3, 4, 4, 4)
    assert torch.equal(s.step(x, eps, 0, z), s.step(x, eps, 0, None))
    assert not torch.equal(s.step(x, eps, 3, z), s.step(x, eps, 3, torch.zeros_like(z)))
    with pytest.raises(InputError):
        s.step(x, eps, 3, None)
    # per-call overrides: v prediction and plain clipping
    assert not torch.equal(s.step(x, eps, 3, z, prediction="v"), s.step(x, eps, 3, z))
    assert s.step(x, eps, 3, z, percentile=None).shape == x.shape


def test_k11_dtypes_follow_diffusers():
    s = K11Schedule(50)
    x = torch.randn(2, 4, 4, 4)
    eps = torch.randn(2, 4, 4, 4)
    z = torch.randn(2, 4, 4, 4)
    full = s.step(x, eps, 500, z)
    half = s.step(x, eps.half(), 500, z)
    assert full.dtype == torch.float32 and half.dtype == torch.float32
    assert torch.allclose(full, half, atol=5e-3)
    assert torch.equal(s.step(x, eps, 0, None), s.step(x, eps, 0, z))  # no noise at t = 0
    assert s.step(x, eps, 0, None).abs().max().item() <= 1.0  # x0 clamp, t_prev = -1


def test_guidance_forms():
    cond, uncond, img = torch.randn(3, 2, 4, 4, 4).unbind(0)
    w = 5.0
    assert torch.equal(cfg(cond, uncond, w), (w + 1.0) * cond - w * uncond)
    wt, wi = 5.0, 2.0
    official = (1 - wi) * uncond + (wi - wt) * img + wt * cond
    assert torch.equal(cfg3(cond, img, uncond, wt, wi), official)
    alternative = uncond + wi * (img - uncond) + wt * (cond - img)
    assert torch.allclose(cfg3(cond, img, uncond, wt, wi), alternative, atol=1e-5)

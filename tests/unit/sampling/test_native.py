"""The official sampler in k-diffusion terms (what the core-sampling nodes run): sigmas, the update, layouts."""

import math

import pytest
import torch

from fusionframes.models.movq.preview import engine_frames, fit_latent_colours, frames_sheet
from fusionframes.runtime.stages import interleave
from fusionframes.sampling import native
from fusionframes.sampling.schedules import K10Schedule, K11Schedule


def test_official_sigmas_are_the_official_timesteps_levels_ending_in_zero():
    sigmas = native.official_sigmas("1.1", "keyframes")
    table = native.model_time_table("1.1").alpha_bars
    assert len(sigmas) == 51 and sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    assert float(sigmas[0]) == pytest.approx(math.sqrt((1 - table[980]) / table[980]), rel=1e-6)
    interpolation = native.official_sigmas("1.1", "interpolation")
    assert len(interpolation) == 11 and float(interpolation[0]) == pytest.approx(4518.8, rel=1e-3)  # t = 999
    assert native.official_model_times("1.1", "interpolation") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    bins = native.official_sigmas("1.0", "keyframes", 8)
    expected = K10Schedule(8).alphas_cumprod.double()
    assert torch.allclose(bins[:-1].double(), ((1 - expected) / expected).sqrt().flip(0), rtol=1e-6)
    assert native.official_bins("1.0", "keyframes", bins) == 8
    assert native.official_bins("1.0", "keyframes", torch.tensor([5.0, 1.0, 0.0])) is None


def test_the_1_1_eps_table_stops_at_the_first_official_eps_timestep():
    assert len(native.model_table("1.1", "eps").alpha_bars) == 981
    assert len(native.model_table("1.1", "v").alpha_bars) == 1000
    assert native.model_table("1.0", "eps", 8).time_scale == 125


@pytest.mark.parametrize("release,stage", [("1.1", "keyframes"), ("1.1", "interpolation"), ("1.0", "keyframes")])
def test_the_update_on_the_variance_exploding_state_is_the_official_ddpm_step(release, stage):
    torch.manual_seed(0)
    prediction = "v" if stage == "interpolation" else "eps"
    if release == "1.1":
        schedule = K11Schedule(10 if stage == "interpolation" else 50,
                               "trailing" if stage == "interpolation" else "leading", prediction)
        times, steps = schedule.timesteps, None
    else:
        schedule, steps = K10Schedule(8, prediction=prediction), 8
        times = schedule.timesteps
    sigmas = native.official_sigmas(release, stage, steps or (10 if stage == "interpolation" else None))
    for index in (0, 3, len(times) - 1):
        t = times[index]
        x = torch.randn(3, 4, 8, 8)
        output = torch.randn(3, 4, 8, 8)
        noise = torch.randn(3, 4, 8, 8)
        expected = schedule.step(x, output, t, noise)
        sigma, sigma_next = float(sigmas[index]), float(sigmas[index + 1])
        x_k = native.frames_to_video(x, 1, "keyframes") * math.sqrt(1 + sigma * sigma)
        x0 = native.prediction_to_x0(prediction, x_k, native.frames_to_video(output, 1, "keyframes"),
                                     torch.tensor([sigma]), release)
        ours = native.official_step(release, "keyframes", x_k, x0, sigma, sigma_next,
                                    native.frames_to_video(noise, 1, "keyframes"))
        ours = native.video_to_frames(ours, "keyframes") / math.sqrt(1 + sigma_next * sigma_next)
        assert torch.allclose(ours, expected, atol=2e-5, rtol=1e-4), (index, float((ours - expected).abs().max()))


def test_a_v_prediction_at_zero_terminal_snr_gives_x0_equal_minus_v():
    sigma = native.official_sigmas("1.1", "interpolation")[:1]
    x, v = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    assert torch.equal(native.prediction_to_x0("v", x, v, sigma, "1.1"), -v)


def test_video_layout_of_interpolation_groups_is_the_interleaving_order():
    keyframes = torch.randn(4, 4, 8, 8)
    groups = torch.randn(3, 12, 8, 8)
    video = native.frames_to_video(groups, 1, "interpolation")
    assert video.shape == (1, 4, 9, 8, 8)
    assert torch.equal(native.video_to_frames(video, "interpolation"), groups)
    full = interleave(keyframes, groups)
    new_frames = torch.cat([full[4 * i + 1:4 * i + 4] for i in range(3)])
    assert torch.equal(new_frames, video[0].transpose(0, 1))


def test_the_preview_sheet_shows_every_frame_in_its_cell():
    video = torch.arange(6.0)[None, None, :, None, None].expand(1, 4, 6, 2, 2)
    sheet = frames_sheet(video)
    assert sheet.shape == (1, 4, 1, 6, 4)  # 2 columns, 3 rows of 2x2 frames
    cells = sheet[0, 0, 0, ::2, ::2]
    assert cells.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert engine_frames(torch.zeros(2, 12, 4, 4)).shape == (1, 4, 6, 4, 4)


class _LinearMoVQ(torch.nn.Module):
    """An 'encoder' that is exactly linear per 8x8 block: the fit must recover its inverse map."""

    def __init__(self, matrix: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(matrix)
        self.offset = offset

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(images, 8)
        return torch.einsum("nchw,ck->nkhw", pooled, self.weight) + self.offset[None, :, None, None]


def test_latent_colours_fitted_to_a_linear_encoder_decode_its_latents_back_to_the_colours():
    torch.manual_seed(1)
    movq = _LinearMoVQ(torch.randn(3, 4), torch.randn(4))
    colours = fit_latent_colours(movq)
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    rgb = colours.apply(movq.encode(image))
    assert torch.allclose(rgb, torch.nn.functional.avg_pool2d(image, 8), atol=1e-4)

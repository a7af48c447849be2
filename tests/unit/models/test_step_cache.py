"""The step cache (not official, off by default): deep features computed every N calls and reused in between."""

from __future__ import annotations

import pytest
import torch

from fusionframes.errors import InputError
from fusionframes.models.unet.step_cache import step_cache
from fusionframes.runtime.pipeline import VideoPipeline, VideoRequest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipeline(demo):
    return VideoPipeline.from_folder(demo / "k11", demo / "text_encoder")


def _inputs(unet, frames: int = 3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(frames, unet.config.num_channels, 8, 8, generator=generator)
    context = torch.randn(frames, 5, unet.config.context_dim, generator=generator)
    mask = torch.ones(frames, 5, dtype=torch.bool)
    return x, context, mask


def test_reused_features_rebuild_the_full_output_and_are_refreshed_every_interval(pipeline):
    unet = pipeline.models["keyframe"].model
    x, context, mask = _inputs(unet)
    positions = torch.arange(3).float()

    def call(t: float):
        return unet(x, torch.full((3,), t), context, mask, positions, 3, torch.full((3,), 20), torch.full((3,), 10))

    with torch.no_grad():
        full = call(500.0)
        with step_cache(unet, 3) as cache:
            first, again = call(500.0), call(500.0)  # the second reuses the first's deep features
            later = [call(400.0) for _ in range(4)]
        assert unet.step_cache is None  # off again after the run
        assert torch.equal(first, full) and torch.equal(again, full)  # reuse puts the pieces back exactly
        assert (cache.calls, cache.full) == (6, 2)  # calls 1 and 4 computed the deep levels
        assert not torch.equal(later[0], call(400.0))  # call 3 still used the features of t = 500
        assert torch.equal(later[1], call(400.0))  # call 4 refreshed them at t = 400


def test_a_cached_video_saves_full_passes_and_stays_near_the_full_one(pipeline):
    request = VideoRequest(prompt="a red car", width=64, height=64, keyframes=3, fps="medium", seed=1,
                           sampler="ddim", steps=6)
    full = pipeline.generate(request)
    cached = pipeline.generate(VideoRequest(**{**request.__dict__, "step_cache": 3}))
    assert cached.frames.shape == full.frames.shape
    assert not torch.equal(cached.latents, full.latents)
    assert (cached.frames - full.frames).abs().mean() < 0.25  # random weights: chaotic, yet the same video
    with pytest.raises(InputError, match="step_cache must be a whole number"):
        pipeline.generate(VideoRequest(**{**request.__dict__, "step_cache": -1}))

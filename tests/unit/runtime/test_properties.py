"""Property-based tests over the engine's inputs: every call either returns a well-formed result or raises one of
the documented errors (``FusionFramesError`` subclasses) -- never a raw error from deep inside PyTorch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionframes.errors import FusionFramesError
from fusionframes.io.checkpoints import load_model
from fusionframes.models.configs import load_release_config
from fusionframes.models.movq.decoding import decode_video, encode_frames
from fusionframes.models.text.condition import TextCondition
from fusionframes.models.text.encoder import TextEncoder
from fusionframes.runtime import stages
from fusionframes.sampling.noise import SeededNoise

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
sizes = st.one_of(st.integers(-128, 140), st.sampled_from([64, 128]))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 30))


@pytest.fixture(scope="module")
def models(golden):
    root = golden / "models"
    config = load_release_config(root / "k10" / "configs.json", "1.0").text
    return {
        "keyframe": load_model(root / "k10" / "kandinsky_video.pt").model,
        "interpolation": load_model(root / "k10" / "kandinsky_video_interpolation.pt").model,
        "movq": load_model(root / "k10" / "movq.pt").model,
        "text": TextEncoder.load("1.0", root / "text_encoder", root / "k10" / "kandinsky_video.pt",
                                 max_length=config.tokens_length),
    }


def _text(models) -> TextCondition:
    return models["text"].encode("a cat")


@SETTINGS
@given(prompt=st.text(max_size=400), negative=st.one_of(st.none(), st.text(max_size=60)))
def test_any_prompt_of_any_alphabet_and_length_encodes(models, prompt, negative):
    encoded = models["text"].encode(prompt, negative)
    length = encoded.context.shape[1]
    assert encoded.context.shape == (1, length, models["keyframe"].config.context_dim)
    assert 2 <= length <= models["text"].max_length + 1
    assert torch.isfinite(encoded.context).all()
    assert encoded.mask.sum() >= 1  # at least the EOS token, also for an empty prompt


@SETTINGS
@given(width=sizes, height=sizes, frames=st.one_of(st.none(), st.integers(-2, 4)), guidance=numbers,
       seed=st.integers(-5, 2**64 + 5), steps=st.integers(-1, 3))
def test_keyframe_sampling_returns_latents_or_a_documented_error(models, width, height, frames, guidance, seed, steps):
    try:
        latents = stages.sample_keyframes_10(models["keyframe"], _text(models), height, width, SeededNoise(seed),
                                             steps=steps, guidance_scale=guidance, num_frames=frames)
    except FusionFramesError:
        return
    expected_frames = frames or models["keyframe"].config.num_frames
    assert latents.shape == (expected_frames, 4, height // 8, width // 8)
    assert torch.isfinite(latents).all()


@SETTINGS
@given(count=st.integers(0, 4), guidance=numbers, skip=st.integers(0, 19), seed=st.integers(0, 2**32))
def test_interpolation_returns_4n_minus_3_frames_or_a_documented_error(models, count, guidance, skip, seed):
    keyframes = torch.randn(count, 4, 8, 8)
    try:
        groups = stages.interpolate_10(models["interpolation"], keyframes, SeededNoise(seed), steps=2,
                                       guidance_scale=guidance, skip_frames=skip)
    except FusionFramesError:
        assert count < 2 or not math.isfinite(float(guidance)) or abs(guidance) > stages.MAX_GUIDANCE
        return
    assert stages.interleave(keyframes, groups).shape == (4 * count - 3, 4, 8, 8)


@SETTINGS
@given(frames=st.integers(1, 7), clip=st.one_of(st.none(), st.integers(-2, 9)), side=st.sampled_from([4, 8]))
def test_decoding_any_clip_length_gives_every_frame_or_a_documented_error(models, frames, clip, side):
    try:
        images = decode_video(models["movq"], torch.randn(frames, 4, side, side), clip_frames=clip)
    except FusionFramesError:
        assert clip is not None and clip < 1
        return
    assert images.shape == (frames, 3, 8 * side, 8 * side)


@SETTINGS
@given(height=st.integers(1, 80), width=st.integers(1, 80), channels=st.sampled_from([1, 3, 4]))
def test_encoding_images_of_any_size(models, height, width, channels):
    images = torch.rand(2, channels, height, width) * 2 - 1
    try:
        latents = encode_frames(models["movq"], images)
    except FusionFramesError:
        assert height % 8 or width % 8 or channels != 3
        return
    assert latents.shape == (2, 4, height // 8, width // 8)

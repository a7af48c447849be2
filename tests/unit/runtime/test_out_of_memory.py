"""Running out of device memory, simulated by raising torch's own error from a wrapped module."""

import logging

import pytest
import torch

from fusionframes.errors import OutOfMemory
from fusionframes.io.checkpoints import load_model
from fusionframes.models.movq.decoding import Tiles, decode_video
from fusionframes.models.text.condition import TextCondition
from fusionframes.runtime import stages
from fusionframes.sampling.noise import SeededNoise


def _fails_above(module, limit: int):
    """Make ``module.decode`` run out of memory for batches larger than ``limit``."""
    original = module.decode

    def decode(latents):
        if latents.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(latents)

    module.decode = decode


def test_image_decoding_retries_with_smaller_clips_and_gives_the_same_frames(golden):
    movq = load_model(golden / "models" / "k10" / "movq.pt").model
    latents = torch.randn(6, 4, 8, 8)
    expected = decode_video(movq, latents, clip_frames=6)
    _fails_above(movq, 1)
    torch.testing.assert_close(decode_video(movq, latents, clip_frames=6), expected, rtol=1e-4, atol=1e-5)


def test_temporal_decoding_retries_with_smaller_clips_and_says_so(golden, caplog):
    movq = load_model(golden / "models" / "k11" / "video_movq.pt").model
    _fails_above(movq, 2)
    with caplog.at_level(logging.WARNING):
        frames = decode_video(movq, torch.randn(5, 4, 8, 8), clip_frames=5)
    assert frames.shape == (5, 3, 64, 64) and torch.isfinite(frames).all()
    assert "clip borders move" in caplog.text


def test_a_frame_that_never_fits_names_what_to_lower(golden):
    movq = load_model(golden / "models" / "k10" / "movq.pt").model
    _fails_above(movq, 0)
    with pytest.raises(OutOfMemory, match="single 64x64 frame, even in tiles of 64 pixels: lower the resolution"):
        decode_video(movq, torch.randn(2, 4, 8, 8))


def _fails_above_side(module, limit: int):
    """Make ``module.decode`` run out of memory for latents larger than ``limit`` x ``limit``."""
    original = module.decode

    def decode(latents):
        if max(latents.shape[-2:]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(latents)

    module.decode = decode


@pytest.mark.parametrize("name", ["k10/movq.pt", "k11/video_movq.pt"])
def test_a_frame_too_large_for_the_device_is_decoded_in_tiles(golden, caplog, name):
    movq = load_model(golden / "models" / name).model
    latents = torch.randn(3, 4, 32, 24)
    expected = decode_video(movq, latents, clip_frames=1, tiles=Tiles(8, 4))
    _fails_above_side(movq, 8)
    with caplog.at_level(logging.WARNING):
        frames = decode_video(movq, latents, clip_frames=3)
    assert "decoding it in tiles of 64 pixels" in caplog.text
    torch.testing.assert_close(frames, expected)


def test_out_of_memory_while_sampling_names_the_settings_to_lower(golden):
    unet = load_model(golden / "models" / "k10" / "kandinsky_video.pt").model

    def forward(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    unet.forward = forward
    text = TextCondition(torch.randn(1, 3, unet.config.context_dim), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(OutOfMemory, match=r"sampling keyframes: lower width/height \(64x128\), the number of "
                                          r"keyframes \(4\)"):
        stages.sample_keyframes_10(unet, text, 128, 64, SeededNoise(0), steps=2, num_frames=4)

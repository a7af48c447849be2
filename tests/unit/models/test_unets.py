"""The four video U-Nets: official key layouts, and behaviours the pipeline and nodes rely on."""

import pytest
import torch

from fusionframes.errors import InputError
from fusionframes.io.checkpoints import load_model, official_manifest

MANIFESTS = [
    ("1.0", "keyframe", "k10_unet"),
    ("1.0", "interpolation", "k10_interp"),
    ("1.1", "keyframe", "k11_unet"),
    ("1.1", "interpolation", "k11_interp"),
]


@pytest.mark.parametrize("release,kind,name", MANIFESTS)
def test_official_size_model_has_exactly_the_official_keys_and_shapes(golden, release, kind, name):
    expected = (golden / "official_keys" / f"{name}.txt").read_text().splitlines()
    assert official_manifest(release, kind) == expected


def _k10_keyframe(golden):
    return load_model(golden / "models" / "k10" / "kandinsky_video.pt").model


def test_k10_keyframe_frame_count_is_a_call_argument(golden):
    unet = _k10_keyframe(golden)
    assert unet.config.num_frames == 5
    frames = 3  # not the checkpoint's default
    x = torch.randn(2 * frames, 4, 8, 8)
    context = torch.randn(2 * frames, 4, unet.config.context_dim)
    mask = torch.ones(2 * frames, 4, dtype=torch.bool)
    out = unet(x, torch.full((2 * frames,), 500.0), context, mask, torch.arange(2 * frames) * 12.0, frames)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_frames_are_mixed_within_a_clip_and_not_across_clips(golden):
    unet = _k10_keyframe(golden)
    frames = 4
    x = torch.randn(2 * frames, 4, 8, 8)
    args = (torch.full((2 * frames,), 300.0), torch.randn(2 * frames, 3, unet.config.context_dim),
            torch.ones(2 * frames, 3, dtype=torch.bool), torch.arange(2 * frames) * 12.0, frames)
    base = unet(x, *args)
    changed = x.clone()
    changed[0] += 1.0  # frame 0 of clip 0
    out = unet(changed, *args)
    delta = (out - base).abs().flatten(1).amax(1)
    assert delta[1:frames].max() > 1e-6  # other frames of the same clip see it (temporal layers)
    assert delta[frames:].max() == 0  # the other clip does not


def test_temporal_strength_zero_turns_keyframe_model_into_per_frame_image_model(golden):
    unet = _k10_keyframe(golden)
    frames = 3
    x = torch.randn(frames, 4, 8, 8)
    args = (torch.full((frames,), 300.0), torch.randn(frames, 3, unet.config.context_dim),
            torch.ones(frames, 3, dtype=torch.bool), torch.arange(frames) * 12.0, frames)
    unet.strength.conv = unet.strength.attention = 0.0
    try:
        together = unet(x, *args)
        alone = unet(x[:1], *(a[:1] if torch.is_tensor(a) else 1 for a in args))
    finally:
        unet.strength.conv = unet.strength.attention = 1.0
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-5)


def test_k11_image_mode_is_chosen_by_the_caller_not_the_batch_size(golden):
    unet = load_model(golden / "models" / "k11" / "t2v.pt").model
    x = torch.randn(3, 9, 8, 8)  # 3 samples: the official batch-size rule would pick the video stem
    context = torch.randn(3, 4, unet.config.context_dim)
    mask = torch.ones(3, 4, dtype=torch.bool)
    image = unet.forward_image(x, torch.full((3,), 200.0), context, mask)
    one = unet.forward_image(x[:1], torch.full((1,), 200.0), context[:1], mask[:1])
    torch.testing.assert_close(image[:1], one, rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_into_clips_is_a_clear_error(golden):
    unet = _k10_keyframe(golden)
    x = torch.randn(5, 4, 8, 8)
    with pytest.raises(InputError, match="cannot be split into clips of 2 frames"):
        unet(x, torch.zeros(5), torch.randn(5, 2, unet.config.context_dim), torch.ones(5, 2, dtype=torch.bool),
             torch.zeros(5), 2)

"""Cancel points inside one model call: a host's check runs between the blocks of the U-Nets and the MoVQ, so a
cancel does not wait for a whole sampling step or a whole image to finish."""

from __future__ import annotations

import pytest
import torch

from fusionframes.io.checkpoints import load_model
from fusionframes.models.interrupt import interruptible, interruption_point


class Cancelled(Exception):
    pass


def cancel_after(calls: int):
    seen = {"n": 0}

    def check() -> None:
        seen["n"] += 1
        if seen["n"] > calls:
            raise Cancelled

    return check, seen


def test_without_a_check_the_points_do_nothing_and_the_check_is_scoped():
    interruption_point()
    check, seen = cancel_after(0)
    with pytest.raises(Cancelled), interruptible(check):
        interruption_point()
    interruption_point()  # the context is gone
    assert seen["n"] == 1


def test_a_unet_call_stops_between_its_levels(demo):
    unet = load_model(demo / "k10" / "kandinsky_video_interpolation.pt").model
    levels = len(unet.config.dim_mult)
    x = torch.randn(1, 20, 8, 8)
    args = (x, torch.tensor([500.0]), torch.zeros(1, 2, unet.config.context_dim), torch.ones(1, 2, dtype=torch.bool))
    check, seen = cancel_after(10**6)
    with torch.no_grad(), interruptible(check):
        unet(*args, skip_frames=torch.tensor([3]), num_groups=1)
    assert seen["n"] == 2 * levels  # one point before every down and up level
    check, seen = cancel_after(1)
    with torch.no_grad(), pytest.raises(Cancelled), interruptible(check):
        unet(*args, skip_frames=torch.tensor([3]), num_groups=1)
    assert seen["n"] == 2


def test_encoding_and_decoding_one_image_stop_between_blocks(demo):
    movq = load_model(demo / "k11" / "movq.pt").model
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    check, seen = cancel_after(10**6)
    with torch.no_grad(), interruptible(check):
        latent = movq.encode(image)
        encode_points = seen["n"]
        movq.decode(latent)
    assert encode_points >= len(movq.config.ch_mult) and seen["n"] > encode_points
    check, seen = cancel_after(1)
    with torch.no_grad(), pytest.raises(Cancelled), interruptible(check):
        movq.encode(image)
    assert seen["n"] == 2


def test_encoding_a_prompt_stops_between_t5_blocks(demo):
    from fusionframes.models.text.encoder import TextEncoder

    encoder = TextEncoder.load("1.0", demo / "text_encoder", demo / "k10" / "kandinsky_video.pt")
    blocks = len(encoder.t5.encoder.block)
    check, seen = cancel_after(10**6)
    with interruptible(check):
        encoder.encode("a red car")
    assert seen["n"] == blocks  # one point before every block (the negative prompt is absent)
    check, seen = cancel_after(1)
    with pytest.raises(Cancelled), interruptible(check):
        encoder.encode("a red car")
    assert seen["n"] == 2
    assert not encoder.t5.encoder.block[0]._forward_pre_hooks  # the points are removed after each call

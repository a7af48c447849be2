"""MoVQ: parity with the official fixtures, official state-dict layouts, clip-wise video decoding, input errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fusionframes.errors import ConfigError, InputError
from fusionframes.io.checkpoints import load_model
from fusionframes.io.manifest import manifest_lines
from fusionframes.models.configs import MoVQConfig, load_release_config, official_config
from fusionframes.models.movq.decoding import Tiles, decode_video, encode_frames, official_clip_frames
from fusionframes.models.movq.model import MoVQ
from fusionframes.tools.parity.fixtures import Comparison, load_case

FIXTURES = [
    # case, release, config section, model file
    ("k10_movq_roundtrip", "1.0", "movq", "k10/movq.pt"),
    ("k11_movq_image_roundtrip", "1.1", "movq", "k11/movq.pt"),
    ("k11_video_movq_decode_clip", "1.1", "video_movq", "k11/video_movq.pt"),
]


def _fixture_model(golden: Path, release: str, section: str, model: str) -> MoVQ:
    folder = "k10" if release == "1.0" else "k11"
    config = getattr(load_release_config(golden / "models" / folder / "configs.json", release), section)
    movq = MoVQ(config).eval()
    movq.load_state_dict(torch.load(golden / "models" / model, map_location="cpu", weights_only=True))
    return movq


@pytest.mark.parametrize(("case_name", "release", "section", "model"), FIXTURES)
def test_matches_official_fixture(golden: Path, case_name: str, release: str, section: str, model: str) -> None:
    movq = _fixture_model(golden, release, section, model)
    case = load_case(golden, case_name)
    tensors, rtol, atol = case.tensors, case.tolerance["rtol"], case.tolerance["atol"]
    comparison = Comparison(case_name)
    if "image" in tensors:
        comparison.add("latent", movq.encode(tensors["image"]), tensors["latent"], rtol, atol)
    comparison.add("decoded", movq.decode(tensors["latent"]), tensors["decoded"], rtol, atol)
    # The pipelines' chunked decode gives the same for one short clip.
    comparison.add("decode_video", decode_video(movq, tensors["latent"]), tensors["decoded"], rtol, atol)
    assert comparison.ok, comparison.failures


def test_video_fixture_needs_first_frame_attention_quirk(golden: Path) -> None:
    """[OB-14] is what the official video decoder computes: turning it off moves the fixture's frames."""
    movq = _fixture_model(golden, "1.1", "video_movq", "k11/video_movq.pt")
    case = load_case(golden, "k11_video_movq_decode_clip")
    assert movq.attention_norm_from_first_frame
    movq.attention_norm_from_first_frame = False
    decoded = movq.decode(case.tensors["latent"])
    assert (decoded - case.tensors["decoded"]).abs().max() > 1e-3


@pytest.mark.parametrize(("release", "kind", "keys_file"), [
    ("1.0", "movq", "k10_movq.txt"),
    ("1.1", "movq", "k11_movq_image.txt"),
    ("1.1", "video_movq", "k11_movq_video.txt"),
])
def test_official_state_dict_layout(golden: Path, release: str, kind: str, keys_file: str) -> None:
    with torch.device("meta"):
        movq = MoVQ(getattr(official_config(release), kind))
    expected = (golden / "official_keys" / keys_file).read_text().splitlines()
    assert manifest_lines(movq) == expected


def _random_movq(temporal: bool, seed: int = 0) -> MoVQ:
    """A tiny MoVQ (2 levels, downscale 2, attention at the latent level) with every weight random, merges included."""
    config = MoVQConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=64, attn_resolutions=(32,),
                        temporal=temporal, temporal_attention_block=temporal)
    movq = MoVQ(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in movq.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "temporal_merge" in name:
                param.copy_(torch.rand(param.shape, generator=generator) * 0.6 + 0.2)
            elif name.endswith("norm_layer.weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return movq


def test_official_clip_frames() -> None:
    # torch.chunk(N // 4) piece sizes for the official frame counts [OB-28]; N < 4 is one clip.
    for frames, clip in {15: 5, 12: 4, 45: 5, 57: 5, 177: 5, 225: 5, 4: 4, 5: 5, 7: 7, 8: 4, 3: 3, 1: 1}.items():
        assert official_clip_frames(frames) == clip
        if frames >= 4:
            sizes = [len(c) for c in torch.arange(frames).chunk(frames // 4)]
            assert sizes == [len(c) for c in torch.arange(frames).split(clip)]


@pytest.mark.parametrize("frames", [1, 2, 3, 9, 13])
def test_decode_video_default_chunking_matches_official(frames: int) -> None:
    movq = _random_movq(temporal=True)
    latents = torch.randn(frames, 4, 4, 4, generator=torch.Generator().manual_seed(frames))
    expected = torch.cat([movq.decode(chunk) for chunk in latents.chunk(max(frames // 4, 1))])
    seen: list[tuple[int, int]] = []
    decoded = decode_video(movq, latents, progress=lambda done, total: seen.append((done, total)))
    assert decoded.shape == (frames, 3, 8, 8) and decoded.dtype == torch.float32 and decoded.device.type == "cpu"
    torch.testing.assert_close(decoded, expected, rtol=1e-5, atol=1e-5)
    assert seen[-1] == (frames, frames)
    if frames >= 8:  # clip borders matter: one long clip decodes differently
        assert (movq.decode(latents) - expected).abs().max() > 1e-3


def test_decode_video_clip_frames_override() -> None:
    movq = _random_movq(temporal=True)
    latents = torch.randn(7, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = torch.cat([movq.decode(latents[:3]), movq.decode(latents[3:6]), movq.decode(latents[6:])])
    torch.testing.assert_close(decode_video(movq, latents, clip_frames=3), expected, rtol=1e-5, atol=1e-5)


def test_temporal_clip_uses_first_frame_for_attention_norms() -> None:
    """Within a clip, changing a later frame's latent reaches the other frames only through temporal layers; with the
    temporal layers switched off the attention norms still see frame 0's latent for every frame [OB-14]."""
    movq = _random_movq(temporal=True)
    with torch.no_grad():
        for name, param in movq.decoder.named_parameters():
            if "temporal_merge" in name or "temporal_attn" in name and "proj_out" in name:
                param.zero_()
    latents = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    clip = movq.decode(latents)
    # Frame 0 is computed as if alone; frame 2's spatial attention norms are driven by frame 0's latent.
    torch.testing.assert_close(clip[0:1], movq.decode(latents[0:1]), rtol=1e-5, atol=1e-5)
    assert (clip[2:3] - movq.decode(latents[2:3])).abs().max() > 1e-3
    movq.attention_norm_from_first_frame = False
    torch.testing.assert_close(movq.decode(latents)[2:3], movq.decode(latents[2:3]), rtol=1e-5, atol=1e-5)


def test_image_decoder_is_batched_per_frame() -> None:
    movq = _random_movq(temporal=False)
    assert not movq.decodes_clips and not movq.attention_norm_from_first_frame
    latents = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    per_frame = torch.cat([movq.decode(latent[None]) for latent in latents])
    torch.testing.assert_close(movq.decode(latents), per_frame, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decode_video(movq, latents, clip_frames=2), per_frame, rtol=1e-5, atol=1e-5)


def test_encode_frames_in_batches() -> None:
    movq = _random_movq(temporal=False)
    images = torch.rand(5, 3, 8, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    latents = encode_frames(movq, images, batch=2)
    assert latents.shape == (5, 4, 4, 8) and latents.dtype == torch.float32
    torch.testing.assert_close(latents, movq.encode(images), rtol=1e-5, atol=1e-5)


def test_bad_input_raises_input_error() -> None:
    movq = _random_movq(temporal=True)
    with pytest.raises(InputError, match="channels"):
        movq.decode(torch.zeros(2, 3, 4, 4))
    with pytest.raises(InputError, match="channels"):
        movq.encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="multiples of 2"):
        movq.encode(torch.zeros(1, 3, 8, 7))
    with pytest.raises(InputError, match="shape"):
        decode_video(movq, torch.zeros(4, 4, 4))
    with pytest.raises(InputError, match="empty"):
        decode_video(movq, torch.zeros(0, 4, 4, 4))
    with pytest.raises(InputError, match="floating"):
        encode_frames(movq, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(InputError, match="clip_frames"):
        decode_video(movq, torch.zeros(4, 4, 4, 4), clip_frames=0)
    with pytest.raises(InputError, match="batch"):
        encode_frames(movq, torch.zeros(1, 3, 8, 8), batch=0)
    with torch.device("meta"):
        official = MoVQ(official_config("1.0").movq)
    with pytest.raises(InputError, match="multiples of 8"):
        official.encode(torch.zeros(1, 3, 60, 64, device="meta"))


def test_bad_config_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        MoVQ(MoVQConfig(ch=48))
    with pytest.raises(ConfigError, match="double_z"):
        MoVQ(dataclasses.replace(MoVQConfig(ch=32, ch_mult=(1,)), double_z=True))


# --- spatial tiles ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "size", "overlap"), [(8, 8, 2), (9, 8, 2), (24, 8, 4), (37, 12, 5), (64, 9, 0)])
def test_tiles_cover_every_pixel_and_overlap_as_asked(length, size, overlap):
    starts = Tiles(size, overlap).starts(length)
    covered = torch.zeros(length, dtype=torch.int)
    for start in starts:
        covered[start:start + size] += 1
    assert (covered >= 1).all() and starts[0] == 0 and starts[-1] + size == max(length, size)
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def _pixel_local_decode(movq):
    """Replace the decoder by one whose output pixel depends only on its own latent pixel: tiling is then exact."""

    def decode(latents):
        return F.interpolate(latents[:, :3] * 2 + latents[:, 3:4], scale_factor=movq.downscale, mode="nearest")

    movq.decode = decode


@pytest.mark.parametrize(("height", "width", "tiles"), [(24, 16, Tiles(8, 3)), (17, 30, Tiles(10, 4)),
                                                        (12, 12, Tiles(8, 0)), (8, 40, Tiles(16, 7))])
def test_tiles_are_placed_and_cross_faded_exactly(golden, height, width, tiles):
    movq = load_model(golden / "models" / "k10" / "movq.pt").model
    latents = torch.randn(2, 4, height, width)
    expected = F.interpolate(latents[:, :3] * 2 + latents[:, 3:4], scale_factor=8, mode="nearest")
    _pixel_local_decode(movq)
    torch.testing.assert_close(decode_video(movq, latents, tiles=tiles), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["k10/movq.pt", "k11/video_movq.pt"])
def test_one_tile_as_large_as_the_frame_decodes_exactly_as_whole_frames(golden, name):
    movq = load_model(golden / "models" / name).model
    latents = torch.randn(3, 4, 12, 10)
    torch.testing.assert_close(decode_video(movq, latents, tiles=Tiles(12, 4)), decode_video(movq, latents))


@pytest.mark.parametrize("name", ["k10/movq.pt", "k11/video_movq.pt"])
def test_overlapping_tiles_come_closer_to_the_whole_frame_than_butted_ones(golden, name):
    movq = load_model(golden / "models" / name).model
    latents = torch.randn(3, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    whole = decode_video(movq, latents, clip_frames=3)

    def error(tiles):
        return (decode_video(movq, latents, clip_frames=3, tiles=tiles) - whole).abs().mean().item()

    butted, overlapped = error(Tiles(8, 0)), error(Tiles(16, 6))
    assert overlapped < 0.5 * butted and overlapped < 0.1 * whole.std().item()


def test_tiles_in_pixels_as_the_nodes_take_them():
    assert Tiles.from_pixels(0, 64, 8) is None
    assert Tiles.from_pixels(256, 64, 8) == Tiles(32, 8)
    assert Tiles.from_pixels(64, 512, 8) == Tiles(8, 4)
    with pytest.raises(InputError, match="at least 64 pixels"):
        Tiles.from_pixels(32, 0, 8)
    with pytest.raises(InputError, match="overlap"):
        Tiles(8, 8)


@pytest.mark.parametrize("name", ["k10/movq.pt", "k11/video_movq.pt"])
def test_the_in_place_inference_path_computes_exactly_what_the_autograd_path_does(golden, name):
    movq = load_model(golden / "models" / name).model
    zq = torch.randn(3, 4, 8, 8)
    frames = 3 if movq.decodes_clips else None

    def decode():
        return movq.decoder(movq.post_quant_conv(zq), zq, frames, zq[:1].expand_as(zq) if frames else zq)

    with torch.no_grad():
        in_place = decode()
    with torch.enable_grad():  # takes the out-of-place path, whether or not the weights require gradients
        reference = decode()
    assert torch.equal(in_place, reference.detach())


def test_spatial_attention_runs_the_fused_kernel_not_the_score_matrix() -> None:
    """Non-contiguous q/k/v make SDPA fall back to its math kernel, which materialises the (h*w)^2 scores: at 1080p
    latents that is gigabytes. The MoVQ attention must reach the fused kernel (on the CPU: flash attention)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fusionframes.models.movq.model import AttnBlock

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 12, 10)
    with torch.no_grad(), Ops() as ops:
        out = block(x)
    assert "_scaled_dot_product_flash_attention_for_cpu" in ops.names
    assert not {"bmm", "_softmax", "_safe_softmax"} & set(ops.names)
    with torch.no_grad():  # the same attention as the explicit formula
        normed = block.norm(x)
        q, k, v = (p(normed).flatten(2).transpose(1, 2) for p in (block.q, block.k, block.v))
        scores = torch.softmax(q @ k.transpose(1, 2) / 32 ** 0.5, dim=-1)
        expected = x + block.proj_out((scores @ v).transpose(1, 2).reshape(x.shape))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

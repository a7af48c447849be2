"""The paper's four temporal variants behind one interface, and the Temporal Block Selector's engine side."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fusionframes.errors import CheckpointError, InputError
from fusionframes.io.checkpoints import load_model
from fusionframes.io.detect import detect_variant
from fusionframes.models.configs import official_config
from fusionframes.models.temporal.layers import (
    KeyframeTemporalAttentionBlock,
    TemporalConv3dResNetBlock,
    TemporalResNetBlock,
    TemporalState,
    WindowTemporalAttentionBlock,
)
from fusionframes.models.temporal.selection import (
    VARIANTS,
    make_design,
    parse_levels,
    select_temporal_blocks,
    temporal_layers,
    trained_variant_name,
    variant_of,
)
from fusionframes.models.unet.interpolation import InterpolationUNet11
from fusionframes.models.unet.keyframe import KeyframeUNet10, KeyframeUNet11
from fusionframes.tools.training import save_checkpoint

DEMO_FILES = {"1.0": "k10/kandinsky_video.pt", "1.1": "k11/t2v.pt"}
FRAMES = 3

#: parameters at the official 1.1 size (meta build): (whole U-Net, temporal blocks/layers); see
#: docs/temporal_variants.md. The released variant's numbers are those of t2v.pt.
OFFICIAL_COUNTS_11 = {
    "Conv1dAttn1dBlocks": (4_149_077_956, 1_102_518_912),
    "Conv1dAttn3dBlocks": (4_149_077_956, 1_102_518_912),
    "Conv3dAttn1dBlocks": (4_024_574_916, 978_015_872),
    "Conv1dAttn1dLayers": (4_009_307_716, 962_748_672),
}

pytestmark = pytest.mark.usefixtures("one_thread")




def _tiny_config(release: str, kind: str = "keyframe"):
    """The release's configuration at a tiny size (building official-size models, even on meta, takes seconds)."""
    return dataclasses.replace(
        official_config(release).for_kind(kind), model_channels=32, init_channels=16, time_embed_dim=64,
        context_dim=64, groups=4, head_dim=16, expansion_ratio=2, dim_mult=(1, 2, 2), num_blocks=(2, 2, 2),
        add_cross_attention=(False, True, True), add_self_attention=(False, True, True),
    )


def _keyframe(demo: Path, release: str) -> torch.nn.Module:
    return load_model(demo / DEMO_FILES[release]).model


def _inputs(unet: torch.nn.Module, clips: int = 1, seed: int = 0) -> tuple:
    """Video-mode arguments for ``clips`` clips of FRAMES frames at an 8x8 latent."""
    generator = torch.Generator().manual_seed(seed)
    count, config = clips * FRAMES, unet.config
    x = torch.randn(count, config.num_channels, 8, 8, generator=generator)
    context = torch.randn(count, 3, config.context_dim, generator=generator)
    extra = (torch.full((count,), 20), torch.full((count,), 10)) if isinstance(unet, KeyframeUNet11) else ()
    return (x, torch.full((count,), 400.0), context, torch.ones(count, 3, dtype=torch.bool),
            torch.arange(count) % FRAMES * 12.0, FRAMES, *extra)


# ---------------------------------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("release", ["1.0", "1.1"])
def test_variant_is_detected_from_its_keys(variant: str, release: str) -> None:
    cls = KeyframeUNet10 if release == "1.0" else KeyframeUNet11
    with torch.device("meta"):
        model = cls(_tiny_config(release), design=make_design(variant, release))
    assert detect_variant(model.state_dict().keys()) == variant


def test_models_without_keyframe_temporal_blocks_are_not_detected() -> None:
    with torch.device("meta"):
        interpolation = InterpolationUNet11(_tiny_config("1.1", "interpolation"))
    assert detect_variant(interpolation.state_dict().keys()) is None
    assert detect_variant(["in_layer.weight", "to_time_embed.1.weight"]) is None


def parameter_count(model: torch.nn.Module, temporal_only: bool = False) -> int:
    """Parameters of the model (or of its temporal layers alone); works on ``meta`` models."""
    if temporal_only:
        return sum(layer_param.numel() for _, layer in temporal_layers(model) for layer_param in layer.parameters())
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_at_the_official_size_match_the_documented_table(variant: str) -> None:
    with torch.device("meta"):
        model = KeyframeUNet11(official_config("1.1").keyframe, design=make_design(variant, "1.1"))
    assert (parameter_count(model), parameter_count(model, temporal_only=True)) == OFFICIAL_COUNTS_11[variant]
    spatial = parameter_count(model) - parameter_count(model, temporal_only=True)
    assert spatial == 4_149_077_956 - 1_102_518_912  # the same image U-Net under every variant


# ---------------------------------------------------------------------------------------------------------------------
# fresh variants: the image U-Net unchanged until trained


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("release", ["1.0", "1.1"])
def test_fresh_variant_computes_what_the_image_unet_computes(demo: Path, release: str, variant: str) -> None:
    source = _keyframe(demo, release)
    args = _inputs(source)
    image_only = select_temporal_blocks(source, conv_strength=0.0, attention_strength=0.0)(*args)
    fresh = select_temporal_blocks(source, variant, fresh=True)
    assert variant_of(fresh) == variant and temporal_layers(fresh)
    torch.testing.assert_close(fresh(*args), image_only, rtol=0, atol=1e-6)
    assert (source(*args) - image_only).abs().max() > 1e-3  # the source's trained (random) blocks do act


@pytest.mark.parametrize("variant", VARIANTS)
def test_fresh_variant_copies_the_spatial_weights(demo: Path, variant: str) -> None:
    source = _keyframe(demo, "1.1")
    fresh = select_temporal_blocks(source, variant, fresh=True)
    temporal = tuple(f"{name}." for name, _ in temporal_layers(fresh))
    own = source.state_dict()
    spatial = {k: v for k, v in fresh.state_dict().items() if not k.startswith(temporal)}
    assert len(spatial) > 100
    for key, value in spatial.items():
        assert torch.equal(value, own[key]), key
    assert torch.equal(fresh.null_embedding, source.null_embedding)


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_variant_layers_act_within_a_clip_and_not_across_clips(demo: Path, variant: str) -> None:
    fresh = select_temporal_blocks(_keyframe(demo, "1.1"), variant, fresh=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, layer in temporal_layers(fresh):
            for output in layer.output_layers():
                output.weight.normal_(std=0.05)
    x, *rest = _inputs(fresh, clips=2)
    off = select_temporal_blocks(fresh, conv_strength=0.0, attention_strength=0.0)
    base = fresh(x, *rest)
    assert (base - off(x, *rest)).abs().max() > 1e-3
    changed = x.clone()
    changed[0] += 1.0  # frame 0 of clip 0
    delta = (fresh(changed, *rest) - base).abs().flatten(1).amax(1)
    delta_off = (off(changed, *rest) - off(x, *rest)).abs().flatten(1).amax(1)
    assert delta[1:FRAMES].max() > 1e-5  # the other frames of the clip see it
    assert delta_off[1:FRAMES].max() == 0  # ... only through the temporal layers
    assert delta[FRAMES:].max() == 0  # the other clip does not


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_checkpoint_round_trips_through_the_loader(demo: Path, tmp_path: Path, variant: str) -> None:
    fresh = select_temporal_blocks(_keyframe(demo, "1.1"), variant, fresh=True)
    path = save_checkpoint(fresh, {}, tmp_path / "t2v_variant.pt")
    loaded = load_model(path, config_path=demo / "k11" / "configs.json").model
    assert loaded.design.name == variant == variant_of(loaded)
    assert select_temporal_blocks(loaded, variant).design.name == variant  # its weights are there now
    args = _inputs(loaded)
    torch.testing.assert_close(loaded(*args), fresh(*args), rtol=0, atol=0)


def test_a_trained_variant_beside_the_checkpoint_is_what_the_pipeline_uses(demo: Path, tmp_path: Path) -> None:
    """``variants/<variant>/t2v.pt`` beside the keyframe checkpoint (the toy models' layout): asking for that variant
    loads it; asking for the checkpoint's own variant, or for one with no trained sibling, does not."""
    import shutil

    from fusionframes.runtime.pipeline import VideoPipeline

    folder = tmp_path / "k11"
    shutil.copytree(demo / "k11", folder)
    trained = _randomised(select_temporal_blocks(_keyframe(demo, "1.1"), "Conv1dAttn3dBlocks", fresh=True))
    sibling = save_checkpoint(trained, {}, Path(trained_variant_name(str(folder / "t2v.pt"), "Conv1dAttn3dBlocks")))
    assert sibling == folder / "variants" / "Conv1dAttn3dBlocks" / "t2v.pt"
    shutil.copyfile(folder / "configs.json", sibling.parent / "configs.json")

    def keyframe(variant: str) -> torch.nn.Module:
        return VideoPipeline.from_folder(folder, None, temporal={"variant": variant}).models["keyframe"].model

    chosen = keyframe("Conv1dAttn3dBlocks")
    assert variant_of(chosen) == "Conv1dAttn3dBlocks"
    for name, value in trained.state_dict().items():
        assert torch.equal(chosen.state_dict()[name], value), name
    assert variant_of(keyframe("auto")) == variant_of(keyframe("Conv1dAttn1dBlocks")) == "Conv1dAttn1dBlocks"
    with pytest.raises(CheckpointError, match="variants/Conv3dAttn1dBlocks/"):
        keyframe("Conv3dAttn1dBlocks")


# ---------------------------------------------------------------------------------------------------------------------
# the blocks themselves


def _state(frames: int, width: int, count: int) -> TemporalState:
    return TemporalState(frames=frames, norm_embed=torch.randn(count, width), position_embed=torch.randn(count, width))


def _randomised(block: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(std=0.2)
    return block


@pytest.mark.parametrize("cls,window", [(KeyframeTemporalAttentionBlock, False), (WindowTemporalAttentionBlock, True)])
def test_3d_attention_lets_a_2x2_window_of_all_frames_attend_jointly(cls: type, window: bool) -> None:
    block = _randomised(cls(32, 16, groups=4, head_dim=16, expansion_ratio=2)).eval()
    x = torch.randn(3, 32, 4, 4)
    torch.testing.assert_close(block.from_tokens(block.to_tokens(x, 3), 4, 4), x, rtol=0, atol=0)

    def attend(y: torch.Tensor) -> torch.Tensor:  # the attention core, without the (per-frame) group norms
        return block.from_tokens(block.temporal_attention(block.to_tokens(y, 3)), 4, 4)

    changed = x.clone()
    changed[0, :, 0, 0] += 1.0
    delta = (attend(changed) - attend(x)).abs().amax(1)  # (frames, 4, 4)
    assert delta[1, 0, 0] > 1e-4  # the same pixel in another frame: both variants
    assert (delta[1, 1, 1] > 1e-4) == window  # same 2x2 window, other pixel: only 3D attention
    assert delta[1, 0, 2] == 0 and delta[1, 2, 2] == 0  # another window: neither


def test_3d_attention_falls_back_to_1d_along_an_odd_axis() -> None:
    block = _randomised(WindowTemporalAttentionBlock(32, 16, groups=4, head_dim=16, expansion_ratio=2)).eval()
    out = block(torch.randn(6, 32, 1, 3), _state(3, 16, 6))
    assert out.shape == (6, 32, 1, 3) and torch.isfinite(out).all()
    assert block.to_tokens(torch.randn(6, 32, 2, 3), 3).shape == (2, 6, 3, 32)  # 2x1 windows x 3 frames


def test_3d_attention_has_no_parameters_beyond_the_1d_block() -> None:
    one_d = KeyframeTemporalAttentionBlock(64, 32, groups=4, head_dim=16)
    three_d = WindowTemporalAttentionBlock(64, 32, groups=4, head_dim=16)
    assert [(k, p.shape) for k, p in one_d.named_parameters()] == [(k, p.shape) for k, p in three_d.named_parameters()]
    assert set(three_d.state_dict()) - set(one_d.state_dict()) == {"attention_window"}


def test_conv3d_block_has_3x3x3_kernels_on_a_projected_width_and_a_comparable_parameter_count() -> None:
    conv1d = TemporalResNetBlock(384, 1536, groups=32)
    conv3d = TemporalConv3dResNetBlock(384, 1536, groups=32)
    convs = [stage[2].weight.shape for stage in conv3d.temporal_resnet_blocks]
    assert convs == [(192, 384, 1, 1, 1), (64, 64, 3, 3, 3), (64, 64, 3, 3, 3), (384, 192, 1, 1, 1)]
    assert conv3d.down_projection.weight.shape == (64, 192) and conv3d.up_projection.weight.shape == (192, 64)
    ratio = sum(p.numel() for p in conv3d.parameters()) / sum(p.numel() for p in conv1d.parameters())
    assert 0.7 < ratio < 1.0  # cheaper: its middle norms condition fewer channels


def test_conv3d_block_starts_as_the_identity_and_then_mixes_frames() -> None:
    block = TemporalConv3dResNetBlock(32, 16, groups=4).eval()
    state = _state(3, 16, 3)
    x = torch.randn(3, 32, 4, 4)
    torch.testing.assert_close(block(x, state), x, rtol=0, atol=0)
    _randomised(block)
    changed = x.clone()
    changed[0] += torch.randn(32, 4, 4)  # not a constant: the group norms would remove that
    delta = (block(changed, state) - block(x, state)).abs().flatten(1).amax(1)
    assert delta[1] > 1e-3 and delta[2] > 1e-3  # two 3-frame convs reach two frames on


# ---------------------------------------------------------------------------------------------------------------------
# the selector: variant, strengths, levels


def test_selector_returns_a_view_and_leaves_the_model_alone(demo: Path) -> None:
    source = _keyframe(demo, "1.0")
    view = select_temporal_blocks(source, "auto", conv_strength=0.5, attention_strength=1.5, levels="1,2")
    assert (view.strength.conv, view.strength.attention, view.strength.levels) == (0.5, 1.5, frozenset({1, 2}))
    assert (source.strength.conv, source.strength.attention, source.strength.levels) == (1.0, 1.0, None)
    assert view.in_layer.weight is source.in_layer.weight
    assert select_temporal_blocks(source, "Conv1dAttn1dBlocks").design is source.design


def test_choosing_a_variant_the_checkpoint_lacks_says_so(demo: Path) -> None:
    with pytest.raises(CheckpointError, match="holds Conv1dAttn1dBlocks temporal blocks, not Conv3dAttn1dBlocks"):
        select_temporal_blocks(_keyframe(demo, "1.1"), "Conv3dAttn1dBlocks")


@pytest.mark.parametrize("kwargs,message", [
    ({"variant": "Conv2dBlocks"}, "unknown temporal variant 'Conv2dBlocks'"),
    ({"conv_strength": 2.5}, r"conv strength must be in \[0, 2\]"),
    ({"attention_strength": -0.1}, r"attention strength must be in \[0, 2\]"),
    ({"attention_strength": float("nan")}, "attention strength must be a number"),
    ({"levels": "1,7"}, "level 7 does not exist: this model has levels 0-2"),
    ({"levels": "-1"}, "level -1 does not exist"),
    ({"levels": "1;x"}, "is not a level number"),
])
def test_bad_selector_settings_are_clear_errors(demo: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        select_temporal_blocks(_keyframe(demo, "1.1"), **kwargs)


def test_selector_needs_a_keyframe_model(demo: Path) -> None:
    interpolation = load_model(demo / "k11" / "interpolation.pt").model
    with pytest.raises(InputError, match="works on keyframe models"):
        select_temporal_blocks(interpolation)


def test_level_strings() -> None:
    assert parse_levels("all", 4) is None and parse_levels(None, 4) is None and parse_levels(" ", 4) is None
    assert parse_levels("0,1,2,3", 4) is None
    assert parse_levels("1, 2 3", 4) == frozenset({1, 2, 3})
    assert parse_levels([0], 4) == frozenset({0})
    assert parse_levels("none", 4) == frozenset()


@pytest.mark.parametrize("release", ["1.0", "1.1"])
def test_levels_choose_where_the_temporal_blocks_act(demo: Path, release: str) -> None:
    source = _keyframe(demo, release)
    args = _inputs(source)
    everywhere = select_temporal_blocks(source)(*args)
    nowhere = select_temporal_blocks(source, levels="none")(*args)
    torch.testing.assert_close(nowhere, select_temporal_blocks(source, conv_strength=0, attention_strength=0)(*args),
                               rtol=0, atol=0)
    deep = select_temporal_blocks(source, levels="1,2")(*args)
    assert (deep - everywhere).abs().max() > 1e-4 and (deep - nowhere).abs().max() > 1e-4
    torch.testing.assert_close(select_temporal_blocks(source, levels="0,1,2")(*args), everywhere, rtol=0, atol=0)

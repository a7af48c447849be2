"""The demo models: official layouts, detected and loaded by the real loaders, deterministic, numerically tame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fusionframes.io.checkpoints import inspect, load_model
from fusionframes.io.files import read_checkpoint
from fusionframes.tools.demo_models import (
    CONTEXT_DIM_10,
    CONTEXT_DIM_11,
    DEMO_FILES,
    TEXT_D_MODEL,
    _generator,
    _state_dict,
    create_demo_models,
    missing_demo_files,
)

MODELS = [
    # file, release, kind
    ("k10/kandinsky_video.pt", "1.0", "keyframe"),
    ("k10/kandinsky_video_interpolation.pt", "1.0", "interpolation"),
    ("k10/movq.pt", "1.0", "movq"),
    ("k11/t2v.pt", "1.1", "keyframe"),
    ("k11/interpolation.pt", "1.1", "interpolation"),
    ("k11/movq.pt", "1.1", "movq"),
    ("k11/video_movq.pt", "1.1", "video_movq"),
]

pytestmark = pytest.mark.usefixtures("one_thread")




def _tensors(content: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested checkpoint dicts to name -> tensor."""
    if isinstance(content, torch.Tensor):
        return {prefix: content}
    assert isinstance(content, dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in content.items():
        out.update(_tensors(value, f"{prefix}.{key}" if prefix else key))
    return out


def test_every_file_is_written(demo: Path) -> None:
    assert missing_demo_files(demo) == []
    for name in DEMO_FILES:
        assert (demo / name).stat().st_size > 0, name
    assert not list(demo.rglob("*.partial"))


@pytest.mark.parametrize(("name", "release", "kind"), MODELS)
def test_loaders_detect_and_load(demo: Path, name: str, release: str, kind: str) -> None:
    # The image MoVQ is the same model in both releases, so its file cannot (and need not) tell which one it is.
    expected = kind if kind == "movq" else (release, kind)
    info = inspect(demo / name)
    assert (info.kind if kind == "movq" else (info.release, info.kind)) == expected
    loaded = load_model(demo / name, expected_kind=kind)
    assert (loaded.kind if kind == "movq" else (loaded.release, loaded.kind)) == expected
    for tensor in loaded.model.state_dict().values():
        assert torch.isfinite(tensor).all()


def test_official_top_level_structure(demo: Path) -> None:
    k10 = read_checkpoint(demo / "k10/kandinsky_video.pt")
    assert set(k10) == {"unet", "null_embedding", "projections"}
    assert k10["null_embedding"].shape == (CONTEXT_DIM_10,)
    assert {k: tuple(v.shape) for k, v in k10["projections"].items()} == {
        "t5.0.weight": (CONTEXT_DIM_10, TEXT_D_MODEL), "t5.1.weight": (CONTEXT_DIM_10,), "t5.1.bias": (CONTEXT_DIM_10,)}
    assert set(read_checkpoint(demo / "k10/kandinsky_video_interpolation.pt")) == {"unet", "null_embedding"}
    for name in ("k11/t2v.pt", "k11/interpolation.pt"):
        content = read_checkpoint(demo / name)
        assert set(content) == {"unet", "null_embedding"}
        assert {v.dtype for v in content["unet"].values()} == {torch.float16}
        assert content["null_embedding"].dtype == torch.float32
        assert content["null_embedding"].shape == (CONTEXT_DIM_11,)
    projections = inspect(demo / "k11/t5_projections.pt")
    assert (projections.release, projections.kind) == ("1.1", "text_projections")
    raw = read_checkpoint(demo / "k11/t5_projections.pt")
    assert set(raw) == {"projection_base", "projection_interpolation"}
    assert raw["projection_base"]["0.weight"].shape == (CONTEXT_DIM_11, TEXT_D_MODEL)
    configs = json.loads((demo / "k11/configs.json").read_text())
    assert (demo / "k11" / configs["text_encoder"]["weights_path"] / "config.json").is_file()


def test_tokenizer_and_text_encoder_load(demo: Path) -> None:
    from transformers import AutoTokenizer, T5EncoderModel, T5Model

    folder = demo / "text_encoder"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("a red fox runs through the snowy forest at sunset").input_ids
    assert ids[-1] == 1 and 1 not in ids[:-1] and 2 not in ids and len(ids) > 5
    assert 2 in tokenizer("水").input_ids  # characters it never saw become <unk>
    encoder = T5EncoderModel.from_pretrained(folder).eval()
    assert encoder.config.d_model == TEXT_D_MODEL
    assert max(ids) < encoder.config.vocab_size and len(tokenizer) <= encoder.config.vocab_size
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).last_hidden_state
        full = T5Model.from_pretrained(folder).eval().encoder(input_ids=torch.tensor([ids])).last_hidden_state
    assert hidden.shape == (1, len(ids), TEXT_D_MODEL) and torch.isfinite(hidden).all()
    torch.testing.assert_close(hidden, full)


def test_same_seed_gives_identical_tensors(demo: Path, tmp_path: Path) -> None:
    again = create_demo_models(tmp_path / "again", seed=0)
    for name in DEMO_FILES:
        if name.endswith(".pt"):
            ours, theirs = _tensors(read_checkpoint(demo / name)), _tensors(read_checkpoint(again / name))
            assert ours.keys() == theirs.keys(), name
            for key in ours:
                assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), (name, key)
        else:
            assert (demo / name).read_bytes() == (again / name).read_bytes(), name


def test_other_seed_gives_other_weights(demo: Path) -> None:
    configs = demo / "k11/configs.json"
    first = _state_dict("1.1", "movq", configs, _generator(0, "k11/movq.pt"))
    second = _state_dict("1.1", "movq", configs, _generator(1, "k11/movq.pt"))
    key = "decoder.conv_out.weight"
    assert not torch.equal(first[key], second[key])
    assert torch.equal(first[key], read_checkpoint(demo / "k11/movq.pt")[key])


def test_existing_files_are_kept_and_missing_ones_rebuilt_identically(demo: Path, tmp_path: Path) -> None:
    root = tmp_path / "partial"
    for name in DEMO_FILES:  # a copy of the demo set without one file
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((demo / name).read_bytes())
    (root / "k11/movq.pt").unlink()
    marker = root / "k10/movq.pt"
    marker.write_bytes(marker.read_bytes())
    stamp = marker.stat().st_mtime_ns
    create_demo_models(root, seed=0)
    assert marker.stat().st_mtime_ns == stamp
    assert (root / "k11/movq.pt").read_bytes() == (demo / "k11/movq.pt").read_bytes()


def _context(batch: int, dim: int, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -2:] = False
    return torch.randn(batch, length, dim), mask


def _check(out: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert out.shape == shape
    assert torch.isfinite(out).all()
    assert 1e-3 < out.std().item() < 100  # random weights give a real, tame signal (not an identity or blow-up)


@torch.no_grad()
def test_unet_forwards_are_finite(demo: Path) -> None:
    torch.manual_seed(0)
    h = w = 4
    keyframe = load_model(demo / "k10/kandinsky_video.pt").model
    context, mask = _context(3, CONTEXT_DIM_10)
    out = keyframe(torch.randn(3, 4, h, w), torch.full((3,), 500.0), context, mask, torch.arange(3.0) * 12, 3)
    _check(out, (3, 4, h, w))

    interpolation = load_model(demo / "k10/kandinsky_video_interpolation.pt").model
    context, mask = _context(2, CONTEXT_DIM_10)
    out = interpolation(torch.randn(2, 20, h, w), torch.full((2,), 300.0), context, mask, torch.tensor([3, 3]), 2)
    _check(out, (2, 12, h, w))

    keyframe = load_model(demo / "k11/t2v.pt").model
    context, mask = _context(3, CONTEXT_DIM_11)
    out = keyframe(torch.randn(3, 9, h, w), torch.full((3,), 500.0), context, mask, torch.arange(3.0), 3,
                   noise_aug_time=torch.full((3,), 20.0), motion_score=torch.full((3,), 10.0))
    _check(out, (3, 4, h, w))
    _check(keyframe.forward_image(torch.randn(1, 9, h, w), torch.full((1,), 500.0), *_context(1, CONTEXT_DIM_11)),
           (1, 4, h, w))

    interpolation = load_model(demo / "k11/interpolation.pt").model
    context, mask = _context(2, CONTEXT_DIM_11)
    out = interpolation(torch.randn(2, 20, h, w), torch.full((2,), 300.0), context, mask, torch.tensor([3, 3]), 2,
                        torch.zeros(2), torch.tensor([1.0, 0.0]))
    _check(out, (2, 12, h, w))


@torch.no_grad()
def test_movq_roundtrips_are_finite(demo: Path) -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for name in ("k10/movq.pt", "k11/movq.pt", "k11/video_movq.pt"):
        movq = load_model(demo / name).model
        latents = movq.encode(images)
        _check(latents, (2, 4, 4, 4))
        _check(movq.decode(latents), (2, 3, 32, 32))

"""Training the temporal blocks (spatial U-Net frozen) on a synthetic set of moving shapes, on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fusionframes.cli import main
from fusionframes.errors import CheckpointError, InputError
from fusionframes.io.checkpoints import load_model
from fusionframes.io.files import read_checkpoint
from fusionframes.io.video import write_video
from fusionframes.models.temporal.selection import temporal_layers
from fusionframes.tools.training import TrainingConfig, train_temporal

SIZE = 32  # pixels; the demo U-Net's latents are 4x4
VIDEO_FRAMES = 12

pytestmark = pytest.mark.usefixtures("one_thread")




def moving_shape(rng: np.random.Generator) -> np.ndarray:
    """A square or a disc of one colour gliding across a plain background, wrapping at the border."""
    video = np.empty((VIDEO_FRAMES, SIZE, SIZE, 3), np.uint8)
    video[:] = rng.integers(0, 80, 3)
    colour, radius = rng.integers(140, 256, 3), int(rng.integers(4, 7))
    start, velocity = rng.integers(0, SIZE, 2), rng.choice([-3, -2, 2, 3], 2)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = bool(rng.integers(2))
    for frame in range(VIDEO_FRAMES):
        y, x = (start + velocity * frame) % SIZE
        dy, dx = np.abs(rows - y), np.abs(cols - x)
        dy, dx = np.minimum(dy, SIZE - dy), np.minimum(dx, SIZE - dx)
        inside = dy ** 2 + dx ** 2 <= radius ** 2 if disc else np.maximum(dy, dx) <= radius
        video[frame][inside] = colour
    return video


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for index in range(4):
        write_video(folder / f"shape{index}.mp4", moving_shape(rng), fps=8)
    return folder


def captioned(clips: Path, folder: Path) -> Path:
    """The clips with a caption beside the first (the others take the fixed prompt)."""
    folder.mkdir()
    for video in clips.iterdir():
        (folder / video.name).write_bytes(video.read_bytes())
    (folder / "shape0.txt").write_text("a bright shape gliding over a dark background\n")
    return folder


def _config(demo: Path, clips: Path, output: Path, **overrides) -> TrainingConfig:
    values = dict(checkpoint=demo / "k11" / "t2v.pt", videos=clips, output=output, frames=4, size=SIZE, steps=3,
                  learning_rate=1e-3, seed=0)
    return TrainingConfig(**{**values, **overrides})


def _means(losses: list[float]) -> tuple[float, float]:
    fifth = max(1, len(losses) // 5)
    return float(np.mean(losses[:fifth])), float(np.mean(losses[-fifth:]))


def test_fresh_blocks_learn_on_moving_shapes_and_load_back(demo: Path, clips: Path, tmp_path: Path) -> None:
    """The paper's recipe: fresh Conv1dAttn3dBlocks over the frozen 1.1 U-Net, eps loss, captions and a prompt."""
    output = tmp_path / "trained" / "t2v_attn3d.pt"
    config = _config(demo, captioned(clips, tmp_path / "clips"), output, variant="Conv1dAttn3dBlocks", fresh=True,
                     steps=200,
                     text_encoder=demo / "text_encoder", prompt="a shape moving")
    result = train_temporal(config)

    first, last = _means(result.losses)
    print(f"\nloss: first 20% {first:.4f}, last 20% {last:.4f} ({last / first:.3f}); by tenths "
          + " ".join(f"{v:.3f}" for v in np.mean(np.reshape(result.losses, (10, -1)), axis=1)))
    assert all(np.isfinite(result.losses)) and len(result.losses) == 200
    assert last < 0.95 * first

    loaded = load_model(output).model  # configs.json was copied beside it
    assert loaded.design.name == result.variant == "Conv1dAttn3dBlocks"
    weights = read_checkpoint(output)["unet"]
    assert any(key.endswith("temporal_attention_block.attention_window") for key in weights)
    source = load_model(config.checkpoint).model.state_dict()
    temporal = tuple(f"{name}." for name, _ in temporal_layers(loaded))
    spatial = [k for k in weights if not k.startswith(temporal) and "temporal" not in k]
    assert spatial and all(torch.equal(weights[k].float(), source[k]) for k in spatial)  # frozen
    learned = [k for k in weights if k.endswith("temporal_attention_block.feed_forward.2.weight")]
    assert learned and all(weights[k].abs().max() > 0 for k in learned)  # zero when fresh, trained now


def test_release_10_trains_its_own_blocks_with_the_null_context(demo: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "kandinsky_video_trained.pt"
    result = train_temporal(_config(demo, clips, output, checkpoint=demo / "k10" / "kandinsky_video.pt"))
    assert result.variant == "Conv1dAttn1dBlocks" and all(np.isfinite(result.losses))
    content = read_checkpoint(output)
    assert set(content) == {"unet", "null_embedding", "projections"}  # the 1.0 file keeps the T5 projections
    assert load_model(output).model.design.name == "Conv1dAttn1dBlocks"


def test_command_line(demo: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "cli.pt"
    code = main(["train-temporal", "--checkpoint", str(demo / "k11" / "t2v.pt"), "--videos", str(clips),
                 "--out", str(output), "--variant", "Conv1dAttn1dLayers", "--fresh", "--frames", "3",
                 "--size", str(SIZE), "--steps", "2", "--device", "cpu", "--log-every", "1"])
    printed = capsys.readouterr().out
    assert code == 0 and "step 2/2" in printed and "Conv1dAttn1dLayers" in printed
    assert load_model(output).model.design.name == "Conv1dAttn1dLayers"


@pytest.mark.parametrize("overrides,error,message", [
    ({"variant": "Conv4dBlocks"}, InputError, "unknown temporal variant"),
    ({"variant": "Conv3dAttn1dBlocks"}, CheckpointError, "holds Conv1dAttn1dBlocks temporal blocks, not Conv3d"),
    ({"size": 48}, InputError, "multiple of 32 pixels"),
    ({"frames": 1}, InputError, "at least 2 frames"),
    ({"frames": 20}, InputError, "12 frames, a clip needs 20"),
    ({"prompt": "a prompt"}, InputError, "need a text encoder"),
    ({"learning_rate": 0.0}, InputError, "learning rate must be positive"),
])
def test_bad_training_settings_are_clear_errors(demo: Path, clips: Path, tmp_path: Path, overrides: dict,
                                                error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        train_temporal(_config(demo, clips, tmp_path / "out.pt", **overrides))
    assert not (tmp_path / "out.pt").exists()


def test_a_folder_without_readable_videos_is_a_clear_error(demo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    with pytest.raises(InputError, match="no video files"):
        train_temporal(_config(demo, empty, tmp_path / "out.pt"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "clip.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="none of the 1 videos can be used.*cannot read video"):
        train_temporal(_config(demo, broken, tmp_path / "out.pt"))
    with pytest.raises(InputError, match="is not a folder"):
        train_temporal(_config(demo, tmp_path / "missing", tmp_path / "out.pt"))


def test_command_line_reports_errors(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train-temporal", "--checkpoint", str(demo / "k11" / "t2v.pt"), "--videos", str(tmp_path),
                 "--out", str(tmp_path / "x.pt"), "--size", str(SIZE)])
    assert code == 2 and "no video files" in capsys.readouterr().err


def test_a_noisy_share_moves_training_steps_to_the_noisiest_timesteps_and_none_leaves_them_uniform():
    from fusionframes.tools.training import NOISY_FROM, TRAIN_TIMESTEPS, training_timesteps

    uniform = torch.randint(0, TRAIN_TIMESTEPS, (4000,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(training_timesteps(torch.Generator().manual_seed(5), 4000), uniform)
    biased = training_timesteps(torch.Generator().manual_seed(5), 4000, noisy_share=0.5)
    assert biased.min() >= 0 and biased.max() < TRAIN_TIMESTEPS
    share = float((biased >= NOISY_FROM).float().mean())  # 0.5 + 0.5 * 0.4 expected
    assert 0.66 < share < 0.74, share


def test_the_layout_weight_scales_the_loss_of_the_noisiest_steps_up_to_its_cap_and_leaves_the_plain_loss_by_default():
    from fusionframes.tools.training import KeyframeObjective11

    paths = (Path(), Path(), Path())
    plain = KeyframeObjective11(TrainingConfig(*paths), torch.Generator())
    weighted = KeyframeObjective11(TrainingConfig(*paths, loss_weight_cap=20.0), torch.Generator())
    alpha_bar = weighted.schedule.alphas_cumprod
    assert [plain._weight(t) for t in (0, 500, 999)] == [1.0, 1.0, 1.0]
    assert weighted._weight(0) == pytest.approx(1.0, abs=1e-4)
    assert weighted._weight(500) == pytest.approx(1 / float(alpha_bar[500]))  # about 2
    assert weighted._weight(900) == weighted._weight(999) == 20.0  # alpha_bar 0.024 and 0 (zero terminal SNR)

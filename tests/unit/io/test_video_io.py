"""Writing and reading videos and images: sizes, frame counts, the official 8-bit conversion, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.errors import InputError
from fusionframes.io.video import (
    VideoStream,
    frames_to_uint8,
    load_image,
    read_frames,
    read_video,
    write_frames,
    write_video,
)


def _moving_gradient(count: int, height: int, width: int) -> torch.Tensor:
    """Smooth frames with motion: what a lossy codec keeps well, unlike random noise."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    frames = [torch.stack([x, y, 0.5 + 0.4 * torch.sin(6 * x + 4 * y + i / 2)]) for i in range(count)]
    return torch.stack(frames)


def _mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_frames_to_uint8_truncates_and_clips() -> None:
    frames = torch.tensor([0.0, 0.999, 1.0, 1.7, -0.3, 0.5, 100 / 255, 0.2], dtype=torch.float32)
    frames = frames.repeat(3, 1).reshape(1, 3, 2, 4)
    out = frames_to_uint8(frames)
    assert out.shape == (1, 2, 4, 3) and out.dtype == np.uint8
    # 0.999 * 255 = 254.7 -> 254 (truncation, as ToPILImage), 0.5 -> 127, 0.2 * 255 = 51.000004 -> 51
    assert out[0, :, :, 0].flatten().tolist() == [0, 254, 255, 255, 0, 127, 100, 51]
    assert np.array_equal(out[..., 0], out[..., 2])


def test_frames_to_uint8_layout() -> None:
    frames = torch.zeros(2, 3, 5, 7)
    frames[1, 2, 4, 6] = 1.0
    out = frames_to_uint8(frames)
    assert out.shape == (2, 5, 7, 3)
    assert out[1, 4, 6, 2] == 255 and out.sum() == 255


@pytest.mark.parametrize(
    "bad", [torch.zeros(3, 8, 8), torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)]
)
def test_frames_to_uint8_rejects_bad_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(InputError):
        frames_to_uint8(bad)


def test_mp4_roundtrip(tmp_path: Path) -> None:
    frames = _moving_gradient(9, 64, 64)
    path = write_video(tmp_path / "sub" / "dir" / "clip.mp4", frames, fps=8)
    assert path.is_file() and path.parent.name == "dir"
    assert not list(tmp_path.rglob("*.partial*"))
    video = read_video(path)
    assert video.shape == (9, 64, 64, 3) and video.dtype == np.uint8
    assert _mean_abs_error(video, frames_to_uint8(frames)) < 6


def test_mp4_odd_size_is_padded_not_resized(tmp_path: Path) -> None:
    frames = _moving_gradient(5, 47, 65)
    video = read_video(write_video(tmp_path / "odd.mp4", frames, fps=7.5))
    assert video.shape == (5, 48, 66, 3)
    assert _mean_abs_error(video[:, :47, :65], frames_to_uint8(frames)) < 6


def test_uint8_input_and_animations(tmp_path: Path) -> None:
    frames = frames_to_uint8(_moving_gradient(4, 33, 40))
    for suffix in (".gif", ".webp"):
        video = read_video(write_video(tmp_path / f"clip{suffix}", frames, fps=10))
        assert video.shape == (4, 33, 40, 3), suffix
        assert _mean_abs_error(video, frames) < 10, suffix


def test_write_errors(tmp_path: Path) -> None:
    frames = torch.rand(2, 3, 16, 16)
    with pytest.raises(InputError, match="unsupported file type"):
        write_video(tmp_path / "clip.avi", frames, fps=8)
    with pytest.raises(InputError, match="unsupported file type"):
        write_video(tmp_path / "clip", frames, fps=8)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "clip.mp4", frames, fps=0)
    with pytest.raises(InputError):
        write_video(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), dtype=np.float32), fps=8)
    assert not list(tmp_path.iterdir())


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="cannot read"):
        read_video(broken)


def test_load_image(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 4), dtype=np.uint8)
    pixels[..., 0], pixels[..., 3] = 200, 128
    Image.fromarray(pixels, "RGBA").save(tmp_path / "image.png")
    image = load_image(tmp_path / "image.png")
    # kept in its own mode: image-to-video resizes in it and converts to RGB last, as the official code
    assert image.mode == "RGBA" and image.size == (20, 10)
    assert image.getpixel((0, 0)) == (200, 0, 0, 128)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(tmp_path / "fake.png")
    with pytest.raises(InputError):
        load_image(tmp_path)


def test_png_frames_are_the_official_8_bit_values_and_replace_an_earlier_run(tmp_path: Path) -> None:
    frames = torch.rand(3, 3, 8, 16)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "frame_00007.png").write_bytes(b"stale")
    (folder / "notes.txt").write_text("kept")
    assert write_frames(folder, frames) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00002.png",
                                                         "notes.txt"]
    assert np.array_equal(read_frames(folder), frames_to_uint8(frames))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="it is a file"):
        write_frames(tmp_path / "file", frames)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_streamed_video_appears_complete_at_the_end(tmp_path, suffix):
    frames = torch.rand(7, 3, 32, 48)
    path = tmp_path / f"out{suffix}"
    with VideoStream(path, 8) as stream:
        stream.append(frames[:3])
        assert not path.exists()  # written beside it until complete
        stream.append(frames[3:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert read_video(path).shape == (7, 32, 48, 3)


def test_a_stream_that_fails_or_is_cancelled_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), VideoStream(tmp_path / "v.mp4", 8) as stream:
        stream.append(torch.rand(2, 3, 32, 32))
        raise KeyboardInterrupt
    with pytest.raises(InputError, match="one size: 32x32 first, then 64x32"), \
            VideoStream(tmp_path / "v.mp4", 8) as stream:
        stream.append(torch.rand(2, 3, 32, 32))
        stream.append(torch.rand(2, 3, 32, 64))
    with pytest.raises(InputError, match="no frames were written"), VideoStream(tmp_path / "v.mp4", 8):
        pass
    with pytest.raises(InputError, match="unsupported file type"):
        VideoStream(tmp_path / "v.avi", 8)
    assert list(tmp_path.iterdir()) == []

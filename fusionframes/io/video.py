"""Frames in and out of files: the official 8-bit conversion, MP4/GIF/WebP writing, video and image reading.

MP4 is H.264 in yuv420p (what browsers and players accept) written by imageio's ffmpeg plugin (imageio-ffmpeg ships
its own ffmpeg binary, so nothing else has to be installed). yuv420p stores colour at half resolution and so needs
even frame sides: an odd height or width is padded by ONE row/column repeating the edge pixels (never resized), so
a 65x47 video is stored as 66x48. GIF and animated WebP go through Pillow (GIF frame times are whole centiseconds,
and Pillow stores runs of identical frames as one longer frame).
"""

from __future__ import annotations

import math
import numbers
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
#: libx264 constant rate factor: 17 is visually lossless for typical content (the ffmpeg default is 23)
MP4_CRF = 17


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float frames in [0, 1] -> (N, H, W, 3) uint8, as the official pipelines convert them.

    Values are clipped to [0, 1], multiplied by 255 and TRUNCATED (torchvision's ``ToPILImage`` on float input does
    ``mul(255).byte()``, [OB-30]), not rounded: 0.999 becomes 254. NaN becomes 0.
    """
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"frames must be a torch.Tensor of shape (N, 3, H, W), got {type(frames).__name__}.")
    if frames.dim() != 4 or frames.shape[1] != 3 or 0 in frames.shape:
        raise InputError(f"frames must have shape (N, 3, H, W) with N, H, W >= 1, got {tuple(frames.shape)}.")
    if not frames.is_floating_point():
        raise InputError(f"frames must be float values in [0, 1], got dtype {frames.dtype}.")
    pixels = torch.nan_to_num(frames.detach().float(), nan=0.0).clamp(0, 1).mul(255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _as_uint8_video(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        return frames_to_uint8(frames)
    if not isinstance(frames, np.ndarray):
        raise InputError(f"frames must be a tensor (N, 3, H, W) or a uint8 array (N, H, W, 3), "
                         f"got {type(frames).__name__}.")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise InputError(f"a frame array must be uint8 of shape (N, H, W, 3), got {frames.dtype} {frames.shape}.")
    return np.ascontiguousarray(frames)


def _even(video: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge-replicated row/column (yuv420p needs even sides)."""
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if not (pad_h or pad_w):
        return video
    return np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _write_mp4(path: Path, video: np.ndarray, fps: float) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", quality=None,
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart"],
    )
    try:
        for frame in _even(video):
            writer.append_data(frame)
    finally:
        writer.close()


def _write_animation(path: Path, video: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(frame) for frame in video]
    options = {"lossless": False, "quality": 90} if path.suffix.lower() == ".webp" else {"optimize": False}
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0,
                   **options)


def write_video(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float) -> Path:
    """Write frames to ``path`` (format from the suffix: .mp4, .gif, .webp); returns the path.

    ``frames``: float (N, 3, H, W) in [0, 1] (converted with :func:`frames_to_uint8`) or uint8 (N, H, W, 3); ``fps``
    any positive real (``Fraction(30000, 1001)`` too). The parent folder is created. The file appears complete or
    not at all (written beside it, then renamed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"cannot write video {path.name!r}: unsupported file type {suffix or '(none)'}; "
                         f"use one of {', '.join(VIDEO_SUFFIXES)}.")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}.")
    video = _as_uint8_video(frames)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder for {path}: {error.strerror or error}.") from None
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        (_write_mp4 if suffix == ".mp4" else _write_animation)(partial, video, float(fps))
        partial.replace(path)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error}.") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


class VideoStream:
    """A video file written while its frames are still being made: MP4 frames go to the encoder as they come, so
    memory does not grow with the video's length (GIF/WebP frames are kept as 8-bit until the end, as Pillow needs
    them all). As :func:`write_video`, the file appears complete or not at all: it is written beside ``path`` and
    renamed when the ``with`` block ends normally, and deleted when it ends with an error or a cancel."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        check_output(self.path)
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"fps must be a positive number, got {fps!r}.")
        self.fps = float(fps)
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.frames = 0
        self._writer = None
        self._kept: list[np.ndarray] = []
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoStream:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the folder for {self.path}: {error.strerror or error}.") from None
        return self

    def append(self, frames: torch.Tensor | np.ndarray) -> None:
        """Add frames: float (n, 3, H, W) in [0, 1] or uint8 (n, H, W, 3), all of one size."""
        video = _as_uint8_video(frames)
        if self._size is None:
            self._size = video.shape[1:3]
        elif video.shape[1:3] != self._size:
            raise InputError(f"all frames of a video must have one size: {self._size[1]}x{self._size[0]} first, "
                             f"then {video.shape[2]}x{video.shape[1]}.")
        if self.path.suffix.lower() != ".mp4":
            self._kept.extend(video)
        else:
            if self._writer is None:
                import imageio.v2 as imageio

                self._writer = imageio.get_writer(
                    self.partial, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", pixelformat="yuv420p",
                    quality=None, macro_block_size=1, ffmpeg_log_level="error",
                    output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart"])
            for frame in _even(video):
                self._writer.append_data(frame)
        self.frames += video.shape[0]

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if kind is None:
                if self.frames == 0:
                    raise InputError(f"no frames were written to {self.path}.")
                if self._kept:
                    _write_animation(self.partial, np.stack(self._kept), self.fps)
                self.partial.replace(self.path)
        except OSError as failure:
            raise InputError(f"cannot write {self.path}: {failure}.") from None
        finally:
            self.partial.unlink(missing_ok=True)


FRAME_PATTERN = "frame_{:05d}.png"


def check_output(path: str | Path, *, folder: bool = False) -> None:
    """Fail early (before any model loads) on an output the writers would refuse: a video of an unknown type, or a
    frames folder that is a file."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise InputError(f"cannot write frames into {path}: it is a file. Give a folder (ending in '/').")
        return
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"cannot write video {path.name!r}: unsupported file type {path.suffix or '(none)'}; use one "
                         f"of {', '.join(VIDEO_SUFFIXES)}, or a folder ending in '/' for PNG frames.")


def write_frames(folder: str | Path, frames: torch.Tensor | np.ndarray) -> Path:
    """Write every frame as a lossless 8-bit PNG ``frame_00000.png``, ``frame_00001.png``, ... into ``folder``.

    The 8-bit values are those of :func:`frames_to_uint8` (the official conversion), so they are exactly what a video
    file would be encoded from. The frames are written to a hidden folder beside ``folder`` first and moved in only
    when all are written; frames of an earlier run in ``folder`` are replaced, other files are left alone."""
    folder = Path(folder)
    video = _as_uint8_video(frames)
    check_output(folder, folder=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder {folder}: {error.strerror or error}.") from None
    partial = folder.with_name(f".{folder.name}.partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for index, frame in enumerate(video):
            Image.fromarray(frame).save(partial / FRAME_PATTERN.format(index), compress_level=1)
        for old in folder.glob("frame_*.png"):
            old.unlink()
        for new in sorted(partial.iterdir()):
            new.replace(folder / new.name)
    except OSError as error:
        raise InputError(f"cannot write frames into {folder}: {error}.") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def read_frames(folder: str | Path) -> np.ndarray:
    """The frames :func:`write_frames` wrote, as (N, H, W, 3) uint8."""
    folder = Path(folder)
    files = sorted(folder.glob("frame_*.png"))
    if not files:
        raise InputError(f"no frame_*.png files in {folder}.")
    frames = []
    for file in files:
        with Image.open(file) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} not found: {path}. Check the file name and folder.")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file.")


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video or animated image as (N, H, W, 3) uint8 (e.g. to interpolate an existing video)."""
    path = Path(path)
    _check_readable(path, "video")
    try:
        if path.suffix.lower() in (".gif", ".webp", ".png", ".apng"):
            with Image.open(path) as image:
                frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
        else:
            import imageio.v2 as imageio

            with imageio.get_reader(path, format="FFMPEG") as reader:
                frames = [np.asarray(frame)[..., :3] for frame in reader]
    except (OSError, ValueError, RuntimeError, UnidentifiedImageError) as error:
        raise InputError(f"cannot read video {path}: {str(error).splitlines()[0] if str(error) else error!r}. "
                         "The file is damaged or not a video.") from None
    if not frames:
        raise InputError(f"video {path} holds no frames.")
    return np.stack(frames).astype(np.uint8, copy=False)


def load_image(path: str | Path) -> Image.Image:
    """An image file as a PIL image in its own mode (palette, RGBA, ...: image-to-video resizes in that mode and
    converts to RGB last, as the official code [OB-45]), turned upright by its EXIF orientation."""
    path = Path(path)
    _check_readable(path, "image")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}. Use a PNG, JPEG or WebP image.") from None

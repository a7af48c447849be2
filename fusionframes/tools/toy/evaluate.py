"""``toy-eval``: how well the toy models do what their prompts say, measured by the detector of ``detect``.

For a fixed set of prompts (every colour, shape and motion of the grammar appear) and seeds, each video is generated
by the real pipeline (``VideoPipeline``: the same loaders, sequencer, samplers and decoders as for the official
weights) and read frame by frame. Per video:

* colour / shape: the colour and shape seen in most frames are the prompted ones;
* direction: the centroid moves from the first to the last keyframe mostly along the prompted direction (its main
  axis and sign), by at least 2 pixels;
* jitter: the mean size of the second difference of the keyframe centroids (pixels; 0 for steady motion);
* in-between error (medium or high fps): how far each interpolated frame's centroid lies from the point the
  interpolation should reach between its two keyframes (pixels; 0 when frames are exactly in between);
* stability: the mean relative change of the shape's area from one frame to the next of the decoded video.

With interpolation (medium or high fps) the same prompts and seeds are also interpolated from the world's own
keyframes (a scene of the prompt, rendered): that in-between error and area change belong to the interpolation U-Net
and the decoder alone, apart from the keyframe model.

The summary gives the accuracies (share of videos) and the means; a contact sheet shows the keyframes of every video
next to its prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from .detect import Detection, detect
from .world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    caption,
    keyframe_times,
    parse_caption,
    random_scene,
    render,
    scene_generator,
)

#: default prompts: each colour, shape and motion at least twice
PROMPTS = tuple(caption(colour, SHAPES[i % len(SHAPES)], list(MOTIONS)[i % len(MOTIONS)])
                for i, colour in enumerate(list(COLOURS) * 2))
SEEDS = (1, 2)
MIN_TRAVEL = 2.0


@dataclass
class VideoScore:
    prompt: str
    seed: int
    colour_ok: bool
    shape_ok: bool
    direction_ok: bool
    seen: tuple[str | None, str | None]
    travel: tuple[float, float]
    jitter: float
    in_between_error: float | None
    area_change: float


def _majority(values: list[str | None]) -> str | None:
    seen = [v for v in values if v is not None]
    return max(set(seen), key=seen.count) if seen else None


def score_video(prompt: str, seed: int, frames: torch.Tensor, step: int) -> VideoScore:
    """Score one video (T, 3, H, W) in [-1, 1] whose keyframes are every ``step``-th frame."""
    colour, shape, motion = parse_caption(prompt)
    found: list[Detection] = [detect(frame) for frame in frames]
    keys = found[::step]
    present = [d for d in keys if d.present]
    travel = (present[-1].centroid[0] - present[0].centroid[0], present[-1].centroid[1] - present[0].centroid[1]) \
        if len(present) >= 2 else (0.0, 0.0)
    dx, dy = MOTIONS[motion]
    along, across = travel[0] * dx + travel[1] * dy, abs(travel[0] * dy) + abs(travel[1] * dx)
    direction_ok = along >= MIN_TRAVEL and along > across
    centres = [d.centroid for d in keys if d.present]
    jitter = [math.hypot(centres[i + 1][0] - 2 * centres[i][0] + centres[i - 1][0],
                         centres[i + 1][1] - 2 * centres[i][1] + centres[i - 1][1]) for i in range(1, len(centres) - 1)]
    errors = []
    if step > 1:
        for k in range(len(keys) - 1):
            left, right = keys[k], keys[k + 1]
            if not (left.present and right.present):
                continue
            for j in range(1, step):
                middle = found[k * step + j]
                if middle.present:
                    share = j / step
                    target = (left.centroid[0] + share * (right.centroid[0] - left.centroid[0]),
                              left.centroid[1] + share * (right.centroid[1] - left.centroid[1]))
                    errors.append(math.dist(middle.centroid, target))
    areas = [d.area for d in found]
    changes = [abs(b - a) / max(a, b, 1e-6) for a, b in zip(areas, areas[1:])]
    seen = (_majority([d.colour for d in found]), _majority([d.shape for d in found]))
    return VideoScore(prompt, seed, seen[0] == colour, seen[1] == shape, direction_ok, seen, travel,
                      sum(jitter) / len(jitter) if jitter else math.nan,
                      sum(errors) / len(errors) if errors else None, sum(changes) / max(1, len(changes)))


def summary(scores: list[VideoScore]) -> dict[str, Any]:
    def mean(values: list[float]) -> float:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    count = len(scores)
    return {
        "videos": count,
        "colour_accuracy": sum(s.colour_ok for s in scores) / count,
        "shape_accuracy": sum(s.shape_ok for s in scores) / count,
        "direction_accuracy": sum(s.direction_ok for s in scores) / count,
        "jitter_px": mean([s.jitter for s in scores]),
        "in_between_error_px": mean([s.in_between_error for s in scores]),
        "area_change": mean([s.area_change for s in scores]),
    }


def interpolation_alone(pipeline: Any, prompt: str, index: int, seed: int, fps: str, keyframes: int,
                        size: int) -> VideoScore:
    """The score of the world's own keyframes of ``prompt`` (scene ``index`` of world ``seed``) interpolated by
    ``pipeline`` at ``fps`` and decoded: what the interpolation and the decoder add, with perfect keyframes."""
    from ...releases import FPS_PASSES, KEYFRAME_FPS
    from ...runtime.sequencer import VideoRequest

    colour, shape, motion = parse_caption(prompt)
    scene = random_scene(scene_generator(seed, index), keyframes, colour, shape, motion)
    frames = render(scene, keyframe_times(keyframes), size)
    request = VideoRequest(prompt=prompt, fps=fps, seed=seed, keyframes=keyframes)
    video = pipeline.interpolate_video((frames + 1) / 2, request, source_fps=KEYFRAME_FPS).frames * 2 - 1
    return score_video(prompt, seed, video, 4 ** FPS_PASSES[fps])


def contact_sheet(videos: list[tuple[str, torch.Tensor]], path: Path, step: int, scale: int = 1) -> Path:
    """One row per video: its prompt, then its keyframes (every ``step``-th frame), frames in [-1, 1]."""
    label = 230
    rows = []
    for prompt, frames in videos:
        keys = frames[::step]
        pixels = ((keys.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        h, w = pixels.shape[1:3]
        row = Image.new("RGB", (label + len(keys) * (w * scale + 2), h * scale + 4), (24, 24, 24))
        ImageDraw.Draw(row).text((4, (h * scale) // 2 - 5), prompt, fill=(230, 230, 230))
        for i, frame in enumerate(pixels):
            image = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            row.paste(image, (label + i * (w * scale + 2), 2))
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (24, 24, 24))
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def with_keyframe_model(models: Path, keyframe: Path, scratch: Path) -> Path:
    """A models folder like ``models`` whose keyframe model is ``keyframe`` (links, nothing copied)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for entry in models.iterdir():
        link = scratch / entry.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((keyframe if entry.name == "t2v.pt" else entry).resolve())
    return scratch


def run_eval(models: Path, text_encoder: Path, out: Path, prompts: tuple[str, ...] = PROMPTS,
             seeds: tuple[int, ...] = SEEDS, fps: str = "medium", keyframes: int = 8, size: int = 64,
             temporal: dict[str, Any] | None = None, keyframe: Path | None = None) -> dict[str, Any]:
    """Generate and score every (prompt, seed); writes ``<out>/toy_eval.json`` and ``<out>/toy_eval.png``.
    ``keyframe``: another keyframe model file (a trained variant) in place of ``models/t2v.pt``."""
    from ...releases import FPS_PASSES
    from ...runtime.pipeline import VideoPipeline
    from ...runtime.sequencer import VideoRequest

    for prompt in prompts:
        parse_caption(prompt)
    if keyframe is not None:
        models = with_keyframe_model(models, keyframe, out / "models")
    pipeline = VideoPipeline.from_folder(models, text_encoder, device="cpu", temporal=temporal)
    step = 4 ** FPS_PASSES[fps]  # each interpolation pass puts 3 frames between every two
    scores, videos = [], []
    for prompt in prompts:
        for seed in seeds:
            request = VideoRequest(prompt=prompt, width=size, height=size, fps=fps, seed=seed, keyframes=keyframes)
            frames = pipeline.generate(request).frames * 2 - 1
            scores.append(score_video(prompt, seed, frames, step))
            videos.append((f"{prompt} (seed {seed})", frames))
    alone = summary([interpolation_alone(pipeline, prompt, index, seed, fps, keyframes, size)
                     for index, prompt in enumerate(prompts) for seed in seeds]) if step > 1 else {}
    result = {"summary": {**summary(scores),
                          "interpolation_alone_in_between_error_px": alone.get("in_between_error_px"),
                          "interpolation_alone_area_change": alone.get("area_change")},
              "fps": fps, "keyframes": keyframes, "size": size,
              "videos": [asdict(s) for s in scores]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_eval.json").write_text(json.dumps(result, indent=1))
    contact_sheet(videos, out / "toy_eval.png", step)
    return result

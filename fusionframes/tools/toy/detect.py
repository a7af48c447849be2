"""Reading a frame of the toy world back: which colour and shape it shows, where and how large.

A frame is black where nothing is, so each pixel's brightest channel gives how much of it the shape covers
(``(max + 1) / 2`` for a pure colour over black). From that soft mask: the area and centroid; the colour is the
nearest colour of the grammar to the mean of the covered pixels; the shape follows from how much of its bounding box
the shape fills (square 1, circle pi / 4, triangle 1 / 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .world import COLOURS

#: bounding-box fill of each shape
FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
#: a pixel counts as covered (for colour and bounding box) above this share
COVERED = 0.5
#: below this many covered pixels nothing is detected
MIN_AREA = 4.0


@dataclass(frozen=True)
class Detection:
    """What a frame shows; positions in pixels (x to the right, y down)."""

    present: bool
    colour: str | None
    shape: str | None
    centroid: tuple[float, float]
    area: float


def coverage(frame: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (H, W) share covered by a shape, in [0, 1]."""
    return ((frame.float().amax(dim=0) + 1) / 2).clamp(0, 1)


def detect(frame: torch.Tensor) -> Detection:
    """The shape in one frame (3, H, W) in [-1, 1]."""
    cover = coverage(frame)
    covered = cover > COVERED
    area = float(cover.sum())
    if int(covered.sum()) < MIN_AREA:
        return Detection(False, None, None, (math.nan, math.nan), area)
    h, w = cover.shape
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    weight = cover * (cover > 0.1)  # faint noise far from the shape must not pull the centroid
    total = float(weight.sum())
    centroid = (float((weight * xs).sum()) / total, float((weight * ys).sum()) / total)
    mean = frame.float()[:, covered].mean(dim=1)
    names = list(COLOURS)
    distances = torch.stack([(mean - torch.tensor(COLOURS[name])).norm() for name in names])
    colour = names[int(distances.argmin())]
    rows, columns = covered.any(dim=1).nonzero(), covered.any(dim=0).nonzero()
    box = float((rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1))
    fill = float(covered.sum()) / box
    shape = min(FILL, key=lambda name: abs(FILL[name] - fill))
    return Detection(True, colour, shape, centroid, area)

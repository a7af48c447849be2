"""Reading a frame of the toy world back: which colour and shape it shows, where and how large.

A frame is black where nothing is, so each pixel's brightest channel gives how much of it the shape covers
(``(max + 1) / 2`` for a pure colour over black). From that soft mask: the area and centroid; the colour is the
nearest colour of the grammar to the mean of the covered pixels. The shape, from the covered pixels (measures that
survive the blur of a decoder): a triangle (apex up) is the one whose mass is lopsided from top to bottom (vertical
skewness about -0.57, 0 for the symmetric shapes); a square reaches further from its centre than a circle of the
same area (farthest pixel / sqrt(area): 0.67 against 0.56 at this size) and fills more of its bounding box (1 against
pi / 4); both together decide between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .world import COLOURS

#: a mask whose vertical skewness is below minus this is a triangle
TRIANGLE_SKEW = 0.22
#: square against circle: reach and bounding-box fill between the two shapes' values, and how much of each counts
#: (measured on rendered frames and on frames through the trained toy MoVQ)
SQUARE_REACH, REACH_SCALE = 0.61, 0.03
SQUARE_FILL, FILL_SCALE = 0.89, 0.04
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
    mask = covered.float()
    count = float(mask.sum())
    cx, cy = float((mask * xs).sum()) / count, float((mask * ys).sum()) / count
    spread = float((mask * (ys - cy) ** 2).sum()) / count
    skew = float((mask * (ys - cy) ** 3).sum()) / count / max(spread, 1e-9) ** 1.5
    reach = float(((xs - cx) ** 2 + (ys - cy) ** 2).sqrt()[covered].max()) / math.sqrt(count)
    rows, columns = covered.any(dim=1).nonzero(), covered.any(dim=0).nonzero()
    fill = count / float((rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1))
    squareness = (reach - SQUARE_REACH) / REACH_SCALE + (fill - SQUARE_FILL) / FILL_SCALE
    shape = "triangle" if skew < -TRIANGLE_SKEW else "square" if squareness > 0 else "circle"
    return Detection(True, colour, shape, centroid, area)

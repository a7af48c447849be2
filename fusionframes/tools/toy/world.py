"""A procedural video world the tiny models can learn on this machine: one simple shape moving on a black
background, with a caption from a small grammar (``a red circle moving right``, optionally ``... on a black
background``).

Scenes are drawn from a seed and rendered at any time, so one scene gives keyframes and the frames between them
exactly (interpolation targets lie on the same path). Time is counted in keyframe intervals: a clip of ``K``
keyframes spans ``t = 0 .. K - 1``, and the in-between frames of the interpolation stage sit at quarter steps. Shapes
are drawn with 4x supersampling (soft edges, sub-pixel positions), colours are pure RGB in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: the colours of the grammar, RGB in [-1, 1]
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "white": (1.0, 1.0, 1.0),
}
SHAPES = ("circle", "square", "triangle")
#: direction of each motion in image coordinates (x to the right, y down)
MOTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0),
    "moving right": (1, 0),
    "moving up": (0, -1),
    "moving down": (0, 1),
}
BACKGROUND = (-1.0, -1.0, -1.0)
BACKGROUND_PHRASE = " on a black background"
SUPERSAMPLE = 4
#: the shape's radius (half the side of a square), as a share of the frame side
RADIUS = (0.11, 0.16)
#: how far the shape travels along its motion over the whole clip, as a share of the frame side
TRAVEL = (0.18, 0.26)
#: the gap kept between the shape's edge and the frame's edge along the whole path, as a share of the frame side
EDGE_GAP = 0.02


@dataclass(frozen=True)
class Scene:
    """One clip of the world: what moves where. Positions and sizes are shares of the frame side."""

    colour: str
    shape: str
    motion: str
    start: tuple[float, float]
    radius: float
    travel: float
    duration: float  # keyframe intervals the travel takes (keyframes - 1)
    background_phrase: bool = False

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion, self.background_phrase)

    def centre(self, t: float) -> tuple[float, float]:
        """The shape's centre at time ``t`` (keyframe intervals), as shares of the frame side."""
        dx, dy = MOTIONS[self.motion]
        progress = self.travel * t / max(self.duration, 1e-9)
        return self.start[0] + dx * progress, self.start[1] + dy * progress


def caption(colour: str, shape: str, motion: str, background_phrase: bool = False) -> str:
    """The grammar: ``a <colour> <shape> <motion>``, optionally followed by the background phrase."""
    return f"a {colour} {shape} {motion}" + (BACKGROUND_PHRASE if background_phrase else "")


def all_captions() -> list[str]:
    """Every caption of the grammar, sorted."""
    return sorted(caption(colour, shape, motion, phrase)
                  for colour in COLOURS for shape in SHAPES for motion in MOTIONS for phrase in (False, True))


def parse_caption(text: str) -> tuple[str, str, str]:
    """(colour, shape, motion) of a caption of the grammar, or an error listing its words."""
    words = text.removesuffix(BACKGROUND_PHRASE).split(" ", 3)
    if len(words) != 4 or words[0] != "a" or words[1] not in COLOURS or words[2] not in SHAPES or \
            words[3] not in MOTIONS:
        raise ValueError(f"{text!r} is not a prompt of the toy grammar ('a <colour> <shape> <motion>': colours "
                         f"{', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; motions {', '.join(MOTIONS)}).")
    return words[1], words[2], words[3]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _choice(generator: torch.Generator, options: Sequence[str]) -> str:
    return options[int(torch.randint(len(options), (), generator=generator))]


def random_scene(generator: torch.Generator, keyframes: int, colour: str | None = None, shape: str | None = None,
                 motion: str | None = None) -> Scene:
    """A scene whose path stays inside the frame (with a margin) for ``keyframes`` keyframes; the words not given
    are drawn."""
    colour = colour or _choice(generator, list(COLOURS))
    shape = shape or _choice(generator, SHAPES)
    motion = motion or _choice(generator, list(MOTIONS))
    radius = _uniform(generator, *RADIUS)
    travel = _uniform(generator, *TRAVEL)
    # Both coordinates of the start come from one centred range that leaves room for the travel either way, so the
    # first frame says nothing about the direction: only the caption does (a model shown right-movers starting on the
    # left learns "move towards the centre" and ignores the words).
    low, high = radius + EDGE_GAP + travel, 1 - radius - EDGE_GAP - travel
    start = (_uniform(generator, low, high), _uniform(generator, low, high))
    phrase = bool(torch.rand((), generator=generator) < 0.25)
    return Scene(colour, shape, motion, start, radius, travel, float(keyframes - 1), phrase)


def _coverage(scene: Scene, t: float, size: int) -> torch.Tensor:
    """(size, size) share of each pixel the shape covers at time ``t`` (supersampled)."""
    fine = size * SUPERSAMPLE
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    cx, cy = scene.centre(t)
    r = scene.radius
    if scene.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif scene.shape == "square":
        inside = ((x - cx).abs() <= r) & ((y - cy).abs() <= r)
    else:  # an upright equilateral triangle with its centroid at the centre, as wide as the square
        height = r * math.sqrt(3)
        top, bottom = cy - 2 * height / 3, cy + height / 3
        half_width = (y - top) / height * r
        inside = (y >= top) & (y <= bottom) & ((x - cx).abs() <= half_width)
    return inside.float().reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(dim=(1, 3))


def render(scene: Scene, times: Sequence[float], size: int = 64) -> torch.Tensor:
    """The frames of ``scene`` at ``times`` (keyframe intervals): (T, 3, size, size) in [-1, 1]."""
    colour = torch.tensor(COLOURS[scene.colour])[:, None, None]
    background = torch.tensor(BACKGROUND)[:, None, None]
    frames = []
    for t in times:
        cover = _coverage(scene, float(t), size)[None]
        frames.append(background * (1 - cover) + colour * cover)
    return torch.stack(frames)


def scene_generator(seed: int, index: int) -> torch.Generator:
    """The generator of scene ``index`` of the world ``seed``: each scene depends on (seed, index) alone."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % 2**63)


def keyframe_times(keyframes: int) -> list[float]:
    return [float(k) for k in range(keyframes)]


def interpolated_times(keyframes: int, between: int = 3) -> list[float]:
    """All frames of the interpolated video: the keyframes and ``between`` frames evenly between each pair."""
    step = 1.0 / (between + 1)
    return [k + j * step for k in range(keyframes - 1) for j in range(between + 1)] + [float(keyframes - 1)]

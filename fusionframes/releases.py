"""The official numbers of each release, in one table.

Everything the official pipelines fix by hand (file names, keyframe counts, steps per stage, guidance defaults, skip
frames, motion scores, frame rates) lives here and nowhere else; the sequencer, the samplers, the command line, the
nodes and the tooling read it. Ids in brackets point at ``docs/official_behaviour.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import InputError

RELEASES = ("1.0", "1.1")
MODEL_KINDS = ("keyframe", "interpolation", "movq", "video_movq")
#: the sampling stages; 1.0 has no separate first frame
SAMPLING_STAGES = ("first_frame", "keyframes", "interpolation")

#: MoVQ's spatial downsampling: a 512x512 frame is a 4x64x64 latent
LATENT_SCALE = 8
#: the paper's keyframe rate; every interpolation pass puts 3 frames between two, i.e. 4x the rate [OB-48]
KEYFRAME_FPS = 2.0
FPS_GAIN_PER_PASS = 4
#: the official ``fps`` argument: how many interpolation passes it asks for
FPS_PASSES = MappingProxyType({"low": 0, "medium": 1, "high": 2})
#: ``skip_frames`` told to the interpolation U-Net in its first and second pass [OB-48]
SKIP_FRAMES = MappingProxyType({1: 3, 2: 1})
#: 1.1's motion presets; the official default name 'normal' is not among them and falls back to 'medium' [OB-49]
MOTION_SCORES = MappingProxyType({"low": 1, "medium": 10, "high": 50, "extreme": 100})
#: 1.0 frame positions are spread over this many source frames (0, 12, ..., 168 for 15 keyframes) [OB-1]
VIDEO_LENGTH_10 = 180
#: 1.0's dynamic thresholding quantile [OB-25]
DYNAMIC_PERCENTILE = 0.98
#: 1.1's noise augmentation is a timestep of the 1000-step training schedule
NOISE_AUGMENTATION_RANGE = (0, 999)
#: the token limit of both releases' prompts [OB-51]
TOKENS_LENGTH = 128


@dataclass(frozen=True)
class Release:
    """One release's official pipeline: its files, stage lengths and the defaults of its ``__call__``."""

    name: str
    #: official file per role (the 1.0 keyframe file also holds the text projections)
    files: Mapping[str, str]
    keyframes: int
    #: model calls per sampling stage of the official sampler
    steps: Mapping[str, int]
    #: what each stage's network predicts
    predictions: Mapping[str, str]
    #: weight of the prompt: 1.0's classifier-free guidance scale, 1.1's ``guidance_weight_prompt``
    guidance: float
    interpolation_guidance: float
    #: 1.1 only: ``key_frame_guidance_scale`` (the generated first frame), ``guidance_weight_image``
    first_frame_guidance: float | None = None
    image_guidance: float | None = None
    motion: str | None = None
    noise_augmentation: int | None = None
    #: does the official pipeline use a negative prompt (1.1 ignores it) [OB-10, OB-43]
    negative_prompt: bool = False
    #: the decoder of the final frames
    decoder: str = "movq"

    @property
    def image_to_video(self) -> bool:
        return self.image_guidance is not None

    def stage_steps(self, stage: str) -> int:
        if stage not in self.steps:
            raise InputError(f"release {self.name} has no {stage!r} stage; it has {', '.join(self.steps)}.")
        return self.steps[stage]


def _frozen(**items):
    return MappingProxyType(dict(items))


OFFICIAL: Mapping[str, Release] = MappingProxyType({
    "1.0": Release(
        name="1.0",
        files=_frozen(keyframe="kandinsky_video.pt", interpolation="kandinsky_video_interpolation.pt",
                      movq="movq.pt", projections="kandinsky_video.pt"),
        keyframes=15,
        steps=_frozen(keyframes=50, interpolation=50),
        predictions=_frozen(keyframes="eps", interpolation="v"),
        guidance=5.0,
        interpolation_guidance=0.25,
        negative_prompt=True,
    ),
    "1.1": Release(
        name="1.1",
        files=_frozen(keyframe="t2v.pt", interpolation="interpolation.pt", movq="movq.pt",
                      video_movq="video_movq.pt", projections="t5_projections.pt"),
        keyframes=12,
        steps=_frozen(first_frame=50, keyframes=50, interpolation=10),
        predictions=_frozen(first_frame="eps", keyframes="eps", interpolation="v"),
        guidance=5.0,
        interpolation_guidance=0.5,
        first_frame_guidance=5.0,
        image_guidance=2.0,
        motion="medium",
        noise_augmentation=20,
        decoder="video_movq",
    ),
})


def release(name: str) -> Release:
    """The official table of ``name`` ("1.0" or "1.1"), or a clear error."""
    try:
        return OFFICIAL[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown release {name!r}; expected one of {', '.join(RELEASES)}.") from None


def official_steps(name: str, stage: str) -> int:
    return release(name).stage_steps(stage)


def fps_for(passes: int, base_fps: float = KEYFRAME_FPS) -> float:
    """Playback rate after ``passes`` interpolation passes (keyframes 2 fps -> 8 -> 32 fps)."""
    return base_fps * FPS_GAIN_PER_PASS ** passes


def skip_frames(pass_number: int) -> int:
    """The official ``skip_frames`` of interpolation pass ``pass_number`` (1 or 2; later passes reuse 2's)."""
    return SKIP_FRAMES[min(max(pass_number, 1), 2)]

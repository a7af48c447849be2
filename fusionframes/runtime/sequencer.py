"""The order of a run, defined once: which stages a release runs, the model each needs, its settings and its noise.

The command line and library (:mod:`.pipeline`), the ComfyUI nodes and the benchmark all run their stages through
a :class:`Sequencer`, so the same request and seed give the same tensors whichever of them runs it, and however a
node graph cuts the run into pieces. Settings left at None take the release's official value (``releases.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace

import torch
from PIL import Image
from torch import nn

from ..errors import InputError
from ..io.video import VideoStream
from ..models.movq.decoding import Tiles
from ..models.text.condition import TextCondition
from ..models.unet.step_cache import step_cache
from ..releases import FPS_PASSES, LATENT_SCALE, MOTION_SCORES, Release, release, skip_frames
from ..sampling.fast import SAMPLERS, make_schedule
from ..sampling.guidance import BRANCHES
from ..sampling.loop import OnStep
from ..sampling.noise import NoiseSource, SeededNoise
from . import preflight, stages
from .distributed import ONE_PROCESS, BranchParallel, Ranks

#: the request's settings whose None means "the release's official value" (the same names in ``releases.Release``;
#: a release without one, e.g. 1.0's motion, keeps None)
OFFICIAL_SETTINGS = ("guidance", "first_frame_guidance", "image_guidance", "interpolation_guidance", "motion",
                     "noise_augmentation")


@dataclass
class VideoRequest:
    """What to generate, under one set of names for the command line, the library and the nodes.

    ``guidance`` is the prompt's weight: 1.0's classifier-free guidance scale, 1.1's prompt weight.
    ``first_frame_guidance`` (1.1 text-to-video), ``image_guidance``, ``motion`` and ``noise_augmentation`` are 1.1's
    other weights. Every None takes the release's official value."""

    prompt: str = ""
    negative_prompt: str | None = None
    image: Image.Image | None = None
    last_image: Image.Image | None = None  # 1.1: the frame the keyframes end on (not an official feature)
    width: int | None = 512  # None: not needed (interpolating given latents)
    height: int | None = 512
    fps: str = "low"
    seed: int = 0
    steps: int | None = None  # None: the official count of each stage (1.0: 50; 1.1: 50 / 50 / 10)
    sampler: str = "official"  # or a faster option: "ddim", "dpmpp_2m" (never the default)
    guidance: float | None = None
    first_frame_guidance: float | None = None
    image_guidance: float | None = None
    interpolation_guidance: float | None = None
    motion: str | None = None
    noise_augmentation: int | None = None
    keyframes: int | None = None
    tile_size: int = 0  # decode in spatial tiles of this many pixels (0: whole frames)
    tile_overlap: int = 32
    step_cache: int = 0  # reuse the U-Nets' deep features for this many steps (0: off, official)

    def tiles(self) -> Tiles | None:
        return Tiles.from_pixels(self.tile_size, self.tile_overlap, LATENT_SCALE)

    @property
    def passes(self) -> int:
        return FPS_PASSES[self.fps]

    def resolved(self, release_name: str) -> VideoRequest:
        """A checked copy with every None replaced by the official value of ``release_name``."""
        official = release(release_name)
        if self.width is not None or self.height is not None:
            stages.check_size(self.width, self.height)
        self.tiles()
        if self.fps not in FPS_PASSES:
            raise InputError(f"fps must be one of {', '.join(FPS_PASSES)}, got {self.fps!r}.")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise InputError(f"steps must be a whole number of at least 1 (or None: official), got {self.steps!r}.")
        if self.image is not None and not official.image_to_video:
            raise InputError("image-to-video needs the 1.1 models; 1.0 generates from text only.")
        if self.last_image is not None and not official.image_to_video:
            raise InputError("a last frame needs the 1.1 models (their keyframes are conditioned on frames); 1.0 "
                             "generates from text only.")
        if isinstance(self.step_cache, bool) or not isinstance(self.step_cache, int) or self.step_cache < 0:
            raise InputError(f"step_cache must be a whole number >= 0 (0: off), got {self.step_cache!r}.")
        if not isinstance(self.prompt, str):
            raise InputError(f"the prompt must be text, got {type(self.prompt).__name__}.")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise InputError(f"the negative prompt must be text, got {type(self.negative_prompt).__name__}.")
        settled = replace(self, **{name: getattr(official, name) for name in OFFICIAL_SETTINGS
                                   if getattr(self, name) is None})
        if settled.keyframes is not None:  # None: the model's own count (1.0's config), else the official one
            # 1.1's first keyframe is the key frame itself; a one-keyframe 1.0 video is one image
            stages.check_frames(settled.keyframes, 2 if official.image_to_video else 1, "the number of keyframes")
        _check_weights(settled, official)
        return settled


def _check_weights(request: VideoRequest, official: Release) -> None:
    names = ("guidance", "first_frame_guidance", "image_guidance", "interpolation_guidance")
    stages.check_guidance(**{name: getattr(request, name) for name in names if getattr(request, name) is not None})
    if official.image_to_video and request.motion not in MOTION_SCORES:
        raise InputError(f"motion must be one of {', '.join(MOTION_SCORES)}, got {request.motion!r}.")


def negative_prompt(release_name: str, text: str | None) -> str | None:
    """The negative prompt a release encodes [OB-43]: 1.1 none (officially ignored); 1.0 the text, where an absent or
    empty one means none (the null context, the official default)."""
    if not release(release_name).negative_prompt or text is None or text == "":
        return None
    return text


@dataclass(frozen=True)
class Stage:
    """One step of a run: its role (also its noise stream), the model kind it runs on and, for a sampling stage, the
    name of its schedule."""

    role: str
    model: str
    sampling: str | None = None
    pass_number: int = 0


def plan(release_name: str, *, passes: int = 0, image: bool = False, keyframes: bool = True, done: int = 0,
         decode: bool = True) -> list[Stage]:
    """The stages of a run: keyframes (1.1: first frame, its re-encoding, keyframes), ``passes`` interpolation passes
    after ``done`` earlier ones, and the decoder."""
    official = release(release_name)
    out: list[Stage] = []
    if keyframes:
        if official.image_to_video:
            if not image:
                out.append(Stage("first_frame", "keyframe", "first_frame"))
            out.append(Stage("key_frame", "movq"))
        out.append(Stage("keyframes", "keyframe", "keyframes"))
    for number in range(done + 1, done + passes + 1):
        out.append(Stage(f"interpolation{number}", "interpolation", "interpolation", number))
    if decode:
        out.append(Stage("decode", official.decoder))
    return out


#: how a stage gets its network: ``models(kind)`` is a context in which the model of ``kind`` is ready on its device
ModelAccess = Callable[[str], AbstractContextManager[nn.Module]]
#: ``report(stage, total_steps)``: the sampler callback of a stage (None: no progress)
StepReport = Callable[[Stage, int], OnStep | None]


class Sequencer:
    """Runs the stages of one release for one (resolved) request, with its noise and its models."""

    def __init__(self, release_name: str, request: VideoRequest, models: ModelAccess, *,
                 noise: NoiseSource | None = None, report: StepReport | None = None,
                 ranks: Ranks = ONE_PROCESS) -> None:
        self.release = release(release_name)
        self.request = request.resolved(release_name)
        self.models = models
        self.noise = noise if noise is not None else SeededNoise(self.request.seed)
        self.report = report
        self.ranks = ranks  # several processes: decoded clips (and, if asked, guidance branches) shared out

    @contextmanager
    def _network(self, kind: str, sampling: str) -> Iterator[nn.Module]:
        """The model of ``kind`` for one sampling run, with the request's step cache; over several ranks with split
        guidance, its guidance branches on different ranks (every rank draws the same seeded noise and gets every
        branch's output)."""
        if self.ranks.world > 1 and self.ranks.guidance and self.request.step_cache > 1:
            raise InputError("the step cache and split guidance branches cannot be combined (a rank computing two "
                             "branches would reuse one branch's features for the other).")
        with self.models(kind) as network, step_cache(network, self.request.step_cache):
            if self.ranks.world == 1 or not self.ranks.guidance:
                yield network
            else:
                yield BranchParallel(network, self.ranks, BRANCHES[(self.release.name, sampling)])

    def plan(self, *, keyframes: bool = True, passes: int | None = None, done: int = 0,
             decode: bool = True) -> list[Stage]:
        return plan(self.release.name, passes=self.request.passes if passes is None else passes,
                    image=self.request.image is not None, keyframes=keyframes, done=done, decode=decode)

    def steps(self, stage: Stage) -> int:
        """Model calls of ``stage`` (0 for the stages that do not sample); also checks the sampler settings."""
        if stage.sampling is None:
            return 0
        return len(make_schedule(self.release.name, stage.sampling, self.request.sampler,
                                 self._steps(stage)).timesteps)

    def _steps(self, stage: Stage) -> int | None:
        # the official 1.0 sampler takes any count; 1.1's official samplers have fixed lengths (None)
        if self.release.name == "1.0":
            return self.request.steps or self.release.stage_steps(stage.sampling)
        return self.request.steps

    def _on_step(self, stage: Stage) -> OnStep | None:
        return None if self.report is None else self.report(stage, self.steps(stage))

    # -- the stages ----------------------------------------------------------------------------------------------

    def first_frame(self, text: TextCondition) -> torch.Tensor:
        """1.1: the first frame in image mode, at twice the video's resolution."""
        stage, r = Stage("first_frame", "keyframe", "first_frame"), self.request
        with self._network("keyframe", "first_frame") as unet:
            # the keyframes that follow use the same model: refuse before the first frame if they cannot fit
            stages.check_size(r.width, r.height)
            count = stages.check_frames(r.keyframes or self.release.keyframes, 2, "the number of 1.1 keyframes")
            preflight.check([stages.first_frame_need(unet, r.width, r.height),
                             stages.keyframes_11_need(unet, count, r.width, r.height)])
            return stages.sample_first_frame_11(unet, text, r.height, r.width, self.noise,
                                                guidance_scale=r.first_frame_guidance, on_step=self._on_step(stage),
                                                sampler=r.sampler, steps=self._steps(stage))

    def key_frame(self, first_frame: torch.Tensor | None = None) -> torch.Tensor:
        """1.1: the key-frame latent (4, h, w): the request's image, or the generated first frame, through MoVQ."""
        r = self.request
        with self.models("movq") as movq:
            if r.image is not None:
                return stages.encode_image(movq, r.image, r.width, r.height)
            if first_frame is None:
                raise InputError("text-to-video needs the generated first frame to make the key frame.")
            return stages.first_frame_to_key_frame(movq, first_frame, r.width, r.height)

    def last_frame(self, width: int | None = None, height: int | None = None) -> torch.Tensor | None:
        """1.1: the latent of the request's last image (fitted to the video's size as the first image is), or
        None without one."""
        r = self.request
        if r.last_image is None:
            return None
        with self.models("movq") as movq:
            return stages.encode_image(movq, r.last_image, width or r.width, height or r.height)

    def keyframes(self, text: TextCondition, key_frame: torch.Tensor | None = None,
                  last_frame: torch.Tensor | None = None) -> torch.Tensor:
        """The keyframe latents (N, 4, h, w): 1.0 from the text; 1.1 from the text and the key frame."""
        stage, r = Stage("keyframes", "keyframe", "keyframes"), self.request
        with self._network("keyframe", "keyframes") as unet:
            if self.release.name == "1.0":
                return stages.sample_keyframes_10(unet, text, r.height, r.width, self.noise, steps=self._steps(stage),
                                                  guidance_scale=r.guidance, num_frames=r.keyframes,
                                                  on_step=self._on_step(stage), sampler=r.sampler)
            if key_frame is None:
                raise InputError("1.1 keyframes need the key frame (from an image or a generated first frame).")
            return stages.sample_keyframes_11(
                unet, text, key_frame, self.noise, num_frames=r.keyframes or self.release.keyframes,
                guidance_text=r.guidance, guidance_image=r.image_guidance, noise_augmentation=r.noise_augmentation,
                motion_score=MOTION_SCORES[r.motion], on_step=self._on_step(stage), sampler=r.sampler,
                steps=self._steps(stage), last_frame=last_frame)

    def all_keyframes(self, text: TextCondition, end: bool = True) -> torch.Tensor:
        """Every keyframe stage of the release, in order; ``end``: ending on the request's last image, if any."""
        if self.release.name == "1.0":
            return self.keyframes(text)
        first = None if self.request.image is not None else self.first_frame(text)
        key_frame = self.key_frame(first)
        return self.keyframes(text, key_frame, self.last_frame() if end else None)

    def interpolation(self, text: TextCondition | None, video: torch.Tensor, pass_number: int) -> torch.Tensor:
        """Interpolation pass ``pass_number`` (1, 2, ...): the groups of 3 new frames (N-1, 12, h, w)."""
        stage, r = Stage(f"interpolation{pass_number}", "interpolation", "interpolation", pass_number), self.request
        common = dict(guidance_scale=r.interpolation_guidance, skip_frames=skip_frames(pass_number), phase=stage.role,
                      on_step=self._on_step(stage), sampler=r.sampler)
        with self._network("interpolation", "interpolation") as unet:
            if self.release.name == "1.0":
                return stages.interpolate_10(unet, video, self.noise, steps=self._steps(stage), **common)
            if text is None:
                raise InputError("the 1.1 interpolation model is text-conditioned: give it the prompt.")
            return stages.interpolate_11(unet, text, video, self.noise, steps=self._steps(stage), **common)

    def interpolate(self, text: TextCondition | None, video: torch.Tensor, passes: int | None = None,
                    done: int = 0) -> torch.Tensor:
        """``passes`` (default: the request's fps) interpolation passes after ``done`` earlier ones: N -> 4N-3 each."""
        passes = self.request.passes if passes is None else passes
        for number in range(done + 1, done + passes + 1):
            groups = self.interpolation(text, video, number)
            video = stages.interleave(video.to(groups.device), groups).cpu()
        return video

    def decode(self, video: torch.Tensor, progress: Callable[[int, int], None] | None = None,
               decoder: str | None = None) -> torch.Tensor:
        """Frames (N, 3, H, W) in [0, 1] on the CPU, decoded by the release's decoder in its official clips."""
        with self.models(decoder or self.release.decoder) as movq:
            return stages.decode_frames(movq, video, tiles=self.request.tiles(), progress=progress, ranks=self.ranks)

    def decode_to(self, video: torch.Tensor, stream: VideoStream,
                  progress: Callable[[int, int], None] | None = None) -> int:
        """:meth:`decode` into a video file, one clip at a time (bounded memory); returns the frames written."""
        with self.models(self.release.decoder) as movq:
            return stages.decode_to_stream(movq, video, stream, tiles=self.request.tiles(), progress=progress,
                                           ranks=self.ranks)

    def latents(self, text: TextCondition) -> torch.Tensor:
        """Keyframes and every interpolation pass of the request: the latent video."""
        return self.interpolate(text, self.all_keyframes(text))

    # -- long videos: one segment per prompt ---------------------------------------------------------------------

    def continue_segments(self, keyframes: torch.Tensor, segments: list[int], texts: list[TextCondition],
                          count: int, last_frame: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int]]:
        """``count`` more segments of keyframes after ``keyframes``, and the segment of every frame.

        ``segments`` says which segment (prompt line, from 0) each given frame belongs to; -1 marks frames from
        elsewhere (a video continued from its frames). The new segments take the next lines of ``texts`` (one
        prompt per segment of the whole video, or a single prompt for all: :func:`segment_prompts`). Each is
        conditioned on the previous last keyframe, as image-to-video is on its image, draws its own noise, and
        drops its first keyframe, which re-generates that shared frame: the shared frame appears once.
        ``last_frame``: the latent the last new segment ends on."""
        check_segments(keyframes, segments)
        if self.release.name != "1.1":
            raise InputError("continuing a video needs release 1.1: its keyframes continue from a given frame "
                             "(1.0's cannot).")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"the number of segments to add must be at least 1, got {count!r}.")
        first = max(segments) + 1
        lines = segment_prompts(texts, first + count)
        r = self.request
        for segment in range(first, first + count):
            stage = segment_stage(segment)
            with self._network("keyframe", "keyframes") as unet:
                more = stages.sample_keyframes_11(
                    unet, lines[segment], keyframes[-1], self.noise, num_frames=r.keyframes or self.release.keyframes,
                    guidance_text=r.guidance, guidance_image=r.image_guidance,
                    noise_augmentation=r.noise_augmentation, motion_score=MOTION_SCORES[r.motion],
                    on_step=self._on_step(stage), sampler=r.sampler, steps=self._steps(stage), phase=stage.role,
                    last_frame=last_frame if segment == first + count - 1 else None)
            keyframes = torch.cat([keyframes, more[1:].to(keyframes.device)])
            segments = [*segments, *[segment] * (more.shape[0] - 1)]
        return keyframes, segments

    def segment_keyframes(self, texts: list[TextCondition]) -> tuple[torch.Tensor, list[int]]:
        """The keyframes of ``len(texts)`` segments (more than one: 1.1), and the segment (0, 1, ...) of each.
        Segment 1 is the request's keyframes exactly; the others follow by :meth:`continue_segments`; the request's
        last image ends the last segment."""
        if self.release.name != "1.1" and len(texts) > 1:
            raise InputError("long videos with a prompt per segment need release 1.1: its keyframes continue from a "
                             "given frame (1.0's cannot).")
        if not texts:
            raise InputError("a long video needs at least one segment (one prompt per segment).")
        keyframes = self.all_keyframes(texts[0], end=len(texts) == 1)
        segments = [0] * keyframes.shape[0]
        if len(texts) == 1:
            return keyframes, segments
        height, width = (LATENT_SCALE * side for side in keyframes.shape[-2:])
        return self.continue_segments(keyframes, segments, texts, len(texts) - 1, self.last_frame(width, height))

    def interpolate_segments(self, texts: list[TextCondition], video: torch.Tensor, segments: list[int],
                             passes: int | None = None, done: int = 0) -> tuple[torch.Tensor, list[int]]:
        """:meth:`interpolate` for a video of segments: each pair of frames is interpolated with the prompt of the
        segment its second frame belongs to (a single prompt: that one for all). Returns the frames and their
        segments (the new frames belong to the segment of the pair)."""
        check_segments(video, segments)
        passes = self.request.passes if passes is None else passes
        if self.release.name == "1.0":
            return self.interpolate(None, video, passes, done), expand_segments(segments, passes)
        lines = segment_prompts(texts, max(segments) + 1)
        for number in range(done + 1, done + passes + 1):
            pairs = segments[1:]
            if min(pairs) < 0:
                raise InputError("frames after the first of this video belong to no segment (they came from "
                                 "elsewhere): interpolate the continued part alone, from the shared frame on.")
            text = lines[pairs[0]] if len(set(pairs)) == 1 else TextCondition.stack([lines[o] for o in pairs])
            groups = self.interpolation(text, video, number)
            video = stages.interleave(video.to(groups.device), groups).cpu()
            segments = expand_segments(segments, 1)
        return video, segments

    def segment_latents(self, texts: list[TextCondition], loop: bool = False) -> tuple[torch.Tensor, list[int]]:
        """The latent video of a long request (:meth:`segment_keyframes`, then the request's interpolation passes over
        the whole sequence, so segment borders are interpolated like every other pair), and each frame's segment.

        ``loop``: closed by :func:`close_loop` before the interpolation and opened again after it: played in a loop,
        the last frame flows into the first."""
        video, segments = self.segment_keyframes(texts)
        if loop:
            if self.request.passes < 1:
                raise InputError("a loop is closed by interpolating from the last keyframe back to the first: ask "
                                 "for fps 'medium' or 'high'.")
            video, segments = close_loop(video, segments)
        video, segments = self.interpolate_segments(texts, video, segments)
        return open_loop(video, segments) if loop else (video, segments)


def segment_stage(segment: int) -> Stage:
    """The keyframe stage of segment ``segment`` (from 0) of a long video; its role names its noise stream."""
    return Stage("keyframes" if segment == 0 else f"keyframes{segment + 1}", "keyframe", "keyframes")


def segment_prompts(texts: list[TextCondition], segments: int) -> list[TextCondition]:
    """The prompt of each of ``segments`` segments: one line per segment, or one prompt for all. Any other count is
    an error rather than a guess (a missing line would repeat a prompt, a surplus one would be dropped silently)."""
    if not texts:
        raise InputError("give at least one prompt.")
    if len(texts) == 1:
        return list(texts) * segments
    if len(texts) != segments:
        raise InputError(f"{len(texts)} prompts for a video of {segments} segments: give one prompt per segment (line "
                         "k for segment k, counted from the video's first), or a single prompt for all of them.")
    return list(texts)


def check_segments(video: torch.Tensor, segments: list[int]) -> None:
    if video.dim() != 4 or video.shape[0] < 1:
        raise InputError(f"expected latent frames (N, 4, h, w), got {tuple(video.shape)}.")
    if len(segments) != video.shape[0]:
        raise InputError(f"the video has {video.shape[0]} frames but segments for {len(segments)}.")


def expand_segments(segments: list[int], passes: int) -> list[int]:
    """The segments of the frames after ``passes`` interpolation passes (3 new frames per pair, of the pair's
    segment: the segment of its second frame)."""
    for _ in range(passes):
        segments = [segments[0], *[s for s in segments[1:] for _ in range(4)]]
    return segments


def close_loop(video: torch.Tensor, segments: list[int]) -> tuple[torch.Tensor, list[int]]:
    """A loop to interpolate: the first frame again after the last, so interpolation fills the way back (with the
    last segment's prompt). :func:`open_loop` drops that copy after the interpolation."""
    check_segments(video, segments)
    if video.shape[0] < 2:
        raise InputError("a loop needs at least 2 keyframes.")
    return torch.cat([video, video[:1]]), [*segments, segments[-1]]


def open_loop(video: torch.Tensor, segments: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Drops the copy of the first frame that :func:`close_loop` appended."""
    return video[:-1], segments[:-1]

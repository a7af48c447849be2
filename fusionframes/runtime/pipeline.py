"""The whole text-to-video pipeline of either release, outside ComfyUI (command line, library use, tests).

Models are loaded from a release folder holding the official file names. Each stage runs on its device (one for all,
or a :class:`~.placement.Placement` that splits them across GPUs) and, with ``offload``, goes back to the
CPU when its stage is done, so only one large model occupies a GPU at a time. The text encoder runs once per video
and always leaves the GPU afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import CheckpointError, InputError
from ..io.checkpoints import LoadedModel, load_model
from ..models.configs import load_release_config, official_config
from ..models.movq.model import Tiles
from ..models.text.encoder import TextEncoder, official_t5_dtype
from ..sampling.guidance import TextCondition
from ..sampling.noise import NoiseSource, SeededNoise
from . import stages
from .layout import prefers_channels_last, use_channels_last
from .out_of_memory import release_cached_memory
from .placement import Placement

#: official file names per release: (keyframe, interpolation, image MoVQ, temporal MoVQ, text projections)
RELEASE_FILES = {
    "1.0": {"keyframe": "kandinsky_video.pt", "interpolation": "kandinsky_video_interpolation.pt",
            "movq": "movq.pt", "projections": "kandinsky_video.pt"},
    "1.1": {"keyframe": "t2v.pt", "interpolation": "interpolation.pt", "movq": "movq.pt",
            "video_movq": "video_movq.pt", "projections": "t5_projections.pt"},
}
FPS_PASSES = {"low": 0, "medium": 1, "high": 2}
DEFAULT_INTERPOLATION_GUIDANCE = {"1.0": 0.25, "1.1": 0.5}

#: progress(stage, step, total)
Progress = Callable[[str, int, int], None]


@dataclass
class VideoRequest:
    """What to generate. Defaults are the official ``__call__`` defaults (B-27)."""

    prompt: str
    negative_prompt: str | None = None
    image: Image.Image | None = None
    width: int = 512
    height: int = 512
    fps: str = "low"
    seed: int = 0
    steps: int | None = None  # None: the official count of each stage (1.0: 50; 1.1: 50 / 50 / 10)
    sampler: str = "official"  # or a faster option: "ddim", "dpmpp_2m" (never the default)
    guidance_scale: float = 5.0
    guidance_prompt: float = 5.0
    guidance_image: float = 2.0
    interpolation_guidance: float | None = None
    motion: str = "medium"
    noise_augmentation: int = 20
    num_keyframes: int | None = None
    tile_size: int = 0  # decode in spatial tiles of this many pixels (0: whole frames)
    tile_overlap: int = 32

    def tiles(self) -> Tiles | None:
        return Tiles.from_pixels(self.tile_size, self.tile_overlap, stages.LATENT_SCALE)

    def validate(self, release: str) -> None:
        stages.check_size(self.width, self.height)
        self.tiles()
        if self.fps not in FPS_PASSES:
            raise InputError(f"fps must be one of {', '.join(FPS_PASSES)}, got {self.fps!r}.")
        if self.motion not in stages.MOTION_SCORES:
            raise InputError(f"motion must be one of {', '.join(stages.MOTION_SCORES)}, got {self.motion!r}.")
        if self.image is not None and release != "1.1":
            raise InputError("image-to-video needs the 1.1 models; 1.0 generates from text only.")
        if self.num_keyframes is not None and self.num_keyframes < 2:
            raise InputError(f"at least 2 keyframes are needed, got {self.num_keyframes}.")


@dataclass
class VideoResult:
    frames: torch.Tensor  # (N, 3, H, W) float in [0, 1], CPU
    fps: float
    latents: torch.Tensor  # (N, 4, h, w)


def detect_release(folder: Path) -> str:
    for release in ("1.1", "1.0"):
        if (folder / RELEASE_FILES[release]["keyframe"]).is_file():
            return release
    raise CheckpointError(
        f"no Kandinsky Video models in {folder}: expected t2v.pt (1.1) or kandinsky_video.pt (1.0) there."
    )


class VideoPipeline:
    """All models of one release plus the text encoder."""

    def __init__(self, release: str, models: dict[str, LoadedModel], text: TextEncoder,
                 placement: Placement | torch.device | str, offload: bool = False) -> None:
        self.release = release
        self.models = models
        self.text = text
        self.placement = placement if isinstance(placement, Placement) else Placement.parse(None, placement)
        self.offload = offload

    @property
    def device(self) -> torch.device:
        return self.placement.default

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        text_encoder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        offload: bool = False,
        movq_dtype: torch.dtype | None = None,
        placement: str | Placement | None = None,
        text_dtype: torch.dtype | None = None,
        text_fp8: bool = False,
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> VideoPipeline:
        """``dtype``: the U-Nets' weights (None = float32); ``movq_dtype``: the MoVQs' (None = float32, official);
        ``placement``: per-role devices (``"text=cpu,interpolation=cuda:1"``, the rest on ``device``); ``text_dtype``:
        the T5's compute dtype (None = the official one); ``text_fp8``: the T5's linear weights stored in float8;
        ``channels_last``: U-Net and MoVQ convolutions in NHWC (None: on CUDA, the fast layout there);
        ``compile``: ``torch.compile`` the U-Nets (each new shape compiles once, at its first step).

        Everything is checked and loaded before the pipeline exists, so a failure leaves nothing loaded."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"models folder not found: {folder}")
        placement = placement if isinstance(placement, Placement) else Placement.parse(placement, device)
        release = detect_release(folder)
        files = RELEASE_FILES[release]
        models = {}
        for kind in ("keyframe", "interpolation", "movq", "video_movq"):
            if kind in files:
                kind_dtype = dtype if kind in ("keyframe", "interpolation") else movq_dtype
                home = torch.device("cpu") if offload else placement.device(kind)
                models[kind] = load_model(folder / files[kind], expected_kind=kind, dtype=kind_dtype, device=home)
                if prefers_channels_last(placement.device(kind)) if channels_last is None else channels_last:
                    use_channels_last(models[kind].model)
                if compile and kind in ("keyframe", "interpolation"):
                    models[kind].model.compile()
        config_file = folder / "configs.json"
        config = load_release_config(config_file, release) if config_file.is_file() else official_config(release)
        # the text encoder waits on the CPU: it runs once per video, for a fraction of a second on a GPU
        text_dtype = text_dtype or official_t5_dtype(release, placement.device("text"))
        text = TextEncoder.load(release, text_encoder, folder / files["projections"],
                                max_length=config.text.tokens_length, context_dim=config.keyframe.context_dim,
                                dtype=text_dtype, device="cpu", fp8_weights=text_fp8)
        return cls(release, models, text, placement, offload)

    @contextmanager
    def _stage(self, kind: str) -> Iterator[torch.nn.Module]:
        """The model of ``kind`` on its device for one stage; with ``offload`` it goes back to the CPU however the
        stage ends (finished, interrupted by a progress callback, out of memory)."""
        model = self.models[kind].model
        try:
            yield model.to(self.placement.device(kind)) if self.offload else model
        finally:
            if self.offload:
                model.to("cpu")
                release_cached_memory()

    def encode_text(self, request: VideoRequest) -> tuple[TextCondition, TextCondition | None]:
        """Encode the prompt(s) on the text role's device; the encoder goes back to the CPU afterwards."""
        negative = request.negative_prompt if self.release == "1.0" else None
        try:
            self.text.to(self.placement.device("text"))
            encoded = self.text.encode(request.prompt, negative)
        finally:
            self.text.to("cpu")
        text = TextCondition(encoded.context, encoded.mask)
        if encoded.negative_context is None:
            return text, None
        return text, TextCondition(encoded.negative_context, encoded.negative_mask)

    def generate(self, request: VideoRequest, noise: NoiseSource | None = None,
                 progress: Progress | None = None) -> VideoResult:
        request.validate(self.release)
        noise = noise or SeededNoise(request.seed)

        def reporter(stage: str):
            if progress is None:
                return None
            return lambda index, total, *rest: progress(stage, index + 1, total)

        text, negative = self.encode_text(request)
        keyframes = self._keyframes(request, text, negative, noise, reporter)
        video = keyframes
        passes = FPS_PASSES[request.fps]
        for number in range(1, passes + 1):
            groups = self._interpolate(request, text, video, noise, number, reporter)
            video = stages.interleave(video, groups)
        decoder = "video_movq" if "video_movq" in self.models else "movq"
        with self._stage(decoder) as movq:
            frames = stages.decode_frames(movq, video, tiles=request.tiles(),
                                          progress=(lambda done, total: progress("decode", done, total))
                                          if progress else None)
        return VideoResult(frames, stages.fps_for(passes), video)

    def _keyframes(self, request, text, negative, noise, reporter) -> torch.Tensor:
        if self.release == "1.0":
            with self._stage("keyframe") as unet:
                return stages.sample_keyframes_10(
                    unet, text, request.height, request.width, noise, steps=request.steps or 50,
                    guidance_scale=request.guidance_scale, num_frames=request.num_keyframes, negative=negative,
                    on_step=reporter("keyframes"), sampler=request.sampler)
        if request.image is None:
            with self._stage("keyframe") as unet:
                first = stages.sample_first_frame_11(unet, text, request.height, request.width, noise,
                                                     guidance_scale=request.guidance_scale,
                                                     on_step=reporter("first frame"), sampler=request.sampler,
                                                     steps=request.steps)
        with self._stage("movq") as movq:
            if request.image is not None:
                key_frame = stages.encode_image(movq, request.image, request.width, request.height)
            else:
                key_frame = stages.first_frame_to_key_frame(movq, first, request.width, request.height)
        with self._stage("keyframe") as unet:
            return stages.sample_keyframes_11(
                unet, text, key_frame, noise, num_frames=request.num_keyframes or 12,
                guidance_text=request.guidance_prompt, guidance_image=request.guidance_image,
                noise_augmentation=request.noise_augmentation, motion_score=stages.MOTION_SCORES[request.motion],
                on_step=reporter("keyframes"), sampler=request.sampler, steps=request.steps)

    def _interpolate(self, request, text, video, noise, number: int, reporter) -> torch.Tensor:
        guidance = request.interpolation_guidance
        if guidance is None:
            guidance = DEFAULT_INTERPOLATION_GUIDANCE[self.release]
        phase, skip = f"interpolation{number}", stages.SKIP_FRAMES[number]
        with self._stage("interpolation") as unet:
            if self.release == "1.0":
                return stages.interpolate_10(unet, video, noise, steps=request.steps or 50, guidance_scale=guidance,
                                             skip_frames=skip, phase=phase, on_step=reporter(phase),
                                             sampler=request.sampler)
            return stages.interpolate_11(unet, text, video, noise, guidance_scale=guidance, skip_frames=skip,
                                         phase=phase, on_step=reporter(phase), sampler=request.sampler,
                                         steps=request.steps)

"""The whole text-to-video pipeline of either release, outside ComfyUI (command line, library use, tests).

Models are loaded from a release folder holding the official file names. Each stage runs on its device (one for all,
or a :class:`~.placement.Placement` that splits them across GPUs) and, with ``offload``, goes back to the
CPU when its stage is done, so only one large model occupies a GPU at a time. The text encoder runs once per video
and always leaves the GPU afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InputError
from ..io.checkpoints import LoadedModel, load_model
from ..io.video import VideoStream
from ..models.configs import release_config_for
from ..models.dtypes import text_dtype as text_dtype_policy
from ..models.temporal.selection import AUTO, check_variant, select_temporal_blocks, trained_sibling
from ..models.text.condition import TextCondition
from ..models.text.encoder import TextEncoder
from ..releases import fps_for, release
from ..sampling.noise import NoiseSource
from . import stages
from .distributed import ONE_PROCESS, Ranks
from .layout import prefers_channels_last, use_channels_last
from .out_of_memory import release_cached_memory
from .placement import Placement
from .sequencer import Sequencer, Stage, VideoRequest, negative_prompt

__all__ = ["Progress", "VideoPipeline", "VideoRequest", "VideoResult", "detect_release"]

#: progress(stage, step, total)
Progress = Callable[[str, int, int], None]


@dataclass
class VideoResult:
    frames: torch.Tensor | None  # (N, 3, H, W) float in [0, 1], CPU; None when the frames went to a VideoStream
    fps: float
    latents: torch.Tensor  # (N, 4, h, w)


def detect_release(folder: Path) -> str:
    for name in ("1.1", "1.0"):
        if (folder / release(name).files["keyframe"]).is_file():
            return name
    raise CheckpointError(
        f"no Kandinsky Video models in {folder}: expected t2v.pt (1.1) or kandinsky_video.pt (1.0) there."
    )


class VideoPipeline:
    """All models of one release plus the text encoder."""

    def __init__(self, release: str, models: dict[str, LoadedModel], text: TextEncoder,
                 placement: Placement | torch.device | str, offload: bool = False,
                 ranks: Ranks = ONE_PROCESS) -> None:
        self.release = release
        self.models = models
        self.text = text
        self.placement = placement if isinstance(placement, Placement) else Placement.parse(None, placement)
        self.offload = offload
        self.ranks = ranks  # several processes (torchrun): guidance branches and decoded clips shared out

    @property
    def device(self) -> torch.device:
        return self.placement.default

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        text_encoder: str | Path | None,
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
        temporal: Mapping[str, Any] | None = None,
    ) -> VideoPipeline:
        """``dtype``: the U-Nets' weights (None = float32); ``movq_dtype``: the MoVQs' (None = float32, official);
        ``placement``: per-role devices (``"text=cpu,interpolation=cuda:1"``, the rest on ``device``); ``text_dtype``:
        the T5's compute dtype (None = the official one); ``text_fp8``: the T5's linear weights stored in float8;
        ``channels_last``: U-Net and MoVQ convolutions in NHWC (None: on CUDA, the fast layout there);
        ``compile``: ``torch.compile`` the U-Nets (each new shape compiles once, at its first step);
        ``temporal``: the Temporal Block Selector's settings for the keyframe model (``variant``, ``conv_strength``,
        ``attention_strength``, ``levels``; see ``select_temporal_blocks``); ``text_encoder`` None: no text encoder
        (enough to interpolate 1.0 videos, whose interpolation model ignores the text).

        Everything is checked and loaded before the pipeline exists, so a failure leaves nothing loaded."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"models folder not found: {folder}")
        placement = placement if isinstance(placement, Placement) else Placement.parse(placement, device)
        release_name = detect_release(folder)
        temporal = dict(temporal or {})
        check_variant(temporal.get("variant", "auto"))
        files = release(release_name).files
        models = {}
        for kind in ("keyframe", "interpolation", "movq", "video_movq"):
            if kind in files:
                kind_dtype = dtype if kind in ("keyframe", "interpolation") else movq_dtype
                home = torch.device("cpu") if offload else placement.device(kind)
                models[kind] = load_model(folder / files[kind], expected_kind=kind, dtype=kind_dtype, device=home)
                sibling = trained_sibling(folder / files[kind], models[kind].model, temporal.get("variant", AUTO)) \
                    if kind == "keyframe" else None
                if sibling is not None:  # the variant asked for, trained, beside the checkpoint
                    models[kind] = load_model(sibling, expected_kind=kind, dtype=kind_dtype, device=home)
                if kind == "keyframe" and temporal:
                    models[kind].model = select_temporal_blocks(models[kind].model, **temporal)
                if prefers_channels_last(placement.device(kind)) if channels_last is None else channels_last:
                    use_channels_last(models[kind].model)
                if compile and kind in ("keyframe", "interpolation"):
                    models[kind].model.compile()
        config = release_config_for(folder, release_name)
        # the text encoder waits on the CPU: it runs once per video, for a fraction of a second on a GPU
        text_dtype = text_dtype or text_dtype_policy("auto", placement.device("text"))[0]
        text = None if text_encoder is None else TextEncoder.load(
            release_name, text_encoder, folder / files["projections"], max_length=config.text.tokens_length,
            context_dim=config.keyframe.context_dim, dtype=text_dtype, device="cpu", fp8_weights=text_fp8)
        return cls(release_name, models, text, placement, offload)

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

    def encode_text(self, request: VideoRequest) -> TextCondition:
        """Encode the prompt (and 1.0's negative prompt) on the text role's device; the encoder goes back to the CPU
        afterwards."""
        if self.text is None:
            raise InputError("this pipeline was loaded without a text encoder: give the google/flan-ul2 folder.")
        try:
            self.text.to(self.placement.device("text"))
            return self.text.encode(request.prompt, negative_prompt(self.release, request.negative_prompt))
        finally:
            self.text.to("cpu")

    def sequencer(self, request: VideoRequest, noise: NoiseSource | None = None,
                  progress: Progress | None = None) -> Sequencer:
        """The run order of ``request`` on this pipeline's models (each on its device, offloaded after its stage)."""

        def report(stage: Stage, total: int):
            if progress is None:
                return None
            name = stage.role.replace("_", " ")
            return lambda index, count, *rest: progress(name, index + 1, count)

        return Sequencer(self.release, request, self._stage, noise=noise, report=report, ranks=self.ranks)

    def generate(self, request: VideoRequest, noise: NoiseSource | None = None,
                 progress: Progress | None = None, stream: VideoStream | None = None) -> VideoResult:
        """The request's video; with ``stream`` its frames go to that file clip by clip instead of into memory."""
        run = self.sequencer(request, noise, progress)
        text = self.encode_text(run.request)
        return self._decoded(run, run.latents(text), progress, stream)

    @staticmethod
    def _decoded(run: Sequencer, video: torch.Tensor, progress: Progress | None,
                 stream: VideoStream | None) -> VideoResult:
        report = (lambda done, total: progress("decode", done, total)) if progress else None
        fps = fps_for(run.request.passes)
        if stream is not None:
            run.decode_to(video, stream, report)
            return VideoResult(None, fps, video)
        return VideoResult(run.decode(video, report), fps, video)

    def generate_segments(self, request: VideoRequest, prompts: list[str], noise: NoiseSource | None = None,
                          progress: Progress | None = None, loop: bool = False,
                          stream: VideoStream | None = None) -> VideoResult:
        """A long video (1.1): one segment of the request's keyframes per prompt, each continuing from the last
        keyframe of the one before, then the request's interpolation passes over the whole video and the decoding.
        ``prompts[0]`` replaces the request's prompt; with one prompt this is :meth:`generate` exactly. ``loop``:
        closed into a seamless loop (:meth:`Sequencer.segment_latents`). ``stream``: as in :meth:`generate`."""
        if isinstance(prompts, str) or not prompts:
            raise InputError("give one prompt per segment (at least one).")
        run = self.sequencer(replace(request, prompt=prompts[0]), noise, progress)
        texts = [self.encode_text(replace(run.request, prompt=prompt)) for prompt in prompts]
        video, _ = run.segment_latents(texts, loop=loop)
        return self._decoded(run, video, progress, stream)

    def interpolate_video(self, frames: torch.Tensor, request: VideoRequest, source_fps: float,
                          noise: NoiseSource | None = None, progress: Progress | None = None) -> VideoResult:
        """An existing video (N, 3, H, W) in [0, 1], sides multiples of 8, made smoother: MoVQ-encoded, the request's
        interpolation passes (``fps``; N -> 4N-3 each), decoded. 1.1 needs the request's prompt."""
        if frames.dim() != 4 or frames.shape[0] < 2 or frames.shape[1] != 3:
            raise InputError(f"interpolation needs a video of at least 2 RGB frames (N, 3, H, W), got "
                             f"{tuple(frames.shape)}.")
        if request.passes < 1:
            raise InputError("fps 'low' adds no frames: ask for 'medium' (one pass) or 'high' (two).")
        request = replace(request, width=None, height=None)
        run = self.sequencer(request, noise, progress)
        text = self.encode_text(run.request) if self.release == "1.1" else None
        with self._stage("movq") as movq:
            latents = stages.encode_video(movq, frames * 2 - 1).cpu()
        video = run.interpolate(text, latents)
        decoded = run.decode(video, (lambda done, total: progress("decode", done, total)) if progress else None)
        return VideoResult(decoded, fps_for(run.request.passes, source_fps), video)

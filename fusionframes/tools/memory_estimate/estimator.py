"""The activation peak of each pipeline stage at any model size, resolution and frame count, on ``meta``.

The stages are the benchmark's (:class:`fusionframes.tools.bench.StagePipeline`), built with the benchmark's models
in the GPU dtypes of each mode but as shapes only, and each is run for one sampling step under
:func:`.tracker.measure`. Weights are excluded from the count: :mod:`.workflows` adds them per scenario, so a single
measurement gives the peak of a stage for any set of resident models. Every (stage, shape) is measured once and
cached, because the workflows and the scaling table ask for the same stages many times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ...io.checkpoints import build_model
from ...models.fp8_weights import store_linear_weights_in_fp8
from ...models.movq.decoding import official_clip_frames
from ...releases import FPS_PASSES, LATENT_SCALE
from ..bench import (
    DEFAULT_RESOLUTION,
    BenchSettings,
    ModelSet,
    StagePipeline,
    build_models,
    dtype_name,
    materialise,
    mode_context,
    release_config,
    run_limited,
    stage_autocast,
    t5_config,
)
from .tracker import CUDA_BLOCK, Measurement, measure, round_allocation

GIB = 1 << 30
META = torch.device("meta")

#: the models each stage runs (bench stage names; ``image`` = image-to-video's key-frame encoding)
STAGE_MODELS_11 = {"text": ["t5"], "first_frame": ["keyframe"], "key_frame": ["movq"], "image": ["movq"],
                   "keyframes": ["keyframe"], "interpolation": ["interpolation"], "decode": ["video_movq"]}
STAGE_MODELS_10 = {"text": ["t5"], "keyframes": ["keyframe"], "interpolation": ["interpolation"],
                   "decode": ["movq"]}


def stage_models(release: str, stage: str) -> list[str]:
    table = STAGE_MODELS_11 if release == "1.1" else STAGE_MODELS_10
    return table["interpolation" if stage.startswith("interpolation") else stage]


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def weight_bytes(module: nn.Module, granularity: int = CUDA_BLOCK) -> int:
    """Device bytes of a module's parameters and buffers: one allocation per storage, as loading makes them."""
    seen: dict[int, int] = {}
    for tensor in _tensors(module):
        storage = tensor.untyped_storage()
        seen[storage._cdata] = round_allocation(storage.nbytes(), granularity)
    return sum(seen.values())


@dataclass
class StageMemory:
    """Activation peak of one stage (bytes of every non-weight device tensor at the stage's peak, its inputs
    included) and where it happened."""

    release: str
    mode: str
    stage: str
    width: int
    height: int
    frames: int  # keyframes (sampling stages), input frames (interpolation), clip length (decode)
    models: list[str]
    activation_bytes: int
    input_bytes: int
    peak_op: str
    peak_module: str
    largest_allocation_bytes: int
    attention: dict[str, int]
    seconds: float
    note: str = ""


@dataclass
class ModeModels:
    """The models of one release in one mode on ``meta`` with the GPU dtypes, and their weight bytes."""

    release: str
    mode: str
    models: ModelSet
    weights: dict[str, int]
    dtypes: dict[str, str]
    t5_fp8: nn.Module | None = None
    exclude: list[torch.Tensor] = field(default_factory=list)
    roots: dict[str, nn.Module] = field(default_factory=dict)


def build_mode_models(release: str, mode: str, size: str = "official", *, fast_movq_dtype: str = "fp32",
                      fp8_text: bool = True, granularity: int = CUDA_BLOCK) -> ModeModels:
    """Every model of ``release`` on ``meta`` in ``mode``'s CUDA dtypes (bench's builders); in ``fast`` mode also a
    T5 whose linear weights are stored in float8 (:mod:`fusionframes.models.fp8_weights`, computing in bf16)."""
    models = build_models(release, size, META, mode, fast_movq_dtype=fast_movq_dtype, dtypes_for="cuda")
    roots: dict[str, nn.Module] = {**models.unets, **models.movqs}
    weights = {name: weight_bytes(model, granularity) for name, model in roots.items()}
    weights["t5"] = weight_bytes(models.t5, granularity) + weight_bytes(models.projection, granularity)
    roots["t5"] = models.t5
    roots["projection"] = models.projection
    dtypes = dict(models.dtypes)
    t5_fp8 = None
    if fp8_text and mode == "fast":
        with torch.device("meta"):
            # eager attention, as the engine's text encoder (text_encoder.load_t5_encoder) runs it
            t5_fp8 = materialise(type(models.t5)(t5_config(size, "eager")), META, torch.bfloat16, 0)
        t5_fp8.set_input_embeddings(t5_fp8.shared)
        store_linear_weights_in_fp8(t5_fp8)
        weights["t5_fp8"] = weight_bytes(t5_fp8, granularity) + weight_bytes(models.projection, granularity)
        roots["t5_fp8"] = t5_fp8
        dtypes["t5_fp8"] = "fp8 weights, bf16 compute"
    exclude = [t for model in roots.values() for t in _tensors(model)]
    return ModeModels(release, mode, models, weights, dtypes, t5_fp8, exclude, roots)


def _measure_stage(mm: ModeModels, stage: str, fn: Callable[[], Any], inputs: Iterable[object],
                   granularity: int) -> Measurement:
    autocast = mm.mode == "reference" and stage_autocast(mm.release, "decode" if stage == "image" else stage)
    with mode_context(mm.mode, META, autocast):  # reference: sdpa_kernel(MATH); CUDA autocast is emulated here
        return measure(fn, exclude=mm.exclude, inputs=inputs, autocast=autocast, granularity=granularity,
                       modules=mm.roots)


def device_values(values: dict[str, Any]) -> list[torch.Tensor]:
    """The ``meta`` tensors among a stage pipeline's stored values (a stage's inputs on the device)."""
    found = []
    for value in values.values():
        for leaf in tree_leaves(value if isinstance(value, torch.Tensor) else vars(value)):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "meta":
                found.append(leaf)
    return found


class StageEstimator:
    """Measures stages of one release and mode, caching every (stage, shape) it has measured."""

    def __init__(self, mm: ModeModels, granularity: int = CUDA_BLOCK, size: str = "official",
                 log: Callable[[str], None] | None = None) -> None:
        self.mm = mm
        self.granularity = granularity
        self.size = size
        self.log = log
        self.cache: dict[tuple, StageMemory] = {}
        self._decoders: dict[tuple[str, torch.dtype], nn.Module] = {}

    def _record(self, key: tuple, stage: str, width: int, height: int, frames: int, models: list[str],
                m: Measurement, note: str = "") -> StageMemory:
        result = StageMemory(self.mm.release, self.mm.mode, stage, width, height, frames, models, m.peak, m.inputs,
                             m.peak_op, m.peak_module, m.largest_allocation, m.attention, m.seconds, note)
        self.cache[key] = result
        if self.log is not None:
            self.log(f"[{self.mm.release} {self.mm.mode}] {stage} {width}x{height} frames {frames}: "
                     f"{result.activation_bytes / GIB:.2f} GiB ({m.seconds:.1f} s)")
        return result

    def _pipeline(self, width: int, height: int, keyframes: int, passes: int, models: ModelSet) -> StagePipeline:
        fps = next(name for name, count in FPS_PASSES.items() if count == passes)
        settings = BenchSettings(release=self.mm.release, size=self.size, device="meta", fps=fps, width=width,
                                 height=height, keyframes=keyframes, skip_text=True,
                                 modes=(self.mm.mode,)).resolved()
        return StagePipeline(settings, models, META)

    def text(self, fp8: bool = False) -> StageMemory:
        key = ("text", fp8)
        if key in self.cache:
            return self.cache[key]
        models = self.mm.models if not fp8 else replace(self.mm.models, t5=self.mm.t5_fp8)
        side = DEFAULT_RESOLUTION[self.size]
        stage = self._pipeline(side, side, 2, 0, models).text_stage()
        m = _measure_stage(self.mm, "text", lambda: run_limited(stage, None, META), [], self.granularity)
        return self._record(key, "text" if not fp8 else "text (fp8 T5)", 0, 0, 0,
                            ["t5_fp8" if fp8 else "t5"], m)

    def pipeline_stages(self, width: int, height: int, keyframes: int, passes: int) -> dict[str, StageMemory]:
        """Every sampling stage (and the 1.1 key-frame round trip) of a T2V run with ``passes`` interpolation
        passes; one sampling step each (every step allocates the same)."""
        pipeline = self._pipeline(width, height, keyframes, passes, self.mm.models)
        pipeline.text()  # the encoded prompt: a stage input on the device
        out: dict[str, StageMemory] = {}
        count = keyframes
        for stage in pipeline.stage_list():
            if stage.name == "decode":
                continue
            frames = count if stage.name.startswith("interpolation") else keyframes
            if stage.name in ("first_frame", "key_frame"):
                frames = 1  # one image, whatever the keyframe count
            key = (stage.name, width, height, frames)
            if key not in self.cache:
                inputs = device_values(pipeline.values)
                m = _measure_stage(self.mm, stage.name, lambda stage=stage: run_limited(stage, 1, META), inputs,
                                   self.granularity)
                self._record(key, stage.name, width, height, frames, stage_models(self.mm.release, stage.name), m)
            out[stage.name] = self.cache[key]
            if stage.name.startswith("interpolation"):
                count = 4 * count - 3
        return out

    def image(self, width: int, height: int) -> StageMemory:
        """Image-to-video's key frame: the image MoVQ encodes the (fitted) image."""
        key = ("image", width, height, 1)
        if key not in self.cache:
            movq = self.mm.models.movqs["movq"]
            m = _measure_stage(self.mm, "image", lambda: movq.encode(torch.zeros(1, 3, height, width, device=META)),
                               [], self.granularity)
            self._record(key, "image", width, height, 1, ["movq"], m)
        return self.cache[key]

    def decode(self, width: int, height: int, frames: int, *, clip: int | None = None, tile: int | None = None,
               dtype: torch.dtype | None = None) -> StageMemory:
        """The decode of a ``frames``-frame video: its largest clip (default: the official chunking; one clip is on
        the device at a time, decode_video moves each decoded clip to the CPU), with the whole latent video as an
        input. ``tile``: decode in tiles of ``tile`` latent pixels (``movq.decode_tiles``: one tile on the device at
        a time); ``dtype``: the decoder's weights in this dtype instead of the mode's."""
        clip = min(frames, clip or official_clip_frames(frames))
        key = ("decode", width, height, clip, tile, dtype)
        if key not in self.cache:
            kind = "video_movq" if self.mm.release == "1.1" else "movq"
            decoder, exclude = self.decoder(kind, dtype)
            h, w = height // LATENT_SCALE, width // LATENT_SCALE
            latents = torch.zeros(frames, 4, h, w, device=META)
            part = latents[:clip] if tile is None else latents[:clip, :, :min(tile, h), :min(tile, w)]
            mode_autocast = self.mm.mode == "reference" and stage_autocast(self.mm.release, "decode")
            with mode_context(self.mm.mode, META, mode_autocast):
                m = measure(lambda: decoder.decode(part), exclude=[*self.mm.exclude, *exclude], inputs=[latents],
                            autocast=mode_autocast, granularity=self.granularity, modules={kind: decoder})
            note = f"clips of {clip} frames" + (f", tiles of {tile * LATENT_SCALE} px" if tile else "")
            if dtype is not None:
                note += f", {dtype_name(dtype)} decoder"
            self._record(key, "decode", width, height, clip, [kind], m, note=note)
        return self.cache[key]

    def decoder(self, kind: str, dtype: torch.dtype | None) -> tuple[nn.Module, list[torch.Tensor]]:
        """The ``kind`` MoVQ with its weights in ``dtype`` (None: the mode's own model), and the tensors to exclude
        from the count (none for the mode's model, whose weights are excluded already)."""
        model = self.mm.models.movqs[kind]
        if dtype is None or dtype == next(model.parameters()).dtype:
            return model, []
        if (kind, dtype) not in self._decoders:
            with torch.device("meta"):
                other = build_model(self.mm.release, kind, getattr(release_config(self.mm.release, self.size), kind))
            self._decoders[(kind, dtype)] = materialise(other, META, dtype, 0)
        other = self._decoders[(kind, dtype)]
        return other, _tensors(other)

"""``python -m fusionframes bench``: time, memory and FLOPs of every pipeline stage, with random weights.

The models are built at the official size (``--size official``: on ``meta`` first, then ``to_empty`` and a cheap
random initialisation on the target device -- the cost of a forward pass does not depend on the weights) or at a
small size for the CPU (``small``: the demo-model configs at 64x64; ``mid``: a mid-size configuration at
128x128). Every stage of the pipeline runs through the engine's own stage functions (``runtime.stages``),
in two modes in one run:

* ``reference`` -- the official code's choices: fp16 U-Nets under fp16 autocast (CUDA), T5 in fp32 (1.1) / fp16
  (1.0), MoVQs in fp32 (1.1) / fp16 (1.0), attention through the math kernel (materialised score matrices, as the
  official einsum attention), full-batch guidance, every model resident;
* ``fast`` -- bf16 U-Nets and T5, fused SDPA kernels, channels_last U-Nets and MoVQs, optional ``torch.compile``
  (``--compile``); still every model resident and full-batch guidance.

On the CPU both modes compute in fp32: there the difference is only the attention kernel and the memory format.

``--steps N`` runs only N steps of each sampling stage (the stage is interrupted after its N-th update) and
extrapolates to the official step counts: ``setup + per-step time x official steps``. FLOPs are counted once per
stage (one model call for a sampling stage) with :func:`fusionframes.tools.flops.count_flops`; MFU = FLOPs / (seconds x
peak), the peak being the GPU's dense bf16 figure (``--peak-tflops`` overrides; none on the CPU unless given).
Peak memory per stage: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process RSS, sampled during the
stage with psutil when installed, else the process-lifetime peak from ``getrusage``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..io.checkpoints import build_model
from ..models.configs import (
    MoVQConfig,
    ReleaseConfig,
    UNetConfig,
    movq_config_from_dict,
    official_config,
    unet_config_from_dict,
)
from ..models.movq.model import official_clip_frames
from ..models.text.condition import TextCondition
from ..models.text.encoder import FLAN_UL2_CONFIG, TextProjection, encode_prompt
from ..releases import FPS_PASSES, LATENT_SCALE, official_steps
from ..runtime import stages
from ..runtime.layout import use_channels_last
from ..runtime.sequencer import Sequencer, Stage, VideoRequest, plan
from ..sampling.noise import SeededNoise
from .flops import FlopCount, count_flops, mfu, peak_tflops

SIZES = ("small", "mid", "official")
MODES = ("reference", "fast")
#: default frame size per model size (must be a multiple of 64)
DEFAULT_RESOLUTION = {"small": 64, "mid": 128, "official": 512}
#: tokens of the benchmark prompt (the context is trimmed to these + 1, as encode_prompt does)
PROMPT_TOKENS = 20
#: the encoded context's length: prompt + </s> + one padding position (encode_prompt trims to mask.sum() + 1)
CONTEXT_LENGTH = PROMPT_TOKENS + 2
SCHEMA = "fusionframes-bench/1"

#: synthetic T5 encoders for the small sizes (the projection maps their width to the U-Nets' context width)
SMALL_T5 = {
    "small": {"vocab_size": 256, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
    "mid": {"vocab_size": 1024, "d_model": 256, "d_kv": 32, "d_ff": 512, "num_layers": 4, "num_heads": 8},
}
SMALL_TOKENS = {"small": 32, "mid": 64, "official": 128}


# ----------------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchSettings:
    release: str = "1.1"
    size: str = "small"
    device: str = "cpu"
    modes: tuple[str, ...] = MODES
    steps: int | None = None  # per sampling stage; None = the official counts
    fps: str = "medium"
    width: int | None = None
    height: int | None = None
    keyframes: int | None = None
    skip_text: bool = False
    compile: bool = False
    warmup: int | None = None  # untimed model calls per stage before timing; None: 1 on CUDA, 0 on the CPU
    peak_tflops: float | None = None
    fast_movq_dtype: str = "fp32"
    threads: int | None = None  # CPU threads for torch (None: 1 for the small size on the CPU, else torch's default)
    seed: int = 0

    def resolved(self) -> BenchSettings:
        if self.release not in ("1.0", "1.1"):
            raise InputError(f"release must be 1.0 or 1.1, got {self.release!r}.")
        if self.size not in SIZES:
            raise InputError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}.")
        if self.fps not in FPS_PASSES:
            raise InputError(f"fps must be one of {', '.join(FPS_PASSES)}, got {self.fps!r}.")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise InputError(f"modes must be among {', '.join(MODES)}, got {', '.join(self.modes) or 'none'}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}.")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}.")
        side = DEFAULT_RESOLUTION[self.size]
        width, height = self.width or side, self.height or side
        stages.check_size(width, height)
        keyframes = self.keyframes or (12 if self.release == "1.1" else 15)
        if keyframes < 2:
            raise InputError(f"at least 2 keyframes are needed, got {keyframes}.")
        threads = self.threads
        if threads is None and self.size == "small" and torch.device(self.device).type == "cpu":
            threads = 1  # tiny layers gain nothing from threads, and OpenMP spinning distorts timings on shared cores
        warmup = self.warmup if self.warmup is not None else (1 if torch.device(self.device).type == "cuda" else 0)
        return replace(self, width=width, height=height, keyframes=keyframes, warmup=warmup, threads=threads,
                       modes=tuple(m for m in MODES if m in self.modes))


# ----------------------------------------------------------------------------------------------------------------------
# Model configurations and construction
# ----------------------------------------------------------------------------------------------------------------------


def _small_unet(base: UNetConfig) -> UNetConfig:
    return replace(base, model_channels=64, init_channels=32, time_embed_dim=256, groups=16, head_dim=32,
                   dim_mult=(1, 2, 4), num_blocks=(2, 2, 2), add_cross_attention=(False, True, True),
                   add_self_attention=(False, True, True))


def _small_movq(base: MoVQConfig) -> MoVQConfig:
    return replace(base, ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=1)


def release_config(release: str, size: str) -> ReleaseConfig:
    """The model configurations the benchmark builds for (release, size)."""
    if size == "official":
        return official_config(release)
    if size == "small":
        from .demo_models import demo_configs

        sections = demo_configs(release)
        config = official_config(release)
        updates: dict[str, Any] = {
            "keyframe": unet_config_from_dict(sections["t2v"]["configs"], "demo t2v"),
            "interpolation": unet_config_from_dict(sections["interpolation"]["configs"], "demo interpolation"),
            "movq": movq_config_from_dict(sections["image_movq"]["configs"], "demo image_movq"),
        }
        if "video_movq" in sections:
            updates["video_movq"] = movq_config_from_dict(sections["video_movq"]["configs"], "demo video_movq")
        return replace(config, **updates)
    if size == "mid":
        config = official_config(release)
        context = 4096 if release == "1.0" else 512
        return replace(
            config,
            keyframe=replace(_small_unet(config.keyframe), context_dim=context),
            interpolation=replace(_small_unet(config.interpolation), context_dim=context),
            movq=_small_movq(config.movq),
            video_movq=_small_movq(config.video_movq) if config.video_movq is not None else None,
        )
    raise InputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")


def t5_config(size: str, attention: str = "eager"):
    from transformers import T5Config

    if size == "official":
        values = {k: v for k, v in FLAN_UL2_CONFIG.items() if k != "model_type"}
    else:
        values = {**SMALL_T5[size], "feed_forward_proj": "gated-silu", "pad_token_id": 0, "eos_token_id": 1,
                  "decoder_start_token_id": 0}
    config = T5Config(**values, is_encoder_decoder=False, use_cache=False)
    config._attn_implementation = attention
    return config


@torch.no_grad()
def cheap_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights on the model's own device, no host round trip: fan-in scaled normal matrices, unit norm
    weights, zero biases, merge factors 0.3, and the MoVQ's latent-modulated norms kept near identity (as the demo
    models do). Enough to keep activations tame; the values do not change the cost (but see ``flush_denormal``)."""
    for index, (name, param) in enumerate(model.named_parameters()):
        generator = torch.Generator(device=param.device) if param.device.type != "meta" else None
        if generator is not None:
            generator.manual_seed(seed * 100_003 + index)
        leaf = name.rsplit(".", 1)[-1]
        if "merge" in leaf:
            param.fill_(0.3)
        elif param.dim() >= 2:
            gain = 0.2 if name.endswith(("conv_y.weight", "conv_b.weight")) else 1.0
            param.normal_(0.0, gain / math.sqrt(max(1, math.prod(param.shape[1:]))), generator=generator)
        elif leaf == "weight" or name.endswith("conv_y.bias"):
            param.fill_(1.0)
        else:
            param.zero_()
    return model


def materialise(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """meta-built model -> ``dtype`` on ``device`` (allocated there once), randomly initialised, frozen."""
    model = model.to(dtype=dtype)
    if device.type != "meta":
        model = model.to_empty(device=device)
        cheap_init(model, seed)
    return model.eval().requires_grad_(False)


@dataclass
class ModelSet:
    """The models of one release in one mode, and the dtypes they were built with."""

    unets: dict[str, nn.Module]
    movqs: dict[str, nn.Module]
    t5: nn.Module | None
    projection: nn.Module | None
    dtypes: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    weight_bytes: dict[str, int] = field(default_factory=dict)

    def all(self) -> dict[str, nn.Module]:
        models = {**self.unets, **self.movqs}
        if self.t5 is not None:
            models["t5"] = self.t5
        return models


_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def mode_dtypes(release: str, mode: str, device: torch.device, fast_movq_dtype: str = "fp32") -> dict[str, torch.dtype]:
    """Weight dtypes per model group for a mode (everything fp32 off CUDA)."""
    if device.type != "cuda":
        return {"unet": torch.float32, "t5": torch.float32, "movq": torch.float32}
    if mode == "reference":
        return {"unet": torch.float16, "t5": torch.float32 if release == "1.1" else torch.float16,
                "movq": torch.float32 if release == "1.1" else torch.float16}
    movq = torch.bfloat16 if fast_movq_dtype == "bf16" else torch.float32
    return {"unet": torch.bfloat16, "t5": torch.bfloat16, "movq": movq}


def build_models(release: str, size: str, device: torch.device | str, mode: str = "reference", *,
                 with_text: bool = True, fast_movq_dtype: str = "fp32", seed: int = 0,
                 dtypes_for: torch.device | str | None = None) -> ModelSet:
    """Every model of a release at ``size`` on ``device`` (``meta``: shapes only) with random weights.

    ``dtypes_for``: the device whose mode dtypes to use (default ``device``); ``"cuda"`` on ``meta`` builds the
    GPU's fp16/bf16 models as shapes only (the memory estimator does)."""
    device = torch.device(device)
    config = release_config(release, size)
    dtypes = mode_dtypes(release, mode, torch.device(dtypes_for) if dtypes_for is not None else device,
                         fast_movq_dtype)
    unets: dict[str, nn.Module] = {}
    movqs: dict[str, nn.Module] = {}
    number = 0
    for kind in ("keyframe", "interpolation", "movq", "video_movq"):
        kind_config = getattr(config, kind)
        if kind_config is None:
            continue
        with torch.device("meta"):
            model = build_model(release, kind, kind_config)
        group = "unet" if kind in ("keyframe", "interpolation") else "movq"
        model = materialise(model, device, dtypes[group], seed + number)
        number += 1
        if group == "unet":
            null = torch.randn(kind_config.context_dim, device="cpu").to(device)
            model.register_buffer("null_embedding", null, persistent=False)
            unets[kind] = model
        else:
            movqs[kind] = model
    t5 = projection = None
    if with_text:
        from transformers import T5EncoderModel

        attention = "eager" if mode == "reference" else "sdpa"
        with torch.device("meta"):
            t5 = T5EncoderModel(t5_config(size, attention))
        t5 = materialise(t5, device, dtypes["t5"], seed + number)
        t5.set_input_embeddings(t5.shared)
        with torch.device("meta"):
            projection = TextProjection(t5.config.d_model, config.keyframe.context_dim)
        projection = materialise(projection, device, torch.float32, seed + number + 1)
    if mode == "fast":
        for model in (*unets.values(), *movqs.values()):
            use_channels_last(model)
    models = ModelSet(unets, movqs, t5, projection)
    for name, model in models.all().items():
        params = list(model.parameters())
        models.parameters[name] = sum(p.numel() for p in params)
        models.weight_bytes[name] = sum(p.numel() * p.element_size() for p in params)
        models.dtypes[name] = _DTYPE_NAMES.get(params[0].dtype, str(params[0].dtype))
    return models


# ----------------------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised from on_step to end a sampling stage early (the stage functions support interruption by raising)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _MemoryProbe:
    """Peak memory during a block: CUDA max_memory_allocated, or the CPU process RSS (sampled / lifetime peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.before = 0
        self.kind = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = None

    def __enter__(self) -> _MemoryProbe:
        if self.device.type == "cuda":
            self.kind = "cuda_max_memory_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import psutil
        except ImportError:
            self.kind = "cpu_rss_process_lifetime_peak (getrusage; psutil not installed)"
            self.before = _rusage_peak()
            return self
        self.kind = "cpu_rss_peak (psutil, sampled every 5 ms)"
        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._process.memory_info().rss)
        else:
            self.peak = _rusage_peak()


def _rusage_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class StageResult:
    release: str
    mode: str
    stage: str
    seconds: float
    steps_run: int | None = None
    official_steps: int | None = None
    step_seconds: list[float] = field(default_factory=list)
    seconds_per_step: float | None = None
    estimated_seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_before_bytes: int = 0
    memory_kind: str = ""
    flops_per_call: int | None = None
    flops_estimated: int | None = None
    flops_by_category: dict[str, int] = field(default_factory=dict)
    tflops_per_second: float | None = None
    mfu: float | None = None
    batch: list[int] = field(default_factory=list)
    note: str = ""


@dataclass
class _Stage:
    """One stage: ``run(on_step)`` runs it (sampling stages pass on_step to the stage function) and returns its
    output; ``store(output)`` hands the (possibly partial) output on to the next stage; ``official_steps`` is None
    for stages without a sampling loop."""

    name: str
    run: Callable[[Any], Any]
    official_steps: int | None
    batch: list[int]
    store: Callable[[Any], None] | None = None
    count: Callable[[], FlopCount] | None = None  # FLOPs without running the whole stage (decode: once per clip size)


def run_limited(stage: _Stage, limit: int | None, device: torch.device, times: list[float] | None = None):
    """Run a stage, stopping a sampling stage after ``limit`` updates; returns its (possibly partial) output."""
    if stage.official_steps is None:
        output = stage.run(None)
    else:
        state: dict[str, Any] = {"last": time.perf_counter()}

        def on_step(index, total, t, x_before, prediction, x_after):
            _sync(device)
            now = time.perf_counter()
            if times is not None:
                times.append(now - state["last"])
            state["last"] = now
            state["x"] = x_after
            if limit is not None and index + 1 >= limit and index + 1 < total:
                raise _Stop

        try:
            output = stage.run(on_step)
        except _Stop:
            output = state["x"]
    if stage.store is not None:
        stage.store(output)
    return output


def stage_autocast(release: str, stage: str) -> bool:
    """Whether the reference mode runs ``stage`` under fp16 autocast on CUDA (as the official code): the U-Net
    stages of 1.1, every stage of 1.0."""
    return stage not in ("text", "key_frame", "decode") or release == "1.0"


@contextlib.contextmanager
def mode_context(mode: str, device: torch.device, autocast: bool) -> Iterator[None]:
    """reference: math attention everywhere, fp16 autocast where the official code has it (CUDA)."""
    with contextlib.ExitStack() as stack:
        if mode == "reference":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            if autocast and device.type == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        yield


def _prompt_tokens(size: str, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = SMALL_TOKENS[size]
    prompt = min(PROMPT_TOKENS, length - 1)
    generator = torch.Generator().manual_seed(1234)
    ids = torch.zeros(1, length, dtype=torch.long)
    ids[0, :prompt] = torch.randint(2, vocab, (prompt,), generator=generator)
    ids[0, prompt] = 1  # </s>
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[0, : prompt + 1] = 1
    return ids, mask


def _context_mask(device: torch.device) -> torch.Tensor:
    mask = torch.ones(1, CONTEXT_LENGTH, dtype=torch.long, device=device)
    mask[:, -1] = 0
    return mask


class StagePipeline:
    """Builds the stage list of one release run; each stage's output feeds the next (random stand-ins of the right
    shape where a stage is skipped or the device is ``meta``)."""

    def __init__(self, settings: BenchSettings, models: ModelSet, device: torch.device) -> None:
        self.s = settings
        self.m = models
        self.device = device
        self.meta = device.type == "meta"
        self.config = release_config(settings.release, settings.size)
        self.values: dict[str, Any] = {}
        self.h = settings.height // LATENT_SCALE
        self.w = settings.width // LATENT_SCALE

    def _model(self, kind: str) -> contextlib.AbstractContextManager[nn.Module]:
        return contextlib.nullcontext(self.m.unets[kind] if kind in self.m.unets else self.m.movqs[kind])

    def _run(self, on_step) -> Sequencer:
        """The engine's sequencer for this run, reporting every sampler step to ``on_step``."""
        s = self.s
        request = VideoRequest(width=s.width, height=s.height, fps=s.fps, keyframes=s.keyframes, seed=s.seed)
        return Sequencer(s.release, request, self._model, noise=SeededNoise(s.seed),
                         report=lambda stage, total: on_step)

    def _random(self, *shape: int, device: torch.device | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(len(self.values))
        return torch.randn(*shape, generator=generator).to(self.device if device is None else device)

    def text(self) -> TextCondition:
        value = self.values.get("text")
        if value is None:  # --skip-text: a random context of the trimmed length
            context = self._random(1, CONTEXT_LENGTH, self.config.keyframe.context_dim)
            value = self.values["text"] = TextCondition(context, _context_mask(self.device))
        return value

    def _video(self, count: int) -> torch.Tensor:
        video = self.values.get("video")
        if video is None or video.shape[0] != count:
            video = self._random(count, 4, self.h, self.w)
        return video

    def _store(self, key: str) -> Callable[[Any], None]:
        return lambda output: self.values.__setitem__(key, output)

    def stage_list(self) -> list[_Stage]:
        """The sequencer's plan of this release and fps, each stage timed on its own."""
        s = self.s
        out: list[_Stage] = []
        if not s.skip_text and self.m.t5 is not None:
            out.append(self._text_stage())
        count = s.keyframes
        for stage in plan(s.release, passes=FPS_PASSES[s.fps]):
            if stage.role == "first_frame":
                out.append(self._first_frame_stage(stage))
            elif stage.role == "key_frame":
                out.append(self._key_frame_stage())
            elif stage.role == "keyframes":
                out.append(self._keyframes_stage(stage))
            elif stage.sampling == "interpolation":
                out.append(self._interpolation(stage, count))
                count = 4 * count - 3
            else:
                out.append(self._decode(count))
        return out

    def _text_stage(self) -> _Stage:
        t5, projection, release = self.m.t5, self.m.projection, self.s.release
        ids, mask = _prompt_tokens(self.s.size, int(t5.config.vocab_size))

        def text(_):
            if self.meta:  # encode_prompt and the T5 mask code read values; on meta run the two models bare
                hidden = t5(input_ids=ids.to("meta")).last_hidden_state.float()
                return TextCondition(projection(hidden)[:, :CONTEXT_LENGTH], _context_mask(self.device))
            context, trimmed = encode_prompt(t5, projection, ids, mask, zero_nonfinite=release == "1.0")
            return TextCondition(context, trimmed)

        return _Stage("text", text, None, [1, SMALL_TOKENS[self.s.size]], self._store("text"))

    def _first_frame_stage(self, stage: Stage) -> _Stage:
        h, w = self.h, self.w
        return _Stage(stage.role, lambda on_step: self._run(on_step).first_frame(self.text()),
                      official_steps(self.s.release, stage.sampling), [2, 9, 2 * h, 2 * w], self._store("first"))

    def _key_frame_stage(self) -> _Stage:
        s, h, w = self.s, self.h, self.w
        movq = self.m.movqs["movq"]

        def key_frame(_):
            first = self.values.get("first")
            if first is None:
                first = self._random(1, 4, 2 * h, 2 * w)
            if self.meta:  # the real stage goes through an 8-bit PIL image; count its decode and encode
                movq.decode(first)
                return movq.encode(torch.zeros(1, 3, s.height, s.width, device="meta"))[0]
            return self._run(None).key_frame(first.float())

        return _Stage("key_frame", key_frame, None, [1, 3, 2 * s.height, 2 * s.width], self._store("key_frame"))

    def _keyframes_stage(self, stage: Stage) -> _Stage:
        s, h, w = self.s, self.h, self.w
        frames = s.keyframes

        def keyframes(on_step):
            if s.release == "1.0":
                return self._run(on_step).keyframes(self.text())
            key = self.values.get("key_frame")
            if key is None or key.device.type == "meta":  # the stage noise-augments the key frame on the CPU
                key = self._random(4, h, w, device=torch.device("cpu"))
            return self._run(on_step).keyframes(self.text(), key)

        branches = 2 if s.release == "1.0" else 3
        channels = 4 if s.release == "1.0" else 9
        return _Stage(stage.role, keyframes, official_steps(s.release, stage.sampling),
                      [branches * frames, channels, h, w], self._store("video"))

    def _interpolation(self, stage: Stage, count: int) -> _Stage:
        s = self.s

        def run(on_step):
            video = self.values["video_in"] = self._video(count)
            return self._run(on_step).interpolation(self.text(), video, stage.pass_number)

        def store(groups):
            self.values["video"] = stages.interleave(self.values["video_in"], groups)

        return _Stage(stage.role, run, official_steps(s.release, stage.sampling),
                      [2 * (count - 1), 20, self.h, self.w], store)

    def _decode(self, count: int) -> _Stage:
        movq = self.m.movqs["video_movq" if self.s.release == "1.1" else "movq"]

        def run(_):
            return stages.decode_frames(movq, self._video(count))

        def flops() -> FlopCount:
            """The official clips (decode_video's default): count one clip of each length, times its multiplicity."""
            clip = official_clip_frames(count)
            lengths = [clip] * (count // clip) + ([count % clip] if count % clip else [])
            total = FlopCount()
            for length in sorted(set(lengths)):
                _, one = count_flops(movq.decode, self._random(length, 4, self.h, self.w))
                total = total + one.scaled(lengths.count(length))
            return total

        return _Stage("decode", run, None, [count, 4, self.h, self.w], count=flops)


def _format_bytes(value: int) -> str:
    if value >= 1 << 30:
        return f"{value / (1 << 30):.2f} GiB"
    return f"{value / (1 << 20):.0f} MiB"


def device_description(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda)
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['cpu_count']} logical cores)"
    return info


# ----------------------------------------------------------------------------------------------------------------------
# FLOPs of every stage (also usable on its own, on the meta device)
# ----------------------------------------------------------------------------------------------------------------------


def _count_stage(stage: _Stage, device: torch.device) -> FlopCount:
    """FLOPs of one model call of a sampling stage (the stage stopped after its first update), or of the whole
    non-sampling stage."""
    if stage.count is not None:
        return stage.count()
    _, count = count_flops(run_limited, stage, 1, device)
    return count


@torch.no_grad()
def count_stage_flops(release: str = "1.1", size: str = "official", *, fps: str = "medium",
                      width: int | None = None, height: int | None = None, keyframes: int | None = None,
                      skip_text: bool = False, only: tuple[str, ...] | None = None) -> dict[str, FlopCount]:
    """FLOPs per call of every stage, counted on the ``meta`` device (no memory, no arithmetic). ``only`` restricts
    the stages (e.g. ``("keyframes",)``); the official-size keyframe U-Net takes several seconds on a CPU."""
    settings = BenchSettings(release=release, size=size, device="meta", fps=fps, width=width, height=height,
                             keyframes=keyframes, skip_text=skip_text, modes=("reference",)).resolved()
    device = torch.device("meta")
    models = build_models(release, size, device, "reference", with_text=not skip_text)
    pipeline = StagePipeline(settings, models, device)
    result: dict[str, FlopCount] = {}
    for stage in pipeline.stage_list():
        if only is None or stage.name in only:
            result[stage.name] = _count_stage(stage, device)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------------


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def _run_mode(settings: BenchSettings, mode: str, device: torch.device, flops: dict[str, FlopCount],
              peak: float | None, log: Callable[[str], None]) -> tuple[list[StageResult], dict[str, Any]]:
    started = time.perf_counter()
    models = build_models(settings.release, settings.size, device, mode, with_text=not settings.skip_text,
                          fast_movq_dtype=settings.fast_movq_dtype, seed=settings.seed)
    _sync(device)
    info = {"build_seconds": time.perf_counter() - started, "dtypes": models.dtypes, "parameters": models.parameters,
            "weight_bytes": models.weight_bytes, "resident_weight_bytes": sum(models.weight_bytes.values())}
    dtypes = ", ".join(f"{name} {dtype}" for name, dtype in models.dtypes.items())
    log(f"[{settings.release} {mode}] models built in {info['build_seconds']:.1f} s, "
        f"{_format_bytes(info['resident_weight_bytes'])} of weights resident ({dtypes})")
    pipeline = StagePipeline(settings, models, device)
    compiled: set[str] = set()
    results = []
    stage_list = pipeline.stage_list()
    for stage in stage_list:
        with mode_context(mode, device, stage_autocast(settings.release, stage.name)):
            if stage.name not in flops:
                flops[stage.name] = _count_stage(stage, device)
            if mode == "fast" and settings.compile:
                for name, model in models.all().items():
                    if name != "t5" and name not in compiled:
                        model.compile()
                        compiled.add(name)
            for _ in range(settings.warmup):
                run_limited(stage, 1, device)
            _sync(device)
            times: list[float] = []
            with _MemoryProbe(device) as memory:
                start = time.perf_counter()
                run_limited(stage, settings.steps, device, times)
                _sync(device)
                seconds = time.perf_counter() - start
        results.append(_result(settings, mode, stage, seconds, times, memory, flops[stage.name], peak))
        r = results[-1]
        log(f"[{settings.release} {mode}] {stage.name}: {r.seconds:.3f} s measured"
            + (f", {r.seconds_per_step:.3f} s/step, ~{r.estimated_seconds:.2f} s at {r.official_steps} steps"
               if r.seconds_per_step is not None else ""))
    del stage_list, stage, pipeline, models  # the stage closures hold the models: drop every reference
    _free(device)
    return results, info


def _result(settings, mode, stage: _Stage, seconds: float, times: list[float], memory: _MemoryProbe,
            count: FlopCount, peak: float | None) -> StageResult:
    r = StageResult(settings.release, mode, stage.name, seconds, batch=stage.batch, peak_memory_bytes=memory.peak,
                    memory_before_bytes=memory.before, memory_kind=memory.kind, flops_per_call=count.total,
                    flops_by_category=count.by_category)
    if stage.official_steps is None:
        r.estimated_seconds = seconds
        r.flops_estimated = count.total
        measured_flops = count.total
    else:
        r.official_steps = stage.official_steps
        r.steps_run = len(times)
        r.step_seconds = times
        r.seconds_per_step = sum(times) / len(times)
        setup = max(seconds - sum(times), 0.0)
        r.estimated_seconds = setup + r.seconds_per_step * stage.official_steps
        r.flops_estimated = count.total * stage.official_steps
        measured_flops = count.total * len(times)
    if seconds > 0:
        r.tflops_per_second = measured_flops / seconds / 1e12
    r.mfu = mfu(measured_flops, seconds, peak)
    return r


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage in every mode; returns the JSON-ready report."""
    settings = settings.resolved()
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but CUDA is not available here; use --device cpu (and --size small).")
    if device.type == "meta":
        raise InputError("the meta device cannot be timed; use --flops-only to count FLOPs there.")
    described = device_description(device)
    peak = settings.peak_tflops or (peak_tflops(described["name"]) if device.type == "cuda" else None)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _benchmark(settings, device, device_description(device), peak, log)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _benchmark(settings: BenchSettings, device: torch.device, described: dict[str, Any], peak: float | None,
               log: Callable[[str], None]) -> dict[str, Any]:
    flops: dict[str, FlopCount] = {}
    if settings.compile and "reference" not in settings.modes:
        # counting runs eagerly in the first mode; with only a compiled fast mode, count on meta instead
        flops = count_stage_flops(settings.release, settings.size, fps=settings.fps, width=settings.width,
                                  height=settings.height, keyframes=settings.keyframes, skip_text=settings.skip_text)
    results: list[StageResult] = []
    mode_info: dict[str, Any] = {}
    for mode in settings.modes:
        mode_results, info = _run_mode(settings, mode, device, flops, peak, log)
        results.extend(mode_results)
        mode_info[mode] = info
    totals = {}
    for mode in settings.modes:
        rows = [r for r in results if r.mode == mode]
        totals[mode] = {
            "measured_seconds": sum(r.seconds for r in rows),
            "estimated_seconds": sum(r.estimated_seconds for r in rows),
            "peak_memory_bytes": max(r.peak_memory_bytes for r in rows),
            "flops_estimated": sum(r.flops_estimated or 0 for r in rows),
        }
    if "reference" in totals and "fast" in totals and totals["fast"]["estimated_seconds"] > 0:
        totals["speedup_estimated"] = totals["reference"]["estimated_seconds"] / totals["fast"]["estimated_seconds"]
    notes = [
        "Random weights: cost does not depend on them. FLOPs count multiply-adds of convolutions, linear layers and "
        "attention (x2); norms and elementwise ops are not counted.",
        "Sampling stages: estimated_seconds = setup + mean step time x official steps (steps_run steps were timed).",
        "MFU is relative to the dense bf16 peak (peak_tflops), also for fp32 stages (whose own ceiling is lower).",
        "Both modes run the engine's stage functions; 'reference' reproduces the official code's dtypes, autocast and "
        "materialised attention, not its Python code (e.g. the official 1.1 encodes the prompt 12x; we encode once).",
    ]
    if device.type == "cpu":
        notes.append("CPU: denormal floats are flushed to zero during the run (random weights make many; real ones "
                     "rarely do, and x86 CPUs are up to 100x slower on them).")
    if device.type != "cuda":
        notes.append("CPU: both modes compute in fp32; they differ only in the attention kernel (math vs fused) and "
                     "channels_last, so the CPU ratio says little about the GPU speed-up. "
                     "No MFU without --peak-tflops.")
    if settings.compile:
        notes.append("--compile: U-Net and MoVQ forward passes compiled in fast mode (the 1.1 first frame's image "
                     "mode, forward_image, stays eager); compile time is in the warm-up, not in the timings.")
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": described,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": asdict(settings),
        "peak_tflops": peak,
        "models": mode_info,
        "flops_per_call": {name: count.to_dict() for name, count in flops.items()},
        "results": [asdict(r) for r in results],
        "totals": totals,
        "notes": notes,
    }


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'mode':<9} {'stage':<15} {'steps':>5} {'measured s':>10} {'s/step':>8} {'est. s':>9} "
              f"{'peak mem':>10} {'TFLOP est.':>11} {'TFLOP/s':>8} {'MFU':>6}")
    lines = [f"device: {report['device']['name']}   torch {report['torch']}   release {report['settings']['release']}"
             f"   size {report['settings']['size']}   {report['settings']['width']}x{report['settings']['height']}"
             f"   fps {report['settings']['fps']}   keyframes {report['settings']['keyframes']}", header,
             "-" * len(header)]
    for r in report["results"]:
        steps = f"{r['steps_run']}/{r['official_steps']}" if r["official_steps"] else "-"
        per_step = f"{r['seconds_per_step']:.3f}" if r["seconds_per_step"] is not None else "-"
        tflops = f"{r['tflops_per_second']:.3f}" if r["tflops_per_second"] is not None else "-"
        util = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"{r['mode']:<9} {r['stage']:<15} {steps:>5} {r['seconds']:>10.3f} {per_step:>8} "
                     f"{r['estimated_seconds']:>9.2f} {_format_bytes(r['peak_memory_bytes']):>10} "
                     f"{(r['flops_estimated'] or 0) / 1e12:>11.4f} {tflops:>8} {util:>6}")
    lines.append("-" * len(header))
    for mode, total in report["totals"].items():
        if mode == "speedup_estimated":
            continue
        lines.append(f"{mode:<9} {'total':<15} {'':>5} {total['measured_seconds']:>10.3f} {'':>8} "
                     f"{total['estimated_seconds']:>9.2f} {_format_bytes(total['peak_memory_bytes']):>10} "
                     f"{total['flops_estimated'] / 1e12:>11.4f}")
    if "speedup_estimated" in report["totals"]:
        lines.append(f"estimated speed-up fast vs reference: {report['totals']['speedup_estimated']:.2f}x")
    lines.append(f"memory: {report['results'][0]['memory_kind']}")
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


def format_flops(release: str, size: str, counts: dict[str, FlopCount], fps: str) -> str:
    lines = [f"FLOPs per call on the meta device: release {release}, size {size}, fps {fps}",
             f"{'stage':<15} {'TFLOP/call':>11} {'calls':>6} {'TFLOP':>10}  split (conv / matmul / attention)"]
    total = 0.0
    for name, count in counts.items():
        calls = 1
        if name not in ("text", "key_frame", "decode"):
            calls = official_steps(release, "interpolation" if name.startswith("interpolation") else name)
        tflop = count.total * calls / 1e12
        total += tflop
        cat = count.by_category
        split = " / ".join(f"{100 * cat.get(k, 0) / max(count.total, 1):.1f}%" for k in ("conv", "matmul", "attention"))
        lines.append(f"{name:<15} {count.total / 1e12:>11.3f} {calls:>6} {tflop:>10.1f}  {split}")
    lines.append(f"{'total':<15} {'':>11} {'':>6} {total:>10.1f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cuda = torch.cuda.is_available()
    parser.add_argument("--release", choices=["1.0", "1.1", "all"], default="1.1")
    parser.add_argument("--size", choices=SIZES, default="official" if cuda else "small",
                        help="official (full size, random weights; GPU), mid (mid-size, 128x128) or small "
                        "(the demo configs, 64x64)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: reference,fast")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps run per sampling stage (default: the official counts); times are extrapolated")
    parser.add_argument("--fps", choices=list(FPS_PASSES), default="medium", help="interpolation passes: 0 / 1 / 2")
    parser.add_argument("--width", type=int, default=None, help="default 512 official, 128 mid, 64 small")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--keyframes", type=int, default=None, help="default 12 (1.1) / 15 (1.0)")
    parser.add_argument("--skip-text", action="store_true", help="no T5 stage (FLAN-UL2 is 8.6 B parameters)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models in fast mode")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed model calls per stage (default 1 on CUDA, 0 on the CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs' bf16)")
    parser.add_argument("--fast-movq-dtype", choices=["fp32", "bf16"], default="fp32", help="MoVQ weights in fast mode")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device; run nothing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 at --size small on the CPU, else torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def run_from_args(args: argparse.Namespace, out=sys.stdout) -> int:
    releases = ["1.1", "1.0"] if args.release == "all" else [args.release]
    if args.flops_only:
        for release in releases:
            counts = count_stage_flops(release, args.size, fps=args.fps, width=args.width, height=args.height,
                                       keyframes=args.keyframes, skip_text=args.skip_text)
            print(format_flops(release, args.size, counts, args.fps), file=out)
        return 0
    reports = []
    for release in releases:
        settings = BenchSettings(
            release=release, size=args.size, device=args.device, modes=tuple(m.strip() for m in args.modes.split(",")),
            steps=args.steps, fps=args.fps, width=args.width, height=args.height, keyframes=args.keyframes,
            skip_text=args.skip_text, compile=args.compile, warmup=args.warmup, peak_tflops=args.peak_tflops,
            fast_movq_dtype=args.fast_movq_dtype, threads=args.threads, seed=args.seed)
        report = run_benchmark(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(format_table(report), file=out)
        reports.append(report)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = reports[0] if len(reports) == 1 else {"schema": SCHEMA, "runs": reports}
        path.write_text(json.dumps(content, indent=1) + "\n")
        print(f"results: {path}", file=out)
    return 0

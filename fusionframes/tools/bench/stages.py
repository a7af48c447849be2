"""The benchmark's stage list: the engine's own stages, run one at a time so each can be timed and counted.

:class:`StagePipeline` asks the engine's :func:`~fusionframes.runtime.sequencer.plan` which stages a release and
frame rate have, and runs each through a :class:`~fusionframes.runtime.sequencer.Sequencer`, which is also what
the command line, the library and the nodes use. The benchmark therefore measures the code that users run. Each
stage's output feeds the next, and random stand-ins of the right shape take its place where a stage is skipped or
the device is ``meta`` (the memory estimator runs the same list there). :func:`mode_context` says how a mode runs a
stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...models.movq.decoding import official_clip_frames
from ...models.text.condition import TextCondition
from ...models.text.encoder import encode_prompt
from ...releases import FPS_PASSES, LATENT_SCALE, official_steps
from ...runtime import stages
from ...runtime.sequencer import Sequencer, Stage, VideoRequest, plan
from ...sampling.noise import SeededNoise
from ..flops import FlopCount, count_flops
from .models import ModelSet, release_config
from .settings import BenchSettings

#: tokens of the benchmark prompt (the context is trimmed to these + 1, as encode_prompt does)
PROMPT_TOKENS = 20
#: the encoded context's length: prompt + </s> + one padding position (encode_prompt trims to mask.sum() + 1)
CONTEXT_LENGTH = PROMPT_TOKENS + 2
#: the tokenizer's padded length per size
SMALL_TOKENS = {"small": 32, "mid": 64, "official": 128}


@dataclass
class BenchStage:
    """One stage: ``run(on_step)`` runs it (sampling stages pass on_step to the stage function) and returns its
    output; ``store(output)`` hands the (possibly partial) output on to the next stage; ``official_steps`` is None
    for stages without a sampling loop."""

    name: str
    run: Callable[[Any], Any]
    official_steps: int | None
    batch: list[int]
    store: Callable[[Any], None] | None = None
    count: Callable[[], FlopCount] | None = None  # FLOPs without running the whole stage (decode: once per clip size)


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

    def stage_list(self) -> list[BenchStage]:
        """The sequencer's plan of this release and fps, each stage timed on its own."""
        s = self.s
        out: list[BenchStage] = []
        if not s.skip_text and self.m.t5 is not None:
            out.append(self.text_stage())
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

    def text_stage(self) -> BenchStage:
        """The prompt encoding (T5 and the projection); also on its own, for the memory estimator's text row."""
        t5, projection, release = self.m.t5, self.m.projection, self.s.release
        ids, mask = _prompt_tokens(self.s.size, int(t5.config.vocab_size))

        def text(_):
            if self.meta:  # encode_prompt and the T5 mask code read values; on meta run the two models bare
                hidden = t5(input_ids=ids.to("meta")).last_hidden_state.float()
                return TextCondition(projection(hidden)[:, :CONTEXT_LENGTH], _context_mask(self.device))
            context, trimmed = encode_prompt(t5, projection, ids, mask, zero_nonfinite=release == "1.0")
            return TextCondition(context, trimmed)

        return BenchStage("text", text, None, [1, SMALL_TOKENS[self.s.size]], self._store("text"))

    def _first_frame_stage(self, stage: Stage) -> BenchStage:
        h, w = self.h, self.w
        return BenchStage(stage.role, lambda on_step: self._run(on_step).first_frame(self.text()),
                          official_steps(self.s.release, stage.sampling), [2, 9, 2 * h, 2 * w], self._store("first"))

    def _key_frame_stage(self) -> BenchStage:
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

        return BenchStage("key_frame", key_frame, None, [1, 3, 2 * s.height, 2 * s.width], self._store("key_frame"))

    def _keyframes_stage(self, stage: Stage) -> BenchStage:
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
        return BenchStage(stage.role, keyframes, official_steps(s.release, stage.sampling),
                          [branches * frames, channels, h, w], self._store("video"))

    def _interpolation(self, stage: Stage, count: int) -> BenchStage:
        s = self.s

        def run(on_step):
            video = self.values["video_in"] = self._video(count)
            return self._run(on_step).interpolation(self.text(), video, stage.pass_number)

        def store(groups):
            self.values["video"] = stages.interleave(self.values["video_in"], groups)

        return BenchStage(stage.role, run, official_steps(s.release, stage.sampling),
                          [2 * (count - 1), 20, self.h, self.w], store)

    def _decode(self, count: int) -> BenchStage:
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

        return BenchStage("decode", run, None, [count, 4, self.h, self.w], count=flops)

"""Training the tiny FusionFrames 1.1 models of the toy world on this machine (CPU), stage by stage, resumably.

The models are the official classes at the demo models' size (``tools.demo_models.demo_configs``), start from the
demo models' random weights and are written in the official file layout, so the loaders read them as they read the
real checkpoints. Stages, in order (each reads what the earlier ones wrote into the models folder)::

    movq           the image MoVQ: reconstruction of 64 and 128 px frames (latents kept inside [-1, 1], where
                   the official samplers clamp their x0 predictions)
    video_movq     the temporal MoVQ: its decoder from the image MoVQ's, its temporal layers on clips
    first_frame    text projection + keyframe U-Net in image mode on clips' first frames (at twice the video's size
                   and at its size), eps
    keyframes      the keyframe U-Net in video mode on fresh temporal blocks, every parameter (the paper froze the
                   text-to-image part; here the motion words must reach the video through it), image-mode batches
                   in between; the loss weighted towards the noisiest steps (``LAYOUT_WEIGHT``); ``variant``: one
                   of the paper's other designs, or the baseline without temporal blocks
    interpolation  the interpolation U-Net (3 frames between each pair of keyframes), v, on the base projection's
                   context as the official 1.1 pipeline gives it

Every ``save_every`` steps (and when the time limit is reached) a stage's models, optimiser, losses and time go to
``<work>/<stage>.state.pt``; running the stage again continues from there. The data of step ``s`` is drawn from
(seed, stage, s) alone, so a resumed run trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...io.checkpoints import load_model
from ...models.movq.model import MoVQ
from ...models.temporal.selection import (
    VARIANTS,
    fresh_variant,
    temporal_parameters,
    trained_variant_name,
    with_strength,
)
from ...models.text.condition import TextCondition
from ...models.text.encoder import TextEncoder, project_states, run_t5
from ...models.text.projections import TextProjection, load_projections
from ...models.unet.keyframe import TemporalStrength
from ...releases import MOTION_SCORES, OFFICIAL, skip_frames
from ...sampling.schedules import K11Schedule
from ..demo_models import TOKENS_LENGTH, create_demo_models, demo_configs
from ..training import TrainingConfig, save_checkpoint, training_timesteps
from . import world

STAGES = ("movq", "video_movq", "first_frame", "keyframes", "interpolation")
#: the files of the trained set, relative to the models folder (the official 1.1 names)
FILES = {"movq": "k11/movq.pt", "video_movq": "k11/video_movq.pt", "keyframe": "k11/t2v.pt",
         "interpolation": "k11/interpolation.pt", "projections": "k11/t5_projections.pt"}
#: the paper's baseline: keyframes with the temporal blocks switched off
BASELINE = "none"
#: in the work folder: the first-frame stage's U-Net, where every keyframe training starts
FIRST_FRAME_COPY = "first_frame.t2v.pt"
VIDEO_SIZE = 64
KEYFRAMES = 8
TEXT_DROPOUT = 0.1
#: share of the U-Nets' training steps at the noisiest timesteps: where the first frame's layout and the clip's
#: motion are decided (uniform timesteps left the first set moving shapes in directions set by the noise)
NOISY_SHARE = 0.5
#: the keyframes' loss weight at the noisiest steps (``TrainingConfig.loss_weight_cap``; about 1 / alpha_bar at
#: t = 980, the official sampler's first step, where an eps error e becomes an x0 error of 32 e). Part of the
#: setting whose keyframes read the motion words; on its own it did not make them (docs/toy_world.md)
LAYOUT_WEIGHT = 1000.0
#: the image MoVQ's latents: their mean square, and the bound they are kept inside (the samplers' x0 clamp is 1)
LATENT_POWER, LATENT_LIMIT = 0.2, 0.9
OnStep = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class StagePlan:
    """How long and how a stage trains: ``batch`` scenes per step. ``extended_from``: the lengths of the shorter
    plans the stage was first trained on, each to its end, before it was extended (up to each, the learning rate
    follows that plan's schedule; after, this one's), so the same command retrains what was trained."""

    steps: int
    batch: int
    learning_rate: float
    warmup: int = 100
    extended_from: tuple[int, ...] = ()


PLANS = {
    "movq": StagePlan(1500, 8, 1e-3),
    "video_movq": StagePlan(400, 2, 5e-4),
    "first_frame": StagePlan(6000, 16, 1e-3),
    "keyframes": StagePlan(4000, 4, 1e-3, extended_from=(2000,)),
    "interpolation": StagePlan(3000, 4, 1e-3),
}
#: the interpolation U-Net wider than the demo models' (16 and 32): at 16 its last layer's GroupNorm (4 channels a
#: group, no timestep input) normalised away the scale v needs, and the U-Net gave about 0.65 of the v it should
#: (``toy-eval --interpolation-fit``); 48 has 12 channels a group, as the official 384 in 32 groups
INTERPOLATION_WIDTH = {"init_channels": 48, "model_channels": 48}


def toy_configs() -> dict[str, Any]:
    """The configs.json of the toy set: the demo models' 1.1 configs, the interpolation U-Net wider."""
    configs = demo_configs("1.1")
    configs["interpolation"]["configs"].update(INTERPOLATION_WIDTH)
    return configs


@dataclass
class StageResult:
    stage: str
    steps: int
    done: bool
    seconds: float  # training time of the whole stage so far, over all resumed runs
    losses: list[float] = field(default_factory=list)


def learning_rate(plan: StagePlan, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth (of the first plan ``step`` falls in; see ``extended_from``)."""
    for end in plan.extended_from:
        if step < end:
            return learning_rate(StagePlan(end, plan.batch, plan.learning_rate, plan.warmup), step)
    if step < plan.warmup:
        return plan.learning_rate * (step + 1) / plan.warmup
    progress = (step - plan.warmup) / max(1, plan.steps - plan.warmup)
    return plan.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(stage.encode()) * 65_537 + step) % 2**63)


def draw_scenes(generator: torch.Generator, count: int, keyframes: int) -> list[world.Scene]:
    return [world.random_scene(generator, keyframes) for _ in range(count)]


# ---------------------------------------------------------------------------------------------------------------------
# the models folder


def initial_models(models: Path, seed: int = 0) -> None:
    """The starting point of every file not there yet: the demo models' random weights and configs (and their tiny
    T5, which stays frozen). Files already there (trained, or committed) are kept."""
    wanted = ["k11/configs.json", *FILES.values(), "text_encoder/config.json"]
    if all((models / relative).is_file() for relative in wanted):
        return
    scratch = models.parent / f".{models.name}.init"
    configs = scratch / "k11" / "configs.json"
    configs.parent.mkdir(parents=True, exist_ok=True)
    configs.write_text(json.dumps(toy_configs(), indent=1) + "\n")  # the demo models are built from it
    create_demo_models(scratch, seed=seed)
    for relative in ("k11/configs.json", *FILES.values()):
        target = models / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scratch / relative, target)
    if not (models / "text_encoder").exists():
        shutil.copytree(scratch / "text_encoder", models / "text_encoder")
    shutil.rmtree(scratch, ignore_errors=True)


class Captions:
    """The frozen T5 states of every caption of the grammar (computed once), projected by a trainable projection
    into U-Net contexts."""

    def __init__(self, models: Path) -> None:
        encoder = TextEncoder.load("1.1", models / "text_encoder", models / FILES["projections"],
                                   max_length=TOKENS_LENGTH)
        captions = world.all_captions()
        tokens = encoder.tokenize(captions)
        with torch.no_grad():
            hidden = run_t5(encoder.t5, tokens.input_ids, tokens.attention_mask)
        self.index = {caption: i for i, caption in enumerate(captions)}
        self.hidden = hidden
        self.mask = tokens.attention_mask.long()

    def contexts(self, projection: nn.Module, captions: list[str], null_embedding: torch.Tensor,
                 dropped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contexts and masks of ``captions``; the ``dropped`` ones are the null context (trains the guidance's
        unconditional branch)."""
        rows = torch.tensor([self.index[c] for c in captions])
        text = TextCondition(*project_states(projection, self.hidden[rows], self.mask[rows]))
        null = text.null(null_embedding)
        drop = dropped[:, None]
        return (torch.where(drop[..., None], null.context, text.context),
                torch.where(drop, null.mask, text.mask).bool())


def _projections(models: Path) -> dict[str, TextProjection]:
    return {name: projection.requires_grad_(True).train() for name, projection in
            load_projections(models / FILES["projections"], "1.1").items()}


def _write_projections(models: Path, projections: dict[str, TextProjection]) -> None:
    content = {f"projection_{name}": {k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
               for name, projection in projections.items()}
    _atomic_save(content, models / FILES["projections"])


def _atomic_save(content: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    torch.save(content, partial)
    partial.replace(path)


def _half(module: nn.Module) -> dict[str, torch.Tensor]:
    """A MoVQ's flat state dict in float16 (half the size to commit; the loaders compute in the dtype they are
    asked for, float32 by default)."""
    return {k: v.detach().half().contiguous() for k, v in module.state_dict().items()}


def _load(models: Path, key: str) -> nn.Module:
    return load_model(models / FILES[key], dtype=torch.float32).model


# ---------------------------------------------------------------------------------------------------------------------
# stages: each gives its trainable modules, the loss of one step and how to write the result


@dataclass
class Stage:
    modules: dict[str, nn.Module]
    parameters: list[nn.Parameter]
    loss: Callable[[torch.Generator, int], torch.Tensor]
    write: Callable[[], None]


def _frames(scenes: list[world.Scene], times: list[float], size: int) -> torch.Tensor:
    return torch.cat([world.render(scene, times, size) for scene in scenes])


def _with_grad(method: Callable) -> Callable:
    """A MoVQ method without its ``no_grad`` (inference) wrapper: the same computation, for training."""
    return method.__wrapped__


def _latents(movq: MoVQ, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return movq.encode(images)


def _movq_stage(models: Path, plan: StagePlan, work: Path) -> Stage:
    movq = _load(models, "movq").train().requires_grad_(True)

    def loss(generator: torch.Generator, step: int) -> torch.Tensor:
        size = 2 * VIDEO_SIZE if step % 4 == 3 else VIDEO_SIZE  # the first frame is decoded at twice the size
        scenes = draw_scenes(generator, plan.batch, KEYFRAMES)
        times = [float(torch.randint(KEYFRAMES, (), generator=generator))]
        images = _frames(scenes, times, size)
        latents = _with_grad(MoVQ.encode)(movq, images)
        # the official 1.1 samplers clamp every x0 prediction to [-1, 1], so the latents must lie inside it: a
        # scale that leaves room (mean square LATENT_POWER) and a hinge on what pokes out; noise on the latents
        # makes the decoder forgiving
        scale = (latents.pow(2).mean() - LATENT_POWER).pow(2)
        outside = F.relu(latents.abs() - LATENT_LIMIT).pow(2).mean()
        noisy = latents + 0.05 * torch.randn(latents.shape, generator=generator)
        decoded = _with_grad(MoVQ.decode)(movq, noisy)
        return F.l1_loss(decoded, images) + F.mse_loss(decoded, images) + 0.01 * scale + outside

    def write() -> None:
        _atomic_save(_half(movq), models / FILES["movq"])

    return Stage({"movq": movq}, list(movq.parameters()), loss, write)


def _video_movq_stage(models: Path, plan: StagePlan, work: Path) -> Stage:
    image = _load(models, "movq").eval()
    video = _load(models, "video_movq")
    own = video.state_dict()
    video.load_state_dict({**own, **{k: v for k, v in image.state_dict().items()
                                     if k in own and own[k].shape == v.shape}})
    for name, parameter in video.named_parameters():
        parameter.requires_grad_(name.startswith("decoder."))
    video.train()
    clip = 4

    def loss(generator: torch.Generator, step: int) -> torch.Tensor:
        scenes = draw_scenes(generator, plan.batch, KEYFRAMES)
        start = float(torch.randint(KEYFRAMES - 1, (), generator=generator))
        times = [start + i / 4 for i in range(clip)]  # consecutive frames of the interpolated video
        images = _frames(scenes, times, VIDEO_SIZE)
        latents = _latents(image, images)
        decoded = torch.cat([_with_grad(MoVQ.decode)(video, part) for part in latents.split(clip)])
        return F.l1_loss(decoded, images) + F.mse_loss(decoded, images)

    def write() -> None:
        _atomic_save(_half(video), models / FILES["video_movq"])

    return Stage({"video_movq": video}, [p for p in video.parameters() if p.requires_grad], loss, write)


def _noised(schedule: K11Schedule, x: torch.Tensor, noise: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``x_t`` per sample at training steps ``steps`` (the 1000-step zero-terminal-SNR table)."""
    ab = schedule.alphas_cumprod.to(x.dtype)[steps].reshape(-1, *([1] * (x.dim() - 1)))
    return ab.sqrt() * x + (1 - ab).sqrt() * noise


def _file_extras(models: Path, key: str) -> dict[str, Any]:
    """What a U-Net file holds besides its weights and null embedding (kept as it is when the file is rewritten)."""
    content = torch.load(models / FILES[key], map_location="cpu", weights_only=True)
    return {k: v for k, v in content.items() if k not in ("unet", "null_embedding")}


def _first_frame_loss(movq: MoVQ, unet: nn.Module, projection: nn.Module, captions: Captions,
                      plan: StagePlan) -> Callable[[torch.Generator, int], torch.Tensor]:
    """Image mode, eps: single frames at twice the video's size (the first frame) and at the video's size."""
    schedule = K11Schedule(50, spacing="leading", prediction="epsilon")

    def loss(generator: torch.Generator, step: int) -> torch.Tensor:
        size = 2 * VIDEO_SIZE if step % 2 == 0 else VIDEO_SIZE
        scenes = draw_scenes(generator, plan.batch, KEYFRAMES)
        # the clip's first frame: where the shape starts tells which way it will move, as the video model expects
        latents = _latents(movq, _frames(scenes, [0.0], size))
        steps = training_timesteps(generator, len(scenes), NOISY_SHARE)
        noise = torch.randn(latents.shape, generator=generator)
        dropped = torch.rand(len(scenes), generator=generator) < TEXT_DROPOUT
        context, mask = captions.contexts(projection, [s.caption for s in scenes], unet.null_embedding, dropped)
        zeros = torch.zeros(latents.shape[0], unet.config.num_channels - 4, *latents.shape[2:])
        inputs = torch.cat([_noised(schedule, latents, noise, steps), zeros], 1)
        return F.mse_loss(unet.forward_image(inputs, steps.float(), context, mask), noise)

    return loss


def _first_frame_stage(models: Path, plan: StagePlan, work: Path) -> Stage:
    movq = _load(models, "movq").eval()
    unet = _load(models, "keyframe").train().requires_grad_(True)
    for _, parameter in temporal_parameters(unet):
        parameter.requires_grad_(False)
    unet.in_layer.requires_grad_(False)
    projections = _projections(models)
    extras = _file_extras(models, "keyframe")
    loss = _first_frame_loss(movq, unet, projections["base"], Captions(models), plan)

    def write() -> None:
        save_checkpoint(unet, extras, models / FILES["keyframe"], torch.float16)
        _write_projections(models, projections)
        # the common start of the keyframe model and of every variant (k11/t2v.pt becomes a video model)
        shutil.copyfile(models / FILES["keyframe"], work / FIRST_FRAME_COPY)

    trainable = [p for p in unet.parameters() if p.requires_grad] + list(projections["base"].parameters())
    return Stage({"unet": unet, "projection_base": projections["base"]}, trainable, loss, write)


def _keyframes_stage(models: Path, plan: StagePlan, work: Path, variant: str | None = None) -> Stage:
    """Video mode on fresh (zero-output) temporal blocks of ``variant`` (default: the released one; "none": the
    temporal blocks switched off, the paper's baseline), over the first-frame stage's U-Net. Every parameter learns
    (the motion words must reach the video through the text layers), with an image-mode batch every 4th step so
    the first frame stays as it was trained; the result goes to ``k11/t2v.pt``, or for a variant to
    ``k11/variants/<variant>/t2v.pt``. It starts from the first-frame stage's U-Net in ``work`` (without one, a
    main model starts from ``k11/t2v.pt``)."""
    from ..training import KeyframeObjective11

    start = work / FIRST_FRAME_COPY
    if variant is not None and not start.is_file():
        raise FileNotFoundError(f"every variant starts from the first-frame U-Net, which 'toy-train --stage "
                                f"first_frame' leaves in {start}: train that stage first, into a copy of the "
                                "set whose k11/t2v.pt and k11/t5_projections.pt are taken out (training it in the "
                                "committed set would overwrite its keyframe model; docs/toy_world.md, 'The "
                                "paper's Table 1 in miniature', gives the commands).")
    movq = _load(models, "movq").eval()
    loaded = load_model(start, dtype=torch.float32, config_path=models / "k11" / "configs.json").model \
        if start.is_file() else _load(models, "keyframe")
    design = VARIANTS[0] if variant in (None, BASELINE) else variant
    unet = fresh_variant(loaded, design).train().requires_grad_(True)
    view = with_strength(unet, TemporalStrength(0.0, 0.0)) if variant == BASELINE else unet
    projection = _projections(models)["base"].requires_grad_(False)
    captions = Captions(models)
    official = OFFICIAL["1.1"]
    settings = TrainingConfig(Path(), Path(), Path(), noise_augmentation=official.noise_augmentation,
                              motion_score=MOTION_SCORES[official.motion], noisy_share=NOISY_SHARE,
                              loss_weight_cap=LAYOUT_WEIGHT)
    extras = _file_extras(models, "keyframe")
    image_loss = _first_frame_loss(movq, unet, projection, captions, plan)

    def loss(generator: torch.Generator, step: int) -> torch.Tensor:
        if step % 4 == 3:
            return image_loss(generator, step)
        scenes = draw_scenes(generator, plan.batch, KEYFRAMES)
        latents = _latents(movq, _frames(scenes, world.keyframe_times(KEYFRAMES), VIDEO_SIZE))
        dropped = torch.rand(len(scenes), generator=generator) < TEXT_DROPOUT
        context, mask = captions.contexts(projection, [s.caption for s in scenes], unet.null_embedding, dropped)
        objective = KeyframeObjective11(settings, generator)
        return objective.loss(view, latents, context.repeat_interleave(KEYFRAMES, 0),
                              mask.repeat_interleave(KEYFRAMES, 0), KEYFRAMES)

    target = models / FILES["keyframe"]
    if variant is not None:
        target = Path(trained_variant_name(target.as_posix(), variant))

    def write() -> None:
        save_checkpoint(unet, extras, target, torch.float16)
        if variant is not None:
            shutil.copyfile(models / "k11" / "configs.json", target.parent / "configs.json")

    return Stage({"unet": unet}, [p for p in unet.parameters() if p.requires_grad], loss, write)


@dataclass
class InterpolationBatch:
    """Scenes cut into frame pairs as the interpolation U-Net sees them: ``keyframes`` (scenes, pairs + 1, 4, h, w)
    and the 3 frames between each pair side by side in channels, ``x0`` (scenes * pairs, 12, h, w)."""

    scenes: list[world.Scene]
    keyframes: torch.Tensor
    x0: torch.Tensor

    @property
    def pairs(self) -> int:
        return self.keyframes.shape[1] - 1

    def blend(self) -> torch.Tensor:
        """The in-between latents blended linearly from each pair's keyframes, laid out as ``x0``: what a perfect
        interpolation of the toy world's straight motion comes close to."""
        left, right = self.keyframes[:, :-1], self.keyframes[:, 1:]
        shares = [j / 4 for j in range(1, 4)]
        return torch.cat([left * (1 - a) + right * a for a in shares], 2).flatten(0, 1)


def interpolation_batch(movq: MoVQ, generator: torch.Generator, count: int, pairs: int) -> InterpolationBatch:
    """``count`` scenes, each cut at a random keyframe into ``pairs`` consecutive pairs (all of them when ``pairs``
    is ``KEYFRAMES - 1``, as the 8-keyframe video has)."""
    scenes = draw_scenes(generator, count, KEYFRAMES)
    groups = []
    for scene in scenes:
        start = int(torch.randint(KEYFRAMES - pairs, (), generator=generator))
        times = [start + j / 4 for j in range(4 * pairs + 1)]
        groups.append(_latents(movq, world.render(scene, times, VIDEO_SIZE)))
    latents = torch.stack(groups)  # (scenes, 4 pairs + 1, 4, h, w)
    between = torch.stack([latents[:, 4 * p + 1:4 * p + 4].flatten(1, 2) for p in range(pairs)], 1)
    return InterpolationBatch(scenes, latents[:, ::4], between.flatten(0, 1))


def interpolation_prediction(unet: nn.Module, batch: InterpolationBatch, x_t: torch.Tensor, steps: torch.Tensor,
                             context: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The U-Net's v for noisy in-between latents ``x_t`` at ``steps``, its inputs laid out as the official 1.1
    sampler lays them out (medium fps); ``keep`` (scenes,): 0 zeroes a scene's keyframes and temporal layers (the
    unconditional branch)."""
    pairs, count = batch.pairs, x_t.shape[0]
    keep = keep.float().repeat_interleave(pairs)
    left = batch.keyframes[:, :-1].flatten(0, 1) * keep[:, None, None, None]
    right = batch.keyframes[:, 1:].flatten(0, 1) * keep[:, None, None, None]
    inputs = torch.cat([left, x_t, right], 1)
    skips = torch.full((count,), skip_frames(1), dtype=torch.int32)
    perturbation = torch.zeros(count, dtype=torch.int32)
    return unet(inputs, steps.float(), context.repeat_interleave(pairs, 0), mask.repeat_interleave(pairs, 0),
                skips, pairs, perturbation, keep)


def _interpolation_stage(models: Path, plan: StagePlan, work: Path) -> Stage:
    movq = _load(models, "movq").eval()
    unet = _load(models, "interpolation").train().requires_grad_(True)
    # the official 1.1 pipeline gives the interpolation the base projection's context (its interpolation projection
    # is loaded but never used), so that is what this U-Net learns to read; the projection stays as trained
    projection = _projections(models)["base"].requires_grad_(False)
    captions = Captions(models)
    schedule = K11Schedule(10, spacing="trailing", prediction="v_prediction")
    extras = _file_extras(models, "interpolation")
    pairs = 2  # frame pairs per scene and step

    def loss(generator: torch.Generator, step: int) -> torch.Tensor:
        batch = interpolation_batch(movq, generator, plan.batch, pairs)
        count = batch.x0.shape[0]
        steps = torch.randint(0, schedule.num_train_timesteps, (count,), generator=generator)
        noise = torch.randn(batch.x0.shape, generator=generator)
        ab = schedule.alphas_cumprod.float()[steps].reshape(-1, 1, 1, 1)
        target = ab.sqrt() * noise - (1 - ab).sqrt() * batch.x0
        dropped = torch.rand(plan.batch, generator=generator) < TEXT_DROPOUT
        context, mask = captions.contexts(projection, [s.caption for s in batch.scenes], unet.null_embedding, dropped)
        x_t = _noised(schedule, batch.x0, noise, steps)
        prediction = interpolation_prediction(unet, batch, x_t, steps, context, mask, ~dropped)
        return F.mse_loss(prediction.float(), target)

    def write() -> None:
        save_checkpoint(unet, extras, models / FILES["interpolation"], torch.float16)

    return Stage({"unet": unet}, list(unet.parameters()), loss, write)


BUILDERS: dict[str, Callable[[Path, StagePlan, Path], Stage]] = {
    "movq": _movq_stage, "video_movq": _video_movq_stage, "first_frame": _first_frame_stage,
    "keyframes": _keyframes_stage, "interpolation": _interpolation_stage,
}


# ---------------------------------------------------------------------------------------------------------------------
# the resumable loop


def train_stage(stage: str, models: Path, work: Path, *, steps: int | None = None, seed: int = 0,
                save_every: int = 100, time_limit: float | None = None, on_step: OnStep | None = None,
                variant: str | None = None) -> StageResult:
    """Train ``stage`` (continuing from ``<work>/<stage>.state.pt``) until its step count or ``time_limit``
    seconds; writes the stage's model files into ``models`` when it completes. ``variant`` (keyframes only): train
    that temporal variant (or the "none" baseline) into ``k11/variants/<variant>/`` instead of the main model."""
    if stage not in BUILDERS:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}.")
    if variant is not None and (stage != "keyframes" or variant not in (*VARIANTS, BASELINE)):
        raise ValueError(f"variants are trained in the keyframes stage: one of {', '.join((*VARIANTS, BASELINE))}.")
    torch.manual_seed(seed)
    models, work = Path(models), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    initial_models(models, seed)
    plan = PLANS[stage] if steps is None else StagePlan(
        steps, PLANS[stage].batch, PLANS[stage].learning_rate, min(PLANS[stage].warmup, max(1, steps // 10)),
        tuple(end for end in PLANS[stage].extended_from if end < steps))
    built = BUILDERS[stage](models, plan, work) if variant is None else _keyframes_stage(models, plan, work, variant)
    optimizer = torch.optim.AdamW(built.parameters, lr=plan.learning_rate, weight_decay=0.0)
    state_path = work / (f"{stage}.state.pt" if variant is None else f"{stage}.{variant}.state.pt")
    step, losses, before = 0, [], 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        for name, module in built.modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        step, losses, before = int(state["step"]), list(state["losses"]), float(state.get("seconds", 0.0))

    def save() -> None:
        _atomic_save({"step": step, "losses": losses, "optimizer": optimizer.state_dict(),
                      "seconds": before + time.monotonic() - started,
                      "modules": {n: m.state_dict() for n, m in built.modules.items()}}, state_path)

    started = time.monotonic()
    while step < plan.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(plan, step)
        loss = built.loss(step_generator(seed, stage, step), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(built.parameters, 1.0)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(stage, step, plan.steps, losses[-1])
        out_of_time = time_limit is not None and time.monotonic() - started > time_limit
        if step % save_every == 0 or out_of_time or step == plan.steps:
            save()
        if out_of_time:
            break
    done = step >= plan.steps
    if done:
        for module in built.modules.values():
            module.eval()
        built.write()
    return StageResult(stage, step, done, before + time.monotonic() - started, losses)


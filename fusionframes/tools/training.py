"""Training the keyframe model's temporal blocks as the paper did: the text-to-image U-Net frozen, only the temporal
layers of the chosen variant (and the temporal embeddings) learn, on latents of video clips.

Data: a folder of videos (``.mp4``, ``.gif``, ``.webp``), each optionally with a caption in a sidecar text file of
the same stem (``clip.mp4`` + ``clip.txt``); videos without one use the fixed prompt, or the null context when there
is neither (no text encoder needed). Frames are resized and centre-cropped to squares, encoded once with the MoVQ,
and clips of ``frames`` frames ``frame_stride`` apart are drawn at random.

Objective: eps prediction, as both releases sample. 1.0 on its cosine schedule (1000 bins, model time = bin);
1.1 on the 1000-step schedule of its sampler, with frame 0 given as the noise-augmented condition (uniform noise at
level 20, as the sampler does) and a fixed motion score. The written checkpoint has the official layout
(``{'unet', 'null_embedding', ...}``), so ``checkpoints.load_model`` and the loader node read it, variant included.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io.checkpoints import LoadedModel, load_model
from ..io.video import VIDEO_SUFFIXES, read_video
from ..models.configs import CONFIGS_FILE, release_config_for
from ..models.movq.decoding import encode_frames
from ..models.movq.model import MoVQ
from ..models.temporal.selection import AUTO, check_variant, resolve_variant, temporal_parameters, variant_of
from ..models.text.condition import TextCondition
from ..runtime.stages import LATENT_SCALE, positions_10
from ..sampling.schedules import K10Schedule, K11Schedule

#: called after every step with (step, total steps, loss)
OnTrainStep = Callable[[int, int, float], None]
TRAIN_TIMESTEPS = 1000
#: where ``TrainingConfig.noisy_share`` draws its timesteps from
NOISY_FROM = 600


@dataclass
class TrainingConfig:
    """What to train on and how. Paths: the keyframe checkpoint, the video folder, the checkpoint to write."""

    checkpoint: Path
    videos: Path
    output: Path
    variant: str = AUTO
    fresh: bool = False
    movq: Path | None = None  # default: movq.pt beside the checkpoint
    text_encoder: Path | None = None  # google/flan-ul2 folder; needed only for captions or a prompt
    projections: Path | None = None  # default: 1.0 the checkpoint itself, 1.1 t5_projections.pt beside it
    prompt: str | None = None
    frames: int = 8
    frame_stride: int = 1
    size: int = 256
    steps: int = 1000
    learning_rate: float = 1e-4
    batch_clips: int = 1
    text_dropout: float = 0.1
    image_dropout: float = 0.1
    noise_augmentation: int = 20
    motion_score: int = 10
    seed: int = 0
    device: str = "cpu"
    save_every: int = 0
    #: share of steps whose timestep comes from the noisiest NOISY_FROM.. steps, where the layout of the whole clip
    #: (where things are, which way they move) is decided; the rest uniform. 0: uniform, the usual objective
    noisy_share: float = 0.0
    #: each step's eps loss is weighted by 1 / alpha_bar(t) (the weight a v-prediction loss puts on the same
    #: error), capped here: at the noisiest steps eps hardly depends on the clip, so the plain loss (1) barely
    #: teaches the layout that is decided there
    loss_weight_cap: float = 1.0


@dataclass
class TrainingResult:
    losses: list[float]
    checkpoint: Path
    variant: str
    trainable_parameters: int
    skipped_videos: list[str] = field(default_factory=list)


@dataclass
class VideoLatents:
    latents: torch.Tensor  # (N, 4, h, w) on the training device
    caption: str | None
    source: Path


# ---------------------------------------------------------------------------------------------------------------------
# data


def find_videos(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"training videos: {folder} is not a folder.")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"training videos: no video files ({', '.join(VIDEO_SUFFIXES)}) in {folder}.")
    return videos


def square_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) in [-1, 1]: shorter side scaled to ``size``, centre crop."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    height, width = pixels.shape[-2:]
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    pixels = F.interpolate(pixels, size=resized, mode="bilinear", antialias=True, align_corners=False)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return pixels[:, :, top:top + size, left:left + size].clamp(-1, 1)


def caption_for(video: Path, prompt: str | None) -> str | None:
    sidecar = video.with_suffix(".txt")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").strip()
        return text or prompt
    return prompt


def encode_videos(
    videos: list[Path], movq: MoVQ, size: int, min_frames: int, prompt: str | None
) -> tuple[list[VideoLatents], list[str]]:
    """Latents of every usable video, and why the others were skipped (unreadable, too short)."""
    usable, skipped = [], []
    for video in videos:
        try:
            frames = read_video(video)
        except InputError as error:
            skipped.append(str(error))
            continue
        if frames.shape[0] < min_frames:
            skipped.append(f"{video.name}: {frames.shape[0]} frames, a clip needs {min_frames}.")
            continue
        latents = encode_frames(movq, square_frames(frames, size))
        usable.append(VideoLatents(latents, caption_for(video, prompt), video))
    if not usable:
        reasons = "; ".join(skipped[:5])
        raise InputError(f"training videos: none of the {len(videos)} videos can be used ({reasons}).")
    return usable, skipped


class ClipSampler:
    """Random clips of ``frames`` latents ``stride`` apart, uniformly over videos and start frames."""

    def __init__(self, videos: list[VideoLatents], frames: int, stride: int, generator: random.Random) -> None:
        self.videos = videos
        self.frames = frames
        self.stride = stride
        self.random = generator

    def clip(self) -> tuple[torch.Tensor, str | None]:
        video = self.random.choice(self.videos)
        span = (self.frames - 1) * self.stride + 1
        start = self.random.randrange(video.latents.shape[0] - span + 1)
        return video.latents[start:start + span:self.stride], video.caption


# ---------------------------------------------------------------------------------------------------------------------
# text


class TextContexts:
    """Every caption encoded once (the text encoder is frozen), padded to one length so clips batch together;
    ``None`` (no caption) and dropped captions are the null context."""

    def __init__(self, contexts: dict[str | None, TextCondition], null_embedding: torch.Tensor) -> None:
        self.contexts = contexts
        self.null_embedding = null_embedding

    @classmethod
    def build(cls, captions: set[str | None], null_embedding: torch.Tensor, encode: Callable | None,
              device: torch.device) -> TextContexts:
        texts = sorted(c for c in captions if c is not None)
        if texts and encode is None:
            raise InputError("training captions or a prompt need a text encoder (the google/flan-ul2 folder); "
                             "leave both out to train with the null context.")
        encoded = {text: encode(text) for text in texts}
        length = max([ctx.shape[1] for ctx, _ in encoded.values()] + [1])
        contexts: dict[str | None, TextCondition] = {
            text: TextCondition(F.pad(ctx, (0, 0, 0, length - ctx.shape[1])).to(device),
                                F.pad(mask, (0, length - mask.shape[1])).to(device))
            for text, (ctx, mask) in encoded.items()
        }
        width = null_embedding.shape[-1]
        blank = TextCondition(torch.zeros(1, length, width, device=device),
                              torch.zeros(1, length, dtype=torch.long, device=device))
        contexts[None] = blank.null(null_embedding.to(device))
        return cls(contexts, null_embedding)

    def batch(self, captions: list[str | None], drop: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.contexts[None if dropped else caption] for caption, dropped in zip(captions, drop)]
        return torch.cat([c.context for c in chosen]), torch.cat([c.mask for c in chosen]).bool()


def text_encoder_for(config: TrainingConfig, loaded: LoadedModel, device: torch.device) -> Callable | None:
    """``prompt -> (context (1, L, D), mask (1, L))`` with the release's text encoder, or None without one."""
    if config.text_encoder is None:
        return None
    from ..models.text.encoder import TextEncoder

    checkpoint = Path(config.checkpoint)
    projections = config.projections or (checkpoint if loaded.release == "1.0"
                                         else checkpoint.parent / "t5_projections.pt")
    text_config = release_config_for(checkpoint, loaded.release).text
    encoder = TextEncoder.load(loaded.release, config.text_encoder, projections, max_length=text_config.tokens_length,
                               context_dim=loaded.config.context_dim, device=device)

    def encode(prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            encoded = encoder.encode(prompt)
        return encoded.context.float(), encoded.mask

    return encode


# ---------------------------------------------------------------------------------------------------------------------
# objectives


def training_timesteps(generator: torch.Generator, count: int, noisy_share: float = 0.0) -> torch.Tensor:
    """``count`` training timesteps: uniform, or with ``noisy_share`` of them from the noisiest steps (see
    ``TrainingConfig.noisy_share``). With a share of 0 the draws are exactly the uniform ones."""
    uniform = torch.randint(0, TRAIN_TIMESTEPS, (count,), generator=generator)
    if noisy_share <= 0:
        return uniform
    noisy = torch.randint(NOISY_FROM, TRAIN_TIMESTEPS, (count,), generator=generator)
    return torch.where(torch.rand(count, generator=generator) < noisy_share, noisy, uniform)


class KeyframeObjective:
    """Noise a batch of clips at one random training step and return the eps-prediction loss."""

    def __init__(self, config: TrainingConfig, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator
        self.schedule = self.make_schedule()

    def make_schedule(self) -> K10Schedule | K11Schedule:
        raise NotImplementedError

    def _noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(device)

    def _timestep(self) -> int:
        return int(training_timesteps(self.generator, 1, self.config.noisy_share))

    def _weight(self, t: int) -> float:
        """The loss weight of timestep ``t`` (see ``TrainingConfig.loss_weight_cap``)."""
        return 1.0 / max(float(self.schedule.alphas_cumprod[t]), 1.0 / max(self.config.loss_weight_cap, 1.0))

    def loss(self, unet: torch.nn.Module, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor,
             frames: int) -> torch.Tensor:
        raise NotImplementedError


class KeyframeObjective10(KeyframeObjective):
    """1.0: eps on the cosine schedule; positions as the 1.0 sampler spaces them."""

    def make_schedule(self) -> K10Schedule:
        return K10Schedule(TRAIN_TIMESTEPS, prediction="eps")

    def loss(self, unet, latents, context, mask, frames):
        t = self._timestep()
        noise = self._noise(latents.shape, latents.device)
        noisy = self.schedule.add_noise(latents, noise, t)
        count = latents.shape[0]
        time = torch.full((count,), float(self.schedule.model_time(t)), device=latents.device)
        positions = positions_10(frames).repeat(count // frames).to(latents.device)
        prediction = unet(noisy, time, context, mask, positions, frames)
        return self._weight(t) * F.mse_loss(prediction.float(), noise)


class KeyframeObjective11(KeyframeObjective):
    """1.1: eps on the 1000-step schedule; frame 0 is the condition (noise-augmented, dropped with
    ``image_dropout`` so the image-free guidance branch is trained too)."""

    def make_schedule(self) -> K11Schedule:
        return K11Schedule(50, spacing="leading", prediction="epsilon")  # add_noise takes any of the 1000 steps

    def _condition(self, latents: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        clips = latents.shape[0] // frames
        condition = torch.zeros_like(latents).view(clips, frames, *latents.shape[1:])
        frame_mask = torch.zeros(clips, frames, 1, *latents.shape[2:], device=latents.device)
        first = latents.view(clips, frames, *latents.shape[1:])[:, 0]
        uniform = torch.rand(first.shape, generator=self.generator).to(latents.device)
        keep = (torch.rand(clips, generator=self.generator) >= self.config.image_dropout).to(latents.device)
        keep = keep.float()[:, None, None, None]
        condition[:, 0] = self.schedule.add_noise(first, uniform, self.config.noise_augmentation) * keep
        frame_mask[:, 0] = keep
        return condition.reshape(latents.shape), frame_mask.reshape(latents.shape[0], 1, *latents.shape[2:])

    def loss(self, unet, latents, context, mask, frames):
        t = self._timestep()
        noise = self._noise(latents.shape, latents.device)
        noisy = self.schedule.add_noise(latents, noise, t)
        condition, frame_mask = self._condition(latents, frames)
        count, device = latents.shape[0], latents.device
        time = torch.full((count,), float(t), device=device)
        positions = torch.arange(frames, device=device).repeat(count // frames).float()
        augmentation = torch.full((count,), self.config.noise_augmentation, dtype=torch.int32, device=device)
        motion = torch.full((count,), self.config.motion_score, dtype=torch.int32, device=device)
        inputs = torch.cat([noisy, condition, frame_mask], dim=1)
        prediction = unet(inputs, time, context, mask, positions, frames, augmentation, motion)
        return self._weight(t) * F.mse_loss(prediction.float(), noise)


OBJECTIVES: dict[str, type[KeyframeObjective]] = {"1.0": KeyframeObjective10, "1.1": KeyframeObjective11}


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints and the loop


def save_checkpoint(unet: torch.nn.Module, extras: dict[str, Any], path: Path,
                    dtype: torch.dtype | None = None) -> Path:
    """The official keyframe layout: ``{'unet': state_dict, 'null_embedding', ...extras of the source file}``,
    written through a temporary file so an interrupted save never leaves half a checkpoint. ``dtype``: the U-Net
    weights' (1.1's files hold float16; the null embedding stays float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().to(dtype or v.dtype).contiguous() for k, v in unet.state_dict().items()}
    content = {**extras, "unet": weights, "null_embedding": unet.null_embedding.detach().float().cpu()}
    partial = path.with_name(f".{path.name}.partial")
    torch.save(content, partial)
    partial.replace(path)
    return path


def copy_configs_beside(checkpoint: Path, output: Path) -> None:
    """A non-official size is described by the configs.json beside its checkpoint: put it beside the trained one
    too (unless one is there already), so ``load_model`` reads the output as it read the input."""
    source, target = Path(checkpoint).parent / CONFIGS_FILE, Path(output).parent / CONFIGS_FILE
    if source.is_file() and not target.exists():
        target.write_bytes(source.read_bytes())


def check_config(config: TrainingConfig, levels: int) -> None:
    multiple = LATENT_SCALE * 2 ** (levels - 1)
    if config.size < multiple or config.size % multiple:
        raise InputError(f"training size must be a multiple of {multiple} pixels for this model, got {config.size}.")
    for name in ("frames", "frame_stride", "steps", "batch_clips"):
        if getattr(config, name) < 1:
            raise InputError(f"training {name} must be at least 1, got {getattr(config, name)}.")
    if config.frames < 2:
        raise InputError("training clips need at least 2 frames: the temporal layers learn from their relations.")
    if not config.learning_rate > 0:
        raise InputError(f"learning rate must be positive, got {config.learning_rate}.")


def _trainable_model(config: TrainingConfig, loaded: LoadedModel, device: torch.device) -> torch.nn.Module:
    """The model to train, temporal parameters unfrozen; fresh blocks are drawn from ``config.seed``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        unet = resolve_variant(loaded.model, config.variant, fresh=config.fresh, device=device)
    unet = unet.to(device=device, dtype=torch.float32).train()
    for _, parameter in temporal_parameters(unet):
        parameter.requires_grad_(True)
    return unet


def _movq(config: TrainingConfig, device: torch.device) -> MoVQ:
    path = config.movq or Path(config.checkpoint).parent / "movq.pt"
    return load_model(path, expected_kind="movq", device=device).model


def train_temporal(config: TrainingConfig, on_step: OnTrainStep | None = None) -> TrainingResult:
    """Train the temporal layers of ``config.checkpoint``'s keyframe model and write ``config.output``."""
    device = torch.device(config.device)
    check_variant(config.variant)
    loaded = load_model(config.checkpoint, expected_kind="keyframe", device=device)
    check_config(config, len(loaded.config.dim_mult))
    unet = _trainable_model(config, loaded, device)
    loaded = dataclasses.replace(loaded, model=unet)  # a fresh variant replaces the source: one model in memory
    videos, skipped = encode_videos(find_videos(config.videos), _movq(config, device), config.size,
                                    (config.frames - 1) * config.frame_stride + 1, config.prompt)
    texts = TextContexts.build({v.caption for v in videos}, loaded.model.null_embedding,
                               text_encoder_for(config, loaded, device), device)
    trainable = [p for _, p in temporal_parameters(unet)]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    choices = random.Random(config.seed)
    sampler = ClipSampler(videos, config.frames, config.frame_stride, choices)
    objective = OBJECTIVES[loaded.release](config, generator)
    extras = {k: v for k, v in loaded.extras.items() if k != "null_embedding"}
    losses: list[float] = []
    for step in range(1, config.steps + 1):
        clips = [sampler.clip() for _ in range(config.batch_clips)]
        latents = torch.cat([clip for clip, _ in clips])
        context, mask = texts.batch([caption for _, caption in clips],
                                    [choices.random() < config.text_dropout for _ in clips])
        loss = objective.loss(unet, latents, context, mask, config.frames)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, config.steps, losses[-1])
        if config.save_every and step % config.save_every == 0 and step != config.steps:
            save_checkpoint(unet, extras, config.output)
    save_checkpoint(unet.eval(), extras, config.output)
    copy_configs_beside(config.checkpoint, config.output)
    return TrainingResult(losses, Path(config.output), variant_of(unet), sum(p.numel() for p in trainable), skipped)

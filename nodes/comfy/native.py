"""The FusionFrames U-Nets as ComfyUI MODELs, and the official sampler, sigmas and noise as core sampling pieces.

Every use of ComfyUI's model internals is here (written against ComfyUI 0.3.75): ``comfy.model_base.BaseModel``
(our network as ``diffusion_model``, so LoRA keys, TorchCompileModel and the memory manager see it as for any core
model), ``comfy.model_sampling`` (the release's noise levels), ``comfy.latent_formats`` (MoVQ's 4-channel video
latents ``[B, C, T, h, w]``), ``comfy.conds`` (what each conditioning adds to a batched call) and
``comfy.samplers.Sampler`` (the official DDPM loop). The math lives in the engine (``sampling.native``).

Conditionings. 'FusionFrames Text Encode' gives core CONDITIONING: the projected context with its mask under
``attention_mask`` and our options under :data:`OPTIONS` (release; ``null``: the model's null context, the official
unconditional branch). The conditioning nodes add what a stage needs (1.1 keyframes: the first-frame latent, noise
augmentation, motion score; interpolation: the frames to interpolate, skip frames, temporal gate) and the noise
stream (``phase``). A conditioning without them is an unconditional branch of its stage (zero key frame, zero
keyframes, temporal layers off), which is what the official samplers batch as their last branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers
import comfy.supported_models_base
import torch

from ...fusionframes.models.text.condition import TextCondition
from ...fusionframes.releases import MOTION_SCORES, OFFICIAL, skip_frames
from ...fusionframes.runtime import preflight
from ...fusionframes.runtime.stages import keyframe_draws_11
from ...fusionframes.sampling import native
from ...fusionframes.sampling.fast import PREDICTIONS
from ...fusionframes.sampling.loop import noise_role
from ...fusionframes.sampling.noise import NoiseSource, SeededNoise

COMFY_VERSION = "0.3.75"
#: our options inside a core conditioning's dict
OPTIONS = "fusionframes"
#: the noise streams of a seed; tests substitute recorded noise
NOISE_SOURCE: Callable[[int], NoiseSource] = SeededNoise


class VideoLatentFormat(comfy.latent_formats.LatentFormat):
    """MoVQ latents of video frames, ``[B, 4, T, h, w]``, unscaled. The core previewer's "latent -> RGB" step is ours
    (``previews.video_sheet``: the fitted colours or a MoVQ decode, all frames on a sheet, announced to the canvas
    for playing); its factors are then the identity on RGB."""

    latent_channels = 4
    latent_dimensions = 3
    scale_factor = 1.0
    latent_rgb_factors_bias = None

    @property
    def latent_rgb_factors(self) -> list[list[float]] | None:
        from .previews import can_preview

        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] if can_preview() else None

    @property
    def latent_rgb_factors_reshape(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from .previews import video_sheet

        def to_rgb(video: torch.Tensor) -> torch.Tensor:
            sheet = video_sheet(video)
            return video.new_zeros(1, 3, 1, *video.shape[-2:]) if sheet is None else sheet.to(video.device)

        return to_rgb


class _Config(comfy.supported_models_base.BASE):
    unet_config = {"disable_unet_model_creation": True}
    latent_format = VideoLatentFormat
    memory_usage_factor = 2.0

    def __init__(self) -> None:
        super().__init__({"disable_unet_model_creation": True})


class FusionFramesSampling(comfy.model_sampling.ModelSamplingDiscrete):
    """The release's noise levels; 1.0 can be paired to the bins of its official sampler (:meth:`use_bins`)."""

    prediction = "eps"

    def __init__(self, release: str) -> None:
        torch.nn.Module.__init__(self)
        self.release = release
        self.sigma_data = 1.0
        self.zsnr = False
        self.use_bins(None)

    def use_bins(self, bins: int | None) -> None:
        table = native.model_table(self.release, self.prediction, bins)
        self.bins = bins
        self.time_scale = table.time_scale
        self.num_timesteps = len(table.alpha_bars)
        self.set_sigmas(table.sigmas())

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return super().timestep(sigma) * self.time_scale

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return super().sigma(timestep / self.time_scale)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor):
        return native.prediction_to_x0(self.prediction, model_input, model_output, sigma.reshape(-1), self.release)


class _EpsSampling(FusionFramesSampling, comfy.model_sampling.EPS):
    pass


class _VSampling(FusionFramesSampling, comfy.model_sampling.V_PREDICTION):
    prediction = "v"


def _stage_prediction(release: str, kind: str) -> str:
    return PREDICTIONS[(release, "interpolation" if kind == "interpolation" else "keyframes")]


class FusionFramesModel(comfy.model_base.BaseModel):
    """A FusionFrames U-Net (keyframe or interpolation, 1.0 or 1.1) as a core model."""

    def __init__(self, unet: torch.nn.Module, release: str, kind: str) -> None:
        prediction = _stage_prediction(release, kind)
        model_type = comfy.model_base.ModelType.V_PREDICTION if prediction == "v" else comfy.model_base.ModelType.EPS
        super().__init__(_Config(), model_type, device=None)
        self.diffusion_model = unet
        self.model_sampling = (_VSampling if prediction == "v" else _EpsSampling)(release)
        self.release = release
        self.kind = kind

    @property
    def inner(self) -> torch.nn.Module:
        """The engine's network (what the pack's own nodes run)."""
        return self.diffusion_model

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.dtype

    def describe(self) -> str:
        return f"FusionFrames {self.release} {self.kind} model"

    def stage(self, frames: int) -> str:
        """The sampling stage a latent of ``frames`` frames is in (1.1 keyframes need at least 2 frames)."""
        if self.kind == "interpolation":
            return "interpolation"
        return "first_frame" if self.release == "1.1" and frames == 1 else "keyframes"

    # -- conditioning --------------------------------------------------------------------------------------------------

    def _text(self, kwargs: dict[str, Any], options: dict[str, Any]) -> TextCondition:
        context = kwargs.get("cross_attn")
        width = self.diffusion_model.config.context_dim
        if context is None or OPTIONS not in kwargs:
            shape = "none" if context is None else f"{tuple(context.shape)}"
            raise ValueError(f"{self.describe()}: this conditioning (context {shape}) does not come from "
                             "'FusionFrames Text Encode'; core text encoders (CLIP, T5 of other models) make contexts "
                             "this model cannot read.")
        if context.shape[-1] != width:
            raise ValueError(f"{self.describe()}: the conditioning is {context.shape[-1]} wide but the model takes "
                             f"{width}: encode with the projections of release {self.release}.")
        release = options.get("release")
        if release is not None and release != self.release:
            raise ValueError(f"{self.describe()}: the conditioning was encoded for release {release}; use the "
                             f"projections file of release {self.release}.")
        mask = kwargs.get("attention_mask")
        mask = torch.ones(context.shape[:2], dtype=torch.long) if mask is None else mask.reshape(context.shape[:2])
        text = TextCondition(context.float(), mask.long())
        return text.null(self.diffusion_model.null_embedding.detach().float().cpu()) if options.get("null") else text

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        options = kwargs.get(OPTIONS) or {}
        text = self._text(kwargs, options)
        noise = kwargs["noise"]
        if noise.dim() != 5 or noise.shape[1] != 4:
            raise ValueError(f"{self.describe()}: latents must be MoVQ video latents [batch, 4, frames, h, w], got "
                             f"{tuple(noise.shape)}; make them with the FusionFrames conditioning nodes (an SD/SDXL "
                             "Empty Latent Image is not one).")
        stage = self.stage(noise.shape[2])
        out: dict[str, Any] = {"c_crossattn": comfy.conds.CONDCrossAttn(text.context),
                               "ff_mask": comfy.conds.CONDRegular(text.mask.float())}

        def setting(name: str, value: int) -> None:
            out[name] = comfy.conds.CONDRegular(torch.tensor([int(value)], dtype=torch.int32))

        h, w = noise.shape[-2:]
        if stage == "keyframes" and self.release == "1.1":
            official = OFFICIAL["1.1"]
            level = int(options.get("noise_augmentation", official.noise_augmentation))
            key_frame = options.get("key_frame")
            if key_frame is None:
                augmented = torch.zeros(1, 4, h, w)
            else:
                if tuple(key_frame.shape[-2:]) != (h, w):
                    raise ValueError(f"{self.describe()}: the first-frame latent is {tuple(key_frame.shape[-2:])} but "
                                     f"the video latent is {(h, w)}: make both with the same width and height.")
                source = NOISE_SOURCE(int(kwargs.get("seed") or 0))
                _, augmented = keyframe_draws_11(key_frame.float().cpu(), source, options.get("phase", "keyframes"),
                                                 noise.shape[2], level)
                augmented = augmented[None]
            out["ff_key_frame"] = comfy.conds.CONDRegular(augmented)
            out["ff_key_frame_mask"] = comfy.conds.CONDRegular(torch.tensor([float(key_frame is not None)]))
            setting("ff_noise_augmentation", level)
            setting("ff_motion_score", options.get("motion_score", MOTION_SCORES[official.motion]))
        if stage == "interpolation":
            groups = noise.shape[2] // 3
            keyframes = options.get("keyframes")
            if keyframes is None:
                keyframes = torch.zeros(1, groups + 1, 4, h, w)
            elif keyframes.shape[1] != groups + 1 or tuple(keyframes.shape[-2:]) != (h, w):
                raise ValueError(f"{self.describe()}: {keyframes.shape[1]} keyframes of {tuple(keyframes.shape[-2:])} "
                                 f"do not fit {noise.shape[2]} in-between frames of {(h, w)}; use the latent that "
                                 "'FusionFrames Interpolation Conditioning' made with them.")
            out["ff_keyframes"] = comfy.conds.CONDRegular(keyframes.float())
            gate = torch.tensor([float(options.get("keyframes") is not None)])
            out["ff_temporal_gate"] = comfy.conds.CONDRegular(gate)
            setting("ff_skip_frames", options.get("skip_frames", skip_frames(1)))
            setting("ff_perturbation_time", 0)
        return out

    # -- the call ------------------------------------------------------------------------------------------------------

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        sigma = t
        stage = self.stage(x.shape[2])
        model_input = self.model_sampling.calculate_input(sigma, x)
        branches = native.Branches(
            context=c_crossattn, mask=kwargs["ff_mask"], key_frame=kwargs.get("ff_key_frame"),
            key_frame_mask=kwargs.get("ff_key_frame_mask"), keyframes=kwargs.get("ff_keyframes"),
            temporal_gate=kwargs.get("ff_temporal_gate"), noise_augmentation=kwargs.get("ff_noise_augmentation"),
            motion_score=kwargs.get("ff_motion_score"), skip_frames=kwargs.get("ff_skip_frames"),
            perturbation_time=kwargs.get("ff_perturbation_time"))
        times = self.model_sampling.timestep(sigma.reshape(-1)).float()
        frames = native.video_to_frames(model_input.float(), stage)
        output = native.unet_forward(self.diffusion_model, self.release, stage, frames, times, branches)
        output = native.frames_to_video(output, x.shape[0], stage).to(x.device)
        return self.model_sampling.calculate_denoised(sigma, output.float(), x)

    def memory_required(self, input_shape, cond_shapes=None):
        """The engine's estimate for a call on ``input_shape`` (ComfyUI batches conditionings by it)."""
        batch, _, frames, height, width = input_shape
        stage = self.stage(frames)
        cost = {"first_frame": "first_frame", "interpolation": "interpolation"}.get(stage, f"keyframes_{self.release}")
        units = batch * frames // native.stage_frames(stage)
        return preflight.unet_need("sampling", cost, self.diffusion_model, units, "frames", height, width,
                                   "").device_bytes


class FusionFramesPatcher(comfy.model_patcher.ModelPatcher):
    """The ModelPatcher of our U-Nets. A set of weight patches that matches none of the network's weights (a LoRA
    made for another model: ComfyUI keeps the unmatched keys and only logs them) is refused, since the LoRA would
    silently change nothing."""

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        if not patches:
            model = self.model
            names = [name for name, _ in model.diffusion_model.named_parameters()]
            examples = ", ".join(f"diffusion_model.{name}" for name in names[:2])
            raise ValueError(f"This LoRA (or patch) matched none of the {len(names)} weights of the "
                             f"{model.describe()}: it was made for another model, so it would change nothing (the "
                             "ComfyUI log lists its keys as 'lora key not loaded'). A LoRA for this U-Net names the "
                             f"weights of its official checkpoint, e.g. {examples} (as .lora_up/.lora_down or "
                             "lora_unet_ keys); connect one made for it, or bypass the LoRA node.")
        return super().add_patches(patches, strength_patch, strength_model)


def fusionframes_model(patcher: Any, what: str) -> FusionFramesModel:
    """The FusionFrames model behind a MODEL, or an error naming both sides."""
    model = getattr(patcher, "model", None)
    if not isinstance(model, FusionFramesModel):
        name = type(model).__name__ if model is not None else type(patcher).__name__
        raise ValueError(f"{what}: this MODEL is a {name}, not a FusionFrames U-Net; connect the MODEL output of "
                         "'Load FusionFrames Keyframe Model' or 'Load FusionFrames Interpolation Model'.")
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Core conditioning
# ----------------------------------------------------------------------------------------------------------------------


def text_conditioning(text: TextCondition, null: bool = False) -> list:
    """A core CONDITIONING of one encoded prompt (``null``: the model's null context of the same length)."""
    options = {"release": text.release, "null": bool(null)}
    return [[text.context.float().cpu(), {"attention_mask": text.mask.cpu(), OPTIONS: options}]]


def with_options(conditioning: list, what: str, **options: Any) -> list:
    """A copy of ``conditioning`` with our stage options added to each entry."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{what}: expected a CONDITIONING.")
    result = []
    for entry in conditioning:
        tensor, extra = entry[0], dict(entry[1])
        extra[OPTIONS] = {**extra.get(OPTIONS, {}), **options}
        result.append([tensor, extra])
    return result


def release_of(conditioning: list) -> str | None:
    for _, extra in conditioning:
        if OPTIONS in extra:
            return extra[OPTIONS].get("release")
    return None


# ----------------------------------------------------------------------------------------------------------------------
# The official sampler, noise and sigmas
# ----------------------------------------------------------------------------------------------------------------------


def _phase(guider: Any, stage: str) -> str:
    for name in ("positive", "middle", "negative"):
        for cond in (getattr(guider, "conds", None) or {}).get(name, []) or []:
            phase = (cond.get(OPTIONS) or {}).get("phase")
            if phase:
                return phase
    return {"first_frame": "first_frame", "keyframes": "keyframes", "interpolation": "interpolation1"}[stage]


class StreamNoise:
    """A NOISE whose starting noise is the engine's: the stream of (seed, phase), phase from the latent."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if samples.dim() != 5:
            raise ValueError(f"FusionFrames Seeded Noise: expected a video latent [batch, 4, frames, h, w], got "
                             f"{tuple(samples.shape)}.")
        info = input_latent.get(OPTIONS) or {}
        stage = info.get("stage") or ("first_frame" if samples.shape[2] == 1 else "keyframes")
        phase = info.get("phase") or stage
        k = native.stage_frames(stage)
        shape = (samples.shape[0] * samples.shape[2] // k, 4 * k, *samples.shape[-2:])
        drawn = NOISE_SOURCE(self.seed).normal(phase, "init", shape)
        return native.frames_to_video(drawn, samples.shape[0], stage).contiguous()


class OfficialSampler(comfy.samplers.Sampler):
    """The official DDPM loop of the model's release on whatever sigmas it is given (the official ones from
    'FusionFrames Official Sigmas' reproduce the official sampler); step noise from the engine's stream of
    (seed, phase), so with 'FusionFrames Seeded Noise' a run equals the pack's sampler nodes for the same seed."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model = model_wrap.inner_model
        if not isinstance(model, FusionFramesModel):
            raise ValueError(f"FusionFrames Official Sampler: the model is a {type(model).__name__}; this sampler runs "
                             "FusionFrames U-Nets only. Use a core sampler (euler, dpmpp_2m, ...) for other models.")
        stage = model.stage(noise.shape[2])
        phase = _phase(model_wrap, stage)
        sampling = model.model_sampling
        bins = native.official_bins(model.release, stage, sigmas)
        previous = sampling.bins
        if bins is not None:  # 1.0's official sampler shows the U-Net its bins' model times
            sampling.use_bins(bins)
        try:
            return self._sample(model, model_wrap, stage, phase, sigmas, extra_args, callback, noise, latent_image,
                                denoise_mask)
        finally:
            sampling.use_bins(previous)

    def _sample(self, model, model_wrap, stage, phase, sigmas, extra_args, callback, noise, latent_image,
                denoise_mask):
        sampling = model.model_sampling
        extra_args["denoise_mask"] = denoise_mask
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        x = sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        source = NOISE_SOURCE(int(extra_args.get("seed") or 0))
        k = native.stage_frames(stage)
        batch = noise.shape[0]
        frames_shape = (batch * noise.shape[2] // k, 4 * k, *noise.shape[-2:])
        source.normal(phase, "init", frames_shape)  # the draws before the steps: the stream continues after them
        if stage == "keyframes" and model.release == "1.1":
            source.uniform(phase, "noise_aug", (4, *noise.shape[-2:]))

        def step_noise(index: int, shape: tuple[int, ...]) -> torch.Tensor:
            drawn = source.normal(phase, noise_role(index), frames_shape)
            return native.frames_to_video(drawn, batch, stage).to(x.device)

        def denoise(state: torch.Tensor, sigma: float) -> torch.Tensor:
            s_in = state.new_ones([state.shape[0]])
            return model_k(state, sigma * s_in, **extra_args)

        def model_time(sigma: float) -> int:
            return int(sampling.timestep(torch.tensor([sigma], device=sampling.sigmas.device)).item())

        def on_step(index: int, x0: torch.Tensor, state: torch.Tensor) -> None:
            if callback is not None:
                callback(index, x0, state, len(sigmas) - 1)

        samples = native.sample_official(model.release, stage, denoise, x, sigmas.cpu(), model_time, step_noise,
                                         on_step)
        return sampling.inverse_noise_scaling(sigmas[-1], samples)


# ----------------------------------------------------------------------------------------------------------------------
# VIDEO
# ----------------------------------------------------------------------------------------------------------------------


def core_video(images: torch.Tensor, fps: float) -> Any:
    """IMAGE frames ``[N, H, W, 3]`` and their rate as the core VIDEO type (``comfy_api``'s video from components)."""
    from fractions import Fraction

    from comfy_api.latest import InputImpl, Types

    rate = Fraction(float(fps)).limit_denominator(1001)
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=rate))

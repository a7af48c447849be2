"""Loader nodes: one per model, each reading an official file from ComfyUI's model folders."""

from __future__ import annotations

import torch
from comfy_api.latest import io
from torch import nn

from ..fusionframes.io.checkpoints import inspect, load_model
from ..fusionframes.io.detect import projections_release
from ..fusionframes.models.configs import release_config_for
from ..fusionframes.models.dtypes import MODEL_DTYPE_CHOICES, TEXT_DTYPE_CHOICES, model_dtype, text_dtype
from ..fusionframes.models.text.encoder import TextEncoder
from ..fusionframes.runtime.layout import prefers_channels_last, use_channels_last
from .comfy import models as cm
from .comfy.previews import decoded_previews
from .comfy.previews import remember as remember_colours
from .types import CATEGORY, InterpolationModel, KeyframeModel, MoVQModel, TextEncoderModel

FP8 = "fp8_e4m3fn"
DTYPE_TOOLTIP = "Weight dtype. auto: fp32 on CPU, bf16 (or fp16) on GPUs. fp16/bf16 halve the memory."


def _checkpoint_input(tooltip: str) -> io.Combo.Input:
    return io.Combo.Input("ckpt_name", options=cm.checkpoint_files(), tooltip=tooltip)


def _load(ckpt_name: str, kind: str, dtype_choice: str) -> cm.ManagedModel:
    device = cm.compute_device()
    return load_managed(ckpt_name, kind, model_dtype(dtype_choice, device, bf16=cm.host_supports_bf16(device)))


def load_managed(ckpt_name: str, kind: str, dtype: torch.dtype) -> cm.ManagedModel:
    """A model file of the model folders under ComfyUI's memory manager (for the loaders, and the selector's trained
    variants)."""
    loaded = load_model(cm.checkpoint_path(ckpt_name), expected_kind=kind, dtype=dtype,
                        device=cm.offload_device())
    if prefers_channels_last(cm.compute_device()):
        use_channels_last(loaded.model)  # the layout survives the memory manager's moves to the GPU
    return cm.manage(loaded.model, loaded.release, kind, ckpt_name)


class _UNetLoader(io.ComfyNode):
    """A U-Net loader node; subclasses name the kind, the node and the files it takes."""

    KIND = ""
    NODE_ID = ""
    DISPLAY_NAME = ""
    FILES = ""
    OUTPUT = KeyframeModel

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/loaders",
            description=f"Loads the {cls.KIND} U-Net: {cls.FILES} from models/fusionframes.",
            inputs=[
                _checkpoint_input(f"{cls.FILES}; the release is detected from the file."),
                io.Combo.Input("weight_dtype", options=list(MODEL_DTYPE_CHOICES), default="auto",
                               tooltip=DTYPE_TOOLTIP),
            ],
            outputs=[cls.OUTPUT.Output(display_name=f"{cls.KIND}_model"),
                     io.Model.Output(display_name="model",
                                     tooltip="The same U-Net as a core MODEL: for KSampler, SamplerCustomAdvanced, "
                                             "LoRA loaders and other model patches (see 'Using the core samplers').")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str) -> io.NodeOutput:
        cm.check_widgets(cls, locals(), files=("ckpt_name",))
        managed = _load(ckpt_name, cls.KIND, weight_dtype)
        return io.NodeOutput(managed, managed.patcher.clone())


class LoadKeyframeModel(_UNetLoader):
    KIND = "keyframe"
    NODE_ID = "FusionFramesLoadKeyframeModel"
    DISPLAY_NAME = "Load FusionFrames Keyframe Model"
    FILES = "kandinsky_video.pt (1.0) or t2v.pt (1.1)"
    OUTPUT = KeyframeModel


class LoadInterpolationModel(_UNetLoader):
    KIND = "interpolation"
    NODE_ID = "FusionFramesLoadInterpolationModel"
    DISPLAY_NAME = "Load FusionFrames Interpolation Model"
    FILES = "kandinsky_video_interpolation.pt (1.0) or interpolation.pt (1.1)"
    OUTPUT = InterpolationModel


class LoadMoVQ(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesLoadMoVQ",
            display_name="Load FusionFrames MoVQ",
            category=f"{CATEGORY}/loaders",
            description="Loads a MoVQ autoencoder: movq.pt (image decoder, both releases) or video_movq.pt "
                        "(1.1 temporal decoder).",
            inputs=[
                _checkpoint_input("movq.pt (image) or video_movq.pt (temporal, 1.1)."),
                io.Combo.Input("weight_dtype", options=list(MODEL_DTYPE_CHOICES), default="fp32",
                               tooltip="The official code runs MoVQ in fp32."),
                io.Int.Input("decoded_preview_every", default=0, min=0, max=1000, optional=True,
                             tooltip="Live previews while sampling: 0 shows the frames in colours read straight "
                                     "from the latents (free). N > 0 decodes the frames with this MoVQ for the "
                                     "first preview and every N-th step after it (one decode of every frame each "
                                     "time; skipped when it does not fit in free memory). Image MoVQ (movq.pt) "
                                     "only."),
            ],
            outputs=[MoVQModel.Output(display_name="movq")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str, decoded_preview_every: int = 0) -> io.NodeOutput:
        cm.check_widgets(cls, locals(), files=("ckpt_name",))
        info = inspect(cm.checkpoint_path(ckpt_name))
        if info.kind not in ("movq", "video_movq"):
            raise ValueError(f"{ckpt_name} is not a MoVQ checkpoint (it holds a {info.kind}); choose movq.pt or "
                             "video_movq.pt.")
        managed = _load(ckpt_name, info.kind, weight_dtype)
        if info.kind == "movq":  # the colours of the live previews, and their decoder if asked
            remember_colours(managed.module, cm.checkpoint_path(ckpt_name))
            decoded_previews(managed, decoded_preview_every)
        elif decoded_preview_every:
            raise ValueError(f"Load FusionFrames MoVQ: decoded previews come from the image MoVQ (movq.pt), and "
                             f"{ckpt_name} is the temporal one: set decoded_preview_every on the loader of movq.pt "
                             "and leave it at 0 here.")
        return io.NodeOutput(managed)


class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesLoadTextEncoder",
            display_name="Load FusionFrames Text Encoder",
            category=f"{CATEGORY}/loaders",
            description="Loads FLAN-UL2 (models/text_encoders) and the release's T5 projections "
                        "(models/fusionframes: t5_projections.pt for 1.1, kandinsky_video.pt for 1.0).",
            inputs=[
                io.Combo.Input("text_encoder", options=cm.text_encoder_choices(),
                               tooltip="google/flan-ul2 folder (Hugging Face layout) or one .safetensors file with "
                                       "its config.json and spiece.model beside it."),
                io.Combo.Input("projections", options=cm.checkpoint_files(),
                               tooltip="t5_projections.pt (1.1) or kandinsky_video.pt (1.0, the projections are "
                                       "inside it). Decides the release."),
                io.Combo.Input("weight_dtype", options=[*TEXT_DTYPE_CHOICES[:-1], FP8], default="auto",
                               tooltip="auto: bf16 on GPUs that support it, else fp32 (FLAN-UL2 overflows in fp16, "
                                       "so fp16 is never used; fp32, the official 1.1 choice, takes 34 GB), fp32 on "
                                       "the CPU. fp8_e4m3fn stores the weights in 8 bits (9 GB) and computes in "
                                       "bf16."),
            ],
            outputs=[TextEncoderModel.Output(display_name="text_encoder")],
        )

    @classmethod
    def execute(cls, text_encoder: str, projections: str, weight_dtype: str) -> io.NodeOutput:
        cm.check_widgets(cls, locals(), files=("text_encoder", "projections"))
        projections_path = cm.checkpoint_path(projections)
        release = projections_release(inspect(projections_path))
        if release is None:
            raise ValueError(f"{projections} holds no T5 projections: choose t5_projections.pt (1.1) or "
                             "kandinsky_video.pt (1.0).")
        text_config = release_config_for(projections_path, release).text
        device, offload = cm.text_devices()
        dtype, fp8 = text_dtype("fp8" if weight_dtype == FP8 else weight_dtype, device,
                                bf16=cm.host_supports_bf16(device))
        encoder = TextEncoder.load(
            release, cm.text_encoder_path(text_encoder), projections_path, dtype=dtype, fp8_weights=fp8,
            max_length=text_config.tokens_length, device=offload,
        )
        holder = nn.ModuleDict({"t5": encoder.t5, "projections": nn.ModuleDict(encoder.projections)})
        managed = cm.manage(holder, release, "text", text_encoder, text=True)
        managed.options["encoder"] = encoder
        return io.NodeOutput(managed)

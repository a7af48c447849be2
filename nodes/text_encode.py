"""FusionFrames Text Encode: prompt (and 1.0 negative prompt) -> conditioning for the samplers."""

from __future__ import annotations

from dataclasses import replace

import torch
from comfy_api.latest import io

from ..fusionframes.runtime.sequencer import negative_prompt as negative_prompt_rule
from .comfy import models as cm
from .comfy.native import text_conditioning
from .types import CATEGORY, Conditioning, TextEncoderModel


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesTextEncode",
            display_name="FusionFrames Text Encode",
            category=CATEGORY,
            description="Encodes the prompt with FLAN-UL2 and the release's projection. The text encoder is moved "
                        "off the GPU afterwards by ComfyUI's memory manager when room is needed.",
            inputs=[
                TextEncoderModel.Input("text_encoder"),
                io.String.Input("prompt", multiline=True, default="a red car drifting, 4k video",
                                tooltip="What the video shows. Up to 128 tokens are used (the official limit)."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="1.0 only: replaces the unconditional branch (official rule); empty = none "
                                        "(the null context, the official default). 1.1 ignores negative prompts, "
                                        "as the official pipeline does."),
            ],
            outputs=[Conditioning.Output(display_name="conditioning"),
                     io.Conditioning.Output(display_name="positive",
                                            tooltip="The prompt as a core CONDITIONING (context and mask), for the "
                                                    "core samplers and guiders."),
                     io.Conditioning.Output(display_name="negative",
                                            tooltip="The unconditional branch as a core CONDITIONING: the model's "
                                                    "null context, or 1.0's negative prompt.")],
        )

    @classmethod
    def execute(cls, text_encoder, prompt: str, negative_prompt: str) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        text_encoder.load()
        encoder = text_encoder.options["encoder"]
        with cm.cancellable(text_encoder):
            encoded = encoder.encode(prompt, negative_prompt_rule(text_encoder.release, negative_prompt))
        encoded = encoded.to("cpu", torch.float32)
        negative = text_conditioning(encoded, null=True) if encoded.negative is None else \
            text_conditioning(replace(encoded.negative, release=encoded.release))
        return io.NodeOutput(encoded, text_conditioning(encoded), negative)


class TextEncodeSegments(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesTextEncodeSegments",
            display_name="FusionFrames Text Encode (prompt per segment)",
            category=CATEGORY,
            description="One prompt per line, one line per segment of a long video (1.1): line 1 for the keyframes "
                        "of the T2V Keyframe Sampler, the next lines for the segments Extend Video adds; the Latent "
                        "Frame Interpolator gives each pair of frames the prompt of its segment.",
            inputs=[
                TextEncoderModel.Input("text_encoder"),
                io.String.Input("prompts", multiline=True,
                                default="a red car driving through a city, 4k video\n"
                                        "a red car driving through a forest, 4k video",
                                tooltip="One prompt per line (empty lines are skipped). A video of S segments needs "
                                        "S lines, or a single line for all of them."),
            ],
            outputs=[Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder, prompts: str) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        lines = [line.strip() for line in prompts.splitlines() if line.strip()]
        if not lines:
            raise ValueError("FusionFrames Text Encode (prompt per segment): write at least one prompt (one line "
                             "per segment).")
        text_encoder.load()
        encoder = text_encoder.options["encoder"]
        with cm.cancellable(text_encoder):
            encoded = [encoder.encode(line, None).to("cpu", torch.float32) for line in lines]
        return io.NodeOutput(encoded)

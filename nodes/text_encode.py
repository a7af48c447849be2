"""FusionFrames Text Encode: prompt (and 1.0 negative prompt) -> conditioning for the samplers."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..fusionframes.runtime.sequencer import negative_prompt as negative_prompt_rule
from . import comfy_models as cm
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
            outputs=[Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder, prompt: str, negative_prompt: str) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        text_encoder.load()
        encoder = text_encoder.options["encoder"]
        with cm.cancellable(text_encoder):
            encoded = encoder.encode(prompt, negative_prompt_rule(text_encoder.release, negative_prompt))
        return io.NodeOutput(encoded.to("cpu", torch.float32))

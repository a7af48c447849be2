"""FusionFrames Text Encode: prompt (and 1.0 negative prompt) -> conditioning for the samplers."""

from __future__ import annotations

from comfy_api.latest import io

from .types import CATEGORY, Conditioning, TextConditioning, TextEncoderModel


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
                                tooltip="1.0 only: replaces the unconditional branch (official rule). 1.1 ignores "
                                        "negative prompts, as the official pipeline does."),
            ],
            outputs=[Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder, prompt: str, negative_prompt: str) -> io.NodeOutput:
        text_encoder.load()
        encoder = text_encoder.options["encoder"]
        negative = negative_prompt if negative_prompt.strip() and text_encoder.release == "1.0" else None
        encoded = encoder.encode(prompt, negative)
        result = TextConditioning(
            release=text_encoder.release,
            context=encoded.context.float().cpu(),
            mask=encoded.mask.cpu(),
            negative_context=None if encoded.negative_context is None else encoded.negative_context.float().cpu(),
            negative_mask=None if encoded.negative_mask is None else encoded.negative_mask.cpu(),
        )
        return io.NodeOutput(result)

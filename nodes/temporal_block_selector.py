"""Temporal Block Selector: which temporal-conditioning variant the keyframe model uses, and how strongly."""

from __future__ import annotations

from comfy_api.latest import io

from .types import CATEGORY, KeyframeModel

VARIANTS = ["auto", "Conv1dAttn1dBlocks"]


class TemporalBlockSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesTemporalBlockSelector",
            display_name="Temporal Block Selector",
            category=CATEGORY,
            description="Chooses the keyframe model's temporal-conditioning variant and how strongly each kind of "
                        "temporal block acts: 1 = as trained, 0 = off (plain per-frame image generation).",
            inputs=[
                KeyframeModel.Input("keyframe_model"),
                io.Combo.Input("variant", options=VARIANTS, default="auto",
                               tooltip="auto = what the checkpoint holds. The released models use "
                                       "Conv1dAttn1dBlocks."),
                io.Float.Input("conv_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Temporal convolution blocks: 0 off, 1 trained, >1 exaggerated."),
                io.Float.Input("attention_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Temporal attention blocks: 0 off, 1 trained, >1 exaggerated."),
            ],
            outputs=[KeyframeModel.Output(display_name="keyframe_model")],
        )

    @classmethod
    def execute(cls, keyframe_model, variant: str, conv_strength: float, attention_strength: float) -> io.NodeOutput:
        held = keyframe_model.module.design.name
        if variant != "auto" and variant != held:
            raise ValueError(f"Temporal Block Selector: the checkpoint holds {held} blocks, not {variant}.")
        return io.NodeOutput(keyframe_model.clone(conv_strength=conv_strength, attention_strength=attention_strength))

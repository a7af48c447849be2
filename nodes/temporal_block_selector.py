"""Temporal Block Selector: which temporal-conditioning variant the keyframe model uses, how strongly, and where."""

from __future__ import annotations

from comfy_api.latest import io

from ..fusionframes.errors import FusionFramesError
from ..fusionframes.models.temporal.selection import (
    AUTO,
    CHOICES,
    resolve_variant,
    temporal_strength,
    trained_variant_name,
    variant_of,
)
from .comfy import models as cm
from .loaders import load_managed
from .types import CATEGORY, KeyframeModel

VARIANTS = list(CHOICES)


class TemporalBlockSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FusionFramesTemporalBlockSelector",
            display_name="Temporal Block Selector",
            category=CATEGORY,
            description="Chooses the keyframe model's temporal-conditioning variant (the four of the FusionFrames "
                        "paper), how strongly each kind of temporal block acts (1 = as trained, 0 = off: plain "
                        "per-frame image generation) and on which U-Net levels.",
            inputs=[
                KeyframeModel.Input("keyframe_model"),
                io.Combo.Input("variant", options=VARIANTS, default="auto",
                               tooltip="auto = what the checkpoint holds (the released models: Conv1dAttn1dBlocks). "
                                       "Another variant needs a checkpoint trained with it: one beside the loaded "
                                       "file in variants/<variant>/ (as the toy models have) is loaded in its "
                                       "place, without the loaded model's patches; or fresh_blocks."),
                io.Float.Input("conv_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Temporal convolution blocks: 0 off, 1 trained, >1 exaggerated."),
                io.Float.Input("attention_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Temporal attention blocks: 0 off, 1 trained, >1 exaggerated."),
                io.String.Input("levels", default="all", optional=True,
                                tooltip="U-Net levels whose temporal blocks act: 'all', 'none' or numbers like "
                                        "'1,2,3' (0 = full resolution, 3 = deepest in the official models)."),
                io.Boolean.Input("fresh_blocks", default=False, optional=True,
                                 tooltip="Replace the temporal blocks by fresh, untrained ones of the chosen variant "
                                         "(they start switched off: the output is the image model's). For "
                                         "training; it builds a second model in memory."),
            ],
            outputs=[KeyframeModel.Output(display_name="keyframe_model")],
        )

    @classmethod
    def execute(cls, keyframe_model, variant: str, conv_strength: float, attention_strength: float,
                levels: str = "all", fresh_blocks: bool = False) -> io.NodeOutput:
        cm.check_widgets(cls, locals())
        if keyframe_model.kind != "keyframe":
            raise ValueError("Temporal Block Selector: connect a model from 'Load FusionFrames Keyframe Model'.")
        # a model-folder name, so only files inside the model folders are found (as the loaders resolve them)
        sibling = trained_variant_name(keyframe_model.name, variant)
        if variant not in (AUTO, variant_of(keyframe_model.module)) and not fresh_blocks and \
                sibling in cm.checkpoint_files():
            return io.NodeOutput(cls._trained_sibling(keyframe_model, sibling, variant, conv_strength,
                                                      attention_strength, levels))
        try:
            strength = temporal_strength(keyframe_model.module, conv_strength, attention_strength, levels)
            model = resolve_variant(keyframe_model.module, variant, fresh=fresh_blocks,
                                    device=cm.offload_device())
        except FusionFramesError as error:
            raise ValueError(f"Temporal Block Selector: {error}") from None
        if model is keyframe_model.module:
            return io.NodeOutput(keyframe_model.clone(strength=strength))
        managed = cm.manage(model, keyframe_model.release, "keyframe", f"{keyframe_model.name} ({variant}, fresh)")
        managed.options["strength"] = strength
        return io.NodeOutput(managed)

    @staticmethod
    def _trained_sibling(keyframe_model, name: str, variant: str, conv_strength: float, attention_strength: float,
                         levels: str):
        """The checkpoint trained with ``variant`` that lies beside the loaded one, in the loaded one's dtype."""
        dtype = next(keyframe_model.module.parameters()).dtype
        try:
            managed = load_managed(name, "keyframe", dtype)
            resolve_variant(managed.module, variant)  # the sibling holds what its place says
            strength = temporal_strength(managed.module, conv_strength, attention_strength, levels)
        except FusionFramesError as error:
            raise ValueError(f"Temporal Block Selector: {error}") from None
        managed.options.update(keyframe_model.options)
        managed.options["strength"] = strength
        return managed

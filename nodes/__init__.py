"""The ComfyUI nodes of the pack: thin adapters from ComfyUI types to the ``fusionframes`` engine."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .comfy_models import register_folders
from .frame_interpolator import FrameInterpolator
from .keyframe_sampler import KeyframeSampler
from .loaders import LoadInterpolationModel, LoadKeyframeModel, LoadMoVQ, LoadTextEncoder
from .movq_codec import MoVQDecode, MoVQEncode
from .temporal_block_selector import TemporalBlockSelector
from .text_encode import TextEncode

NODES: list[type[io.ComfyNode]] = [
    LoadKeyframeModel,
    LoadInterpolationModel,
    LoadMoVQ,
    LoadTextEncoder,
    TextEncode,
    KeyframeSampler,
    FrameInterpolator,
    MoVQDecode,
    MoVQEncode,
    TemporalBlockSelector,
]


class FusionFramesExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FusionFramesExtension:
    register_folders()
    return FusionFramesExtension()

"""The ComfyUI nodes of the pack: thin adapters from ComfyUI types to the ``fusionframes`` engine."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .comfy.models import register_folders
from .extend_video import CloseLoop, ExtendVideo
from .frame_interpolator import FrameInterpolator
from .keyframe_sampler import KeyframeSampler
from .loaders import LoadInterpolationModel, LoadKeyframeModel, LoadMoVQ, LoadTextEncoder
from .movq_codec import MoVQDecode, MoVQEncode, SaveVideoStreamed
from .native_nodes import NATIVE_NODES
from .temporal_block_selector import TemporalBlockSelector
from .text_encode import TextEncode, TextEncodeSegments

NODES: list[type[io.ComfyNode]] = [
    LoadKeyframeModel,
    LoadInterpolationModel,
    LoadMoVQ,
    LoadTextEncoder,
    TextEncode,
    TextEncodeSegments,
    KeyframeSampler,
    ExtendVideo,
    CloseLoop,
    FrameInterpolator,
    MoVQDecode,
    SaveVideoStreamed,
    MoVQEncode,
    TemporalBlockSelector,
    *NATIVE_NODES,
]


class FusionFramesExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FusionFramesExtension:
    register_folders()
    return FusionFramesExtension()

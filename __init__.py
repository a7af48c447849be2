"""ComfyUI entry point of the FusionFrames pack: registers the nodes (ComfyUI calls ``comfy_entrypoint``)."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]

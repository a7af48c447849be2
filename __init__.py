"""ComfyUI entry point of the FusionFrames pack: registers the nodes (ComfyUI calls ``comfy_entrypoint``).

Outside ComfyUI (the engine's tests import this folder as a package) there is nothing to register.
"""

import importlib.util

#: the pack's frontend extension (live previews that play the frames of the video being sampled)
WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

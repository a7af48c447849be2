"""FusionFrames: Kandinsky Video 1.0 and 1.1 in plain PyTorch, loading the official checkpoints unchanged.

This package never imports ComfyUI; the node pack in ``nodes/`` adapts it.
"""

__version__ = "0.1.0"

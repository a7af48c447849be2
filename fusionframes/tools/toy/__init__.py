"""The toy world: a procedural video world (shapes moving on black, captioned from a small grammar), the tiny
FusionFrames models trained on it here, and the measurements of what they generate (``toy-eval``).

Tooling: the runtime and the nodes never import it.
"""

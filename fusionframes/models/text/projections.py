"""The text projections of both releases: ``Linear(d_model, context_dim, bias=False)`` + ``LayerNorm``, applied in
fp32 to the T5 states (``TextProjection``), and where each release's files keep them (``load_projections``). 1.1 ships
a base and an interpolation projection; its pipelines use only the base one [OB-9].
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...errors import CheckpointError
from ...io.detect import PROJECTION_KEYS, projection_prefix
from ...io.files import flatten, read_checkpoint
from ...releases import release as official_release

PROJECTION_BASE = "base"
PROJECTION_INTERPOLATION = "interpolation"

#: where each release's files keep its projections, by name: flat key prefixes, the first that holds a whole
#: projection wins. 1.0: ``kandinsky_video.pt``'s ``projections`` group, or that group (or one projection) saved
#: alone; 1.1: the two groups of ``t5_projections.pt``.
PROJECTION_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "1.0": {PROJECTION_BASE: ("projections.t5.", "t5.", "")},
    "1.1": {PROJECTION_BASE: ("projection_base.",), PROJECTION_INTERPOLATION: ("projection_interpolation.",)},
}
_EXPECTED = {
    "1.0": "kandinsky_video.pt (the 1.0 keyframe checkpoint, which holds 'projections')",
    "1.1": "t5_projections.pt (1.1, with 'projection_base' and 'projection_interpolation')",
}


class TextProjection(nn.Sequential):
    """``Linear(d_model, context_dim, bias=False)`` + ``LayerNorm(context_dim)``: keys ``0.weight``, ``1.weight``,
    ``1.bias`` as in the official checkpoints."""

    def __init__(self, d_model: int, context_dim: int) -> None:
        super().__init__(nn.Linear(d_model, context_dim, bias=False), nn.LayerNorm(context_dim))

    @property
    def d_model(self) -> int:
        return self[0].in_features

    @property
    def context_dim(self) -> int:
        return self[0].out_features

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], where: str = "projection") -> TextProjection:
        keys = PROJECTION_KEYS
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{where}: missing {', '.join(missing)} (a text projection has {', '.join(keys)}).")
        weight = state["0.weight"]
        if weight.ndim != 2 or tuple(state["1.weight"].shape) != (weight.shape[0],) or \
                tuple(state["1.bias"].shape) != (weight.shape[0],):
            raise CheckpointError(f"{where}: inconsistent shapes {tuple(weight.shape)}, "
                                  f"{tuple(state['1.weight'].shape)}, {tuple(state['1.bias'].shape)}; "
                                  "expected (context_dim, d_model), (context_dim,), (context_dim,).")
        projection = cls(int(weight.shape[1]), int(weight.shape[0]))
        projection.load_state_dict({k: state[k].detach().to(torch.float32).clone() for k in keys})
        return projection.eval().requires_grad_(False)


def load_projections(path: str | Path, release: str) -> dict[str, TextProjection]:
    """The text projections of a release, by name (``"base"``, and ``"interpolation"`` for 1.1), in float32.

    1.0: ``kandinsky_video.pt`` (its ``['projections']`` dict, keys ``t5.0.weight`` ...) or that dict saved alone.
    1.1: ``t5_projections.pt`` (``{'projection_base': ..., 'projection_interpolation': ...}``). Their ``.safetensors``
    conversions (flat key paths ``projections.t5.0.weight``, ``projection_base.0.weight``, ...) work too.
    """
    release = official_release(release).name
    path = Path(path)
    flat = flatten(read_checkpoint(path, hint="Give kandinsky_video.pt (1.0) or t5_projections.pt (1.1)."))
    found = {name: projection_prefix(flat, prefixes) for name, prefixes in PROJECTION_PREFIXES[release].items()}
    if None in found.values():
        hint = ""
        for other, layout in PROJECTION_PREFIXES.items():
            if other != release and projection_prefix(flat, layout[PROJECTION_BASE]) is not None:
                hint = f" It holds {other} projections: load it with release {other}."
        raise CheckpointError(f"{path} holds no {release} text projections; expected {_EXPECTED[release]}.{hint}")
    return {name: TextProjection.from_state_dict({k: flat[f"{prefix}{k}"] for k in PROJECTION_KEYS},
                                                 f"{path} [{prefix}]")
            for name, prefix in found.items()}

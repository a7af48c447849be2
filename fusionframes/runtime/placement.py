"""Which device each stage's model runs on, so that a machine with two GPUs can split the models between them.

Written ``text=cpu,keyframe=cuda:0,interpolation=cuda:1,movq=cuda:1``: roles not named run on the default device.
Latents cross devices at stage borders (a few megabytes); every stage function already moves its inputs to its
model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InputError

ROLES = ("text", "keyframe", "interpolation", "movq")
#: model kind (as ``checkpoints.load_model`` names it) -> the role whose device it uses
KIND_ROLES = {"keyframe": "keyframe", "interpolation": "interpolation", "movq": "movq", "video_movq": "movq",
              "text": "text"}


def check_device(spec: str | torch.device) -> torch.device:
    """A device that exists on this machine, or an :class:`InputError` saying which ones do."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"{spec!r} is not a device: use cpu, cuda or cuda:N.") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(f"device {device} is not supported: use cpu, cuda or cuda:N.")
    count = torch.cuda.device_count()
    if count == 0:
        raise InputError(f"device {device} is not available: this machine has no CUDA device; use cpu.")
    if device.index is not None and device.index >= count:
        raise InputError(f"device {device} is not available: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}.")
    return device


@dataclass(frozen=True)
class Placement:
    """The device of each role; ``default`` for the roles not named."""

    default: torch.device
    devices: dict[str, torch.device] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None, default: str | torch.device) -> Placement:
        """``"text=cpu,keyframe=cuda:0"`` (empty or None: everything on ``default``); devices are checked."""
        devices: dict[str, torch.device] = {}
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            role, sep, device = (s.strip() for s in item.partition("="))
            if not sep or role not in ROLES:
                raise InputError(f"placement {item!r}: expected ROLE=DEVICE with ROLE one of {', '.join(ROLES)} "
                                 "(e.g. keyframe=cuda:0,interpolation=cuda:1).")
            if role in devices:
                raise InputError(f"placement names {role} twice.")
            devices[role] = check_device(device)
        return cls(check_device(default), devices)

    def device(self, kind: str) -> torch.device:
        """The device of a model kind (``video_movq`` uses the ``movq`` role's)."""
        return self.devices.get(KIND_ROLES[kind], self.default)

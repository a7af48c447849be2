"""ComfyUI side of model handling: model folders, ModelPatcher wrapping, devices, dtypes, progress.

The engine's models are plain ``nn.Module``s; here they are put under ComfyUI's memory manager so that other
graphs (an SDXL run, say) can push them off the GPU and they come back when our nodes run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from torch import nn

from ...fusionframes.models.interrupt import interruptible
from ...fusionframes.runtime import preflight
from ...fusionframes.runtime.out_of_memory import release_host_memory
from .previews import preview

FOLDER = "fusionframes"
UNET_KINDS = ("keyframe", "interpolation")
TEXT_FOLDER = "text_encoders"


def register_folders() -> None:
    """``models/fusionframes`` for the checkpoints; FLAN-UL2 lives in the standard ``text_encoders`` folder."""
    path = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([path], set(folder_paths.supported_pt_extensions))
    else:
        folder_paths.add_model_folder_path(FOLDER, path)


def output_file(prefix: str, suffix: str, width: int, height: int) -> tuple[str, str, str]:
    """A new file in ComfyUI's output folder named as the core save nodes name theirs (``prefix`` may hold a
    subfolder and ComfyUI's %...% fields): its full path, its file name and its subfolder."""
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory(), width, height)
    file = f"{name}_{counter:05}_.{suffix}"
    return os.path.join(folder, file), file, subfolder


def checkpoint_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def checkpoint_path(name: str) -> str:
    """Resolve a dropdown value inside the model folders only (no path traversal), with a helpful error."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        folders = ", ".join(folder_paths.get_folder_paths(FOLDER))
        raise FileNotFoundError(f"FusionFrames model {name!r} not found in {folders}. Put the official checkpoint "
                                "files there (see the pack's README) and press R to refresh the list.")
    return path


def text_encoder_choices() -> list[str]:
    """Hugging Face folders (with config.json) and single weight files under ``models/text_encoders``."""
    choices: set[str] = set()
    for root in folder_paths.get_folder_paths(TEXT_FOLDER):
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            full = os.path.join(root, entry)
            if os.path.isdir(full) and os.path.isfile(os.path.join(full, "config.json")):
                choices.add(entry)
    for name in folder_paths.get_filename_list(TEXT_FOLDER):
        if name.endswith(".safetensors") and "/" not in name.replace(os.sep, "/"):
            choices.add(name)
    return sorted(choices)


def text_encoder_path(name: str) -> str:
    relative = os.path.relpath(os.path.join("/", name), "/")  # same confinement rule as folder_paths
    for root in folder_paths.get_folder_paths(TEXT_FOLDER):
        full = os.path.join(root, relative)
        if os.path.isdir(full) or os.path.isfile(full):
            return full
    raise FileNotFoundError(f"text encoder {name!r} not found in models/text_encoders: put the google/flan-ul2 "
                            "folder (config.json, weights, spiece.model) there.")


def host_supports_bf16(device: torch.device) -> bool:
    """ComfyUI's judgement of bf16 on ``device`` (it knows GPUs torch misjudges); the engine's policy decides."""
    return device.type != "cpu" and bool(mm.should_use_bf16(device))


class PatchableModule(nn.Module):
    """A holder ModelPatcher can manage: it sets attributes (``device``, memory counters) on the module it wraps,
    which the engine's models keep read-only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.device = None


@dataclass
class ManagedModel:
    """An engine model under ComfyUI's memory manager, plus what nodes need to know about it."""

    patcher: Any
    release: str
    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> nn.Module:
        """Ask the memory manager for room, move the weights to the compute device, return the engine model."""
        mm.load_models_gpu([self.patcher])
        return self.patcher.model.inner

    @property
    def module(self) -> nn.Module:
        return self.patcher.model.inner

    def clone(self, **options: Any) -> ManagedModel:
        return ManagedModel(self.patcher.clone(), self.release, self.kind, self.name, {**self.options, **options})


def manage(model: nn.Module, release: str, kind: str, name: str, text: bool = False) -> ManagedModel:
    """``model`` under the memory manager; the U-Nets as core models (their patcher is also the MODEL the loaders
    give, so LoRA and other model patches of a clone apply to it)."""
    from .native import FusionFramesModel, FusionFramesPatcher

    load_device = mm.text_encoder_device() if text else mm.get_torch_device()
    offload_device = mm.text_encoder_offload_device() if text else mm.unet_offload_device()
    holder = FusionFramesModel(model, release, kind) if kind in UNET_KINDS else PatchableModule(model)
    kind_of_patcher = FusionFramesPatcher if kind in UNET_KINDS else comfy.model_patcher.ModelPatcher
    patcher = kind_of_patcher(holder, load_device=load_device, offload_device=offload_device)
    return ManagedModel(patcher, release, kind, name)


@contextmanager
def cancellable(*using: ManagedModel) -> Iterator[None]:
    """Within it, the engine's models check ComfyUI's Cancel between their blocks (not only between steps), and a
    stage that does not fit in free memory first asks ComfyUI to unload other models (keeping ``using`` loaded)."""

    def reclaim(device: torch.device, nbytes: int) -> None:
        keep = [loaded for loaded in mm.current_loaded_models if any(loaded.model is m.patcher for m in using)]
        mm.free_memory(nbytes, device, keep_loaded=keep)

    try:
        with interruptible(mm.throw_exception_if_processing_interrupted), preflight.reclaiming(reclaim):
            yield
    finally:
        release_host_memory()  # what a finished or cancelled stage freed goes back to the OS


class StepProgress:
    """ComfyUI progress for a sampling loop; raises ComfyUI's interrupt at the next step when the user cancels."""

    def __init__(self, total: int) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.offset = 0

    def stage(self, steps: int):
        """A sampler ``on_step`` callback for the next ``steps`` steps of this node."""
        offset = self.offset
        self.offset += steps

        def on_step(index: int, total: int, t: Any = None, before: Any = None, prediction: Any = None,
                    state: torch.Tensor | None = None) -> None:
            mm.throw_exception_if_processing_interrupted()
            shown = None if state is None else preview(state)
            self.bar.update_absolute(offset + index + 1, preview=shown)

        return on_step

    def count(self, done: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        self.bar.update_absolute(self.offset + done)


#: widget kinds whose values are checked at the node boundary, the Python types they must arrive as, and their name
_WIDGET_TYPES = {"INT": (int,), "FLOAT": (int, float), "BOOLEAN": (bool,), "STRING": (str,), "COMBO": (str,)}
_WIDGET_NAMES = {"INT": "a whole number", "FLOAT": "a number", "BOOLEAN": "true or false", "STRING": "text",
                 "COMBO": "one of its choices"}


def check_widgets(node: type, values: dict[str, Any], files: tuple[str, ...] = ()) -> None:
    """Values ComfyUI's validation lets through (a combo value wrapped as ``{"__value__": [...]}``, a combo value not
    in the list, a bool where an int goes) are refused here with a message naming the widget, before any of them
    reaches the engine. ``values``: the node's ``execute`` arguments by name; ``files``: combos listing model files,
    checked for their type only (the loaders say where a missing file belongs)."""
    schema = node.define_schema()
    for spec in schema.inputs:
        kind = str(spec.get_io_type())
        value = values.get(spec.id)
        if kind not in _WIDGET_TYPES or value is None:
            continue
        wrong_type = not isinstance(value, _WIDGET_TYPES[kind]) or (kind != "BOOLEAN" and isinstance(value, bool))
        if wrong_type:
            raise ValueError(f"{schema.display_name}: {spec.id} must be {_WIDGET_NAMES[kind]}, got {value!r} "
                             f"({type(value).__name__}); the workflow may come from another version of the pack.")
        options = [str(option) for option in (getattr(spec, "options", None) or [])]
        if kind == "COMBO" and options and value not in options and spec.id not in files:
            shown = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
            raise ValueError(f"{schema.display_name}: {spec.id} {value!r} is not one of its choices ({shown}).")


def compute_device() -> torch.device:
    """Where ComfyUI runs the diffusion models."""
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where ComfyUI keeps the diffusion models between runs."""
    return mm.unet_offload_device()


def text_devices() -> tuple[torch.device, torch.device]:
    """Where ComfyUI runs the text encoder, and where it keeps it."""
    return mm.text_encoder_device(), mm.text_encoder_offload_device()

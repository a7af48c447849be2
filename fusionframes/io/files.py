"""Reading tensor files safely: ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` through ``torch.load(weights_only=True)``
(no arbitrary object is ever unpickled) and ``.safetensors``, with errors that say what is wrong with the file.

This module imports nothing from the models, so both the checkpoint loaders (``io.checkpoints``, which build models)
and the text stack (``models.text``) read their files through it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

#: nested groups of the official files, flattened to ``GROUP.key`` in safetensors
NESTED_GROUPS = ("unet", "projections", "projection_base", "projection_interpolation")


def _require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. {hint}")


#: what a PyTorch file starts with: a zip archive (torch >= 1.6) or a pickle (protocol 2-5, the legacy format)
_ZIP_MAGIC = b"PK\x03\x04"
#: modules a checkpoint's pickle may name (torch's tensor rebuilders, OrderedDict); anything else could run code
_SAFE_MODULES = ("torch", "collections")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _refused(path: Path, name: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: the file contains a Python object ({name}), not only tensors; loading it could "
        "run code. Official checkpoints hold only tensors: download the official file."
    )


def _pickled_objects(head: bytes) -> list[str]:
    """The module.name of every object the (first) pickle in ``head`` would import, found without unpickling."""
    import io
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in _STRING_OPS:
                strings.append(str(argument))
            elif opcode.name == "GLOBAL":
                names.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a damaged or cut stream: what was read so far still counts
        pass
    return names


def _check_format(path: Path) -> None:
    """Clear errors for files that cannot be a PyTorch checkpoint, before torch's unpickler sees them."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish. Download it again.")
    if head.startswith(_ZIP_MAGIC):
        return
    if head[0] != 0x80 or not 2 <= head[1] <= 5:
        shown = head[:24].decode("utf-8", "replace") if head[:24].isascii() else head[:12].hex(" ")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: it starts with {shown!r} (a text or other file, "
                              "not tensors). Choose the official .pt or .safetensors file.")
    unsafe = [name for name in _pickled_objects(head) if name.split(".")[0] not in _SAFE_MODULES]
    if unsafe:
        raise _refused(path, unsafe[0])


def _read_pt(path: Path) -> Any:
    """The content of a PyTorch file, memory-mapped when its format allows, tensors only (``weights_only``)."""
    _check_format(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # mmap needs the zip format; older files are read plainly
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        if blocked:
            raise _refused(path, blocked.group(1)) from None
        # the reason, not torch's first lines (which advise loading without weights_only)
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        detail = unpickler.group(1).strip() if unpickler else "not a pickle of tensors"
    except Exception as error:  # unpickling a damaged file raises many kinds
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise CheckpointError(
        f"cannot read {path} as a PyTorch checkpoint of tensors ({detail}). The file is probably truncated or "
        "corrupted: download it again."
    )


def open_safetensors(path: str | Path) -> Any:
    """A ``safe_open`` handle on a safetensors file: keys and shapes without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    _require_file(path, "Check the file name and folder.")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as error:  # safetensors raises its own error types
        raise _safetensors_error(path, error) from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, by its (flat) key."""
    handle = open_safetensors(path)
    keys = handle.keys()  # a safe_open handle is not iterable
    try:
        return {key: handle.get_tensor(key) for key in keys}
    except Exception as error:  # safetensors raises its own error types
        raise _safetensors_error(Path(path), error) from None


def _safetensors_error(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read {path} as safetensors ({error}). The file is probably truncated or corrupted.")


def read_checkpoint(path: str | Path, hint: str = "Check the file name and folder.") -> dict[str, Any]:
    """The raw content of a checkpoint: a dict of tensors and (for the U-Nets) nested dicts, as the .pt files; a
    ``.safetensors`` file's ``GROUP.key`` entries are nested back. ``hint``: what to do when the file is missing."""
    path = Path(path)
    _require_file(path, hint)
    content = unflatten(read_safetensors(path)) if path.suffix == ".safetensors" else _read_pt(path)
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(content).__name__}: not a checkpoint "
                              "of model weights.")
    for key, value in content.items():
        inner = value.items() if isinstance(value, Mapping) else [("", value)]
        for name, tensor in inner:
            if not isinstance(tensor, torch.Tensor):
                where = f"{key}.{name}" if name else str(key)
                raise CheckpointError(f"{path}: entry {where!r} holds a {type(tensor).__name__}, not a tensor: not a "
                                      "checkpoint of model weights. Choose the official file.")
    return dict(content)


def flatten(content: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Nested checkpoint dict -> flat ``GROUP.key`` tensors (contiguous, as safetensors requires)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in content.items():
        if isinstance(value, Mapping):
            if key not in NESTED_GROUPS:
                raise CheckpointError(f"unexpected nested group {key!r} in checkpoint")
            for inner, tensor in value.items():
                flat[f"{key}.{inner}"] = tensor.contiguous()
        elif isinstance(value, torch.Tensor):
            flat[key] = value.contiguous()
        else:
            raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
    return flat


def unflatten(flat: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Flat ``GROUP.key`` tensors -> the nested dict of the official files (the inverse of ``flatten``)."""
    content: dict[str, Any] = {}
    for key, tensor in flat.items():
        group, _, rest = key.partition(".")
        if group in NESTED_GROUPS and rest:
            content.setdefault(group, {})[rest] = tensor
        else:
            content[key] = tensor
    return content

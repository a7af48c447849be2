"""Model configurations: the official defaults of both releases and the parsing of 1.1's ``configs.json``.

The field names are those of the official constructors (and of ``configs.json``), so a configuration file written
for the official code reads unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

RELEASES = ("1.0", "1.1")
MODEL_KINDS = ("keyframe", "interpolation", "movq", "video_movq")


@dataclass(frozen=True)
class UNetConfig:
    """A Kandinsky-3 U-Net skeleton plus the release-specific extras of the video models."""

    model_channels: int = 384
    init_channels: int | None = 192
    num_channels: int = 4
    out_channels: int = 4
    time_embed_dim: int = 1536
    context_dim: int = 4096
    groups: int = 32
    head_dim: int = 64
    expansion_ratio: int = 4
    compression_ratio: int = 2
    dim_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_blocks: tuple[int, ...] = (3, 3, 3, 3)
    add_cross_attention: tuple[bool, ...] = (False, True, True, True)
    add_self_attention: tuple[bool, ...] = (False, True, True, True)
    # 1.0 keyframe model: the frame count the official pipeline uses (a default only; ours takes any count).
    num_frames: int | None = None
    # 1.1 keyframe model: extra temporal embeddings.
    noise_augmentation: bool = False
    motion_score: bool = False

    @property
    def stem_channels(self) -> int:
        return self.init_channels or self.model_channels

    @property
    def latent_multiple(self) -> int:
        """Latent sides must be multiples of this: every level but the last halves the resolution."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def hidden_dims(self) -> list[int]:
        return [self.stem_channels, *(self.model_channels * m for m in self.dim_mult)]

    def validate(self) -> None:
        levels = len(self.dim_mult)
        for name in ("num_blocks", "add_cross_attention", "add_self_attention"):
            if len(getattr(self, name)) != levels:
                raise ConfigError(f"U-Net config: {name} has {len(getattr(self, name))} entries but dim_mult has "
                                  f"{levels}; give one value per level.")
        if min(self.num_blocks) < 2:
            raise ConfigError("U-Net config: every level needs num_blocks >= 2 (the up path requires it).")
        for width in self.hidden_dims:
            if width % self.groups:
                raise ConfigError(f"U-Net config: width {width} is not divisible by groups={self.groups}.")
        for width in self.hidden_dims[1:]:
            if width % self.head_dim:
                raise ConfigError(f"U-Net config: width {width} is not divisible by head_dim={self.head_dim}.")


@dataclass(frozen=True)
class MoVQConfig:
    """The MoVQ autoencoder (image decoder, or 1.1's temporal decoder when ``temporal`` is set)."""

    double_z: bool = False
    z_channels: int = 4
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 256
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    dropout: float = 0.0
    temporal: bool = False
    temporal_attention_block: bool = False
    temporal_kernel_size: tuple[int, ...] = (3, 3, 3)
    temporal_conv_padding: tuple[int, ...] = (1, 1, 1)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class TextConfig:
    """Tokeniser length and the width of the projected text context."""

    tokens_length: int = 128
    context_dim: int = 4096
    weights_path: str = "google/flan-ul2"


@dataclass(frozen=True)
class ReleaseConfig:
    """Every model configuration of one release."""

    release: str
    keyframe: UNetConfig
    interpolation: UNetConfig
    movq: MoVQConfig
    video_movq: MoVQConfig | None
    text: TextConfig = field(default_factory=TextConfig)

    def for_kind(self, kind: str) -> UNetConfig | MoVQConfig:
        if kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}.")
        value = getattr(self, kind)
        if value is None:
            raise ConfigError(f"release {self.release} has no {kind} model (only 1.1 ships a temporal MoVQ).")
        return value


def official_config(release: str) -> ReleaseConfig:
    """The configuration the official code builds for ``release`` [OB-47]."""
    if release == "1.0":
        return ReleaseConfig(
            release="1.0",
            keyframe=UNetConfig(num_channels=4, out_channels=4, num_frames=15),
            interpolation=UNetConfig(num_channels=20, out_channels=12),
            movq=MoVQConfig(),
            video_movq=None,
        )
    if release == "1.1":
        return ReleaseConfig(
            release="1.1",
            keyframe=UNetConfig(num_channels=9, out_channels=4, noise_augmentation=True, motion_score=True),
            interpolation=UNetConfig(num_channels=20, out_channels=12),
            movq=MoVQConfig(),
            video_movq=MoVQConfig(temporal=True, temporal_attention_block=True),
        )
    raise ConfigError(f"unknown release {release!r}; expected one of {', '.join(RELEASES)}.")


# Constructor flags of the official code that we accept in configs.json only at the value the released models use.
_FIXED_UNET_FLAGS: dict[str, Any] = {
    "interpolation": None,  # 1.0 marks its interpolation U-Net with it; the kind is known from where it sits
    "time_downsample": (False,) * 8,
    "temporal": True,
    "use_perturbation_time_embed": True,
    "merge_perturbation_time_with_diffusion_time": True,
    "merge_perturbation_time_with_context": False,
    "pass_skip_frames": True,
    "temporal_type": None,
    "add_new_temporal_params": False,
    "add_temporal_attention": True,
}


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return cls(**_tuples(values))


def unet_config_from_dict(values: dict[str, Any], where: str) -> UNetConfig:
    values = dict(values)
    for flag, released in _FIXED_UNET_FLAGS.items():
        if flag not in values:
            continue
        value = values.pop(flag)
        if flag == "time_downsample":
            if any(value):
                raise ConfigError(f"{where}: time_downsample={value} is not supported (no released model uses it).")
        elif released is not None and value != released:
            raise ConfigError(f"{where}: {flag}={value!r} is not supported; the released models use {released!r}.")
    config = _build(UNetConfig, values, where)
    config.validate()
    return config


def movq_config_from_dict(values: dict[str, Any], where: str) -> MoVQConfig:
    return _build(MoVQConfig, values, where)


def _section(data: dict[str, Any], name: str, path: str) -> dict[str, Any] | None:
    if name not in data:
        return None
    section = data[name]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: section {name!r} must be an object.")
    inner = section.get("configs", section)
    if not isinstance(inner, dict):
        raise ConfigError(f"{path}: {name}.configs must be an object.")
    return inner


def load_release_config(path: str | Path, release: str) -> ReleaseConfig:
    """Read a ``configs.json`` (1.1's schema; our 1.0 fixtures use the same) over the official defaults."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configs file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path} as JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object with sections t2v, interpolation, image_movq, ...")
    base = official_config(release)
    updates: dict[str, Any] = {}
    for kind, section_name in (("keyframe", "t2v"), ("interpolation", "interpolation")):
        section = _section(data, section_name, str(path))
        if section is not None:
            updates[kind] = unet_config_from_dict(section, f"{path} [{section_name}]")
    for kind, section_name in (("movq", "image_movq"), ("video_movq", "video_movq")):
        section = _section(data, section_name, str(path))
        if section is not None:
            updates[kind] = movq_config_from_dict(section, f"{path} [{section_name}]")
    text = data.get("text_encoder")
    if isinstance(text, dict):
        fields_ = {f.name for f in dataclasses.fields(TextConfig)}
        updates["text"] = TextConfig(**{k: v for k, v in text.items() if k in fields_})
    return dataclasses.replace(base, **updates)


#: the file of a release folder that describes its models (1.1 ships one; 1.0 none, our 1.0 fixtures use the schema)
CONFIGS_FILE = "configs.json"


def release_config_for(location: str | Path, release: str, config: str | Path | None = None) -> ReleaseConfig:
    """The configuration of the models at ``location`` (a release folder, or a file in one): ``config`` (a
    ``configs.json``) when given, else the ``configs.json`` in that folder, else ``release``'s official defaults."""
    if not config:
        location = Path(location)
        beside = (location if location.is_dir() else location.parent) / CONFIGS_FILE
        config = beside if beside.is_file() else None
    return load_release_config(config, release) if config else official_config(release)
